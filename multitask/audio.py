"""Audio input: the one place that reads, checks, downmixes, resamples and normalises.

Training, evaluation, preparation and inference all read audio through
:func:`load_audio`, so a file that trains is a file that predicts, and a bad file
fails the same way everywhere: with :class:`AudioInputError`, whose message names the
file and the reason.

Example
-------
>>> import numpy as np, soundfile as sf, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
>>> t = np.arange(8000) / 8000
>>> sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 8000)
>>> wav = load_audio(path)            # 1 s at 8 kHz becomes 16000 samples at 16 kHz
>>> wav.shape, round(float(wav.mean()), 4), round(float(wav.std()), 2)
(torch.Size([16000]), 0.0, 1.0)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

TARGET_SAMPLE_RATE = 16000
# Shorter than this, wav2vec2's convolutional front end has too few frames to pool.
MIN_SECONDS = 0.1
# Peak amplitude below which a recording is treated as silence (about -80 dBFS).
SILENCE_PEAK = 1e-4


class AudioInputError(ValueError):
    """A file that cannot be used as speech input; the message names file and reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What the header says about a file (no samples read)."""

    sample_rate: int
    channels: int
    frames: int
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe_audio(path) -> AudioInfo:
    """Read a file's header, raising :class:`AudioInputError` for anything unusable."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioInputError(path, "file not found")
    if os.path.isdir(path):
        raise AudioInputError(path, "is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioInputError(path, "file is empty (0 bytes)")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioInputError(path, f"not a readable audio file ({err})") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioInputError(path, "header declares no sample rate or no channels")
    return AudioInfo(info.samplerate, info.channels, info.frames, info.subtype)


def read_samples(path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Read float32 samples, shape ``[frames, channels]``, and the file's sample rate."""
    probe_audio(path)
    try:
        data, sample_rate = sf.read(
            os.fspath(path), start=start, stop=stop, dtype="float32", always_2d=True
        )
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioInputError(path, f"audio data could not be decoded ({err})") from None
    return data, sample_rate


def to_model_input(
    samples: np.ndarray | torch.Tensor,
    sample_rate: int,
    path="<array>",
    min_seconds: float = MIN_SECONDS,
) -> torch.Tensor:
    """Downmix, check, resample to 16 kHz and normalise one recording.

    Parameters
    ----------
    samples : array ``[frames]`` or ``[frames, channels]``
    sample_rate : int
    path : str
        Only used to name the input in error messages.
    min_seconds : float
        Shortest accepted duration.

    Returns
    -------
    torch.Tensor
        1-D float32 waveform at 16 kHz with zero mean and unit variance. The
        normalisation is per utterance, before any padding, which is what
        wav2vec2 expects and keeps padded batches consistent with single files.
    """
    return normalise(to_mono_16k(samples, sample_rate, path=path, min_seconds=min_seconds))


def to_mono_16k(
    samples: np.ndarray | torch.Tensor,
    sample_rate: int,
    path="<array>",
    min_seconds: float = MIN_SECONDS,
) -> torch.Tensor:
    """:func:`to_model_input` without the normalisation: the recording's own level kept."""
    wav = torch.as_tensor(samples, dtype=torch.float32)
    if wav.ndim == 2:
        wav = wav.mean(dim=1)
    if wav.ndim != 1:
        raise AudioInputError(path, f"expected 1-D or 2-D samples, got shape {tuple(wav.shape)}")
    if wav.numel() == 0:
        raise AudioInputError(path, "contains no samples")
    if not torch.isfinite(wav).all():
        raise AudioInputError(path, "contains NaN or infinite sample values")
    seconds = wav.numel() / sample_rate
    if seconds < min_seconds:
        raise AudioInputError(path, f"too short: {seconds:.3f} s (minimum {min_seconds} s)")
    if float(wav.abs().max()) < SILENCE_PEAK:
        raise AudioInputError(path, "is silent (peak amplitude below -80 dBFS)")
    if sample_rate != TARGET_SAMPLE_RATE:
        wav = AF.resample(wav, sample_rate, TARGET_SAMPLE_RATE)
    return wav


def normalise(wav: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance (the wav2vec2 feature extractor's ``do_normalize``)."""
    return (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-7)


def load_audio(path, min_seconds: float = MIN_SECONDS) -> torch.Tensor:
    """Read any mono/multichannel file soundfile decodes and return model input at 16 kHz."""
    samples, sample_rate = read_samples(path)
    return to_model_input(samples, sample_rate, path=path, min_seconds=min_seconds)


def duration_seconds(path) -> float:
    """Duration from the header, rounded to the millisecond."""
    return math.floor(probe_audio(path).duration * 1000 + 0.5) / 1000
