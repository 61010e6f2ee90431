"""Audio input: the one place that reads, checks, downmixes, resamples and normalises.

Training, evaluation, preparation and inference all read audio through this module
(:func:`load_audio`, :func:`iter_windows` for long recordings, :func:`check_file`
for the preparers), so a file that trains is a file that predicts, and a bad file
fails the same way everywhere: with :class:`AudioInputError`, whose message names the
file and the reason. ``docs/reliability.md`` lists the inputs this is tested against.

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
import stat
from collections.abc import Iterator
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
# Full scale is 1. A float file may go past it (unclipped float audio), and even
# integer samples written as floats unscaled (up to 32768) are usable; a peak beyond
# this is not audio, and its variance would overflow float32 when normalised.
MAX_PEAK = 1e6
# Below 4 kHz there is no speech band left to classify; above 384 kHz (the highest
# rate in studio use) a header is more likely broken than real.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384000
# torchaudio's resampler builds a kernel of (rate/g) x (16000/g) taps, g their gcd: a
# prime rate like 44101 Hz would need 12 GB. Rates whose kernel is larger than this
# are resampled as the nearest multiple of 50 Hz (a time-scale error below 0.7 %).
RESAMPLE_KERNEL_BUDGET = 2_500_000
ODD_RATE_STEP = 50
# Long recordings are classified window by window (see :func:`iter_windows`).
WINDOW_SECONDS = 30.0
# Up to this duration a file is one window (one encoder pass, as in training);
# longer files are cut into WINDOW_SECONDS windows, the tail merged into the last.
LONG_FILE_SECONDS = 1.5 * WINDOW_SECONDS
# Frames decoded at a time when a file is streamed (at the file's own rate).
BLOCK_SECONDS = 2.0
_LFS_POINTER = b"version https://git-lfs"


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


def _sf_path(path: str):
    """``path`` as soundfile can open it: a name that is not valid UTF-8 (bytes a file
    system allows) goes as bytes, which soundfile's strict encoding would refuse."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def probe_audio(path) -> AudioInfo:
    """Read a file's header, raising :class:`AudioInputError` for anything unusable."""
    path = os.fspath(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise AudioInputError(path, "file not found") from None
    except PermissionError:  # the file, or a folder on its path, may not be read
        raise AudioInputError(path, "permission denied: it cannot be read") from None
    except OSError as err:
        raise AudioInputError(path, f"cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(status.st_mode):
        raise AudioInputError(path, "is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioInputError(path, "permission denied: it cannot be read")
    if status.st_size == 0:  # also a FIFO or a device, which reading could block on
        raise AudioInputError(path, "file is empty (0 bytes)")
    try:
        info = sf.info(_sf_path(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        if _is_lfs_pointer(path):
            # A clone without git-lfs leaves text stubs named .wav; say how to fix it.
            raise AudioInputError(
                path, "is a git-lfs pointer, not audio (run `git lfs pull` in the corpus)"
            ) from None
        raise AudioInputError(path, f"not a readable audio file ({err})") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioInputError(path, "header declares no sample rate or no channels")
    return AudioInfo(info.samplerate, info.channels, info.frames, info.subtype)


def _is_lfs_pointer(path) -> bool:
    try:
        with open(path, "rb") as fin:
            return fin.read(len(_LFS_POINTER)) == _LFS_POINTER
    except OSError:
        return False


def read_samples(path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Read float32 samples, shape ``[frames, channels]``, and the file's sample rate."""
    probe_audio(path)
    try:
        data, sample_rate = sf.read(
            _sf_path(os.fspath(path)), start=start, stop=stop, dtype="float32", always_2d=True
        )
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioInputError(path, f"audio data could not be decoded ({err})") from None
    return data, sample_rate


def read_blocks(path, block_seconds: float = BLOCK_SECONDS) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(float32 [frames, channels], sample_rate)`` blocks of a file, in order.

    At most ``block_seconds`` of samples are held at a time, whatever the file's length.
    """
    info = probe_audio(path)
    check_sample_rate(path, info.sample_rate)
    block = max(1, int(block_seconds * info.sample_rate))
    try:
        with sf.SoundFile(_sf_path(os.fspath(path))) as fin:
            while True:
                data = fin.read(block, dtype="float32", always_2d=True)
                if not len(data):
                    return
                yield data, info.sample_rate
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioInputError(path, f"audio data could not be decoded ({err})") from None


def check_sample_rate(path, sample_rate: int) -> None:
    """Refuse sample rates no speech recording has (see ``MIN_SAMPLE_RATE``)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioInputError(
            path, f"sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )


class _Checks:
    """The checks every reader applies, accumulated block by block.

    One owner for the reasons: a whole file read at once and a file streamed in
    blocks are refused for the same reason, in the same order (no samples, NaN/Inf,
    too short, channels cancelling, silent, constant).
    """

    def __init__(self, path, sample_rate: int, min_seconds: float):
        self.path, self.sample_rate, self.min_seconds = path, sample_rate, min_seconds
        self.frames = 0
        self.raw_peak = 0.0
        self.mono_peak = 0.0
        self.mono_low, self.mono_high = math.inf, -math.inf

    def add(self, raw: torch.Tensor, mono: torch.Tensor) -> None:
        """Account for one block: ``raw`` ``[frames, channels]``, ``mono`` its downmix."""
        if not torch.isfinite(raw).all():
            raise AudioInputError(self.path, "contains NaN or infinite sample values")
        self.frames += mono.numel()
        if mono.numel():
            self.raw_peak = max(self.raw_peak, float(raw.abs().max()))
            if self.raw_peak > MAX_PEAK:
                raise AudioInputError(self.path, f"sample values reach {self.raw_peak:.3g}, "
                                      "where full scale is 1: not audio that can be normalised")
            self.mono_peak = max(self.mono_peak, float(mono.abs().max()))
            self.mono_low = min(self.mono_low, float(mono.min()))
            self.mono_high = max(self.mono_high, float(mono.max()))

    def finish(self) -> None:
        if self.frames == 0:
            raise AudioInputError(self.path, "contains no samples")
        seconds = self.frames / self.sample_rate
        if seconds < self.min_seconds:
            raise AudioInputError(
                self.path, f"too short: {seconds:.3f} s (minimum {self.min_seconds} s)"
            )
        if self.mono_peak < SILENCE_PEAK:
            if self.raw_peak >= SILENCE_PEAK:
                raise AudioInputError(
                    self.path, "is silent once downmixed to mono: its channels cancel out "
                    "(one channel is the other with its polarity inverted)"
                )
            raise AudioInputError(self.path, "is silent (peak amplitude below -80 dBFS)")
        if self.mono_high - self.mono_low < SILENCE_PEAK:
            # Normalising to zero mean would leave digital silence, which still gets a label.
            raise AudioInputError(self.path, "holds no sound: at most a constant offset (its "
                                  "samples vary by less than -80 dBFS)")


def _downmix(samples, path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(raw [frames, channels], mono [frames])`` float32; the downmix is the channel mean."""
    raw = torch.as_tensor(samples, dtype=torch.float32)
    if raw.ndim == 1:
        raw = raw.unsqueeze(1)
    if raw.ndim != 2:
        raise AudioInputError(path, f"expected 1-D or 2-D samples, got shape {tuple(raw.shape)}")
    return raw, raw.mean(dim=1)


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
    check_sample_rate(path, sample_rate)
    raw, wav = _downmix(samples, path)
    checks = _Checks(path, sample_rate, min_seconds)
    checks.add(raw, wav)
    checks.finish()
    return resample_to_16k(wav, sample_rate)


def resample_to_16k(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Resample a 1-D waveform to 16 kHz (odd rates: see ``RESAMPLE_KERNEL_BUDGET``).

    Example
    -------
    >>> resample_to_16k(torch.ones(44101), 44101).shape   # 1 s, resampled as 44100 Hz
    torch.Size([16001])
    """
    if sample_rate == TARGET_SAMPLE_RATE:
        return wav
    g = math.gcd(sample_rate, TARGET_SAMPLE_RATE)
    if (sample_rate // g) * (TARGET_SAMPLE_RATE // g) > RESAMPLE_KERNEL_BUDGET:
        sample_rate = max(ODD_RATE_STEP, round(sample_rate / ODD_RATE_STEP) * ODD_RATE_STEP)
    return AF.resample(wav, sample_rate, TARGET_SAMPLE_RATE)


def normalise(wav: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance (the wav2vec2 feature extractor's ``do_normalize``)."""
    return (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-7)


def normalise_padded(wavs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """:func:`normalise` for each row of a right-padded batch, over its ``valid``
    samples only; zeros after each row's end (the batch convention of the model's input).

    >>> wavs = torch.tensor([[1.0, 3.0, 9.0]])
    >>> out = normalise_padded(wavs, torch.tensor([[True, True, False]]))
    >>> torch.round(out, decimals=4).tolist()
    [[-1.0, 1.0, 0.0]]
    """
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (wavs * valid).sum(dim=1, keepdim=True) / count
    var = (((wavs - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
    return torch.where(valid, (wavs - mean) / torch.sqrt(var + 1e-7), torch.zeros_like(wavs))


def load_audio(path, min_seconds: float = MIN_SECONDS) -> torch.Tensor:
    """Read any mono/multichannel file soundfile decodes and return model input at 16 kHz."""
    samples, sample_rate = read_samples(path)
    return to_model_input(samples, sample_rate, path=path, min_seconds=min_seconds)


def check_file(path, min_seconds: float = MIN_SECONDS) -> AudioInfo:
    """Decode a whole file block by block and apply :func:`load_audio`'s checks.

    Memory stays bounded by one block whatever the file's length; the frame count
    returned is what was decoded, not the header's claim.
    """
    info = probe_audio(path)
    checks = _Checks(path, info.sample_rate, min_seconds)
    for block, _ in read_blocks(path):
        checks.add(*_downmix(block, path))
    checks.finish()
    return AudioInfo(info.sample_rate, info.channels, checks.frames, info.subtype)


def iter_windows(
    path, window_seconds: float = WINDOW_SECONDS, min_seconds: float = MIN_SECONDS
) -> Iterator[tuple[torch.Tensor | None, float]]:
    """Model input for a long recording, one window at a time, in bounded memory.

    The file is decoded in blocks of ``BLOCK_SECONDS`` and downmixed as it is read;
    every ``window_seconds`` of it becomes one window, except that the remainder at
    the end is merged into the last window, so every window lasts between 0.5 and
    1.5 ``window_seconds``. Each window is resampled and normalised on its own:
    it is exactly the model input :func:`load_audio` would give for that excerpt
    saved as its own file.

    Yields
    ------
    (wav, seconds)
        ``wav`` is the window's 1-D model input, or ``None`` for a silent window
        (peak below ``SILENCE_PEAK``, or at most a constant offset: normalising it
        would only amplify noise);
        ``seconds`` is its duration.

    Raises
    ------
    AudioInputError
        As :func:`load_audio` does, for the whole file: no samples, NaN/Inf
        anywhere, too short, or silent throughout.
    """
    info = probe_audio(path)
    rate = info.sample_rate
    window = max(1, round(window_seconds * rate))
    checks = _Checks(path, rate, min_seconds)
    pending: list[torch.Tensor] = []
    held = 0
    for block, _ in read_blocks(path):
        raw, mono = _downmix(block, path)
        checks.add(raw, mono)
        pending.append(mono)
        held += mono.numel()
        while held >= window + window // 2:
            buffer = torch.cat(pending)
            yield _window_input(buffer[:window], rate)
            pending, held = [buffer[window:]], held - window
    checks.finish()  # after the last block: the whole-file reasons, as load_audio
    if held:
        yield _window_input(torch.cat(pending), rate)


def _window_input(mono: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor | None, float]:
    seconds = mono.numel() / sample_rate
    # A file's two silence rules, per window: a constant offset (a held line) would
    # normalise to resampler ripple, and the model would still give it a label.
    if float(mono.abs().max()) < SILENCE_PEAK or float(mono.max() - mono.min()) < SILENCE_PEAK:
        return None, seconds
    return normalise(resample_to_16k(mono, sample_rate)), seconds


def duration_seconds(path) -> float:
    """Duration from the header, rounded to the millisecond."""
    return math.floor(probe_audio(path).duration * 1000 + 0.5) / 1000
