"""Inference: ``MultitaskClassifier``, the interface users load from an exported model.

    from multitask.inference import MultitaskClassifier
    model = MultitaskClassifier.from_hparams(source="org/name")   # or a local folder
    result = model.classify_file("call.wav")
    result["intent"]["label"], result["emotion"]["label"]

One encoder pass serves both heads. Audio goes through the same reader as in
training (:func:`multitask.audio.load_audio`: any sample rate or channel count,
mono 16 kHz, normalised per utterance), so a file predicts as it would have been
scored during evaluation.

An exported folder (see :mod:`multitask.export`) describes everything in its
``hyperparams.yaml``: the encoder architecture (the wav2vec2 config, inline), the
heads, the label encoders, and a :class:`ModelFolderPretrainer` that fetches the
weights and label files from wherever the folder is (disk or the Hub, any
revision). Nothing else is fetched: loading never reaches for the encoder the
model was fine-tuned from.

This file is also the source of the ``custom_interface.py`` shipped with every
export: the exporter inlines the pieces of ``multitask`` it imports, so that
SpeechBrain's ``foreign_class`` loads the model where the package is not
installed. Keep imports from the package as ``from .module import name``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile

import torch
from huggingface_hub.errors import (
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.data_utils import batch_pad_right
from speechbrain.utils.fetching import FetchConfig, FetchSource
from speechbrain.utils.parameter_transfer import Pretrainer

from .audio import (
    LONG_FILE_SECONDS,
    WINDOW_SECONDS,
    AudioInputError,
    iter_windows,
    load_audio,
    probe_audio,
)
from .checkpoints import parameter_mismatch
from .head_labels import encoder_labels, label_mismatch, read_metadata
from .model import ExtendedHead, MultitaskModel, TaskHead, Wav2Vec2Encoder
from .optimize import METHODS, optimize_for_cpu
from .settings import check_count
from .source import (
    FOLDER,
    SAVEDIR_SOURCE_FILE,
    URL,
    BrokenModelError,
    ModelNotFoundError,
    SavedirError,
    check_model_source,
    hub_miss_message,
)
from .trust import UntrustedHparamsError, fetch_and_check, weights_only_loads

# Names hyperparams.yaml refers to as ``multitask.inference.<name>``.
__all__ = [
    "MultitaskClassifier",
    "ModelFolderPretrainer",
    "TaskHead",
    "ExtendedHead",
    "encoder_from_config",
    "pad_batch",
]

DEFAULT_TOP_K = 3
# Each file alone unless asked: batching is faster, but a group-norm encoder's answers then
# depend on the padding (classify_files).
DEFAULT_BATCH_SIZE = 1


def encoder_from_config(config: dict, use_attention_mask=None) -> Wav2Vec2Encoder:
    """A randomly initialised :class:`Wav2Vec2Encoder` of the given architecture.

    The exported ``hyperparams.yaml`` builds its encoder this way: the architecture is
    written in the YAML and the trained weights arrive through the pretrainer, so
    loading never downloads the encoder the model was fine-tuned from.

    Parameters
    ----------
    config : dict
        A ``transformers`` wav2vec2 config as a dict (``Wav2Vec2Config.to_dict()``).
    use_attention_mask : bool or None
        As in :class:`Wav2Vec2Encoder`; ``None`` follows the config.

    Example
    -------
    >>> from multitask.model import tiny_config
    >>> encoder = encoder_from_config(tiny_config().to_dict())
    >>> encoder.num_layers, encoder.output_size
    (3, 32)
    """
    # Wav2Vec2Encoder reads its architecture from a folder; a config-only folder
    # gives a random initialisation (no weights are looked for, nothing is fetched).
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as fout:
            json.dump(config, fout)
        return Wav2Vec2Encoder(
            folder,
            save_path=folder,
            freeze_feature_extractor=True,
            apply_spec_augment=False,
            use_attention_mask=use_attention_mask,
        )


class ModelFolderPretrainer(Pretrainer):
    """SpeechBrain's ``Pretrainer`` whose ``paths`` may name files of the model itself.

    ``from_hparams`` fetches each loadable from the model's source, but only as
    ``<loadable>.ckpt``; any other file name needs a full ``source/file`` path, which
    would tie ``hyperparams.yaml`` to one folder or one repo id. Here a path without
    a ``/`` names a file at the root of the source being loaded, fetched with the
    same revision and cache settings, so the same folder loads from disk, from the
    Hub, or from a fork of the repo.

    Example
    -------
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> torch.save(torch.nn.Linear(2, 1).state_dict(), f"{folder}/layer.pt")
    >>> layer = torch.nn.Linear(2, 1)
    >>> pretrainer = ModelFolderPretrainer(loadables={"layer": layer}, paths={"layer": "layer.pt"})
    >>> _ = pretrainer.collect_files(default_source=folder)
    >>> pretrainer.load_collected()
    """

    def collect_files(self, default_source=None, **kwargs):
        if default_source is not None:
            for name, path in self.paths.items():
                if isinstance(path, str) and "/" not in path:
                    self.paths[name] = _in_source(default_source, path)
        return super().collect_files(default_source=default_source, **kwargs)


def _in_source(source, filename: str):
    """``source/filename`` for a folder, a repo id or a ``FetchSource``."""
    if isinstance(source, FetchSource):
        return FetchSource(source.FetchFrom, f"{source.path}/{filename}")
    return f"{os.fspath(source)}/{filename}"


def pad_batch(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D waveforms into ``[batch, samples]`` plus relative lengths.

    The same padding as training batches (SpeechBrain's ``batch_pad_right``).

    Example
    -------
    >>> batch, lens = pad_batch([torch.ones(4), torch.ones(2)])
    >>> batch.tolist(), lens.tolist()
    ([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]], [1.0, 0.5])
    """
    return batch_pad_right(wavs)


class MultitaskClassifier(Pretrained):
    """Spoken intent and speech emotion from one wav2vec2 pass.

    Load with :meth:`from_hparams` (the package installed) or with SpeechBrain's
    ``foreign_class(source, pymodule_file="custom_interface.py",
    classname="MultitaskClassifier")`` (SpeechBrain only).

    Every result holds, per task::

        {"label": "lost", "prob": 0.91,
         "top_k": [["lost", 0.91], ["block", 0.05], ...],
         "probs": {"activate_card": 0.001, ..., "lost": 0.91}}

    Example
    -------
    >>> model = MultitaskClassifier.from_hparams(source="org/name")  # doctest: +SKIP
    >>> result = model.classify_file("call.wav")                      # doctest: +SKIP
    >>> result["intent"]["label"], result["emotion"]["prob"]         # doctest: +SKIP
    ('block', 0.87)
    """

    MODULES_NEEDED = ["encoder", "heads"]
    HPARAMS_NEEDED = ["tasks", "label_encoders"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tasks = tuple(self.hparams.tasks or ())
        heads, encoders = set(self.mods.heads), set(self.hparams.label_encoders)
        unknown = [task for task in self.tasks if task not in heads or task not in encoders]
        if not self.tasks or unknown:  # a hand-edited `tasks:`; the message names the file
            raise BrokenModelError(
                f"hyperparams.yaml: tasks {list(self.tasks)} must name one or more of the tasks "
                f"with both a head and a label encoder ({', '.join(sorted(heads & encoders))})")
        # A view over the loaded modules: the training forward, shared, not copied.
        self.model = MultitaskModel(self.mods.encoder, {t: self.mods.heads[t] for t in self.tasks})
        self.model.eval()
        self.labels = {task: encoder_labels(self.hparams.label_encoders[task]) for task in self.tasks}
        self.min_samples = receptive_field(self.mods.encoder.config)
        for task in self.tasks:
            classes = self.model.heads[task].num_classes
            if classes != len(self.labels[task]):
                raise BrokenModelError(
                    f"label_encoder_{task}.txt: {len(self.labels[task])} labels, but the "
                    f"{task} head has {classes} outputs"
                )
        self._check_label_order()

    def _check_label_order(self) -> None:
        """Refuse label files whose order differs from the one the heads were trained
        with (recorded in ``heads.safetensors``; exports before it record none)."""
        pretrainer = getattr(self.hparams, "pretrainer", None)
        heads_file = (getattr(pretrainer, "paths", None) or {}).get("heads")
        if not heads_file or not os.path.isfile(heads_file):
            return  # built without fetching (e.g. in tests): nothing to compare with
        try:
            mismatch = label_mismatch(read_metadata(heads_file), self.labels)
        except ValueError as err:  # a hand-edited record that is not JSON
            raise BrokenModelError(f"heads.safetensors: its record of the labels cannot be "
                                   f"read ({err})") from err
        if mismatch:
            task, trained = mismatch
            listed = self.labels[task]
            index = next(i for i in range(max(len(listed), len(trained)))
                         if listed[i:i + 1] != trained[i:i + 1])

            def name(labels: list[str]) -> str:
                return repr(labels[index]) if index < len(labels) else "absent"

            raise BrokenModelError(
                f"label_encoder_{task}.txt does not match heads.safetensors: class {index} is "
                f"{name(listed)} in the label file but {name(trained)} for the {task} head as "
                f"trained ({len(trained)} classes); every prediction would carry another "
                "class's name. Restore both files from the same export."
            )

    @classmethod
    def from_hparams(cls, source, revision=None, token=None, trust_remote_code=False,
                     optimize="fp32", **kwargs):
        """Load an exported model from a local folder or a Hub repo id.

        ``hyperparams.yaml`` is code (its tags import and call what they name), so
        it is checked first: every callable it names must be one an exported model
        needs (:data:`multitask.trust.ALLOWED_TARGETS`), or nothing is built.
        Weights load without pickle (safetensors; ``torch.load`` is held to
        ``weights_only``). No Python file of the model is run.

        Parameters
        ----------
        source : str or os.PathLike
            Folder written by ``multitask export``, or a Hub repo id (``org/name``).
        revision : str, optional
            Branch, tag or commit to load from the Hub (default: ``main``). A commit
            sha pins exactly the files you reviewed.
        token : bool or str, optional
            Hub token for private repos (``True``: the stored login).
        trust_remote_code : bool
            Build whatever ``hyperparams.yaml`` names, unchecked. Only for a model
            you trust, pinned to the revision you reviewed.
        optimize : str or None
            CPU inference path (:func:`multitask.optimize.optimize_for_cpu`):
            ``"fp32"`` (default: the same arithmetic, reordered for speed),
            ``"int8"`` (dynamic int8 linear layers: faster, predictions may change
            slightly) or ``None`` (the modules as built, e.g. to train them further).
            Ignored on GPUs.
        **kwargs
            Passed to SpeechBrain's ``Pretrained.from_hparams`` (``savedir``,
            ``run_opts={"device": "cuda"}``, ``fetch_config`` ...).

        Raises
        ------
        multitask.source.ModelNotFoundError
            (a ``FileNotFoundError``) No model where ``source`` points: no such folder
            (and not a repo id), a folder without ``hyperparams.yaml``, or a repo,
            revision or file the Hub (or, offline, its cache) does not have; the message
            names which; for a folder, also one without a file the export writes.
        multitask.source.BrokenModelError
            (a ``ValueError``) A folder whose file is truncated, corrupt or not an
            export's, or a label file that does not match its head (another count, or
            another order than the one ``heads.safetensors`` records); the message
            names the file.
        multitask.trust.UntrustedHparamsError
            ``hyperparams.yaml`` names a callable outside the allow-list (and
            ``trust_remote_code`` is False); nothing of it was run.
        multitask.source.SavedirError
            ``savedir`` is a file, or holds files no loading put there (they would be
            replaced by links to the model's files).
        """
        if revision is not None or token is not None:
            if "fetch_config" in kwargs:
                raise TypeError("give revision/token either directly or in fetch_config, not both")
            # allow_updates: a savedir filled from another revision is refreshed, not reused.
            kwargs["fetch_config"] = FetchConfig(
                revision=revision, token=token or False, allow_updates=revision is not None
            )
        if isinstance(optimize, bool) or optimize not in (None, *METHODS):
            # Before loading, and on a GPU too, where the option is not used.
            raise ValueError(f"optimize must be 'fp32', 'int8', 'none' or None, not {optimize!r}")
        source = os.fspath(source)
        kind = check_model_source(source, kwargs.get("hparams_file", "hyperparams.yaml"),
                                  revision)
        if kind == URL and kwargs.get("savedir") is None:  # SpeechBrain's own words are terse
            raise SavedirError(f"{source}: a model at a web address is downloaded into a "
                               "savedir: give savedir=FOLDER (the command line takes a folder "
                               "or a Hub repo id)")
        remember_source = _refetch_if_savedir_holds_another(source, kind, revision, kwargs)
        try:
            if trust_remote_code:
                model = super().from_hparams(source=source, **kwargs)
            else:
                kwargs = fetch_and_check(source, kwargs)
                with weights_only_loads():
                    model = super().from_hparams(source=source, **kwargs)
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as err:
            if kind == FOLDER:
                raise
            raise ModelNotFoundError(hub_miss_message(source, revision, err)) from err
        except (ModelNotFoundError, UntrustedHparamsError):
            raise
        except BrokenModelError as err:  # from __init__, which names the file, not the source
            where = os.path.join(source, "") if kind == FOLDER else f"{source}: "
            raise BrokenModelError(f"{where}{err}") from err
        except Exception as err:
            failure = _folder_failure(source, err) if kind == FOLDER else None
            if failure is None:  # not a file of the folder (a device error, a bug): as raised
                raise
            raise failure from err
        remember_source()
        if optimize not in (None, "none") and str(model.device).startswith("cpu"):
            optimize_for_cpu(model, optimize)
        return model

    @torch.inference_mode()
    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None) -> dict:
        """Class probabilities ``{task: [batch, classes]}`` from one encoder pass.

        Parameters
        ----------
        wavs : torch.Tensor, NumPy array or list of equal-length tensors
            ``[batch, samples]`` (or ``[samples]``) at 16 kHz, each row normalised as
            :func:`multitask.audio.to_model_input` does, zero-padded.
        wav_lens : torch.Tensor or array, optional
            Relative lengths ``[batch]`` in (0, 1] (1.0 = the longest); default all 1.
        """
        wavs = as_tensor(wavs, "wavs")
        if wavs.ndim == 1:
            wavs = wavs.unsqueeze(0)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0] if wavs.ndim else 1)
        wav_lens = as_tensor(wav_lens, "wav_lens")
        check_waveforms(wavs, wav_lens, self.min_samples)
        wavs = wavs.to(self.device, torch.float32)
        wav_lens = wav_lens.to(self.device, torch.float32)
        with self.inference_ctx:
            logits = self.model(wavs, wav_lens)
        return {task: torch.softmax(logits[task].float(), dim=-1).cpu() for task in self.tasks}

    def classify_batch(self, wavs, wav_lens=None, top_k: int = DEFAULT_TOP_K) -> list[dict]:
        """One result per row of ``wavs`` (see :meth:`forward` for the input format)."""
        check_count(top_k, "top_k")
        probs = self.forward(wavs, wav_lens)
        batch = next(iter(probs.values())).shape[0]
        return [
            {task: self._describe(task, probs[task][row], top_k) for task in self.tasks}
            for row in range(batch)
        ]

    def classify_file(self, path, top_k: int = DEFAULT_TOP_K) -> dict:
        """Classify one audio file (any sample rate or channel count soundfile reads).

        Raises :class:`multitask.audio.AudioInputError` (naming the file) for a file
        that cannot be used.

        A file longer than ``LONG_FILE_SECONDS`` (45 s) is classified in windows of
        ``WINDOW_SECONDS`` (30 s), read in blocks so that memory does not grow with
        its length (:func:`multitask.audio.iter_windows`); each task's probabilities
        are the duration-weighted mean of the windows' probabilities, silent windows
        left out, and the result also holds ``"windows"`` (windows classified) and
        ``"silent_windows"``. Shorter files are one encoder pass, as in training.
        """
        check_count(top_k, "top_k")
        if probe_audio(path).duration > LONG_FILE_SECONDS:
            return self._classify_long_file(path, top_k)
        wav = load_audio(path)
        return self.classify_batch(wav.unsqueeze(0), top_k=top_k)[0]

    def _classify_long_file(self, path, top_k: int) -> dict:
        """Duration-weighted mean of per-window probabilities (see :meth:`classify_file`).

        Probabilities, not logits, are averaged: the result reads as the share of the
        recording's time each class holds, and one overconfident window cannot
        outvote the rest as it could through summed logits. Weighting by duration
        makes the last window (the remainder merged in: 15 to 45 s) count for its
        length, so the result does not depend on where the cuts fall.
        """
        totals, seconds, windows, silent = {}, 0.0, 0, 0
        for wav, window_seconds in iter_windows(path):
            if wav is None:
                silent += 1
                continue
            probs = self.forward(wav)
            for task in self.tasks:
                totals[task] = totals.get(task, 0.0) + probs[task][0].double() * window_seconds
            seconds += window_seconds
            windows += 1
        if not windows:  # each window silent or a held line, though the whole file is not
            raise AudioInputError(path, f"holds no sound in any of its {silent} windows of "
                                  f"{WINDOW_SECONDS:g} s (each is silent or a constant offset)")
        result = {task: self._describe(task, (totals[task] / seconds).float(), top_k)
                  for task in self.tasks}
        return {**result, "windows": windows, "silent_windows": silent}

    def classify_files(self, paths, batch_size: int = DEFAULT_BATCH_SIZE,
                       top_k: int = DEFAULT_TOP_K) -> list[dict]:
        """Classify many files; results come back in input order.

        By default each file is classified alone, with :meth:`classify_file`'s results.
        With ``batch_size`` above 1 files are batched shortest first, so each batch
        holds similar durations and little padding. That matters beyond speed:
        group-norm encoders (wav2vec2-base, the demo's) see padding in their
        normalisation statistics, so a padded row's probabilities differ from the same
        file alone, by enough to change the label of a short file padded to a long one.
        Layer-norm encoders, which take an attention mask, give the same results batched.

        Each result is ``{"file": path, <task>: {...}, ...}``, or
        ``{"file": path, "error": "<path>: <reason>"}`` for a file that cannot be
        read; the other files are still classified. Files longer than
        ``LONG_FILE_SECONDS`` are classified alone, in windows, as by
        :meth:`classify_file`.
        """
        check_count(batch_size, "batch_size")
        check_count(top_k, "top_k")
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError(f"classify_files takes a list of paths, not one path ({paths!r}); "
                            "classify_file classifies one file")
        paths = list(paths)
        results: list[dict | None] = [None] * len(paths)
        durations = {}
        for index, path in enumerate(paths):
            try:
                paths[index] = path = os.fspath(path)
            except TypeError:
                results[index] = {"file": repr(path), "error": f"{path!r}: not a file path"}
                continue
            try:
                durations[index] = probe_audio(path).duration
            except AudioInputError as err:
                results[index] = {"file": path, "error": str(err)}
        for index in [i for i, seconds in durations.items() if seconds > LONG_FILE_SECONDS]:
            del durations[index]
            try:
                results[index] = {"file": paths[index], **self._classify_long_file(paths[index], top_k)}
            except AudioInputError as err:
                results[index] = {"file": paths[index], "error": str(err)}
            except ValueError as err:  # the model's checks refused it: this file only
                results[index] = {"file": paths[index], "error": f"{paths[index]}: {err}"}
        order = sorted(durations, key=durations.__getitem__)  # stable: ties keep input order
        for start in range(0, len(order), batch_size):
            loaded = []
            for index in order[start:start + batch_size]:
                try:
                    loaded.append((index, load_audio(paths[index])))
                except AudioInputError as err:
                    results[index] = {"file": paths[index], "error": str(err)}
            for index, result in self._classify_loaded(loaded, paths, top_k):
                results[index] = {"file": paths[index], **result}
        return results

    def _classify_loaded(self, loaded: list, paths: list, top_k: int):
        """``(index, result)`` for loaded ``(index, wav)`` pairs, batched; a batch the
        model refuses is split so that only the files at fault get an ``error``."""
        if not loaded:
            return []
        try:
            wavs, wav_lens = pad_batch([wav for _, wav in loaded])
            return list(zip([index for index, _ in loaded],
                            self.classify_batch(wavs, wav_lens, top_k), strict=True))
        except ValueError as err:  # the model's input checks; a RuntimeError is no file's
            if len(loaded) == 1:
                index = loaded[0][0]
                return [(index, {"error": f"{paths[index]}: {err}"})]
            return [pair for item in loaded for pair in self._classify_loaded([item], paths, top_k)]

    def _describe(self, task: str, probs: torch.Tensor, top_k: int) -> dict:
        names = self.labels[task]
        values = probs.tolist()
        ranked = sorted(range(len(values)), key=lambda i: -values[i])
        best = ranked[0]
        return {
            "label": names[best],
            "prob": values[best],
            "top_k": [[names[i], values[i]] for i in ranked[:top_k]],
            "probs": dict(zip(names, values, strict=True)),
        }


def load_failure(source, err: Exception) -> str:
    """The one line a command shows when ``from_hparams(source)`` raised ``err``: a missing
    or broken model names its folder or file already; any other failure is named with
    the source and the error's kind.

    >>> load_failure("models/x", OSError("disk full"))
    'cannot load a multitask model from models/x: OSError: disk full'
    """
    if isinstance(err, (ModelNotFoundError, BrokenModelError, SavedirError)):
        return str(err)
    return f"cannot load a multitask model from {source}: {type(err).__name__}: {err}"


def _folder_failure(folder: str, err: Exception) -> Exception | None:
    """What a model folder that failed to load lacks, or which of its files is broken;
    None when every file reads (the failure is not the folder's).

    Loading fails deep in a library (``KeyError: 'starting_index'``, a safetensors header
    error) and names no file; this opens each file the way loading does and names the
    first one that fails.
    """
    named = getattr(err, "filename", None) or re.search(r"[^/\\\s]+\.(?:ckpt|safetensors|txt)\b",
                                                             str(err))
    if isinstance(err, FileNotFoundError) and named:
        # SpeechBrain names its own copy (savedir/encoder.ckpt); the folder's file is
        # encoder.safetensors, heads.safetensors or label_encoder_<task>.txt.
        named = os.path.basename(named if isinstance(named, str) else named.group(0))
        stem, extension = os.path.splitext(named)
        expected = named
        if extension in (".ckpt", ".safetensors", ".txt"):
            expected = f"{stem}.txt" if stem.startswith("label_encoder_") else f"{stem}.safetensors"
        present = os.path.join(folder, expected)
        if os.path.exists(present):  # safetensors reports EACCES as "No such file"
            why = "permission denied" if not os.access(present, os.R_OK) else str(err)
            return BrokenModelError(f"{present}: cannot be opened ({why})")
        return ModelNotFoundError(f"{folder}: {expected} is missing; an exported model folder "
                                  "needs every file `multitask export` writes")
    for name in sorted(os.listdir(folder)):
        problem = _file_problem(os.path.join(folder, name))
        if problem:
            return BrokenModelError(f"{os.path.join(folder, name)}: {problem}; the model "
                                    "cannot be loaded")
    mismatch = parameter_mismatch(err)
    if mismatch:  # every file reads, but the weights are not those of the model built
        module = re.search(r"loading state_dict for (\w+)", str(err))
        weights = ("encoder.safetensors" if module and module.group(1) == "Wav2Vec2Encoder"
                   else "heads.safetensors")
        return BrokenModelError(
            f"{os.path.join(folder, weights)}: does not fit the model hyperparams.yaml builds "
            f"({mismatch}); the files come from different exports, or hyperparams.yaml was "
            "edited")
    return None


def _file_problem(path: str) -> str | None:
    """Why an export folder's file cannot be read as loading reads it, or None."""
    name = os.path.basename(path)
    try:
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as tensors:
                tensors.keys()
        elif name.startswith("label_encoder_") and name.endswith(".txt"):
            from speechbrain.dataio.encoder import CategoricalEncoder

            CategoricalEncoder().load(path)
        elif name == "hyperparams.yaml":
            from ruamel.yaml import YAML

            with open(path, encoding="utf-8") as fin:
                data = YAML(typ="rt").load(fin)
            missing = [key for key in ("pretrainer", "tasks", "label_encoders")
                       if not isinstance(data, dict) or key not in data]
            if missing:
                return f"not an exported model's hyperparams (no {', '.join(missing)})"
    except Exception as err:  # noqa: BLE001 - any failure to parse is the diagnosis
        return f"cannot be read, truncated or corrupt ({type(err).__name__}: {err})"
    return None


def receptive_field(config) -> int:
    """Samples the encoder's convolutional front end reads for one output frame (400,
    25 ms at 16 kHz, for wav2vec2-base's kernels and strides).

    >>> from types import SimpleNamespace
    >>> receptive_field(SimpleNamespace(conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    ...                                 conv_stride=[5, 2, 2, 2, 2, 2, 2]))
    400
    """
    samples, hop = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        samples += (kernel - 1) * hop
        hop *= stride
    return samples


def as_tensor(value, name: str) -> torch.Tensor:
    """``value`` as a tensor: a tensor as it is, a NumPy array or a nested list of
    numbers converted; anything else (rows of different lengths, strings) refused."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        if isinstance(value, (list, tuple)) and value and all(
                isinstance(row, torch.Tensor) for row in value):
            return torch.stack(list(value))  # equal-length rows; else the message below
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor or array of numbers ([batch, samples] for "
                        "wavs; rows of different lengths: pad them with pad_batch), not "
                        f"{type(value).__name__}") from None


def check_waveforms(wavs: torch.Tensor, wav_lens: torch.Tensor, min_samples: int = 400) -> None:
    """Refuse model input that would give a label without meaning, or fail deep in
    torch: not ``[batch, samples]``, a row holding NaN or infinity, a row shorter than
    ``min_samples`` (the encoder's :func:`receptive_field`: one frame), or a row whose
    valid samples are not normalised as the model was trained (raw integer samples, a
    level far above unit variance) or hold no sound. Files are held to ``MIN_SECONDS`` by
    :func:`multitask.audio.load_audio`, a longer floor.

    >>> noise = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    >>> check_waveforms(noise, torch.tensor([1.0, 0.5]))
    >>> check_waveforms(torch.full((1, 16000), float("nan")), torch.ones(1))
    Traceback (most recent call last):
    ...
    ValueError: row 0 of the batch holds NaN or infinite samples
    >>> check_waveforms(noise, torch.tensor([1.0, 0.001]))
    Traceback (most recent call last):
    ...
    ValueError: row 1 of the batch is 16 samples long; the encoder reads 400 for one frame
    >>> check_waveforms(noise * 0.1, torch.ones(2))  # a quiet recording, normalised
    >>> check_waveforms(noise * 1000, torch.ones(2))
    Traceback (most recent call last):
    ...
    ValueError: row 0 of the batch is not normalised (mean ..., standard deviation 1e+03): ...
    """
    if wavs.ndim != 2 or wavs.shape[0] == 0:
        raise ValueError(f"wavs must be [batch, samples] (or [samples]) at 16 kHz, with a row "
                         f"or more, not of shape {tuple(wavs.shape)}")
    if wavs.dtype == torch.bool or wavs.is_complex():
        raise ValueError(f"wavs must hold real sample values, not {wavs.dtype}")
    if wav_lens.shape != (wavs.shape[0],):
        raise ValueError(f"wav_lens must hold one relative length per row ({wavs.shape[0]}), "
                         f"not shape {tuple(wav_lens.shape)}")
    lens = wav_lens.double()
    if not (torch.isfinite(lens).all() and (lens > 0).all() and (lens <= 1).all()):
        raise ValueError("wav_lens must be relative lengths in (0, 1] (1.0: the longest row), "
                         f"not {wav_lens.tolist()}")
    finite = torch.isfinite(wavs).all(dim=1)
    if not finite.all():
        raise ValueError(f"row {int((~finite).nonzero()[0])} of the batch holds NaN or "
                         "infinite samples")
    samples = torch.round(wav_lens.float().cpu() * wavs.shape[1]).long()
    short = (samples < min_samples).nonzero()
    if len(short):
        row = int(short[0])
        raise ValueError(f"row {row} of the batch is {int(samples[row])} samples long; the "
                         f"encoder reads {min_samples} for one frame")
    for row, length in enumerate(samples.tolist()):
        valid = wavs[row, :length].detach().cpu().double()
        mean, std = float(valid.mean()), float(valid.std(unbiased=False))
        # Not a lower bound of 1: normalise() leaves quiet recordings below unit variance.
        if abs(mean) > 0.1 or std > 1.25:
            raise ValueError(
                f"row {row} of the batch is not normalised (mean {mean:.3g}, standard "
                f"deviation {std:.3g}): rows are zero-mean waveforms of unit variance at "
                "most, as multitask.audio.to_model_input makes them")
        if std < 1e-5:
            raise ValueError(f"row {row} of the batch holds no sound (standard deviation "
                             f"{std:.3g}); multitask.audio.to_model_input refuses silence")


def check_savedir(savedir, filled_by_loading: bool) -> None:
    """Refuse a ``savedir`` that loading would write over what is not its own: a file,
    or a folder holding files and folders (not links) that no loading put there, such
    as another model, a training run or the user's files. Loading links each model
    file into ``savedir``, replacing a file of the same name."""
    if os.path.exists(savedir) and not os.path.isdir(savedir):
        raise SavedirError(f"savedir {savedir}: a file, not a folder")
    if filled_by_loading or not os.path.isdir(savedir):
        return
    own = sorted(entry.name for entry in os.scandir(savedir) if not entry.is_symlink())
    if own:
        shown = ", ".join(own[:5]) + (", ..." if len(own) > 5 else "")
        raise SavedirError(f"savedir {savedir} holds files that loading did not put there "
                           f"({shown}); loading writes links to the model's files there, over "
                           "any of the same name: give a new or empty savedir, or one loading "
                           "filled")


def _refetch_if_savedir_holds_another(source: str, kind: str, revision, kwargs: dict):
    """Make ``from_hparams`` refresh a ``savedir`` filled from another source.

    SpeechBrain's fetch uses a file already in ``savedir`` as it is, so loading model
    B into the ``savedir`` that model A was loaded into would silently give A. The
    source (and revision) a ``savedir`` was filled from is recorded in it; when it is
    not this one, or unknown, every file is fetched again (``overwrite``: a local
    source is re-linked, a Hub file comes from the Hub cache). A ``savedir`` that is the
    model folder itself is dropped from ``kwargs`` (loaded as without one, so no links
    are written among the model's files). ``kind`` is
    :func:`multitask.source.check_model_source`'s answer for ``source``. Returns the
    function that records this source once loading succeeded.
    """
    savedir = kwargs.get("savedir")
    if savedir is not None and not os.fspath(savedir).strip():
        # SpeechBrain would read it as the current folder, and write (and read) there.
        raise SavedirError("savedir is an empty path: give a folder, or leave it out")
    into_itself = kind == FOLDER and os.path.isdir(savedir or "") \
        and os.path.samefile(source, savedir)
    if into_itself:  # loaded as without a savedir: no links written into the model's folder
        kwargs["savedir"] = None
    if savedir is None or into_itself:
        return lambda: None  # nothing to refresh, and nothing to write into the model's folder
    identity = f"{os.path.abspath(source) if kind == FOLDER else source}@{revision or ''}"
    record = os.path.join(os.fspath(savedir), SAVEDIR_SOURCE_FILE)
    held = None
    if os.path.isfile(record):
        with open(record, encoding="utf-8") as fin:
            held = fin.read()
    check_savedir(savedir, filled_by_loading=held is not None)
    if held != identity and os.path.isdir(savedir) and os.listdir(savedir):
        config = kwargs.get("fetch_config") or FetchConfig()
        kwargs["fetch_config"] = dataclasses.replace(config, overwrite=True)

    def remember():
        with open(record, "w", encoding="utf-8") as fout:
            fout.write(identity)

    return remember
