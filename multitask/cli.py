"""The ``multitask`` command: one entry point, one subcommand per job.

    multitask synth --out data/synth             # the synthetic banking-IVR corpus
    multitask prepare-skit-s2i --corpus DIR --out DIR --split speaker
    multitask prepare-crema-d --corpus DIR --out DIR
    multitask prepare-csv --csv FILE --out DIR
    multitask data-report MANIFEST... --out DIR
    multitask export / push / predict ...        # see `multitask COMMAND --help`

Training itself is a recipe (``python recipes/train.py hparams/train.yaml`` or
``accelerate launch ...``), as in SpeechBrain.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module registers its subcommands with add_parser(s)(subparsers), setting func=.
COMMAND_MODULES = (
    "multitask.synth.cli",
    "multitask.prepare",
    "multitask.data_report",
    "multitask.hub",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multitask", description="Spoken intent and emotion from one wav2vec2 encoder."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        register = getattr(module, "add_parsers", None) or module.add_parser
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
