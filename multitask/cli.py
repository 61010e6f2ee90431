"""The ``multitask`` command: one entry point, one subcommand per job.

    multitask synth --out data/synth             # the synthetic banking-IVR corpus
    multitask prepare-skit-s2i --corpus DIR --out DIR --split speaker
    multitask prepare-crema-d --corpus DIR --out DIR
    multitask prepare-csv --csv FILE --out DIR
    multitask data-report MANIFEST... --out DIR
    multitask export / push / predict ...        # see `multitask COMMAND --help`
    multitask finetune --from MODEL --train NEW.csv --out DIR [--mode extend]
    multitask calibrate --from MODEL --calls CALLS.csv --out DIR   # one head, to your callers
    multitask evaluate --model MODEL --test LABELLED.csv --out DIR  # figures on your own calls

Training itself is a recipe (``python recipes/train.py hparams/train.yaml`` or
``accelerate launch ...``), as in SpeechBrain.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .settings import number_problem

# Subcommand -> the module that registers it with add_parser(s)(subparsers), setting
# func=. Only the module a command needs is imported: some pull in scipy/matplotlib.
COMMANDS = {
    "synth": "multitask.synth.cli",
    "prepare-skit-s2i": "multitask.prepare",
    "prepare-crema-d": "multitask.prepare",
    "prepare-csv": "multitask.prepare",
    "data-report": "multitask.data_report",
    "export": "multitask.hub",
    "push": "multitask.hub",
    "predict": "multitask.hub",
    "finetune": "multitask.finetune",
    "calibrate": "multitask.calibrate_export",
    "evaluate": "multitask.evaluate_export",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with every subcommand, or only ``command``'s module when it is known."""
    parser = argparse.ArgumentParser(
        prog="multitask", description="Spoken intent and emotion from one wav2vec2 encoder."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for name in modules:
        module = importlib.import_module(name)
        register = getattr(module, "add_parsers", None) or module.add_parser
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Only commands that declare it take hparams overrides (--key=value).
        if not getattr(args, "takes_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        if not is_input_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


def is_input_error(err: BaseException) -> bool:
    """Whether ``err`` is one of the package's own input errors (ManifestError,
    CorpusError, AudioInputError, ModelNotFoundError, ...: ValueError or OSError kinds),
    which name the file and the problem: shown as one line, without a traceback. Others,
    and the package's RuntimeErrors (a bug, a diverged run), keep their traceback.

    >>> from multitask.manifest import ManifestError
    >>> is_input_error(ManifestError("x.csv: no rows")), is_input_error(ValueError("bug"))
    (True, False)
    """
    return (isinstance(err, (ValueError, OSError))
            and type(err).__module__.startswith("multitask."))


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts such as ``--batch-size``: 1 or more.

    >>> positive_int("8")
    8
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a whole number of at least 1, not 0
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    problem = number_problem(value, whole=True, least=1)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def repo_id(text: str) -> str:
    """An argparse ``type`` for ``--repo-id``: a name the Hub accepts (``name`` or
    ``org/name``), so a card never carries a repo id no one can load.

    >>> repo_id("org/intent-emotion")
    'org/intent-emotion'
    >>> repo_id("org/my model")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: not a Hub repo id ('name' or 'org/name' of letters, digits, '-', '_', '.'): 'org/my model'
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        raise argparse.ArgumentTypeError("not a Hub repo id ('name' or 'org/name' of letters, "
                                         f"digits, '-', '_', '.'): {text!r}") from None
    return text


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``, for the commands that run a model (checked by :func:`device_name`)."""
    parser.add_argument("--device", type=device_name,
                        help="cpu, cuda, cuda:1 ... (default: SpeechBrain's choice)")


def device_name(text: str) -> str:
    """An argparse ``type`` for ``--device``: a torch device this machine has.

    >>> device_name("cpu")
    'cpu'
    >>> device_name("gpu0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: not a device: 'gpu0' (cpu, cuda, cuda:1 ...)
    """
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA GPU")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA GPU(s), "
                                             f"cuda:0 to cuda:{count - 1}")
    return text


if __name__ == "__main__":
    sys.exit(main())
