"""What the recipes share: command-line handling (SpeechBrain's conventions, Accelerate's
ownership), the settings' checks, and the run folder's protection (what a run may write
over, and what a refused rerun puts back).

Recipes take ``HPARAMS.yaml --key=value ...`` exactly as SpeechBrain recipes do. The
run options SpeechBrain's ``Brain`` would read (``--device``, ``--precision``,
``--distributed_launch``, ``--test_only``, ``--debug``, ...) are refused rather than
silently ignored: here Accelerate owns device, data parallelism and precision, set with
``accelerate launch`` or its config file, and the training loop is the package's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml.error import YAMLError

from .settings import SettingError, check_numbers
from .source import RUN_MARKER, is_training_run

# .export and .train are imported where used: the command line reaches this module
# (through finetune), and they pull in Torch, Accelerate and matplotlib.

# Brain run options that have an Accelerate equivalent (and what to use instead).
ACCELERATE_OWNS = {
    "device": "accelerate launch --cpu, or CUDA_VISIBLE_DEVICES",
    "precision": "accelerate launch --mixed_precision bf16|fp16|no",
    "eval_precision": "accelerate launch --mixed_precision",
    "auto_mix_prec": "accelerate launch --mixed_precision fp16",
    "bfloat16_mix_prec": "accelerate launch --mixed_precision bf16",
    "distributed_launch": "accelerate launch --multi_gpu --num_processes N",
    "distributed_backend": "the accelerate config file",
    "data_parallel_backend": "accelerate launch --multi_gpu",
}
# Keys an earlier version read, and what replaced them: a config that still sets one
# is refused, as an unknown key would otherwise be silently ignored.
RENAMED_KEYS = {
    "augment_tasks": "task_augmentation: {task: augmentation}, which augments only "
                     "the rows labelled for that task",
}
# Brain run options that name one of our hparams: SpeechBrain's parser captures them,
# so they are handed on as YAML overrides (run option -> hparam key).
HPARAM_RUN_OPTIONS = {
    "max_grad_norm": "max_grad_norm",
    "nonfinite_patience": "nonfinite_patience",
    "grad_accumulation_factor": "grad_accumulation",
}


def parse_arguments(argv: list[str]) -> tuple[str, str]:
    """``(hparams_file, overrides)`` from SpeechBrain-style recipe arguments.

    Example
    -------
    >>> parse_arguments(["hparams/train.yaml", "--seed=7"])
    ('hparams/train.yaml', 'seed: 7')
    >>> parse_arguments(["hparams/train.yaml", "--max_grad_norm=1.5"])
    ('hparams/train.yaml', 'max_grad_norm: 1.5')
    >>> parse_arguments(["hparams/train.yaml", "--grad_accumulation=2", "--optimizer", "x"])
    ('hparams/train.yaml', 'grad_accumulation: 2\\noptimizer: x')
    """
    argv, held_back = hold_back_abbreviations(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    given = set(run_opts.get("overridden_args", ()))
    refused = sorted(given & set(ACCELERATE_OWNS))
    if refused:
        hints = "; ".join(f"--{name}: use {ACCELERATE_OWNS[name]}" for name in refused)
        raise SystemExit(f"Accelerate owns device, precision and parallelism here. {hints}")
    unread = sorted(given - set(HPARAM_RUN_OPTIONS))
    if unread:
        raise SystemExit(f"{', '.join('--' + name for name in unread)}: SpeechBrain `Brain` run "
                         "option(s) these recipes do not read (they train with Accelerate, "
                         "not Brain); settings are given as --key=value of the hparams file")
    forwarded = [f"{HPARAM_RUN_OPTIONS[name]}: {run_opts[name]}"
                 for name in sorted(given & set(HPARAM_RUN_OPTIONS))]
    return hparams_file, "\n".join(line for line in [overrides, *forwarded, *held_back] if line)


def hold_back_abbreviations(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(argv for SpeechBrain's parser, overrides it must not see)``.

    That parser accepts unambiguous abbreviations of its run options and consumes them
    as the option, so ``--grad_accumulation=2`` and ``--optimizer=...`` (keys of the
    hparams files) became ``--grad_accumulation_factor`` and ``--optimizer_step_limit``,
    given by nobody: silently without effect (and ``--prec=bf16`` slipped past the rule
    that Accelerate owns precision). Held back, each is an override of the hparams key of
    its name, which loading refuses in one line when the file has no such key.

    >>> hold_back_abbreviations(["train.yaml", "--seed=7", "--prec=bf16", "--optim", "adam"])
    (['train.yaml', '--seed=7'], ['prec: bf16', 'optim: adam'])
    """
    owner = getattr(sb.parse_arguments, "__self__", None)  # SpeechBrain 1.1's RunOptions
    create_parser = getattr(owner, "_create_parser", None)
    if create_parser is None:  # SpeechBrain 1.0: its parser is not inspected
        return list(argv), []
    options = {option for action in create_parser()._actions
               for option in action.option_strings if option.startswith("--")}
    passed, held = [], []
    index = 0
    while index < len(argv):
        name, equals, value = argv[index].partition("=")
        index += 1
        if not (name.startswith("--") and name not in options
                and any(option.startswith(name) for option in options)):
            passed.append(argv[index - 1])
            continue
        if not equals and index < len(argv) and not argv[index].startswith("--"):
            value, index = argv[index], index + 1  # --name value
        held.append(f"{name[2:]}: {value}")
    return passed, held


def overrides_mapping(overrides: str | dict) -> dict:
    """Command-line overrides as plain data (tags unresolved), for checking before loading."""
    if isinstance(overrides, dict):
        return overrides
    from ruamel.yaml import YAML

    loaded = YAML(typ="rt").load(overrides or "{}")
    return loaded if isinstance(loaded, dict) else {}


def load_hparams(hparams_file: str, overrides: str | dict = "") -> dict:
    """Load a HyperPyYAML file with overrides, naming the file in any error.

    A command-line override may only set a key the file defines, as in HyperPyYAML; a
    mistyped one is refused in a line that names it, rather than in a traceback. Numeric
    settings (:data:`multitask.settings.NUMBER_SETTINGS`) must be numbers of their kind and range.
    """
    try:
        check_numbers(overrides_mapping(overrides))
    except SettingError as err:
        raise SystemExit(str(err)) from None
    except YAMLError:
        pass  # refused below, by the loading, in its words
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)
    except FileNotFoundError as err:
        if err.filename and os.path.abspath(err.filename) != os.path.abspath(hparams_file):
            raise SystemExit(f"{hparams_file}: loading it needs {err.filename} (a file it "
                             "includes or names), which is not found") from None
        raise SystemExit(f"{hparams_file}: hparams file not found") from None
    except ValueError as err:
        raise SystemExit(f"{hparams_file}: {err}") from None
    except YAMLError as err:
        raise SystemExit(f"{hparams_file} or its overrides: not valid YAML: {err}") from None
    except KeyError as err:
        unknown = _unknown_override(err)
        if unknown is None:
            raise
        raise SystemExit(
            f"{hparams_file}: no key `{unknown}` to override; a command-line override can "
            "only set a key the file defines (to add one, copy the file and add it there)"
        ) from None
    try:
        check_numbers(hparams, f"{hparams_file} (with its overrides)")
    except SettingError as err:
        raise SystemExit(str(err)) from None
    stale = sorted(set(hparams) & set(RENAMED_KEYS))
    if stale:
        raise SystemExit(f"{hparams_file}: " + "; ".join(
            f"`{key}` is no longer read; use {RENAMED_KEYS[key]}" for key in stale))
    return hparams


def _unknown_override(err: KeyError) -> str | None:
    """The key named by HyperPyYAML's refusal of an override, or None for another KeyError."""
    message = err.args[0] if err.args and isinstance(err.args[0], str) else ""
    prefix = "Override '"
    if not message.startswith(prefix) or "' not found" not in message:
        return None
    return message[len(prefix):message.index("' not found")]


def check_before_training(hparams, hparams_file, export_folder=None) -> None:
    """What a training recipe checks before it writes anything (a one-line ``SystemExit``
    on failure): its ``output_folder`` (:func:`check_output_folder`), the shape of its
    settings (:func:`multitask.train.check_settings`) and the folder its export will
    replace at the end (:func:`multitask.export.check_replaceable`)."""
    from .export import ExportError, check_replaceable
    from .train import check_settings

    check_output_folder(hparams["output_folder"])
    try:
        check_settings(hparams)
    except SettingError as err:
        raise SystemExit(f"{hparams_file}: {err}") from None
    if export_folder:
        try:
            check_replaceable(Path(export_folder), Path(hparams["output_folder"]))
        except ExportError as err:
            raise SystemExit(f"export folder {err}") from None


def check_output_folder(folder) -> None:
    """Refuse an ``output_folder`` where a run would write over what is not a run's: a
    file, an exported model, or a folder of other files (a run writes its
    ``hyperparams.yaml`` and a copy of the recipe there). A run's own folder
    (:func:`multitask.source.is_training_run`) is resumed.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> check_output_folder(folder / "new"); check_output_folder(folder)  # new, empty
    >>> _ = (folder / "notes.txt").write_text("mine")
    >>> check_output_folder(folder)
    Traceback (most recent call last):
    ...
    SystemExit: output_folder ... holds files that are not a training run's (notes.txt); ...
    """
    from .export import is_exported_model

    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise SystemExit(f"output_folder {folder}: a file, not a folder")
    if is_exported_model(folder):
        raise SystemExit(f"output_folder {folder}: an exported model; a run would write its "
                         "hyperparams.yaml over the model's (give another output_folder)")
    # save/encoder_cache alone: the encoder a Hub encoder_source downloaded while loading.
    names = sorted(path.name for path in folder.iterdir()
                   if not (path.name == "save" and _holds_only_encoder_cache(path)))
    if names and not is_training_run(folder):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise SystemExit(f"output_folder {folder} holds files that are not a training run's "
                         f"({shown}); a run writes hyperparams.yaml and a copy of the recipe "
                         "there: give a new or empty output_folder")


def _holds_only_encoder_cache(save: Path) -> bool:
    return save.is_dir() and all(path.name == "encoder_cache" for path in save.iterdir())


def mark_training_run(folder) -> None:
    """Mark ``folder`` as a training run's before the run writes anything else there, so a
    run interrupted before SpeechBrain's ``env.log`` is still recognised as one."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / RUN_MARKER).touch()


@contextlib.contextmanager
def restored_on_failure(folder, names):
    """Put the files and folders ``names`` (paths inside ``folder``) back as they were, or
    remove them if they were not there, when the block raises before calling the function
    it is given: a rerun refused as another run's, or one that fails before training
    starts, leaves the run folder as it found it. If the backup itself fails, nothing is
    touched and the error is raised.

    >>> folder = Path(tempfile.mkdtemp()); _ = (folder / "a.yaml").write_text("1")
    >>> try:
    ...     with restored_on_failure(folder, ["a.yaml", "save/b.txt"]):
    ...         _ = (folder / "a.yaml").write_text("2")
    ...         (folder / "save").mkdir(); _ = (folder / "save" / "b.txt").write_text("new")
    ...         raise ValueError("refused")
    ... except ValueError:
    ...     pass
    >>> (folder / "a.yaml").read_text(), sorted(p.name for p in folder.rglob("*"))
    ('1', ['a.yaml', 'save'])
    """
    folder = Path(folder)
    paths = [folder / name for name in names]
    state = {"kept": not paths or os.environ.get("RANK", "0") != "0"}  # one process restores
    saved = None

    def keep():  # from here on, what the block wrote stays
        state["kept"] = True
        if saved is not None:
            shutil.rmtree(saved, ignore_errors=True)

    if state["kept"]:
        yield keep
        return
    saved = Path(tempfile.mkdtemp(prefix=".rerun-", dir=folder if folder.is_dir() else None))
    existed = [path.exists() or path.is_symlink() for path in paths]
    try:  # backups by index: a name may lead out of folder (a save_folder elsewhere)
        for index, (path, there) in enumerate(zip(paths, existed, strict=True)):
            if there and path.is_dir() and not path.is_symlink():
                shutil.copytree(path, saved / str(index), symlinks=True)
            elif there:
                shutil.copy2(path, saved / str(index), follow_symlinks=False)
    except BaseException:
        shutil.rmtree(saved, ignore_errors=True)
        raise
    try:
        yield keep
    except BaseException:
        if not state["kept"]:
            for index, (path, there) in enumerate(zip(paths, existed, strict=True)):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists() or path.is_symlink():
                    path.unlink()
                if there:
                    shutil.move(saved / str(index), path)
        raise
    finally:
        shutil.rmtree(saved, ignore_errors=True)


@contextlib.contextmanager
def training_run(hparams, accelerator, settings_files=None):
    """How a training recipe starts writing its ``output_folder`` (after
    :func:`check_before_training`): every process has checked the folder, the main one
    marks it as a run's, and until the block calls the function it yields (``fit``'s or
    ``pretrain``'s ``on_start``) a failure puts the run's ``settings_files`` back
    (:func:`restored_on_failure`; by default the joint recipes',
    :func:`multitask.train.run_settings_files`); the package's input errors end it in one
    line (:func:`input_errors_as_exit`)."""
    from .train import run_settings_files

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        mark_training_run(hparams["output_folder"])
    if settings_files is None:
        settings_files = run_settings_files(hparams)
    with input_errors_as_exit(), restored_on_failure(
            hparams["output_folder"], settings_files) as started:
        yield started


@contextlib.contextmanager
def input_errors_as_exit():
    """The package's own input errors raised in the block (:func:`multitask.cli.is_input_error`:
    a manifest, corpus or audio file named with its problem) end the recipe with that one
    line, as the ``multitask`` command ends, rather than after SpeechBrain's traceback."""
    from .cli import is_input_error

    try:
        yield
    except (ValueError, OSError) as err:
        if not is_input_error(err):
            raise
        raise SystemExit(f"error: {err}") from None
