"""A training run's best checkpoint as one model folder (``multitask export``).

    multitask export --from results/train/1986 --out exported/     # best checkpoint -> folder

An export folder holds only what loading needs, and nothing of the machine that
wrote it (no absolute path, no training data, no logs):

``hyperparams.yaml``
    modules, encoder architecture (wav2vec2 config, inline) and pretrainer, for
    :class:`multitask.inference.MultitaskClassifier`
``encoder.safetensors``, ``heads.safetensors``
    the checkpoint's weights; safetensors because SpeechBrain's ``Pretrainer``
    loads them through a custom hook (``safetensors.torch.load_model``: strict,
    no pickle)
``label_encoder_<task>.txt``
    SpeechBrain ``CategoricalEncoder`` files, one per task
``custom_interface.py``
    generated from ``multitask/inference.py`` with the pieces of the package it
    uses inlined, for ``foreign_class`` without the package
    (:mod:`multitask.interface_source`)
``README.md``
    the model card, rendered from the top-level ``hub_card.md`` with the measured
    results of the exported checkpoint (:mod:`multitask.card`)

:func:`export_model` writes the folder beside its destination and renames it into place
after :func:`verify_export` has loaded it back as users will. :mod:`multitask.hub`
pushes it.

Heavy libraries (torch, SpeechBrain, huggingface_hub) are imported inside the
functions that use them, so ``multitask --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import string
import tempfile
from pathlib import Path

from . import __version__
from .card import DEFAULT_CARD_TEMPLATE, DEFAULT_LICENSE, render_card
from .class_bias import read_record as read_class_bias
from .head_labels import encoder_labels, heads_metadata
from .interface_source import INTERFACE_FILE, interface_source
from .source import SAVEDIR_SOURCE_FILE

HPARAMS_FILE = "hyperparams.yaml"
CARD_FILE = "README.md"
WEIGHTS_FILES = {"encoder": "encoder.safetensors", "heads": "heads.safetensors"}
EXPORT_FILES = (HPARAMS_FILE, *WEIGHTS_FILES.values(), INTERFACE_FILE, CARD_FILE)
LABEL_FILE_RE = re.compile(r"label_encoder_[A-Za-z0-9_]+\.txt")

# The exported model must reproduce the training-time model: same weights, same
# forward, so only float reordering separates them.
VERIFY_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The training run cannot be exported, or the export does not load back identically."""


def export_model(train_output_folder, out_dir, *, checkpoint=None, repo_id=None,
                 model_name=None, datasets=None, license=None, language="en",
                 card_template=None, overwrite=False, verify=True) -> Path:
    """Export a training run's best checkpoint as a loadable, pushable model folder.

    Parameters
    ----------
    train_output_folder : str or Path
        The recipe's ``output_folder`` (holds ``hyperparams.yaml``, ``save/``,
        ``test_metrics.json``).
    out_dir : str or Path
        Folder to create. It is written beside itself first and renamed into place,
        so it is either complete or absent.
    checkpoint : str, optional
        A checkpoint folder name (``CKPT+epoch-0004``) instead of the best by the
        run's ``best_metric``.
    repo_id : str, optional
        Used in the card's usage snippets (default: a placeholder).
    model_name, datasets, license, language : optional
        Model card fields; ``datasets`` defaults to the corpora the run prepared, and
        ``license`` to :func:`card_license`'s choice.
    card_template : str or Path, optional
        Card template (default: the repository's ``hub_card.md``).
    overwrite : bool
        Replace an existing ``out_dir``.
    verify : bool
        Load the folder back with :class:`MultitaskClassifier` and check it gives the
        training-time model's probabilities (within ``VERIFY_TOLERANCE``) and holds no
        absolute path of this machine. Either way, the checkpoint is first loaded into
        the model the run's settings describe (:func:`checkpoint_model`), so weights that
        do not fit them are refused before anything is written.

    Returns
    -------
    Path
        ``out_dir``.
    """
    run = Path(train_output_folder)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    check_replaceable(out, run)
    if is_exported_model(run):
        raise ExportError(f"{run}: an exported model, not a training run; export takes the "
                          "output_folder of a training run (its hyperparams.yaml and save/)")
    template = Path(card_template) if card_template else DEFAULT_CARD_TEMPLATE
    if not template.is_file():
        raise ExportError(f"model card template not found: {template}")
    hparams = load_training_hparams(run)
    save_folder = _save_folder(run, hparams)
    from .data import label_encoder_path, load_label_encoders
    from .manifest import TASKS

    tasks = list(hparams.get("tasks") or TASKS)

    missing = [label_encoder_path(save_folder, task) for task in tasks
               if not os.path.isfile(label_encoder_path(save_folder, task))]
    if missing:
        raise ExportError(f"{run}: not a complete training run (missing {', '.join(missing)})")
    encoders = load_label_encoders(save_folder, tasks)
    ckpt = select_checkpoint(save_folder, hparams.get("best_metric", "mean_accuracy"), checkpoint)
    test_metrics = read_test_metrics(run, ckpt)
    lineage = read_lineage(run)
    class_bias = read_class_bias(run, ckpt)
    license = license or card_license(hparams, lineage)
    # Before anything is written, and with --no-verify too: the export's hyperparams.yaml
    # comes from the run's, so weights that do not fit it would make an export that
    # cannot load.
    reference = checkpoint_model(hparams, encoders, ckpt)

    with staged_folder(out, replace=overwrite) as staging:
        write_weights(ckpt, staging, {task: encoder_labels(encoders[task]) for task in tasks})
        for task in tasks:
            shutil.copyfile(label_encoder_path(save_folder, task),
                            staging / os.path.basename(label_encoder_path("", task)))
        (staging / HPARAMS_FILE).write_text(
            inference_hparams(hparams, encoders, ckpt.path.name), encoding="utf-8")
        (staging / INTERFACE_FILE).write_text(interface_source(), encoding="utf-8")
        card = render_card(
            hparams, encoders, ckpt, test_metrics, repo_id=repo_id, model_name=model_name,
            datasets=datasets, license=license, language=language, template=template,
            chosen_by_name=checkpoint is not None, lineage=lineage, class_bias=class_bias,
        )
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        # Cheap, and about what a push would publish: with --no-verify too.
        _check_no_machine_paths(staging, [run, out, Path.cwd(), Path.home()])
        _check_interface_imports(staging / INTERFACE_FILE)
        if verify:
            verify_export(staging, reference, encoders)
    return out


def export_file_names(folder) -> list[str]:
    """The names of an export folder's own files (``EXPORT_FILES`` and its label
    encoders): what ``multitask push`` uploads and ``multitask calibrate`` copies.

    Raises :class:`ExportError`, naming what is missing, for a folder that is not a
    complete export.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: not a folder")
    missing = [name for name in EXPORT_FILES if not (folder / name).is_file()]
    labels = sorted(p.name for p in folder.iterdir()
                    if p.is_file() and LABEL_FILE_RE.fullmatch(p.name))
    if missing or not labels:
        what = ", ".join(missing + ([] if labels else ["label_encoder_<task>.txt"]))
        raise ExportError(f"{folder}: not a complete export (missing {what}); run "
                          "`multitask export`")
    return [*EXPORT_FILES, *labels]


def is_exported_model(folder) -> bool:
    """Whether ``folder`` holds a model :func:`export_model` wrote (its heads' weights and
    a ``hyperparams.yaml`` that builds :mod:`multitask.inference`'s interface)."""
    folder = Path(folder)
    hparams = folder / HPARAMS_FILE
    return ((folder / WEIGHTS_FILES["heads"]).is_file() and hparams.is_file()
            and "multitask.inference" in hparams.read_text(encoding="utf-8", errors="replace"))


def check_replaceable(out: Path, run: Path) -> None:
    """Refuse to replace an existing ``out`` that is not an earlier export: a file, the
    training run (or a folder holding it), or any other folder with files in it. An
    export is replaced whole, so anything else there would be deleted."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"{out}: a file, not a folder (give a new output folder)")
    if out.resolve() == run.resolve() or out.resolve() in run.resolve().parents:
        raise ExportError(f"{out}: holds the training run {run}; replacing it would delete the "
                          "run (give another output folder)")
    if any(out.iterdir()) and not is_exported_model(out):
        raise ExportError(f"{out}: not an exported model, so it is not replaced: everything in "
                          "it would be deleted (give another output folder)")
    foreign = sorted(path.name for path in out.iterdir() if not _written_with_export(path))
    if foreign:
        raise ExportError(f"{out}: an exported model, but it also holds {', '.join(foreign)}, "
                          "which replacing it would delete (move them, or give another "
                          "output folder)")


def _written_with_export(path: Path) -> bool:
    """Whether a file in an export folder is the export's, or was put there by loading the
    folder (SpeechBrain's ``.ckpt`` links, the source record, Python's cache of
    ``custom_interface.py`` when ``foreign_class`` imported it)."""
    name = path.name
    return (name in EXPORT_FILES or bool(LABEL_FILE_RE.fullmatch(name))
            or (name.endswith(".ckpt") and path.is_symlink())
            or name in (SAVEDIR_SOURCE_FILE, "__pycache__"))


@contextlib.contextmanager
def staged_folder(out, replace: bool = False):
    """A fresh folder beside ``out`` to build it in: renamed to ``out`` when the block
    ends, removed when it fails or is interrupted, so ``out`` is whole or absent. Each
    call gets its own (two runs writing one ``out`` do not share a half-built folder).
    An ``out`` that exists by then is replaced when ``replace``, else an
    :class:`ExportError`.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "model"
    >>> with staged_folder(out) as folder:
    ...     _ = (folder / "weights").write_text("w")
    >>> sorted(p.name for p in out.iterdir()), [p.name for p in out.parent.iterdir()]
    (['weights'], ['model'])
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    staging.chmod(0o755)  # mkdtemp's 0700 would follow the folder into place
    try:
        yield staging
        if out.exists():
            if not replace:
                raise ExportError(f"{out}: appeared while it was being written; nothing "
                                  "was replaced (give a new output folder)")
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_training_hparams(run: Path) -> dict:
    """The run's ``hyperparams.yaml`` (as SpeechBrain saved it, overrides applied), loaded.

    Loading builds the training encoder, so its config and settings are exactly the
    ones training used.
    """
    from hyperpyyaml import load_hyperpyyaml

    path = run / "hyperparams.yaml"
    if not path.is_file():
        raise ExportError(f"{run}: no hyperparams.yaml (is this a training output folder?)")
    try:
        with open(path, encoding="utf-8") as fin:
            return load_hyperpyyaml(fin)
    except Exception as err:
        raise ExportError(
            f"{path}: could not rebuild the training setup ({type(err).__name__}: {err}); "
            "relative paths in it (e.g. encoder_source) are read from the current folder"
        ) from err


def _save_folder(run: Path, hparams: dict) -> Path:
    # The run folder's own save/ first: the recorded path is stale if the run was moved.
    inside = run / "save"
    return inside if inside.is_dir() else Path(hparams.get("save_folder") or inside)


def select_checkpoint(save_folder: Path, best_metric: str, name=None):
    """The checkpoint to export: ``name`` if given, else the best by ``best_metric``.

    Only complete checkpoints are listed; a save still in staging is not touched.
    """
    from .checkpoints import AtomicCheckpointer

    checkpointer = AtomicCheckpointer(save_folder)
    if name is not None:
        wanted = Path(name).name
        for ckpt in checkpointer.list_checkpoints():
            if ckpt.path.name == wanted:
                return ckpt
        raise ExportError(f"{save_folder}: no checkpoint named {wanted}")
    try:
        ckpt = checkpointer.find_checkpoint(max_key=best_metric)
    except KeyError as err:
        raise ExportError(f"{save_folder}: checkpoints lack the metric {best_metric!r}") from err
    if ckpt is None:
        raise ExportError(f"{save_folder}: no checkpoint to export")
    return ckpt


def read_test_metrics(run: Path, ckpt) -> dict | None:
    """``test_metrics.json`` if it was measured on ``ckpt``, else None."""
    path = run / "test_metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text(encoding="utf-8"))
    return metrics if metrics.get("checkpoint") == ckpt.path.name else None


def card_license(hparams: dict, lineage: dict | None) -> str:
    """The license an export's card states when none is given: the run's
    ``model_license``; for a fine-tuning run without one, its parent card's (recorded
    in ``finetune.json``; ``unknown`` when that card could not be read: never a more
    permissive guess); else ``apache-2.0``, the package's own.

    >>> card_license({"model_license": "cc-by-nc-4.0"}, None)
    'cc-by-nc-4.0'
    >>> card_license({}, {"parent_license": None}), card_license({}, None)
    ('unknown', 'apache-2.0')
    """
    if hparams.get("model_license"):
        return str(hparams["model_license"])
    if lineage is not None:
        return lineage.get("parent_license") or "unknown"
    return DEFAULT_LICENSE


def read_lineage(run: Path) -> dict | None:
    """``finetune.json`` of a fine-tuning run (parent, labels, retention), else None."""
    path = run / "finetune.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_weights(ckpt, folder: Path, labels: dict[str, list[str]]) -> None:
    """Checkpoint ``.ckpt`` state dicts → ``.safetensors`` (read with ``weights_only``);
    the heads file also records each task's ``labels`` in class-index order
    (:mod:`multitask.head_labels`)."""
    import torch
    from safetensors.torch import save

    for name, filename in WEIGHTS_FILES.items():
        state = torch.load(ckpt.paramfiles[name], map_location="cpu", weights_only=True)
        metadata = heads_metadata(labels) if name == "heads" else {"format": "pt"}
        # Written as bytes so the file gets the usual permissions (save_file's are 0600).
        (folder / filename).write_bytes(sorted_header(
            save({k: v.contiguous() for k, v in state.items()}, metadata=metadata)))


def sorted_header(data: bytes) -> bytes:
    """A safetensors file with its JSON header's keys sorted: safetensors writes the
    metadata in hash order, which changes between processes, so the same weights would
    be other bytes (and a re-push of an unchanged export a new Hub commit).

    >>> import torch; from safetensors.torch import load, save
    >>> data = save({"w": torch.ones(2)}, metadata={"b": "1", "a": "2"})
    >>> fixed = sorted_header(data)
    >>> b'{"__metadata__":{"a":"2","b":"1"}' in fixed, load(fixed)["w"].tolist()
    (True, [1.0, 1.0])
    """
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:  # not expected (the same JSON, reordered); keep the file as written
        return data
    return data[:8] + text + b" " * (size - len(text)) + data[8 + size:]


def inference_hparams(hparams: dict, encoders: dict, checkpoint_name: str) -> str:
    """The export's ``hyperparams.yaml``: settings taken from the training run."""
    import yaml

    from .train import head_options

    encoder = hparams["encoder"]
    config = encoder.config.to_dict()
    # Where the config was read from (a path of this machine) and the writer's version
    # are not architecture.
    for key in ("_name_or_path", "transformers_version"):
        config.pop(key, None)
    options = head_options(hparams, encoders)
    tasks = list(encoders)
    heads = "".join(
        f"        {task}: !new:multitask.inference.{head_class(options[task])}\n"
        f"            num_layers: {encoder.num_layers}\n"
        f"            input_size: {encoder.output_size}\n"
        f"            num_classes: {len(enc.lab2ind)}\n"
        + "".join(f"            {key}: {_yaml_value(value)}\n"
                  for key, value in sorted(options[task].items()))
        for task, enc in encoders.items()
    )
    label_file = {task: f"label_encoder_{task}" for task in tasks}
    return HPARAMS_TEMPLATE.substitute(
        version=__version__,
        checkpoint=checkpoint_name,
        tasks=json.dumps(tasks),
        encoder_config=_indent(yaml.safe_dump(config, sort_keys=True, default_flow_style=None)),
        use_attention_mask=str(bool(encoder.use_attention_mask)).lower(),
        heads=heads,
        label_encoders="".join(
            f"    {t}: !new:speechbrain.dataio.encoder.CategoricalEncoder\n" for t in tasks),
        label_loadables="".join(
            f"        {label_file[t]}: !ref <label_encoders[{t}]>\n" for t in tasks),
        label_paths="".join(f"        {label_file[t]}: {label_file[t]}.txt\n" for t in tasks),
        label_hooks="".join(
            f"        {label_file[t]}: !name:speechbrain.dataio.encoder.CategoricalEncoder.load\n"
            for t in tasks),
    )


def head_class(options: dict) -> str:
    """The head class a task's options build (see :func:`multitask.model.build_heads`)."""
    return "ExtendedHead" if "kept" in options else "TaskHead"


def _yaml_value(value) -> str:
    # A nested design (an extended head's two heads) as a JSON flow mapping, which YAML reads.
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


HPARAMS_TEMPLATE = string.Template("""\
# ############################################################################
# Inference hyperparameters for multitask.inference.MultitaskClassifier, written
# by `multitask export` (multitask $version) from checkpoint $checkpoint.
#   MultitaskClassifier.from_hparams(source=<this folder or its Hub repo id>)
#   foreign_class(source=..., pymodule_file="custom_interface.py",
#                 classname="MultitaskClassifier")        # SpeechBrain only
# ############################################################################

tasks: $tasks

# The wav2vec2 architecture (transformers Wav2Vec2Config). The encoder is built
# from it with random weights; the trained ones come from encoder.safetensors.
encoder_config:
$encoder_config
use_attention_mask: $use_attention_mask
encoder: !apply:multitask.inference.encoder_from_config
    config: !ref <encoder_config>
    use_attention_mask: !ref <use_attention_mask>

# One head per task, sized by that task's label encoder.
heads: !new:torch.nn.ModuleDict
    modules:
$heads
label_encoders:
$label_encoders
modules:
    encoder: !ref <encoder>
    heads: !ref <heads>

# Paths are file names inside the folder or repo being loaded (whatever it is
# called, at whatever revision). Weights load strictly, without pickle.
pretrainer: !new:multitask.inference.ModelFolderPretrainer
    loadables:
        encoder: !ref <encoder>
        heads: !ref <heads>
$label_loadables    paths:
        encoder: encoder.safetensors
        heads: heads.safetensors
$label_paths    custom_hooks:
        encoder: !name:safetensors.torch.load_model
        heads: !name:safetensors.torch.load_model
$label_hooks""")


def _indent(text: str, prefix: str = "    ") -> str:
    return "".join(prefix + line for line in text.splitlines(keepends=True)).rstrip("\n")


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def checkpoint_model(hparams: dict, encoders: dict, ckpt):
    """The training-time model: built as the run's ``hyperparams.yaml`` says, with the
    checkpoint's weights, on the CPU, in eval mode.

    Raises :class:`ExportError`, naming the weights file and what differs, when the
    weights do not fit that model (settings edited after training).
    """
    import torch

    from .checkpoints import parameter_mismatch
    from .train import build_model

    model = build_model(hparams, encoders)
    for name in WEIGHTS_FILES:
        state = torch.load(ckpt.paramfiles[name], map_location="cpu", weights_only=True)
        try:
            getattr(model, name).load_state_dict(state)
        except RuntimeError as err:
            mismatch = parameter_mismatch(err)
            if mismatch is None:
                raise
            raise ExportError(
                f"{ckpt.paramfiles[name]}: these weights do not fit the model the run's "
                f"hyperparams.yaml describes ({mismatch}); was it edited after training? "
                "Export with the settings the run was trained with") from None
    return model.to("cpu").eval()


def verify_export(folder: Path, reference, encoders: dict) -> float:
    """Load ``folder`` as users will and compare with ``reference``, the training-time
    model (:func:`checkpoint_model`).

    Returns the largest probability difference; raises :class:`ExportError` above
    ``VERIFY_TOLERANCE`` or on different labels.
    """
    import torch

    from .inference import MultitaskClassifier

    # As built (optimize=None): the check is of the exported weights, not of a CPU rewrite.
    exported = MultitaskClassifier.from_hparams(source=str(folder), run_opts={"device": "cpu"},
                                                optimize=None)

    generator = torch.Generator().manual_seed(0)
    wavs = torch.randn(2, 16000, generator=generator)
    wav_lens = torch.tensor([1.0, 0.7])
    with torch.inference_mode():
        expected = {t: torch.softmax(x, dim=-1) for t, x in reference(wavs, wav_lens).items()}
    got = exported(wavs, wav_lens)
    worst = max((expected[t] - got[t]).abs().max().item() for t in encoders)
    if worst > VERIFY_TOLERANCE:
        raise ExportError(f"{folder}: the exported model differs from the training-time model "
                          f"(max probability difference {worst:.3g})")
    for task, encoder in encoders.items():
        if exported.labels[task] != encoder_labels(encoder):
            raise ExportError(f"{folder}: {task} labels differ from the training run's")
    return worst


def _check_interface_imports(path: Path) -> None:
    """Import the generated interface the way ``foreign_class`` does (from a copy, so no
    ``__pycache__`` lands in the export)."""
    import tempfile

    from speechbrain.utils.superpowers import import_from_path

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / path.name
        shutil.copyfile(path, copy)
        try:
            module = import_from_path(copy)
        except Exception as err:
            raise ExportError(f"{path.name} does not import: {type(err).__name__}: {err}") from err
    if not hasattr(module, "MultitaskClassifier"):
        raise ExportError(f"{path.name} defines no MultitaskClassifier")


def _check_no_machine_paths(folder: Path, machine_paths) -> None:
    # Each path as resolved, and as given when it names a folder (a bare word such as
    # "trained", a relative run folder's name, would match ordinary text: "Pretrained").
    needles = {str(Path(p).resolve()) for p in machine_paths} | {
        str(p) for p in machine_paths if os.path.isabs(str(p)) or os.sep in str(p).strip(os.sep)}
    needles = {n for n in needles if len(n) > 1}
    for path in folder.iterdir():
        if path.suffix == ".safetensors":
            continue  # binary weights; their only metadata is written above
        text = path.read_text(encoding="utf-8")
        for needle in needles:
            if needle in text:
                raise ExportError(f"{path.name} contains a path of this machine: {needle}")
