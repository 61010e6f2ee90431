"""Recording channels: the telephone line (8 kHz) and a clean wideband microphone (16 kHz).

The telephone channel imitates a narrowband call as an IVR receives it:

1. resampling to 8 kHz (polyphase, with its own anti-aliasing filter);
2. background noise mixed in at a random SNR (before the band filter, so the noise
   is shaped by the line like the speech);
3. a 300-3400 Hz band-pass (4th-order Butterworth), the classic telephone band;
4. a mild random gain;
5. G.711 mu-law companding and back, which adds the codec's level-dependent
   quantisation noise;
6. 16-bit PCM.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = 0.05 * np.sin(2 * np.pi * 1000 * np.arange(22050) / 22050)
>>> y, params = telephone(x, 22050, rng)
>>> y.dtype.name, len(y), TELEPHONE_RATE
('int16', 8000, 8000)
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal

from .prosody import active_rms

TELEPHONE_RATE = 8000
WIDEBAND_RATE = 16000
TELEPHONE_BAND = (300.0, 3400.0)
SNR_RANGE_DB = (15.0, 35.0)
GAIN_RANGE_DB = (-4.0, 2.0)
WIDEBAND_SNR_DB = 45.0  # a quiet room: keeps files from being digitally silent
_TELEPHONE_SOS = signal.butter(4, TELEPHONE_BAND, "bandpass", fs=TELEPHONE_RATE, output="sos")


@lru_cache(maxsize=8)
def _antialias(up: int, down: int) -> np.ndarray:
    # The filter resample_poly would design itself (Kaiser, beta 5, 10 zero crossings
    # per side); designing it once per ratio instead of once per call saves ~1 ms a clip.
    half_len = 10 * max(up, down)
    return signal.firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0))


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling by the exact rational ratio ``sr_out / sr_in``."""
    if sr_in == sr_out:
        return x
    ratio = Fraction(sr_out, sr_in)
    up, down = ratio.numerator, ratio.denominator
    return signal.resample_poly(x, up, down, window=_antialias(up, down))


def _noise(n: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    # Brownish hum-and-rumble: integrate white noise, then remove the drift.
    brown = signal.lfilter([1.0], [1.0, -0.98], white)
    return brown - brown.mean()


def add_noise(x: np.ndarray, sr: int, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mix in white or brown noise so that active speech is ``snr_db`` above it."""
    kind = "white" if rng.random() < 0.5 else "brown"
    noise = _noise(len(x), rng, kind)
    noise *= active_rms(x, sr) / (np.sqrt(np.mean(noise**2)) + 1e-12) * 10 ** (-snr_db / 20)
    return x + noise


def mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711-style mu-law encode to 8 bits and decode again (x in [-1, 1])."""
    x = np.clip(x, -1.0, 1.0)
    code = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127)
    y = code / 127
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float in [-1, 1] to 16-bit PCM, clipping anything beyond full scale."""
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def telephone(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Pass float speech at ``sr`` through the telephone line; returns int16 at 8 kHz.

    Returns
    -------
    (samples, params)
        ``params`` holds the random draws (``snr_db``, ``gain_db``) for the record.
    """
    snr_db = float(rng.uniform(*SNR_RANGE_DB))
    gain_db = float(rng.uniform(*GAIN_RANGE_DB))
    # Filtering at 8 kHz rather than at the synthesis rate is ~3x cheaper.
    y = resample(np.asarray(x, dtype=np.float64), sr, TELEPHONE_RATE)
    y = add_noise(y, TELEPHONE_RATE, snr_db, rng)
    y = signal.sosfilt(_TELEPHONE_SOS, y) * 10 ** (gain_db / 20)
    return to_int16(mu_law(y)), {"snr_db": snr_db, "gain_db": gain_db}


def wideband(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A clean 16 kHz studio-like recording (faint room noise, no band limiting)."""
    y = add_noise(np.asarray(x, dtype=np.float64), sr, WIDEBAND_SNR_DB, rng)
    return to_int16(resample(y, sr, WIDEBAND_RATE)), {"snr_db": WIDEBAND_SNR_DB}


CHANNELS = {"telephone": telephone, "wideband": wideband}
