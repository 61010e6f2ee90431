"""Rendering utterances: text + speaker + emotion -> channel -> 16-bit WAV file.

:func:`render_batch` is what the worker processes run. Everything random in an
utterance comes from its own seed, and the synthesiser is reset at the start of every
batch (see :class:`multitask.synth.espeak.Espeak`), so a file's bytes depend only on
its batch (fixed by the plan), not on which process renders it, how many processes
there are, or what that process rendered before. Resetting per batch rather than per
utterance saves reloading espeak's data files for every clip.

Example
-------
>>> from multitask.synth.prosody import make_speaker
>>> x, sr = speak("Block my card.", make_speaker("en-us+f2", 0), "angry", 1.0, seed=3)
>>> sr, x.ndim
(22050, 1)
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass

import numpy as np
import soundfile as sf

from .channel import CHANNELS
from .espeak import get_engine
from .prosody import PROFILES, Speaker, apply_effects, espeak_prosody, scaled

# Silence a caller leaves before and after speaking, in seconds (drawn per utterance).
LEAD_RANGE = (0.05, 0.35)
TAIL_RANGE = (0.05, 0.30)


@dataclass(frozen=True)
class Utterance:
    """Everything needed to render one file.

    Attributes
    ----------
    path : str
        Output WAV path.
    text : str
    speaker : Speaker
    emotion : str
        Label name from :data:`multitask.synth.prosody.EMOTIONS`.
    strength : float
        0-1, how far the emotion profile is applied (``LO`` = 0.5, ``HI`` = 1).
    channel : str
        ``telephone`` (8 kHz) or ``wideband`` (16 kHz).
    seed : int
        The utterance's own random seed.
    variation : float
        Scale of the random per-utterance prosody wobble.
    """

    path: str
    text: str
    speaker: Speaker
    emotion: str
    strength: float
    channel: str
    seed: int
    variation: float = 1.0


def speak(
    text: str,
    speaker: Speaker,
    emotion: str,
    strength: float,
    seed: int,
    variation: float = 1.0,
    reset: bool = True,
) -> tuple[np.ndarray, int]:
    """Synthesise and apply the emotion's effects; float waveform at espeak's rate.

    ``reset=False`` continues from the synthesiser's current state (see
    :func:`render_batch`); the default makes the result depend on the arguments only.
    """
    rng = np.random.default_rng(seed)
    profile = scaled(PROFILES[emotion], strength)
    prosody = espeak_prosody(speaker, profile, rng, variation)
    engine = get_engine()
    if reset:
        engine.reset()
    raw = engine.synth(text, voice=speaker.voice, seed=int(rng.integers(2**31)), **asdict(prosody))
    if raw.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {text!r} ({speaker.voice})")
    x = apply_effects(raw / 32768.0, engine.sample_rate, profile, rng)
    return x, engine.sample_rate


def render_batch(utterances: list[Utterance]) -> list[dict]:
    """Render utterances in order, starting from a freshly reset synthesiser."""
    get_engine().reset()
    return [render(utt, reset=False) for utt in utterances]


def render(utt: Utterance, reset: bool = True) -> dict:
    """Render ``utt`` to its WAV file; returns the facts the corpus writers record."""
    x, sr = speak(
        utt.text, utt.speaker, utt.emotion, utt.strength, utt.seed, utt.variation, reset=reset
    )
    # The channel and the padding get their own stream, so changing the channel
    # leaves the voice untouched.
    rng = np.random.default_rng([utt.seed, 1])
    lead = np.zeros(int(rng.uniform(*LEAD_RANGE) * sr))
    tail = np.zeros(int(rng.uniform(*TAIL_RANGE) * sr))
    samples, params = CHANNELS[utt.channel](np.concatenate([lead, x, tail]), sr, rng)
    rate = 8000 if utt.channel == "telephone" else 16000
    # Encoding in memory and writing once is about twice as fast as writing in place.
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype="PCM_16", format="WAV")
    os.makedirs(os.path.dirname(utt.path), exist_ok=True)
    with open(utt.path, "wb") as fout:
        fout.write(buffer.getvalue())
    return {"path": utt.path, "frames": int(samples.size), "sample_rate": rate, **params}
