"""Corpus preparers: a corpus folder in its released layout -> train/valid/test manifests.

Each preparer writes ``train.csv``, ``valid.csv`` and ``test.csv`` (see
:mod:`multitask.manifest`), ``rejected.csv`` (every row left out, with its reason) and
``prepare_options.json`` (what was done, so a rerun with the same options is skipped).

* :func:`prepare_skit_s2i`: Skit-S2I banking intents (speaker-disjoint or official split)
* :func:`prepare_crema_d`: CREMA-D emotions (actor-disjoint split)
* :func:`prepare_generic_csv`: a bank's own ``path,intent[,emotion][,speaker]`` CSV

:func:`add_parsers` registers their subcommands (``prepare-skit-s2i``,
``prepare-crema-d``, ``prepare-csv``) on an argparse subparsers object.
"""

from multitask.prepare import crema_d, generic_csv, skit_s2i
from multitask.prepare.common import CorpusError, check_audio
from multitask.prepare.crema_d import prepare_crema_d
from multitask.prepare.generic_csv import prepare_generic_csv
from multitask.prepare.skit_s2i import prepare_skit_s2i

__all__ = [
    "CorpusError",
    "add_parsers",
    "check_audio",
    "prepare_crema_d",
    "prepare_generic_csv",
    "prepare_skit_s2i",
]


def add_parsers(subparsers) -> None:
    """Register the three ``prepare-*`` subcommands."""
    for module in (skit_s2i, crema_d, generic_csv):
        module.add_parser(subparsers)
