"""A small ctypes binding to libespeak-ng's synchronous API, with a CLI fallback.

The ``espeakng-loader`` wheel ships ``libespeak-ng`` and its data folder, so speech
synthesis needs nothing but pip. The library keeps global state (current voice,
parameters, callback), so one :class:`Espeak` exists per process: worker processes of a
``multiprocessing.Pool`` each call :func:`get_engine`, which initialises the library the
first time it is used in that process.

Where the wheel is missing, a system ``espeak-ng`` binary is used through
:class:`EspeakCli` (slower: one process per sentence).

Example
-------
>>> engine = get_engine()
>>> engine.reset()  # a reproducible start
>>> wav = engine.synth("Block my card.", voice="en-us+f2", rate=170, pitch=55)
>>> engine.sample_rate, wav.dtype.name, wav.size > 0.3 * engine.sample_rate
(22050, 'int16', True)
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf

# speak_lib.h constants (API revision 12).
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
CHARS_UTF8 = 1
EE_OK = 0
PARAM_RATE = 1
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4
PARAM_WORDGAP = 7

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events); the events are
# not needed here, so they stay an opaque pointer.
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """libespeak-ng (or the espeak-ng binary) is missing or refused a request."""


@dataclass(frozen=True)
class Prosody:
    """The five espeak-ng speech parameters, in espeak's own units.

    Attributes
    ----------
    rate : int
        Words per minute (espeak accepts 80-450; 175 is its default).
    pitch : int
        Base pitch, 0-100 (50 is the voice's own).
    range : int
        Pitch range (intonation excursion), 0-100 (50 is the voice's own; 0 is monotone).
    volume : int
        Amplitude, 0-200 (100 is normal).
    wordgap : int
        Extra pause between words, in units of 10 ms at the default rate.
    """

    rate: int = 175
    pitch: int = 50
    range: int = 50
    volume: int = 100
    wordgap: int = 0

    def clipped(self) -> Prosody:
        """The same parameters clamped into the ranges espeak accepts."""
        return Prosody(
            rate=int(np.clip(self.rate, 80, 450)),
            pitch=int(np.clip(self.pitch, 0, 100)),
            range=int(np.clip(self.range, 0, 100)),
            volume=int(np.clip(self.volume, 0, 200)),
            wordgap=int(np.clip(self.wordgap, 0, 100)),
        )


def _wheel_paths() -> tuple[str, str] | None:
    """(library, data folder) from the ``espeakng-loader`` wheel, or None without it."""
    try:
        import espeakng_loader
    except ImportError:
        return None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


class Espeak:
    """libespeak-ng in synchronous mode, returning int16 samples in memory.

    libespeak-ng keeps synthesis state in static variables (pitch flutter phase,
    automatic gain, the echo buffer) and draws breath and frication noise from
    its own generator (seeded from the clock) and libc ``rand()``, so the same call
    gives different samples depending on what was spoken before and when.
    :meth:`reset` unloads and reloads the library (``dlclose``/``dlopen``, then about
    6 ms to reload its data on the next voice change), and :meth:`synth` seeds both
    generators: a sequence of calls made right after a reset is therefore reproducible.
    This assumes nothing else in the process holds libespeak-ng open.

    Parameters
    ----------
    library : str
        Path to ``libespeak-ng.so`` (or ``.dylib`` / ``.dll``).
    data_path : str
        The ``espeak-ng-data`` folder.
    """

    def __init__(self, library: str, data_path: str):
        self.library = library
        self.data_path = data_path
        self._lib = None
        self._chunks: list[np.ndarray] = []
        # Kept on self: ctypes callbacks are freed when their Python object is.
        self._callback = _CALLBACK(self._collect)
        self._libc = _libc()
        self.reset()

    def close(self) -> None:
        """Terminate and unload the library (a later :meth:`reset` loads it again)."""
        if self._lib is not None:
            self._lib.espeak_Terminate()
            _dlclose(self._lib)
            self._lib = None

    def reset(self) -> None:
        """Unload the library if loaded, then load and initialise a pristine copy."""
        self.close()
        lib = ctypes.CDLL(self.library)
        _declare(lib)
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed with data folder {self.data_path}")
        lib.espeak_SetSynthCallback(self._callback)
        self.sample_rate = int(rate)
        self.version = lib.espeak_Info(None).decode()
        self._lib = lib

    def _collect(self, samples, count, _events) -> int:
        if samples and count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = keep synthesising

    def _set_voice(self, voice: str) -> None:
        if self._lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise EspeakError(f"espeak-ng has no voice {voice!r}")

    def _set_prosody(self, prosody: Prosody) -> None:
        p = prosody.clipped()
        for param, value in (
            (PARAM_RATE, p.rate),
            (PARAM_VOLUME, p.volume),
            (PARAM_PITCH, p.pitch),
            (PARAM_RANGE, p.range),
            (PARAM_WORDGAP, p.wordgap),
        ):
            if self._lib.espeak_SetParameter(param, value, 0) != EE_OK:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed")

    def synth(self, text: str, voice: str = "en", seed: int = 0, **prosody) -> np.ndarray:
        """Speak ``text`` and return int16 samples at :attr:`sample_rate`.

        The samples depend on the calls made since the last :meth:`reset`.

        Parameters
        ----------
        text : str
            Plain UTF-8 text.
        voice : str
            espeak-ng voice name, optionally with ``+variant``.
        seed : int
            Seed for espeak's noise generators (breath, frication).
        **prosody
            Fields of :class:`Prosody`.
        """
        seed &= 0x7FFFFFFF
        if hasattr(self._lib, "espeak_ng_SetRandSeed"):  # espeak-ng >= 1.52
            self._lib.espeak_ng_SetRandSeed(seed)
        if self._libc is not None:
            self._libc.srand(seed)
        self._set_voice(voice)
        self._set_prosody(Prosody(**prosody))
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if err != EE_OK:
            raise EspeakError(f"espeak_Synth failed ({err}) for {text!r}")
        self._lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks).astype(np.int16, copy=False)


def _declare(lib) -> None:
    """Argument and return types of the functions used (speak_lib.h)."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p


def _dlclose(lib) -> None:
    """Release a ctypes library handle so the next load starts from pristine state."""
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(lib._handle)


def _libc():
    """The C library (for ``srand``), or None where it cannot be found."""
    try:
        libc = ctypes.CDLL(None) if os.name != "nt" else ctypes.cdll.msvcrt
        libc.srand.argtypes = [ctypes.c_uint]
        return libc
    except (OSError, AttributeError):
        return None


class EspeakCli:
    """The same interface over a system ``espeak-ng`` binary (one process per call)."""

    sample_rate = 22050

    def __init__(self, binary: str):
        self.binary = binary
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        self.version = out.split("  ")[0].strip() or "unknown"

    def reset(self) -> None:
        """Nothing to do: every call is a new process."""

    def close(self) -> None:
        """Nothing to unload."""

    def synth(self, text: str, voice: str = "en", seed: int = 0, **prosody) -> np.ndarray:
        """Speak ``text`` with the binary; ``seed`` is unused (each call is a new process)."""
        p = Prosody(**prosody).clipped()
        cmd = [
            self.binary,
            "--stdout",
            "-v",
            voice,
            "-s",
            str(p.rate),
            "-p",
            str(p.pitch),
            "-a",
            str(p.volume),
            "-g",
            str(p.wordgap),
            text,
        ]
        # The binary has no option for pitch range, so it uses the voice's own.
        out = subprocess.run(cmd, capture_output=True, check=True).stdout
        wav, rate = sf.read(io.BytesIO(out), dtype="int16")
        self.sample_rate = rate
        return wav


_ENGINE: Espeak | EspeakCli | None = None
_ENGINE_PID: int | None = None


def get_engine() -> Espeak | EspeakCli:
    """This process's synthesiser, created on first use (and again after a fork).

    Raises
    ------
    EspeakError
        When neither the ``espeakng-loader`` wheel nor an ``espeak-ng`` binary exists.
    """
    global _ENGINE, _ENGINE_PID
    if _ENGINE is not None and _ENGINE_PID == os.getpid():
        return _ENGINE
    paths = _wheel_paths()
    if paths is not None:
        _ENGINE = Espeak(*paths)
    elif binary := shutil.which("espeak-ng"):
        _ENGINE = EspeakCli(binary)
    else:
        raise EspeakError(
            "no speech synthesiser: `pip install espeakng-loader` (or install espeak-ng)"
        )
    _ENGINE_PID = os.getpid()
    return _ENGINE


def release_engine() -> None:
    """Unload this process's synthesiser, if it has one.

    A process forked while the library is loaded inherits it loaded, with this
    process's global state, which reloading in the child does not clear (the mapping
    is shared): the child's audio would then depend on what the parent synthesised
    before. Call this before forking workers.
    """
    global _ENGINE, _ENGINE_PID
    if _ENGINE is not None and _ENGINE_PID == os.getpid():
        _ENGINE.close()
    _ENGINE, _ENGINE_PID = None, None


def list_voice_files(data_path: str | None = None) -> dict[str, list[str]]:
    """English language files and voice variants present in the data folder.

    Returns
    -------
    dict
        ``{"languages": [...], "variants": [...]}``, names as espeak selects them
        (lower case languages such as ``en-gb-x-rp``; variants such as ``m3``).
    """
    if data_path is None:
        paths = _wheel_paths()
        if paths is None:
            raise EspeakError("the espeakng-loader wheel is not installed")
        data_path = paths[1]
    gmw = os.path.join(data_path, "lang", "gmw")
    languages = sorted(n.lower() for n in os.listdir(gmw) if n.lower().startswith("en"))
    variants = sorted(os.listdir(os.path.join(data_path, "voices", "!v")))
    return {"languages": languages, "variants": variants}
