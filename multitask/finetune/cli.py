"""``multitask finetune``: the command line over :func:`~multitask.finetune.run.finetune`."""

from __future__ import annotations

import json
import re
import sys

from .labels import MODES
from .parent import FinetuneError
from .run import DEFAULT_HPARAMS, finetune


def add_parser(subparsers) -> None:
    """Register ``finetune`` on an argparse subparsers object."""
    from ..cli import repo_id

    parser = subparsers.add_parser(
        "finetune", help="Fine-tune an exported model on new intents from a few examples",
        description="Start from an exported model (folder or Hub repo id), learn the intents "
                    "of a new CSV (path,intent[,emotion][,speaker]) or manifest, keep the "
                    "emotion head, measure what is retained, export. Extra --key=value "
                    "arguments override hparams/finetune.yaml (e.g. --freeze_encoder=1, "
                    "--number_of_epochs=20).")
    parser.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                        help="exported model folder or Hub repo id")
    parser.add_argument("--revision", help="Hub branch, tag or commit of SOURCE")
    parser.add_argument("--train", required=True, metavar="CSV", help="new-domain training data")
    parser.add_argument("--valid", action="append", default=[], metavar="CSV",
                        help="validation data (repeatable; default for a generic CSV --train: "
                             "20%% of it; required when --train is a manifest)")
    parser.add_argument("--test", metavar="CSV", help="new-domain test data")
    parser.add_argument("--mode", choices=MODES, default="replace",
                        help="replace: the new intents only; extend: the parent's and the new")
    parser.add_argument("--emotion", metavar="MANIFEST",
                        help="emotion manifest on which retention is measured (before/after)")
    parser.add_argument("--old-intent", metavar="MANIFEST",
                        help="extend: manifest of the parent's intents, scored before/after")
    parser.add_argument("--old-valid", metavar="MANIFEST",
                        help="extend: held-out clips of the parent's intents, on which the "
                             "new intents' logit offset is chosen")
    parser.add_argument("--replay", action="append", default=[], metavar="MANIFEST",
                        help="extend: manifests of the parent's intents to rehearse")
    parser.add_argument("--emotion-replay", action="append", default=[], metavar="MANIFEST",
                        help="emotion-labelled manifests (the parent's emotion corpus) rehearsed "
                             "while a trainable encoder adapts (needs --freeze_encoder=none|N)")
    parser.add_argument("--replay-per-class", type=int,
                        help="at most this many rehearsed rows per parent intent (default: all)")
    parser.add_argument("--parent-repo-id", type=repo_id, help="Hub id of a local SOURCE, for the card")
    parser.add_argument("--repo-id", type=repo_id, help="repo id used in the card's usage examples")
    parser.add_argument("--out", required=True, help="run folder (rerun to resume)")
    parser.add_argument("--hparams", default=str(DEFAULT_HPARAMS))
    parser.add_argument("--no-export", dest="export", action="store_false")
    parser.set_defaults(func=_run, takes_overrides=True, overrides=[])


def parse_overrides(extra: list[str]) -> dict:
    """``["--key=value", ...]`` -> ``{key: YAML value}``.

    >>> parse_overrides(["--freeze_encoder=1", "--encoder_lr=1e-5", "--freeze_encoder=all"])
    {'freeze_encoder': 'all', 'encoder_lr': 1e-05}
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML(typ="safe")  # YAML 1.2, as HyperPyYAML reads the file: 1e-5 is a float
    overrides = {}
    for item in extra:
        match = re.fullmatch(r"--([A-Za-z_][\w]*)=(.*)", item, flags=re.S)
        if not match:
            raise FinetuneError(f"unknown argument {item!r} (hparams overrides are --key=value)")
        try:
            overrides[match.group(1)] = yaml.load(match.group(2))
        except YAMLError as err:
            raise FinetuneError(f"--{match.group(1)}: {match.group(2)!r} is not a YAML value "
                                f"({' '.join(str(err).split())})") from None
    return overrides


def _run(args) -> int:
    from ..manifest import ManifestError

    try:
        record = finetune(
            args.source, args.train, args.out, valid=args.valid, test=args.test, mode=args.mode,
            emotion=args.emotion, old_intent=args.old_intent, old_valid=args.old_valid,
            replay=args.replay, emotion_replay=args.emotion_replay,
            replay_per_class=args.replay_per_class, revision=args.revision,
            parent_repo_id=args.parent_repo_id, hparams_file=args.hparams,
            overrides=parse_overrides(args.overrides), export=args.export,
            repo_id=args.repo_id)
    except (FinetuneError, ManifestError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(record.get("results", {}), indent=2))
    return 0
