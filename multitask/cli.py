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
        # The package's own input errors (ManifestError, CorpusError, AudioInputError,
        # ModelNotFoundError, ...: ValueError or OSError kinds) name the file and the
        # problem: one line, no traceback. Others, and its RuntimeErrors (a bug, a diverged
        # run), keep their traceback.
        if not type(err).__module__.startswith("multitask."):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts such as ``--batch-size``: 1 or more.

    >>> positive_int("8")
    8
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be 1 or more, not 0
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
