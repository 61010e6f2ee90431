"""The trained model as one folder, on the Hugging Face Hub, and from the command line.

    multitask export --from results/train/1986 --out exported/     # best checkpoint -> folder
    multitask push --model exported/ --repo-id org/name            # folder -> Hub repo
    multitask predict --model org/name --json call1.wav call2.wav  # folder or repo -> labels

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
``README.md``
    the model card, rendered from the top-level ``hub_card.md`` with the measured
    results of the exported checkpoint

Heavy libraries (torch, SpeechBrain, huggingface_hub) are imported inside the
functions that use them, so ``multitask --help`` stays fast.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import shutil
import string
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# multitask/hub_card.md links to the top-level hub_card.md, so a wheel carries the card.
DEFAULT_CARD_TEMPLATE = PACKAGE_DIR / "hub_card.md"

HPARAMS_FILE = "hyperparams.yaml"
INTERFACE_FILE = "custom_interface.py"
CARD_FILE = "README.md"
WEIGHTS_FILES = {"encoder": "encoder.safetensors", "heads": "heads.safetensors"}
EXPORT_FILES = (HPARAMS_FILE, *WEIGHTS_FILES.values(), INTERFACE_FILE, CARD_FILE)
LABEL_FILE_RE = re.compile(r"label_encoder_[A-Za-z0-9_]+\.txt")

# The exported model must reproduce the training-time model: same weights, same
# forward, so only float reordering separates them.
VERIFY_TOLERANCE = 1e-5
PLACEHOLDER_REPO_ID = "your-org/your-model"
TASK_TITLES = {"intent": "Intent classification", "emotion": "Emotion recognition"}
TASK_TAGS = {"intent": "intent-classification", "emotion": "speech-emotion-recognition"}


class ExportError(RuntimeError):
    """The training run cannot be exported, or the export does not load back identically."""


class HubError(RuntimeError):
    """A push that could not happen; the message is one line meant for the user."""


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def export_model(train_output_folder, out_dir, *, checkpoint=None, repo_id=None,
                 model_name=None, datasets=None, license="apache-2.0", language="en",
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
        Model card fields; ``datasets`` defaults to the corpora the run prepared.
    card_template : str or Path, optional
        Card template (default: the repository's ``hub_card.md``).
    overwrite : bool
        Replace an existing ``out_dir``.
    verify : bool
        Load the folder back with :class:`MultitaskClassifier` and check it gives the
        training-time model's probabilities (within ``VERIFY_TOLERANCE``) and holds no
        absolute path of this machine.

    Returns
    -------
    Path
        ``out_dir``.
    """
    run = Path(train_output_folder)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    hparams = load_training_hparams(run)
    save_folder = _save_folder(run, hparams)
    from .data import label_encoder_path, load_label_encoders
    from .manifest import TASKS

    tasks = list(hparams.get("tasks") or TASKS)

    encoders = load_label_encoders(save_folder, tasks)
    ckpt = select_checkpoint(save_folder, hparams.get("best_metric", "mean_accuracy"), checkpoint)
    test_metrics = read_test_metrics(run, ckpt)
    lineage = read_lineage(run)

    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write_weights(ckpt, staging)
        for task in tasks:
            shutil.copyfile(label_encoder_path(save_folder, task),
                            staging / os.path.basename(label_encoder_path("", task)))
        (staging / HPARAMS_FILE).write_text(
            inference_hparams(hparams, encoders, ckpt.path.name), encoding="utf-8")
        (staging / INTERFACE_FILE).write_text(interface_source(), encoding="utf-8")
        card = render_card(
            hparams, encoders, ckpt, test_metrics, repo_id=repo_id, model_name=model_name,
            datasets=datasets, license=license, language=language, template=card_template,
            chosen_by_name=checkpoint is not None, lineage=lineage,
        )
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        if verify:
            verify_export(staging, hparams, encoders, ckpt,
                          machine_paths=[run, out, Path.cwd(), Path.home()])
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


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


def read_lineage(run: Path) -> dict | None:
    """``finetune.json`` of a fine-tuning run (parent, labels, retention), else None."""
    path = run / "finetune.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_weights(ckpt, folder: Path) -> None:
    """Checkpoint ``.ckpt`` state dicts → ``.safetensors`` (read with ``weights_only``)."""
    import torch
    from safetensors.torch import save

    for name, filename in WEIGHTS_FILES.items():
        state = torch.load(ckpt.paramfiles[name], map_location="cpu", weights_only=True)
        # Written as bytes so the file gets the usual permissions (save_file's are 0600).
        (folder / filename).write_bytes(
            save({k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt"}))


def inference_hparams(hparams: dict, encoders: dict, checkpoint_name: str) -> str:
    """The export's ``hyperparams.yaml``: settings taken from the training run."""
    import yaml

    encoder = hparams["encoder"]
    config = encoder.config.to_dict()
    # Where the config was read from (a path of this machine) and the writer's version
    # are not architecture.
    for key in ("_name_or_path", "transformers_version"):
        config.pop(key, None)
    head_options = dict(getattr(hparams["head"], "keywords", {}))
    tasks = list(encoders)
    heads = "".join(
        f"        {task}: !new:multitask.inference.TaskHead\n"
        f"            num_layers: {encoder.num_layers}\n"
        f"            input_size: {encoder.output_size}\n"
        f"            num_classes: {len(enc.lab2ind)}\n"
        + "".join(f"            {key}: {value}\n" for key, value in sorted(head_options.items()))
        for task, enc in encoders.items()
    )
    label_file = {task: f"label_encoder_{task}" for task in tasks}
    return HPARAMS_TEMPLATE.substitute(
        version=_package_version(),
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


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("multitask-speech")
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------
# custom_interface.py: multitask/inference.py with what it imports inlined
# --------------------------------------------------------------------------


def interface_source(module: str = "inference") -> str:
    """The text of the ``custom_interface.py`` shipped with an export.

    ``multitask/<module>.py`` verbatim (minus its docstring and its imports from the
    package), preceded by the top-level definitions it imports from other package
    modules, plus, transitively, the definitions and imports those use, each copied
    from the real module's source. Then a few lines that let the file stand in for
    ``multitask.inference``, the name ``hyperparams.yaml`` refers to.
    """
    inliner = _Inliner(PACKAGE_DIR)
    inliner.add_module_body(module)
    # No `from __future__ import annotations`: foreign_class runs this file without
    # registering it in sys.modules, and dataclasses then cannot resolve string
    # annotations. Evaluated annotations need Python >= 3.10 (`X | None`).
    text = "\n".join([
        f'"""{INTERFACE_DOCSTRING.format(version=_package_version(), module=module)}"""',
        "",
        *inliner.import_lines,
        "",
        *inliner.sections,
        STAND_IN,
    ])
    compile(text, INTERFACE_FILE, "exec")  # a generator bug must fail here, not on a user's machine
    return text


INTERFACE_DOCSTRING = """\
MultitaskClassifier for SpeechBrain's foreign_class, without the multitask package.

    from speechbrain.inference.interfaces import foreign_class
    model = foreign_class(source="<folder or repo id>", pymodule_file="custom_interface.py",
                          classname="MultitaskClassifier")
    model.classify_file("call.wav")

Generated by `multitask export` (multitask {version}) from multitask/{module}.py, with
the pieces of the package it uses copied from their modules. Do not edit: export again.
"""

STAND_IN = '''

# hyperparams.yaml names its classes `multitask.inference.<name>`. Where the
# multitask package is not installed (why one loads with foreign_class), this
# module stands in for it. An installed package is used as is.
def _stand_in_for_multitask_inference():
    import importlib.util
    import sys
    import types

    current = sys.modules.get("multitask")
    if current is None:
        try:
            installed = importlib.util.find_spec("multitask") is not None
        except (ImportError, ValueError):
            installed = False
        if installed:
            return
    elif not getattr(current, "_stand_in", False):
        return
    module = types.ModuleType("multitask.inference")
    module.__dict__.update({k: v for k, v in globals().items() if not k.startswith("__")})
    package = types.ModuleType("multitask")
    package.__path__ = []
    package._stand_in = True
    package.inference = module
    sys.modules["multitask"] = package
    sys.modules["multitask.inference"] = module


_stand_in_for_multitask_inference()
'''


class _Inliner:
    """Copies top-level definitions out of package modules, following their dependencies."""

    def __init__(self, package_dir: Path):
        self.package_dir = package_dir
        self.parsed: dict[str, _ParsedModule] = {}
        self.chosen: dict[str, set] = {}      # module -> top-level nodes to copy
        self.order: list[str] = []            # modules, dependencies first
        self.import_lines: list[str] = []
        self.bound: dict[str, str] = {}       # name -> where it comes from (collision check)
        self.sections: list[str] = []

    def module(self, name: str) -> _ParsedModule:
        if name not in self.parsed:
            path = self.package_dir.joinpath(*name.split(".")).with_suffix(".py")
            if not path.is_file():
                path = self.package_dir.joinpath(*name.split("."), "__init__.py")
            self.parsed[name] = _ParsedModule(path, name)
        return self.parsed[name]

    def add_module_body(self, name: str) -> None:
        """Copy all of module ``name`` (its own definitions) and inline what it imports."""
        source = self.module(name)
        nodes = [node for node in source.body if not source.is_internal_import(node)]
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for bound in _bound_names(node):
                    self._need(name, bound)
            else:
                for defined in _defined_names(node):
                    self._claim(defined, name)
        # Everything it imports from the package, used in code or only re-exported
        # (hyperparams.yaml may name it as multitask.<module>.<name>).
        for bound in source.internal_imports:
            self._need(name, bound)
        for node in nodes:
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                for used in _used_names(node):
                    self._need(name, used)
        self.sections.extend(self._dependency_sections())
        self.sections.append(f"# ---- multitask/{name.replace('.', '/')}.py ----\n")
        self.sections.extend(source.segment(node) + "\n" for node in nodes
                             if not isinstance(node, (ast.Import, ast.ImportFrom)))

    def _need(self, module: str, name: str) -> None:
        """Make ``name``, as module ``module`` sees it, available in the generated file."""
        source = self.module(module)
        if name in source.internal_imports:
            origin, original = source.internal_imports[name]
            if original != name:
                raise ExportError(f"{module}: `import {original} as {name}` cannot be inlined")
            self._copy_definition(origin, name)
        elif name in source.imports:
            line = source.imports[name]
            self._claim(name, line)
            if line not in self.import_lines:
                self.import_lines.append(line)

    def _copy_definition(self, module: str, name: str) -> None:
        source = self.module(module)
        if name in source.imports or name in source.internal_imports:
            self._need(module, name)
            return
        node = source.defs.get(name)
        if node is None:
            raise ExportError(f"multitask.{module} has no top-level {name!r} to inline")
        chosen = self.chosen.setdefault(module, set())
        if node in chosen:
            return
        chosen.add(node)
        for defined in _defined_names(node):
            self._claim(defined, module)
        for used in _used_names(node):
            if used in source.defs:
                self._copy_definition(module, used)
            else:
                self._need(module, used)
        # Appended once its first definition's dependencies are in: dependencies first.
        if module not in self.order:
            self.order.append(module)

    def _claim(self, name: str, origin: str) -> None:
        previous = self.bound.setdefault(name, origin)
        if previous != origin:
            raise ExportError(
                f"cannot inline: {name!r} comes from both {previous!r} and {origin!r}")

    def _dependency_sections(self) -> list[str]:
        sections = []
        for module in self.order:
            source = self.module(module)
            nodes = sorted(self.chosen[module], key=lambda n: n.lineno)
            sections.append(f"# ---- from multitask/{module.replace('.', '/')}.py ----\n")
            sections.extend(source.segment(node) + "\n" for node in nodes)
        return sections


class _ParsedModule:
    """A package module's top level: its definitions and its imports."""

    def __init__(self, path: Path, name: str):
        self.name = name
        self.text = path.read_text(encoding="utf-8")
        self.lines = self.text.splitlines()
        tree = ast.parse(self.text, str(path))
        self.body = [
            node for node in tree.body
            if not _is_docstring(node)
            and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
        ]
        self.defs: dict[str, ast.AST] = {}
        self.imports: dict[str, str] = {}                          # name -> import line
        self.internal_imports: dict[str, tuple[str, str]] = {}     # name -> (module, name)
        for node in self.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    line = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                    self.imports[alias.asname or alias.name.split(".")[0]] = line
            elif isinstance(node, ast.ImportFrom):
                origin = self._internal_origin(node)
                for alias in node.names:
                    bound = alias.asname or alias.name
                    if origin is not None:
                        self.internal_imports[bound] = (origin, alias.name)
                    else:
                        self.imports[bound] = f"from {node.module} import {alias.name}" + (
                            f" as {alias.asname}" if alias.asname else "")
            else:
                for defined in _defined_names(node):
                    self.defs[defined] = node

    def _internal_origin(self, node: ast.ImportFrom) -> str | None:
        """The package module an ``import from`` reads (``model`` for ``.model``), or None."""
        if node.level == 0:
            if node.module == "multitask" or (node.module or "").startswith("multitask."):
                return node.module.removeprefix("multitask").lstrip(".") or "__init__"
            return None
        parent = self.name.split(".")[: -node.level]
        return ".".join([*parent, node.module] if node.module else parent)

    def is_internal_import(self, node) -> bool:
        return isinstance(node, ast.ImportFrom) and self._internal_origin(node) is not None

    def segment(self, node) -> str:
        """A node's source lines, decorators included."""
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        while start > 1 and self.lines[start - 2].lstrip().startswith("#"):
            start -= 1  # the comment right above belongs to the definition
        return "\n".join(self.lines[start - 1: node.end_lineno]) + "\n"


def _is_docstring(node) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def _defined_names(node) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return [n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)]


def _bound_names(node) -> list[str]:
    return [alias.asname or alias.name.split(".")[0] for alias in node.names]


def _used_names(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


# --------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------


def render_card(hparams: dict, encoders: dict, ckpt, test_metrics: dict | None, *,
                repo_id=None, model_name=None, datasets=None, license="apache-2.0",
                language="en", template=None, chosen_by_name=False, lineage=None) -> str:
    """``README.md`` for an export: front matter with a model-index, usage, results.

    The model-index holds the figures measured with ``ckpt``: its validation metrics
    (checkpoint meta) and, when ``test_metrics.json`` was computed on the same
    checkpoint, every test set's. ``chosen_by_name``: ``ckpt`` is not the run's best.
    ``lineage``: a fine-tuning run's record (``finetune.json``); the card then names the
    parent as ``base_model`` and shows the new labels and the measured retention.
    """
    from huggingface_hub import ModelCardData

    tasks = list(encoders)
    repo_id = repo_id or PLACEHOLDER_REPO_ID
    model_name = model_name or repo_id.split("/")[-1]
    encoder_source = str(hparams.get("encoder_source", ""))
    datasets = list(datasets) if datasets else _default_datasets(hparams)
    card_data = ModelCardData(
        model_name=model_name,
        language=language,
        license=license,
        library_name="speechbrain",
        pipeline_tag="audio-classification",
        tags=["speechbrain", "audio-classification", "wav2vec2", "multitask",
              *[TASK_TAGS.get(task, f"{task}-classification") for task in tasks]],
        datasets=datasets,
        metrics=["accuracy", "f1", "recall"],
        base_model=(_parent_name(lineage) if lineage
                    else encoder_source if _is_hub_id(encoder_source) else None),
        base_model_relation="finetune" if lineage else None,
        eval_results=_eval_results(tasks, ckpt.meta, test_metrics, hparams),
    )
    template_path = Path(template) if template else DEFAULT_CARD_TEMPLATE
    if not template_path.is_file():
        raise ExportError(f"model card template not found: {template_path}")
    best_metric = hparams.get("best_metric", "mean_accuracy")
    selection = ("a checkpoint chosen by name" if chosen_by_name
                 else f"the checkpoint with the best `{best_metric}` on validation")
    return string.Template(template_path.read_text(encoding="utf-8")).substitute(
        front_matter=card_data.to_yaml() + "\n",
        model_name=model_name,
        repo_id=repo_id,
        first_task=tasks[0],
        task_summary="; ".join(f"{task}: {len(encoders[task].lab2ind)} classes" for task in tasks),
        selection=selection,
        checkpoint=f"{ckpt.path.name}, epoch {ckpt.meta.get('epoch', '?')}",
        labels=_labels_block(encoders),
        results=_results_block(tasks, ckpt.meta, test_metrics, hparams),
        training=_training_block(hparams, ckpt, lineage),
        data_limitations=_data_limitations(hparams, datasets, lineage),
        lineage=_lineage_block(lineage),
    )


# checkpoint meta / test_metrics key -> (model-index metric type, label, args)
METRICS = {
    "accuracy": ("accuracy", "accuracy", None),
    "macro_f1": ("f1", "macro-F1", {"average": "macro"}),
    "unweighted_accuracy": ("recall", "unweighted accuracy (macro recall)", {"average": "macro"}),
}


def _eval_results(tasks, meta: dict, test_metrics: dict | None, hparams: dict) -> list:
    from huggingface_hub import EvalResult

    results = []
    for split, dataset_type, dataset_name, task, figures in _measurements(
            tasks, meta, test_metrics, hparams):
        for key, (metric_type, label, args) in METRICS.items():
            if figures.get(key) is None:
                continue
            results.append(EvalResult(
                task_type="audio-classification",
                task_name=TASK_TITLES.get(task, f"{task} classification"),
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                # The rows labelled for this task: a subset ("config") of the data. It
                # also keeps one task's figures from being grouped under the other's.
                dataset_config=task,
                dataset_split=split,
                metric_type=metric_type,
                metric_name=f"{task} {label}",
                metric_value=figures[key],
                metric_args=args,
            ))
    return results


def _measurements(tasks, meta: dict, test_metrics: dict | None, hparams: dict):
    """``(split, dataset type, dataset name, task, {metric: value})`` for every figure."""
    valid = ", ".join(_display_path(p) for p in _as_list(hparams.get("valid_manifests")))
    for task in tasks:
        figures = {key: meta.get(f"{task}_{key}") for key in METRICS}
        if any(v is not None for v in figures.values()):
            yield "validation", "validation", f"validation set ({valid})", task, figures
    for name, result in (test_metrics or {}).items():
        if not isinstance(result, dict) or "manifest" not in result:
            continue
        for task in tasks:
            if isinstance(result.get(task), dict):
                yield "test", name, f"{name} test set ({result['manifest']})", task, result[task]


def _labels_block(encoders: dict) -> str:
    lines = []
    for task, encoder in encoders.items():
        names = [encoder.ind2lab[i] for i in range(len(encoder.ind2lab))]
        lines.append(f"- **{task}** ({len(names)}, in class-index order): "
                     + ", ".join(f"`{n}`" for n in names))
    return "\n".join(lines)


def _results_block(tasks, meta, test_metrics, hparams) -> str:
    rows = ["| data | task | examples | accuracy | macro-F1 | unweighted accuracy |",
            "| --- | --- | --- | --- | --- | --- |"]
    for _, _, dataset_name, task, figures in _measurements(tasks, meta, test_metrics, hparams):
        cells = [f"{figures[k]:.4f}" if figures.get(k) is not None else "–" for k in METRICS]
        examples = figures.get("num_examples", "–")
        rows.append(f"| {dataset_name} | {task} | {examples} | " + " | ".join(cells) + " |")
    rows.append("\nEach task is scored on the rows that carry its label (examples: how many; "
                "not recorded for validation).")
    if test_metrics is None:
        rows.append("No test-set figures were measured on this checkpoint.")
    return "\n".join(rows)


def _parent_name(lineage: dict) -> str:
    """The parent's Hub id when known, else its folder as given (last two components)."""
    parent = lineage["parent"]
    return parent.get("repo_id") or parent["source"]


def _lineage_block(lineage: dict | None) -> str:
    """The card's "Fine-tuned from" section (empty for a model trained from scratch)."""
    if not lineage:
        return ""
    parent = lineage["parent"]
    version = parent.get("commit") or parent.get("revision")
    if parent.get("weights_sha256"):
        version = f"local folder, weights sha256 {parent['weights_sha256']}"
    new = ", ".join(f"`{label}`" for label in lineage.get("new_intents", []))
    kept = lineage.get("kept_intents", [])
    lines = [
        "## Fine-tuned from\n",
        f"- Parent: `{_parent_name(lineage)}` ({version or 'revision not recorded'}).",
        f"- Mode: `{lineage['mode']}`; new intents: {new or 'none'}"
        + (f"; kept from the parent: {len(kept)} intents." if kept else "."),
        f"- Training examples per intent: {lineage.get('shots')}"
        + (f"; plus {lineage['replayed']} clips of the parent's intents, rehearsed."
           if lineage.get("replayed") else ".")
        + (f" Each epoch drew {lineage['rows_per_class']} clips of every intent."
           if lineage.get("rows_per_class") else ""),
        f"- Frozen: encoder `{lineage.get('freeze_encoder')}` "
        "(all, none, or the conv front end and that many lower layers); heads "
        + (", ".join(f"`{h}`" for h in lineage.get("frozen_heads", [])) or "none") + ".",
    ]
    calibration = lineage.get("calibration")
    if calibration:
        lines.append(
            f"- The new intents' logits carry an offset of {calibration['offset']:+.2f}"
            + (f", chosen on `{calibration['old_valid']}` so that they cost the parent's "
               f"intents at most {calibration['tolerance']:.1%} of accuracy there."
               if calibration.get("old_valid") and "tolerance" in calibration
               and "chosen_on_validation" not in calibration else " (set by hand)."))
    results = lineage.get("results") or {}
    if results:
        lines += ["", "| measured | data | parent | fine-tuned | change |",
                  "| --- | --- | --- | --- | --- |"]
        names = {"new_intent": "new-intent accuracy", "old_intent": "parent-intent accuracy",
                 "emotion": "emotion accuracy"}
        for key, result in results.items():
            before, change = result.get("before"), result.get("change")
            lines.append(f"| {names.get(key, key)} | {result['manifest']} | "
                         f"{_fmt(before) if before is not None else '–'} | "
                         f"{_fmt(result['accuracy'])} | "
                         f"{f'{change:+.4f}' if change is not None else '–'} |")
        if (results.get("emotion") or {}).get("warning"):
            lines.append("\n**Emotion accuracy dropped during fine-tuning** (see the table).")
    return "\n".join(lines) + "\n"


def _mix(batching: dict) -> str:
    """How an epoch was composed, for the card.

    >>> _mix({"rows_per_class": 40}), _mix({"task_ratio": {"intent": 0.5}}), _mix({})
    ('40 rows of every class per epoch', "{'intent': 0.5}", 'as in the data')
    """
    if batching.get("rows_per_class"):
        return f"{batching['rows_per_class']} rows of every class per epoch"
    return str(batching.get("task_ratio") or "as in the data")


def _training_block(hparams: dict, ckpt, lineage: dict | None = None) -> str:
    encoder = hparams["encoder"]
    config = encoder.config
    source = str(hparams.get("encoder_source", ""))
    head = dict(getattr(hparams["head"], "keywords", {}))
    best_metric = hparams.get("best_metric", "mean_accuracy")
    origin = (f"initialised from the parent model `{_parent_name(lineage)}`" if lineage
              else _describe_encoder_source(source))
    lines = [
        f"- Encoder: {origin}; {config.num_hidden_layers} transformer "
        f"layers, width {config.hidden_size}, {config.feat_extract_norm}-norm feature extractor"
        + (" (padding masked)" if encoder.use_attention_mask else " (no padding mask)") + ".",
        "- Heads: softmax-weighted sum over the encoder's layers, projection to "
        f"{head.get('proj_size', '?')}, {head.get('pooling', 'mean')} pooling over "
        "non-padded frames, MLP "
        f"({head.get('hidden_size', '?')} hidden, dropout {head.get('dropout', '?')}).",
        "- Training data: " + ", ".join(_display_path(p) for p in _as_list(
            hparams.get("train_manifests"))) + "; each utterance carries one task's label "
        "and the loss of each head counts only the rows labelled for it.",
        f"- Task loss weights: {hparams.get('task_weights', {})}; task mix per batch: "
        f"{_mix(hparams.get('train_batching') or {})}.",
        f"- Optimisation: {_callable_name(hparams.get('optimizer'))}, encoder lr "
        f"{hparams.get('encoder_lr')}, heads lr "
        f"{hparams.get('head_lr')}, weight decay {hparams.get('weight_decay', 0)}, warm-up "
        f"{hparams.get('warmup_steps', 0)} steps, encoder frozen for the first "
        f"{hparams.get('encoder_freeze_steps', 0)} steps, "
        f"{getattr(hparams.get('epoch_counter'), 'limit', '?')} epochs.",
        f"- Checkpoint: {ckpt.path.name} (epoch {ckpt.meta.get('epoch', '?')}); validation "
        f"`{best_metric}` {_fmt(ckpt.meta.get(best_metric))} (the run keeps the best by it).",
    ]
    return "\n".join(lines)


def _data_limitations(hparams: dict, datasets: list, lineage: dict | None = None) -> str:
    source = str(hparams.get("encoder_source", ""))
    lines = [f"- Trained on {', '.join(datasets) or 'the data listed above'} only; "
             "accuracy on other domains, channels, accents or languages is unknown."]
    if lineage:
        lines.append(f"- Fine-tuned from `{_parent_name(lineage)}` on a few examples per new "
                     "intent: see that model's card for the data its encoder and emotion head "
                     "learnt from.")
    elif not _is_hub_id(source) and _is_config_only(source):
        lines.append("- The encoder was trained from scratch (no self-supervised pre-training): "
                     "expect it to work only on audio close to its training data.")
    return "\n".join(lines)


def _default_datasets(hparams: dict) -> list[str]:
    prepared = list((hparams.get("prepare") or {}).keys())
    if prepared:
        return prepared
    return sorted({Path(str(p)).parent.name or Path(str(p)).stem
                   for p in _as_list(hparams.get("train_manifests"))})


def _describe_encoder_source(source: str) -> str:
    if _is_hub_id(source):
        return f"fine-tuned from [`{source}`](https://huggingface.co/{source})"
    if _is_config_only(source):
        return f"trained from scratch (the `{Path(source).name}` wav2vec2 configuration)"
    return f"fine-tuned from a local wav2vec2 checkpoint (`{Path(source).name}`)"


def _is_hub_id(source: str) -> bool:
    """``org/name`` that is not a path on this machine.

    Example
    -------
    >>> _is_hub_id("facebook/wav2vec2-base"), _is_hub_id("/data/encoder"), _is_hub_id("demo")
    (True, False, False)
    """
    return (bool(re.fullmatch(r"[\w.-]+/[\w.-]+", source))
            and not os.path.exists(source) and not os.path.isabs(source))


def _is_config_only(source: str) -> bool:
    from .model import WEIGHTS_FILES as HF_WEIGHTS

    folder = Path(source)
    return (folder / "config.json").is_file() and not any((folder / f).is_file() for f in HF_WEIGHTS)


def _display_path(path) -> str:
    """The last two components of a path: names the data without this machine's layout.

    Example
    -------
    >>> _display_path("/home/me/data/skit_s2i/train.csv")
    'skit_s2i/train.csv'
    """
    parts = Path(str(path)).parts
    return "/".join(parts[-2:]) if parts else ""


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def _callable_name(factory) -> str:
    """``AdamW`` for ``functools.partial(torch.optim.AdamW, ...)`` or the class itself."""
    target = getattr(factory, "func", factory)
    return getattr(target, "__name__", "?")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def verify_export(folder: Path, hparams: dict, encoders: dict, ckpt, machine_paths=()) -> float:
    """Load ``folder`` as users will and compare with the training-time model.

    Returns the largest probability difference; raises :class:`ExportError` above
    ``VERIFY_TOLERANCE``, on different labels, or if a text file of the folder holds
    one of ``machine_paths``.
    """
    import torch

    from .inference import MultitaskClassifier
    from .train import build_model

    _check_no_machine_paths(folder, machine_paths)
    _check_interface_imports(folder / INTERFACE_FILE)
    reference = build_model(hparams, encoders)
    for name in WEIGHTS_FILES:
        state = torch.load(ckpt.paramfiles[name], map_location="cpu", weights_only=True)
        getattr(reference, name).load_state_dict(state)
    reference.to("cpu").eval()
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
        if exported.labels[task] != [encoder.ind2lab[i] for i in range(len(encoder.ind2lab))]:
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
    needles = {str(Path(p).resolve()) for p in machine_paths} | {str(p) for p in machine_paths}
    needles = {n for n in needles if len(n) > 1}
    for path in folder.iterdir():
        if path.suffix == ".safetensors":
            continue  # binary weights; their only metadata is written above
        text = path.read_text(encoding="utf-8")
        for needle in needles:
            if needle in text:
                raise ExportError(f"{path.name} contains a path of this machine: {needle}")


# --------------------------------------------------------------------------
# Push
# --------------------------------------------------------------------------


def upload_allow_list(model_dir) -> list[str]:
    """The files of an export folder that are uploaded: the export's own, nothing else.

    Raises :class:`HubError` if the folder is not a complete export.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise HubError(f"{folder}: not a folder")
    missing = [name for name in EXPORT_FILES if not (folder / name).is_file()]
    labels = sorted(p.name for p in folder.iterdir()
                    if p.is_file() and LABEL_FILE_RE.fullmatch(p.name))
    if missing or not labels:
        what = ", ".join(missing + ([] if labels else ["label_encoder_<task>.txt"]))
        raise HubError(f"{folder}: not a complete export (missing {what}); run `multitask export`")
    allowed = [*EXPORT_FILES, *labels]
    # An allowed name that links elsewhere (label_encoder_intent.txt -> ~/.netrc) would
    # upload the file it points to; exports never contain links.
    links = [name for name in allowed if (folder / name).is_symlink()]
    if links:
        raise HubError(f"{folder}: refusing to upload symbolic links ({', '.join(links)}); "
                       "copy the real files in or export again")
    return allowed


def push_model(model_dir, repo_id: str, private: bool = False, revision: str | None = None,
               commit_message: str | None = None, token: str | None = None,
               endpoint: str | None = None):
    """Upload an export folder to a Hub model repo; returns the commit info.

    Parameters
    ----------
    model_dir : str or Path
        A folder written by :func:`export_model`. Only its export files are uploaded
        (see :func:`upload_allow_list`): tokens, caches, logs or data that happen to be
        in the folder stay local.
    repo_id : str
        ``org/name``; created if missing (visibility of an existing repo is unchanged).
    private : bool
        Create the repo private.
    revision : str, optional
        Branch to push to; created from ``main`` if it does not exist.
    commit_message : str, optional
    token : str, optional
        Defaults to ``HF_TOKEN`` or the token saved by ``hf auth login``.
    endpoint : str, optional
        Hub URL; defaults to ``HF_ENDPOINT`` (read by huggingface_hub at import).

    Raises
    ------
    HubError
        With a one-line message: no token, token refused (401/403), no network, or any
        other Hub error.
    """
    allow = upload_allow_list(model_dir)
    import huggingface_hub as hf

    token = token or hf.get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login` "
                       "(a token with write access)")
    api = hf.HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(model_dir),
            allow_patterns=allow,
            revision=revision,
            commit_message=commit_message or f"Upload model ({Path(model_dir).name})",
        )
    except Exception as err:
        raise HubError(_hub_error_message(err, repo_id, api.endpoint)) from err


def _hub_error_message(err: Exception, repo_id: str, endpoint: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: unset it to push"
    if isinstance(err, HfHubHTTPError):
        status = getattr(err.response, "status_code", None)
        if status == 401:
            return f"the Hub refused the token (401 Unauthorized) for {repo_id}: check HF_TOKEN or `hf auth login`"
        if status == 403:
            return f"the token may not write to {repo_id} (403 Forbidden): use a token with write access to it"
        return f"push to {repo_id} failed (HTTP {status}): {_first_line(err)}"
    if _is_network_error(err):
        return f"cannot reach the Hub at {endpoint} ({type(err).__name__}): check the network or HF_ENDPOINT"
    return f"push to {repo_id} failed: {type(err).__name__}: {_first_line(err)}"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_network_error(err: Exception) -> bool:
    # huggingface_hub's HTTP client (httpx, or requests in older versions) has its own
    # exception classes; match them by their well-known names, not by import.
    names = {cls.__name__ for cls in type(err).__mro__}
    return isinstance(err, (ConnectionError, TimeoutError)) or bool(
        names & {"TransportError", "ConnectError", "ConnectionError", "TimeoutException", "Timeout"})


# --------------------------------------------------------------------------
# Command line: export, push, predict
# --------------------------------------------------------------------------


def add_parsers(subparsers) -> None:
    """Register ``export``, ``push`` and ``predict`` on an argparse subparsers object."""
    export = subparsers.add_parser(
        "export", help="Best checkpoint of a training run -> model folder (Hub-ready)",
        description="Write a model folder that MultitaskClassifier.from_hparams and "
                    "foreign_class load: weights, label encoders, hyperparams.yaml, "
                    "custom_interface.py and a model card with the checkpoint's results.")
    export.add_argument("--from", dest="run", required=True, metavar="TRAIN_OUTPUT_FOLDER",
                        help="the training recipe's output_folder")
    export.add_argument("--out", required=True, help="model folder to write")
    export.add_argument("--checkpoint", help="checkpoint folder name (default: best by best_metric)")
    export.add_argument("--repo-id", help="repo id used in the card's usage examples")
    export.add_argument("--model-name", help="model name in the card (default: from --repo-id)")
    export.add_argument("--dataset", dest="datasets", action="append", metavar="ID",
                        help="Hub dataset id for the card (repeatable; default: prepared corpora)")
    export.add_argument("--license", default="apache-2.0")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip loading the export back and comparing with the checkpoint")
    export.set_defaults(func=_run_export)

    push = subparsers.add_parser(
        "push", help="Upload an exported model folder to a Hugging Face Hub repo",
        description="Create the repo if needed and upload the export's files only. "
                    "The token comes from HF_TOKEN or `hf auth login`.")
    push.add_argument("--model", required=True, metavar="DIR", help="folder written by export")
    push.add_argument("--repo-id", required=True, metavar="ORG/NAME")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", metavar="BRANCH", help="branch to push to (created if needed)")
    push.add_argument("--commit-message")
    push.set_defaults(func=_run_push)

    predict = subparsers.add_parser(
        "predict", help="Intent and emotion of audio files, one line per file",
        description="Classify audio files with an exported model (folder or Hub repo id). "
                    "A file that cannot be read gets an error line; the others go on. "
                    "Exit status 1 only if every file failed.")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--model", required=True, metavar="SOURCE", help="folder or repo id")
    predict.add_argument("--revision", help="Hub branch, tag or commit")
    output = predict.add_mutually_exclusive_group()
    output.add_argument("--json", dest="format", action="store_const", const="json",
                        help="JSON lines (default)")
    output.add_argument("--csv", dest="format", action="store_const", const="csv")
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: SpeechBrain's choice)")
    predict.set_defaults(func=_run_predict, format="json")


def _run_export(args) -> int:
    try:
        out = export_model(args.run, args.out, checkpoint=args.checkpoint, repo_id=args.repo_id,
                           model_name=args.model_name, datasets=args.datasets,
                           license=args.license, overwrite=args.overwrite, verify=args.verify)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _run_push(args) -> int:
    try:
        info = push_model(args.model, args.repo_id, private=args.private, revision=args.revision,
                          commit_message=args.commit_message)
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(getattr(info, "commit_url", None) or info)
    return 0


def _run_predict(args) -> int:
    from .inference import MultitaskClassifier

    try:
        run_opts = {"device": args.device} if args.device else None
        model = MultitaskClassifier.from_hparams(
            source=args.model, revision=args.revision, run_opts=run_opts)
    except Exception as err:  # any loading failure is reported as one line
        print(f"error: cannot load a model from {args.model}: {type(err).__name__}: {err}",
              file=sys.stderr)
        return 2
    results = model.classify_files(args.files, batch_size=args.batch_size, top_k=args.top_k)
    write_predictions(results, model.tasks, args.format, sys.stdout)
    failed = sum("error" in r for r in results)
    if failed:
        print(f"{failed} of {len(results)} file(s) could not be classified", file=sys.stderr)
    return 1 if failed == len(results) else 0


def prediction_row(result: dict, tasks) -> dict:
    """A flat record for one file: ``file, <task>, <task>_prob, <task>_top_k..., error``.

    Example
    -------
    >>> result = {"file": "a.wav", "intent": {"label": "lost", "prob": 0.9123456,
    ...           "top_k": [["lost", 0.9123456], ["block", 0.05]], "probs": {}}}
    >>> prediction_row(result, ["intent"])
    {'file': 'a.wav', 'intent': 'lost', 'intent_prob': 0.912346, 'intent_top_k': [['lost', 0.912346], ['block', 0.05]]}
    >>> prediction_row({"file": "b.wav", "error": "b.wav: file not found"}, ["intent"])
    {'file': 'b.wav', 'error': 'b.wav: file not found'}
    """
    row = {"file": result["file"]}
    if "error" in result:
        row["error"] = result["error"]
        return row
    for task in tasks:
        row[task] = result[task]["label"]
        row[f"{task}_prob"] = round(result[task]["prob"], 6)
        row[f"{task}_top_k"] = [[label, round(p, 6)] for label, p in result[task]["top_k"]]
    for key in ("windows", "silent_windows"):  # a long file, classified in windows
        if key in result:
            row[key] = result[key]
    return row


def write_predictions(results, tasks, fmt: str, out) -> None:
    """JSON lines or CSV, one line per file, in input order."""
    if fmt == "json":
        for result in results:
            out.write(json.dumps(prediction_row(result, tasks)) + "\n")
        return
    columns = ["file", *[f"{t}{s}" for t in tasks for s in ("", "_prob", "_top_k")],
               "windows", "silent_windows", "error"]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for result in results:
        row = prediction_row(result, tasks)
        for task in tasks:
            if f"{task}_top_k" in row:
                row[f"{task}_top_k"] = ";".join(f"{label}:{p}" for label, p in row[f"{task}_top_k"])
        writer.writerow(row)
