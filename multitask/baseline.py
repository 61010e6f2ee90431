"""Feature baseline: per-utterance means of classic acoustic features and a small MLP.

The project began as a notebook that classified speech emotion from per-utterance
means of MFCCs, zero-crossing rate, RMS, chroma and mel features (43% on CREMA-D).
This module rebuilds that approach for *both* tasks so the demo can report it next to
the multitask wav2vec2 model, trained and scored on the same manifests and splits:

* :func:`utterance_features` turns one waveform into a fixed-length vector
  (layout in :func:`feature_names`);
* :class:`FeatureBaseline` standardises the vectors and trains one small MLP per task
  on the rows carrying that task's label, with early stopping on the validation rows;
* :func:`run_baseline` reads manifests, extracts features once per file, trains and
  returns :func:`multitask.metrics.classification_report` per test manifest and task.

Feature vector (``with_std=False``, the notebook's choice; 118 values)::

    [0:40]    mfcc_mean_00..39    40 MFCCs (dB mel, 64 mel bands, DCT-II ortho)
    [40]      zcr_mean            zero crossings per sample pair, per frame
    [41]      rms_mean            frame RMS of the *raw* samples (recording level)
    [42:54]   chroma_mean_C..B    12 pitch classes from a magnitude STFT
    [54:118]  logmel_mean_00..63  64 log-mel bands (dB)

``with_std=True`` appends the per-utterance standard deviations of the same 118
frame-level features in the same order (236 values). Frames are 25 ms with a 10 ms
hop at 16 kHz, except chroma, which needs a longer window (128 ms, see
:func:`chroma`).

Which samples each feature sees: :func:`multitask.audio.load_audio` normalises every
utterance to zero mean and unit variance, because that is the model's input. The
spectral features (MFCC, ZCR, chroma, log-mel) are computed on that normalised
waveform, so the baseline and the model see the same signal and neither can use the
recording gain through them. RMS, though, is a loudness feature in the notebook, and
on a unit-variance signal its mean no longer measures loudness (it only says how the
energy is spread over time: lower for utterances with more pauses). So
:func:`file_features` computes RMS on the raw samples (downmixed and resampled to
16 kHz, not normalised): ``rms_mean`` is the only feature that carries the recording
level. That level mixes speaking effort with microphone and channel gain, and differs
between corpora, so read a baseline result that leans on it with care.

Bandwidth: a 16 kHz corpus (CREMA-D) has energy up to 8 kHz, an 8 kHz telephone
corpus (Skit-S2I, real IVR calls) none above 4 kHz. Features of a classifier trained
on one and tested on the other then differ for reasons that have nothing to do with
the speech. By default the features describe the same input the model gets;
``telephone=True`` low-passes every recording to the telephone band first.

Example
-------
>>> import torch
>>> t = torch.arange(8000) / 16000
>>> wav = torch.sin(2 * torch.pi * 440.0 * t)            # 0.5 s of A4
>>> features = utterance_features(wav)
>>> features.shape, len(feature_names())
(torch.Size([118]), 118)
>>> names = feature_names()
>>> chroma_part = features[names.index("chroma_mean_C"):names.index("chroma_mean_B") + 1]
>>> PITCH_CLASSES[int(chroma_part.argmax())]
'A'
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import multiprocessing
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence

import torch
import torchaudio.transforms as T
from tqdm.auto import tqdm

from multitask.audio import (
    TARGET_SAMPLE_RATE,
    AudioInputError,
    normalise,
    read_samples,
    to_mono_16k,
)
from multitask.augment import telephone_band
from multitask.manifest import TASKS, ManifestError, label_set, read_manifests
from multitask.metrics import classification_report

__all__ = [
    "PITCH_CLASSES",
    "FeatureBaseline",
    "chroma",
    "extract_features",
    "feature_names",
    "file_features",
    "run_baseline",
    "telephone_band",
    "utterance_features",
]

logger = logging.getLogger(__name__)

N_MFCC = 40
N_MELS = 64
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# 25 ms frames with a 10 ms hop at 16 kHz: the usual speech analysis frame.
FRAME_SECONDS = 0.025
HOP_SECONDS = 0.010
# Chroma needs frequency resolution: 2048 points at 16 kHz are 7.8 Hz bins, narrower
# than a semitone from about 130 Hz up (a semitone is ~6% of its frequency).
CHROMA_N_FFT = 2048
CHROMA_FMIN = 130.0
# Above 4 kHz speech has little harmonic structure, and 8 kHz telephone audio has
# nothing at all; stopping there keeps chroma comparable across sample rates.
CHROMA_FMAX = 4000.0
DB_RANGE = 80.0  # dynamic range kept by the dB conversions (librosa's top_db)
# Below this many files, starting worker processes costs more than it saves.
MIN_FILES_FOR_POOL = 64


def feature_names(with_std: bool = False) -> list[str]:
    """Names of the entries of :func:`utterance_features`' vector, in order.

    Parameters
    ----------
    with_std : bool
        Include the standard-deviation block (``*_std*`` names after the means).

    Returns
    -------
    list of str

    Examples
    --------
    >>> names = feature_names()
    >>> len(names), names[0], names[40], names[41], names[42], names[-1]
    (118, 'mfcc_mean_00', 'zcr_mean', 'rms_mean', 'chroma_mean_C', 'logmel_mean_63')
    >>> len(feature_names(with_std=True)), feature_names(with_std=True)[118]
    (236, 'mfcc_std_00')
    """
    names = []
    for stat in ("mean", "std") if with_std else ("mean",):
        names += [f"mfcc_{stat}_{i:02d}" for i in range(N_MFCC)]
        names += [f"zcr_{stat}", f"rms_{stat}"]
        names += [f"chroma_{stat}_{pc}" for pc in PITCH_CLASSES]
        names += [f"logmel_{stat}_{i:02d}" for i in range(N_MELS)]
    return names


@functools.lru_cache(maxsize=8)
def _spectral_transforms(sample_rate: int):
    """MFCC and mel transforms for one sample rate, built once per process."""
    n_fft = round(FRAME_SECONDS * sample_rate)
    hop = round(HOP_SECONDS * sample_rate)
    mel_kwargs = {"n_fft": n_fft, "hop_length": hop, "n_mels": N_MELS}
    mfcc = T.MFCC(sample_rate=sample_rate, n_mfcc=N_MFCC, melkwargs=mel_kwargs)
    mel = T.MelSpectrogram(sample_rate=sample_rate, **mel_kwargs)
    to_db = T.AmplitudeToDB(stype="power", top_db=DB_RANGE)
    return mfcc, mel, to_db


@functools.lru_cache(maxsize=8)
def _chroma_matrix(sample_rate: int, n_fft: int) -> torch.Tensor:
    """``[12, n_fft // 2 + 1]`` 0/1 matrix: which pitch class each STFT bin belongs to."""
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    matrix = torch.zeros(12, freqs.numel())
    usable = (freqs >= CHROMA_FMIN) & (freqs <= min(CHROMA_FMAX, sample_rate / 2))
    # Semitones from A4 (440 Hz), rounded to the nearest; A is pitch class 9 with C = 0.
    semitones = torch.round(12 * torch.log2(freqs[usable] / 440.0)).long()
    matrix[(semitones + 9) % 12, torch.nonzero(usable).squeeze(1)] = 1.0
    return matrix


def chroma(wav: torch.Tensor, sample_rate: int = TARGET_SAMPLE_RATE) -> torch.Tensor:
    """Frame-level chroma: the energy in each of the 12 pitch classes, ``[12, frames]``.

    torchaudio has no chroma, so this is the textbook construction: a power STFT
    (2048 points, Hann window, 10 ms hop), each frequency bin between 130 Hz and 4 kHz
    assigned to the pitch class nearest its centre frequency (equal temperament,
    A4 = 440 Hz), the bins' energies summed per class, and every frame divided by its
    largest class (librosa's ``norm=inf``), so values lie in ``[0, 1]``. Unlike
    ``librosa.feature.chroma_stft`` there is no tuning estimate and no Gaussian
    weighting of bins across octaves, so the numbers are close to but not the same
    as librosa's.

    Parameters
    ----------
    wav : torch.Tensor
        1-D waveform.
    sample_rate : int

    Returns
    -------
    torch.Tensor
        ``[12, frames]``, rows in :data:`PITCH_CLASSES` order (C first).

    Examples
    --------
    >>> t = torch.arange(16000) / 16000
    >>> frames = chroma(torch.sin(2 * torch.pi * 261.63 * t))   # middle C
    >>> PITCH_CLASSES[int(frames.mean(dim=1).argmax())]
    'C'
    """
    hop = round(HOP_SECONDS * sample_rate)
    spec = torch.stft(
        wav,
        n_fft=CHROMA_N_FFT,
        hop_length=hop,
        window=torch.hann_window(CHROMA_N_FFT, device=wav.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    energy = _chroma_matrix(sample_rate, CHROMA_N_FFT).to(wav.device) @ spec.abs().pow(2)
    return energy / energy.amax(dim=0, keepdim=True).clamp(min=1e-10)


def _frames(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Non-overlapping-at-the-end 25 ms frames, ``[frames, frame_length]``."""
    length = round(FRAME_SECONDS * sample_rate)
    hop = round(HOP_SECONDS * sample_rate)
    if wav.numel() < length:
        wav = torch.nn.functional.pad(wav, (0, length - wav.numel()))
    return wav.unfold(0, length, hop)


def _frame_rms(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    return _frames(wav, sample_rate).pow(2).mean(dim=1).sqrt()


def utterance_features(
    wav: torch.Tensor,
    sample_rate: int = TARGET_SAMPLE_RATE,
    raw_wav: torch.Tensor | None = None,
    with_std: bool = False,
) -> torch.Tensor:
    """Fixed-length vector of per-utterance statistics of frame-level features.

    Parameters
    ----------
    wav : torch.Tensor
        1-D waveform the spectral features are computed on; normally the normalised
        model input from :func:`multitask.audio.load_audio`.
    sample_rate : int
        Sample rate of ``wav`` (and ``raw_wav``).
    raw_wav : torch.Tensor, optional
        The same recording before normalisation (same sample rate); ``rms_*`` is
        computed on it so that it measures the recording level. Without it, RMS is
        computed on ``wav``; for a normalised ``wav`` that only describes how the
        energy is distributed over time (see the module docstring).
    with_std : bool
        Append per-utterance standard deviations after the means. Off by default,
        as in the notebook this baseline reproduces.

    Returns
    -------
    torch.Tensor
        float32, ``[118]`` (or ``[236]`` with ``with_std``), laid out as
        :func:`feature_names` lists.

    Examples
    --------
    >>> wav = torch.randn(16000)
    >>> loud = utterance_features(wav, raw_wav=0.5 * wav)
    >>> quiet = utterance_features(wav, raw_wav=0.05 * wav)
    >>> changed = torch.nonzero(loud != quiet).squeeze(1).tolist()
    >>> [feature_names()[i] for i in changed]
    ['rms_mean']
    >>> utterance_features(wav, with_std=True).shape
    torch.Size([236])
    """
    wav = torch.as_tensor(wav, dtype=torch.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {tuple(wav.shape)}")
    level_wav = wav if raw_wav is None else torch.as_tensor(raw_wav, dtype=torch.float32)
    mfcc_transform, mel_transform, to_db = _spectral_transforms(sample_rate)
    frames = _frames(wav, sample_rate)
    crossings = (frames[:, 1:] >= 0) != (frames[:, :-1] >= 0)
    per_frame = [  # each [dims, frames]; the frame counts differ a little, which is fine
        mfcc_transform(wav),
        crossings.float().mean(dim=1, keepdim=True).T,
        _frame_rms(level_wav, sample_rate).unsqueeze(0),
        chroma(wav, sample_rate),
        to_db(mel_transform(wav)),
    ]
    stats = [torch.cat([f.mean(dim=1) for f in per_frame])]
    if with_std:
        stats.append(torch.cat([f.std(dim=1, unbiased=False) for f in per_frame]))
    return torch.cat(stats).float()


def file_features(path, with_std: bool = False, telephone: bool = False) -> torch.Tensor:
    """:func:`utterance_features` of one audio file.

    The spectral features see the normalised 16 kHz model input
    (:func:`multitask.audio.to_model_input`, the same checks and resampling as
    :func:`multitask.audio.load_audio`, read through :func:`multitask.audio.to_mono_16k`); RMS sees the raw samples, downmixed and
    resampled to 16 kHz but not normalised. The file is read once.

    Parameters
    ----------
    path : str
    with_std : bool
        Passed to :func:`utterance_features`.
    telephone : bool
        Low-pass both signals to the telephone band first (:func:`telephone_band`;
        the model input is normalised again afterwards). Off by default, so the
        features describe what the model sees. Turn it on when training and test
        audio differ in bandwidth (e.g. 16 kHz CREMA-D for training, 8 kHz calls for
        testing): the upper mel bands, MFCCs and zero-crossing rate otherwise
        describe the recording chain rather than the speech.

    Raises
    ------
    multitask.audio.AudioInputError
        The file cannot be used as speech input (its message names the file).
    """
    samples, sample_rate = read_samples(path)
    raw = to_mono_16k(samples, sample_rate, path=path)
    if telephone:
        raw = telephone_band(raw)
    wav = normalise(raw)
    return utterance_features(wav, TARGET_SAMPLE_RATE, raw_wav=raw, with_std=with_std)


@contextlib.contextmanager
def _one_thread():
    """Run small tensor work on one thread, then restore the caller's setting.

    The MLP and single-utterance transforms are far too small to gain from intra-op
    threads, and on a busy machine the threads' spin-waiting makes them many times
    slower. One thread also makes the results independent of the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _init_worker() -> None:
    # One thread per worker: the pool provides the parallelism.
    torch.set_num_threads(1)


def _features_or_error(job: tuple[str, dict]):
    path, options = job
    try:
        return path, file_features(path, **options).numpy(), None
    except AudioInputError as err:
        return path, None, err.reason


def extract_features(
    paths: Iterable[str],
    with_std: bool = False,
    telephone: bool = False,
    num_workers: int = 2,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Features of many files, each file read once; unusable files are skipped.

    Parameters
    ----------
    paths : iterable of str
        Audio files; duplicates are read once.
    with_std, telephone : bool
        Passed to :func:`file_features`.
    num_workers : int
        Worker processes (forked where the platform allows, one torch thread each).
        With ``<= 1``, or fewer than 64 files, everything runs in this process.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    features : dict
        ``{path: 1-D float32 tensor}`` for every usable file.
    skipped : dict
        ``{path: reason}`` for every file that raised
        :class:`multitask.audio.AudioInputError`; each also triggers a warning
        naming the file.

    Notes
    -----
    Where ``fork`` is unavailable (Windows, macOS), workers are ``spawn``ed, so a
    script calling this with ``num_workers > 1`` needs the usual
    ``if __name__ == "__main__":`` guard there.
    """
    paths = list(dict.fromkeys(os.fspath(p) for p in paths))
    options = {"with_std": with_std, "telephone": telephone}
    jobs = [(path, options) for path in paths]
    features, skipped = {}, {}
    bar = tqdm(total=len(jobs), desc="baseline features", unit="file", disable=not progress)
    if num_workers > 1 and len(jobs) >= MIN_FILES_FOR_POOL:
        # fork, as DataLoader workers do on Linux (torch resets its thread pool in the
        # child); spawn elsewhere.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with context.Pool(num_workers, initializer=_init_worker) as pool:
            results = list(_track(pool.imap_unordered(_features_or_error, jobs, 16), bar))
    else:
        with _one_thread():
            results = list(_track(map(_features_or_error, jobs), bar))
    bar.close()
    for path, vector, reason in results:
        if vector is None:
            skipped[path] = reason
            warnings.warn(f"baseline: skipping {path}: {reason}", stacklevel=2)
        else:
            features[path] = torch.from_numpy(vector)
    return features, skipped


def _track(results, bar):
    for result in results:
        bar.update()
        yield result


class _MLP(torch.nn.Sequential):
    """Standardised features -> one hidden ReLU layer with dropout -> class logits."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, dropout: float):
        super().__init__(
            torch.nn.Linear(in_dim, hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, num_classes),
        )


class FeatureBaseline:
    """Standardised utterance features and one small MLP per task.

    For each task, only the rows carrying its label are used: the label set is
    ``sorted({row[task] for row in train_rows if row[task]})`` (the main model's
    label-encoder convention), features are standardised with that task's training
    mean and standard deviation, and a one-hidden-layer MLP is trained with Adam on
    cross-entropy. After every epoch it is scored on the task's validation rows; the
    weights of the best epoch (highest accuracy, ties to lower loss) are kept, and
    training stops after ``patience`` epochs without improvement. Initialisation,
    shuffling and dropout draw from ``seed`` inside a forked RNG, so fitting twice
    gives the same model and the global RNG is untouched.

    Features are cached per wav path in :attr:`features`; paths not yet in the cache
    are extracted on demand with :func:`extract_features`. Files that cannot be read
    are listed in :attr:`skipped` and their rows left out (with a warning).

    Parameters
    ----------
    hidden_size, dropout : int, float
        The MLP's hidden width and dropout.
    lr, weight_decay : float
        Adam settings.
    batch_size, max_epochs, patience : int
        Mini-batch size; epoch budget; early-stopping patience in epochs.
    seed : int
    with_std, telephone : bool
        Passed to :func:`file_features`.
    num_workers : int
        Worker processes for feature extraction.
    progress : bool
        Show a progress bar while extracting features.

    Examples
    --------
    >>> import torch
    >>> rows = [{"wav": f"u{i}", "intent": "lo" if i % 2 else "hi", "emotion": ""}
    ...         for i in range(40)]
    >>> rng = torch.Generator().manual_seed(0)
    >>> cache = {row["wav"]: torch.randn(118, generator=rng) + (row["intent"] == "hi")
    ...          for row in rows}
    >>> model = FeatureBaseline(features=cache, max_epochs=30)
    >>> _ = model.fit(rows[:30], rows[30:], tasks=("intent",))
    >>> model.label_names["intent"]
    ['hi', 'lo']
    >>> model.predict(rows[30:34])["intent"]
    ['hi', 'lo', 'hi', 'lo']
    """

    def __init__(
        self,
        hidden_size: int = 256,
        dropout: float = 0.3,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_epochs: int = 200,
        patience: int = 20,
        seed: int = 0,
        with_std: bool = False,
        telephone: bool = False,
        num_workers: int = 2,
        progress: bool = False,
        features: Mapping[str, torch.Tensor] | None = None,
    ):
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.seed = seed
        self.with_std = with_std
        self.telephone = telephone
        self.num_workers = num_workers
        self.progress = progress
        self.features: dict[str, torch.Tensor] = dict(features or {})
        self.skipped: dict[str, str] = {}
        self.label_names: dict[str, list[str]] = {}
        self.scalers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.models: dict[str, torch.nn.Module] = {}
        self.history: dict[str, dict] = {}

    # -- features ---------------------------------------------------------------

    def add_features(self, paths: Iterable[str]) -> None:
        """Extract and cache the features of every path not cached or skipped yet."""
        missing = [
            p for p in dict.fromkeys(paths) if p not in self.features and p not in self.skipped
        ]
        if missing:
            features, skipped = extract_features(
                missing, self.with_std, self.telephone, self.num_workers, self.progress
            )
            self.features.update(features)
            self.skipped.update(skipped)

    def _usable(self, rows: Sequence[dict], task: str | None = None) -> list[dict]:
        """Rows with readable audio (and, given ``task``, that task's label)."""
        rows = [row for row in rows if task is None or row.get(task)]
        self.add_features(row["wav"] for row in rows)
        return [row for row in rows if row["wav"] in self.features]

    def _matrix(self, rows: Sequence[dict], task: str) -> torch.Tensor:
        mean, std = self.scalers[task]
        return (torch.stack([self.features[row["wav"]] for row in rows]) - mean) / std

    def _targets(self, rows: Sequence[dict], task: str, source: str) -> torch.Tensor:
        index = {name: i for i, name in enumerate(self.label_names[task])}
        unknown = sorted({row[task] for row in rows} - set(index))
        if unknown:
            raise ManifestError(
                f"{source}: {task} label(s) {', '.join(map(repr, unknown))} do not occur in "
                f"the training rows ({', '.join(self.label_names[task])})"
            )
        return torch.tensor([index[row[task]] for row in rows])

    # -- training -----------------------------------------------------------------

    def fit(
        self,
        train_rows: Sequence[dict],
        valid_rows: Sequence[dict],
        tasks: Sequence[str] = TASKS,
    ) -> FeatureBaseline:
        """Train one classifier per task on the rows that carry its label.

        Parameters
        ----------
        train_rows, valid_rows : sequence of dict
            Manifest rows (:func:`multitask.manifest.read_manifests`).
        tasks : sequence of str
            Tasks to train; each needs at least one labelled training row.

        Returns
        -------
        FeatureBaseline
            ``self``.

        Raises
        ------
        multitask.manifest.ManifestError
            A task has no labelled training row, or a validation row carries a label
            the training rows do not (the main model's data checks reject both too).
        """
        for task in tasks:
            rows = self._usable(train_rows, task)
            if not rows:
                raise ManifestError(f"no usable training row carries a {task!r} label")
            self.label_names[task] = label_set(rows, task)
            stacked = torch.stack([self.features[row["wav"]] for row in rows])
            std = stacked.std(dim=0, unbiased=False)
            self.scalers[task] = (stacked.mean(dim=0), torch.where(std > 1e-8, std, 1.0))
            valid = self._usable(valid_rows, task)
            if not valid:
                warnings.warn(
                    f"baseline: no validation row carries a {task!r} label; training "
                    f"{self.max_epochs} epochs without early stopping",
                    stacklevel=2,
                )
            x_valid = self._matrix(valid, task) if valid else None
            y_valid = self._targets(valid, task, "validation rows") if valid else None
            self.models[task], self.history[task] = self._train(
                self._matrix(rows, task),
                self._targets(rows, task, "training rows"),
                len(self.label_names[task]),
                x_valid,
                y_valid,
            )
            logger.info("baseline %s: %s", task, self.history[task])
        return self

    def _train(self, x, y, num_classes, x_valid, y_valid):
        with _one_thread(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = _MLP(x.shape[1], self.hidden_size, num_classes, self.dropout)
            optimizer = torch.optim.Adam(
                model.parameters(), lr=self.lr, weight_decay=self.weight_decay
            )
            best, best_state, best_epoch = None, None, 0
            for epoch in range(1, self.max_epochs + 1):
                model.train()
                for batch in torch.randperm(len(x)).split(self.batch_size):
                    optimizer.zero_grad()
                    torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                    optimizer.step()
                if x_valid is None:  # no early stopping: the last epoch is the model
                    best_epoch = epoch
                    continue
                model.eval()
                with torch.no_grad():
                    logits = model(x_valid)
                accuracy = float((logits.argmax(dim=1) == y_valid).float().mean())
                loss = float(torch.nn.functional.cross_entropy(logits, y_valid))
                if best is None or (accuracy, -loss) > best:
                    best, best_epoch = (accuracy, -loss), epoch
                    best_state = copy.deepcopy(model.state_dict())
                elif epoch - best_epoch >= self.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        history = {"best_epoch": best_epoch, "epochs_run": epoch, "train_rows": len(x)}
        if best is not None:
            history.update(valid_accuracy=best[0], valid_loss=-best[1])
        return model, history

    # -- inference ------------------------------------------------------------------

    def predict(self, rows: Sequence[dict]) -> dict[str, list[str | None]]:
        """Predicted label names per trained task, one per row.

        Returns
        -------
        dict
            ``{task: [label name or None, ...]}`` aligned with ``rows``; ``None`` for
            a row whose audio could not be read (listed in :attr:`skipped`).
        """
        usable = self._usable(rows)
        out = {}
        for task, model in self.models.items():
            predicted = {}
            if usable:
                with _one_thread(), torch.no_grad():
                    ids = model(self._matrix(usable, task)).argmax(dim=1).tolist()
                predicted = {
                    row["wav"]: self.label_names[task][i]
                    for row, i in zip(usable, ids, strict=True)
                }
            out[task] = [predicted.get(row["wav"]) for row in rows]
        return out


def run_baseline(
    train_manifests,
    valid_manifests,
    test_manifests: Mapping[str, object],
    out_json=None,
    *,
    tasks: Sequence[str] = TASKS,
    num_workers: int = 2,
    progress: bool = True,
    **baseline_kwargs,
) -> dict:
    """Train the feature baseline on manifests and score it on each test manifest.

    Parameters
    ----------
    train_manifests, valid_manifests : path or list of paths
        Manifests read with :func:`multitask.manifest.read_manifests`; the same ones
        the multitask model trains on.
    test_manifests : dict
        ``{name: path or list of paths}``.
    out_json : path, optional
        Where to write the result as JSON.
    tasks : sequence of str
        Candidate tasks; those no training row carries are left out.
    num_workers : int
        Worker processes for feature extraction (see :func:`extract_features`).
    progress : bool
        Show a progress bar while extracting features.
    **baseline_kwargs
        Passed to :class:`FeatureBaseline` (``seed``, ``with_std``, ``telephone``,
        ``hidden_size`` ...).

    Returns
    -------
    dict
        ``{test_name: {task: report}}`` for every test manifest and every trained task
        whose label at least one of its rows carries; ``report`` is
        :func:`multitask.metrics.classification_report` over the rows carrying the
        label (label names: the sorted training label set), plus ``skipped_files``,
        the sorted paths of that manifest's rows left out because their audio could
        not be read.

    Raises
    ------
    multitask.manifest.ManifestError
        No training row carries a label of ``tasks``, or a validation or test row
        carries a label the training rows do not.
    """
    train_rows = read_manifests(train_manifests)
    valid_rows = read_manifests(valid_manifests)
    test_rows = {name: read_manifests(paths) for name, paths in test_manifests.items()}
    model = FeatureBaseline(num_workers=num_workers, progress=progress, **baseline_kwargs)
    # One extraction pass over every file, so the pool and the bar are set up once.
    everything = train_rows + valid_rows + [row for rows in test_rows.values() for row in rows]
    model.add_features(row["wav"] for row in everything)

    trained = [task for task in tasks if any(row.get(task) for row in train_rows)]
    if not trained:
        raise ManifestError(f"no training row carries a label of {', '.join(tasks)}")
    model.fit(train_rows, valid_rows, tasks=trained)

    results = {}
    for name, rows in test_rows.items():
        results[name] = {}
        for task in trained:
            labelled = [row for row in rows if row.get(task)]
            if not labelled:
                continue
            usable = [row for row in labelled if row["wav"] in model.features]
            skipped = sorted({row["wav"] for row in labelled} - {row["wav"] for row in usable})
            if not usable:
                warnings.warn(f"baseline: {name}: no readable {task} row to score", stacklevel=2)
                continue
            references = model._targets(usable, task, f"test manifest {name!r}")
            predicted = model.predict(usable)[task]
            index = {label: i for i, label in enumerate(model.label_names[task])}
            report = classification_report(
                [index[label] for label in predicted],
                references.tolist(),
                model.label_names[task],
                task,
            )
            report["skipped_files"] = skipped
            results[name][task] = report
    if out_json is not None:
        folder = os.path.dirname(os.path.abspath(out_json))
        os.makedirs(folder, exist_ok=True)
        with open(out_json, "w", encoding="utf-8") as fout:
            json.dump(results, fout, indent=1)
    return results
