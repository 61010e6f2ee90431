"""Emotion as prosody: profiles, their rendering, and how to measure the result.

An emotion is rendered in two places:

1. **espeak-ng parameters** - base pitch, pitch range (intonation excursion), speaking
   rate and word gap (pauses), relative to the speaker's own settings;
2. **signal effects** after synthesis - loudness (set in the float domain, because
   espeak's own volume runs into its automatic gain control on loud variants),
   spectral tilt (tense and bright for anger, dark for sadness), soft saturation
   (vocal strain), breath noise (breathy sadness and fear), tremolo (amplitude
   shake) and pitch jitter (a wavering voice, for fear).

Every profile moves at least one of pitch, energy and duration well away from every
other profile; :func:`measure` estimates those three quantities from a waveform and
the tests check the margins. Intensity ``LO`` applies half of each change, ``HI`` all
of it.

Example
-------
>>> prof = PROFILES["sad"]
>>> prof.rate_factor < 1 < PROFILES["angry"].gain_db
True
>>> scaled(prof, 0.5).pitch_shift == prof.pitch_shift / 2
True
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import signal

from .espeak import Prosody

# CREMA-D file-name codes, and the label names the rest of the package uses.
EMOTION_CODES: dict[str, str] = {
    "ANG": "angry", "DIS": "disgust", "FEA": "fear",
    "HAP": "happy", "NEU": "neutral", "SAD": "sad",
}  # fmt: skip
EMOTIONS: list[str] = list(EMOTION_CODES.values())
LEVELS: dict[str, float] = {"LO": 0.5, "HI": 1.0}

# Active-speech level of a neutral utterance before any emotion gain, in dBFS.
REFERENCE_DBFS = -27.0


@dataclass(frozen=True)
class EmotionProfile:
    """How one emotion departs from neutral speech (all zeros/ones = neutral).

    Attributes
    ----------
    pitch_shift : float
        Added to espeak's base pitch (0-100 scale; +15 is about +15 % in F0).
    range_shift : float
        Added to espeak's pitch range (0-100; 50 is the voice's own excursion).
    rate_factor : float
        Multiplies the speaking rate (words per minute).
    wordgap : float
        Extra pause between words, in espeak units of 10 ms.
    gain_db : float
        Loudness relative to neutral.
    tilt : float
        Spectral tilt: > 0 boosts high frequencies (pressed voice), < 0 darkens.
    drive : float
        Soft-saturation strength (0 = none), a crude model of vocal strain.
    breath_db : float
        Level of envelope-following breath noise relative to the speech (-inf = none).
    tremolo_depth : float
        Depth of amplitude modulation at ``tremolo_hz`` (0 = none).
    tremolo_hz : float
    jitter : float
        Peak relative pitch deviation of an irregular vibrato (0.03 = 3 %).
    """

    pitch_shift: float = 0.0
    range_shift: float = 0.0
    rate_factor: float = 1.0
    wordgap: float = 0.0
    gain_db: float = 0.0
    tilt: float = 0.0
    drive: float = 0.0
    breath_db: float = -np.inf
    tremolo_depth: float = 0.0
    tremolo_hz: float = 6.0
    jitter: float = 0.0


PROFILES: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(),
    # Hot anger: louder, tense and bright, faster, somewhat higher and wider.
    "angry": EmotionProfile(
        pitch_shift=8, range_shift=20, rate_factor=1.10, gain_db=6.0, tilt=0.6, drive=2.0
    ),
    # Joy: the highest, widest intonation, a little faster and louder.
    "happy": EmotionProfile(
        pitch_shift=22, range_shift=35, rate_factor=1.06, gain_db=2.5, tilt=0.2
    ),
    # Sadness: low, flat, slow with pauses, quiet, dark and breathy.
    "sad": EmotionProfile(
        pitch_shift=-12,
        range_shift=-35,
        rate_factor=0.72,
        wordgap=4,
        gain_db=-7.0,
        tilt=-0.6,
        breath_db=-22.0,
    ),
    # Fear: high but narrow, hurried, trembling and wavering, slightly quiet.
    "fear": EmotionProfile(
        pitch_shift=28,
        range_shift=-10,
        rate_factor=1.22,
        gain_db=-1.5,
        breath_db=-26.0,
        tremolo_depth=0.35,
        tremolo_hz=7.0,
        jitter=0.03,
    ),
    # Disgust: lower, slow and drawn out with long gaps between words.
    "disgust": EmotionProfile(
        pitch_shift=-6, range_shift=5, rate_factor=0.86, wordgap=9, gain_db=-0.5, tilt=-0.2
    ),
}


def scaled(profile: EmotionProfile, strength: float) -> EmotionProfile:
    """The profile moved only ``strength`` of the way from neutral (0 = neutral)."""
    neutral = EmotionProfile()
    values = {}
    for f in fields(EmotionProfile):
        target, base = getattr(profile, f.name), getattr(neutral, f.name)
        if f.name == "tremolo_hz":
            values[f.name] = target
        elif f.name == "rate_factor":
            values[f.name] = target**strength  # geometric: half of x1.2 is x1.095
        elif f.name == "breath_db":
            values[f.name] = target + 20 * np.log10(strength) if np.isfinite(target) else target
        else:
            values[f.name] = base + strength * (target - base)
    return replace(neutral, **values)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak voice plus its own prosodic habits.

    Attributes
    ----------
    voice : str
        espeak-ng voice, ``<language>+<variant>``; also the speaker id.
    pitch : int
        The speaker's base pitch on espeak's 0-100 scale.
    range : int
        The speaker's pitch range, 0-100.
    rate : int
        The speaker's neutral speaking rate, words per minute.
    """

    voice: str
    pitch: int
    range: int
    rate: int


def make_speaker(voice: str, seed: int) -> Speaker:
    """Mild per-speaker offsets, stable for a (voice, seed) pair."""
    rng = np.random.default_rng([seed, zlib.crc32(voice.encode())])
    return Speaker(
        voice=voice,
        pitch=int(round(50 + rng.uniform(-8, 8))),
        range=int(round(50 + rng.uniform(-8, 8))),
        rate=int(round(165 * rng.uniform(0.92, 1.08))),
    )


def espeak_prosody(
    speaker: Speaker, profile: EmotionProfile, rng: np.random.Generator, variation: float = 1.0
) -> Prosody:
    """espeak parameters for one utterance: speaker + emotion + a little randomness.

    ``variation`` scales the random per-utterance wobble (pitch +/- 3 units,
    range +/- 5, rate +/- 4 %), so that no two utterances of a speaker are identical.
    """
    wobble = rng.uniform(-1, 1, size=3) * variation
    return Prosody(
        rate=int(round(speaker.rate * profile.rate_factor * (1 + 0.04 * wobble[0]))),
        pitch=int(round(speaker.pitch + profile.pitch_shift + 3 * wobble[1])),
        range=int(round(speaker.range + profile.range_shift + 5 * wobble[2])),
        volume=100,
        wordgap=int(round(profile.wordgap)),
    ).clipped()


# --------------------------------------------------------------------------- effects


def active_rms(x: np.ndarray, sr: int, floor_db: float = -35.0) -> float:
    """RMS over the 20 ms frames within ``floor_db`` of the loudest frame (speech only)."""
    frame = max(1, int(0.02 * sr))
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(x**2)) + 1e-12)
    power = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    keep = power >= power.max() * 10 ** (floor_db / 10)
    return float(np.sqrt(power[keep].mean()) + 1e-12)


def _tilt(x: np.ndarray, sr: int, amount: float) -> np.ndarray:
    if amount > 0:
        # Mixing in the first difference lifts the spectrum by ~6 dB/octave above ~sr/2pi.
        return x + amount * 3.0 * np.diff(x, prepend=x[:1])
    sos = signal.butter(1, 900, "lowpass", fs=sr, output="sos")
    return (1 + amount) * x - amount * signal.sosfilt(sos, x)


def _drive(x: np.ndarray, amount: float) -> np.ndarray:
    peak = np.max(np.abs(x)) + 1e-12
    return np.tanh(amount * x / peak) / np.tanh(amount) * peak


def _breath(x: np.ndarray, sr: int, level_db: float, rng: np.random.Generator) -> np.ndarray:
    # Aspiration noise that follows the speech envelope, band-limited like airflow noise.
    env = signal.sosfilt(signal.butter(1, 20, "lowpass", fs=sr, output="sos"), np.abs(x))
    noise = signal.sosfilt(
        signal.butter(2, [400, min(6000, 0.45 * sr)], "bandpass", fs=sr, output="sos"),
        rng.standard_normal(len(x)),
    )
    noise *= env
    scale = active_rms(x, sr) / active_rms(noise, sr) * 10 ** (level_db / 20)
    return x + scale * noise


def _tremolo(x: np.ndarray, sr: int, depth: float, hz: float, rng) -> np.ndarray:
    t = np.arange(len(x)) / sr
    rate = hz * rng.uniform(0.9, 1.1)
    return x * (1 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))


def _jitter(x: np.ndarray, sr: int, amount: float, rng) -> np.ndarray:
    # A time-varying delay d(t) shifts pitch by -d'(t); two incommensurate sines make the
    # wavering irregular. amount is the peak relative pitch deviation.
    t = np.arange(len(x)) / sr
    f1, f2 = rng.uniform(5.0, 7.0), rng.uniform(9.0, 12.0)
    p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
    depth1 = amount / (2 * np.pi * f1) * 0.7
    depth2 = amount / (2 * np.pi * f2) * 0.3
    delay = depth1 * np.sin(2 * np.pi * f1 * t + p1) + depth2 * np.sin(2 * np.pi * f2 * t + p2)
    return np.interp(t - delay, t, x)


def apply_effects(
    x: np.ndarray, sr: int, profile: EmotionProfile, rng: np.random.Generator
) -> np.ndarray:
    """Voice-quality effects and loudness for one utterance.

    The input is any-level float speech; the output's active level is
    :data:`REFERENCE_DBFS` + ``profile.gain_db`` (+/- 0.5 dB of random wobble).
    """
    x = np.asarray(x, dtype=np.float64)
    if profile.jitter > 0:
        x = _jitter(x, sr, profile.jitter, rng)
    if profile.tilt != 0:
        x = _tilt(x, sr, profile.tilt)
    if profile.drive > 0:
        x = _drive(x, profile.drive)
    if profile.tremolo_depth > 0:
        x = _tremolo(x, sr, profile.tremolo_depth, profile.tremolo_hz, rng)
    if np.isfinite(profile.breath_db):
        x = _breath(x, sr, profile.breath_db, rng)
    level = REFERENCE_DBFS + profile.gain_db + rng.uniform(-0.5, 0.5)
    return x * (10 ** (level / 20) / active_rms(x, sr))


# ----------------------------------------------------------------------- measurement


def f0_track(x: np.ndarray, sr: int, fmin: float = 60.0, fmax: float = 450.0) -> np.ndarray:
    """F0 (Hz) of the voiced 40 ms frames, by normalised autocorrelation.

    A frame counts as voiced when its autocorrelation peak in the F0 search range is
    above 0.5 and its energy is within 35 dB of the loudest frame.
    """
    x = np.asarray(x, dtype=np.float64)
    win, hop = int(0.04 * sr), int(0.01 * sr)
    if len(x) < win:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.mean(frames**2, axis=1)
    spectrum = np.fft.rfft(frames, 2 * win, axis=1)
    ac = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :win]
    ac = ac / (ac[:, :1] + 1e-12)
    lo, hi = int(sr / fmax), int(sr / fmin)
    lag = np.argmax(ac[:, lo:hi], axis=1) + lo
    peak = np.max(ac[:, lo:hi], axis=1)
    voiced = (peak > 0.5) & (energy > energy.max() * 10 ** (-35 / 10))
    return sr / lag[voiced]


def speech_span(x: np.ndarray, sr: int, floor_db: float = -35.0) -> float:
    """Seconds from the first to the last 20 ms frame within ``floor_db`` of the loudest."""
    frame = max(1, int(0.02 * sr))
    n = len(x) // frame
    if n == 0:
        return 0.0
    power = np.mean(np.asarray(x[: n * frame], dtype=np.float64).reshape(n, frame) ** 2, axis=1)
    active = np.flatnonzero(power >= power.max() * 10 ** (floor_db / 10))
    return float((active[-1] - active[0] + 1) * frame / sr)


def measure(x: np.ndarray, sr: int) -> dict[str, float]:
    """Median F0 (Hz), active RMS level (dBFS) and speech duration (s) of a recording."""
    f0 = f0_track(x, sr)
    return {
        "f0_hz": float(np.median(f0)) if f0.size else float("nan"),
        "rms_db": 20 * float(np.log10(active_rms(np.asarray(x, dtype=np.float64), sr))),
        "seconds": speech_span(x, sr),
    }
