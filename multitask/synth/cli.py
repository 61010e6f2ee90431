"""The ``multitask synth`` subcommand.

Example
-------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="multitask")
>>> _ = add_parser(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["synth", "--out", "data/synth", "--size", "tiny"])
>>> args.size, args.domain, args.shots, args.func is run
('tiny', 'banking', 20, True)
"""

from __future__ import annotations

import argparse
import os
import sys

from .corpus import DEFAULT_SEED, SIZES, generate, manifest_timbres, recorded_seed


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``synth`` on an ``argparse`` subparsers object; sets ``func=run``."""
    from ..cli import positive_int

    parser = subparsers.add_parser(
        "synth",
        help="generate the synthetic banking IVR corpora",
        description=(
            "Speak a synthetic intent corpus (Skit-S2I layout), emotion corpus (CREMA-D "
            "layout) and joint test set with espeak-ng, with --domain new a few-shot "
            "corpus of new banking intents, or with --domain calls call audio for "
            "self-supervised pretraining. Deterministic from --seed."
        ),
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="small",
        help="tiny: seconds, for tests; small: the demo; full: several times small",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--jobs", type=positive_int, default=None, help="worker processes (default: all cores)"
    )
    parser.add_argument("--domain", choices=("banking", "new", "calls"), default="banking")
    parser.add_argument(
        "--shots", type=int, default=20, help="--domain new: training clips per intent"
    )
    parser.add_argument(
        "--caller-affect", type=float, default=0.0, metavar="SHARE",
        help="--domain banking: share of the intent corpus spoken with a mild emotion "
             "(not a label; default 0, neutral prosody)",
    )
    parser.add_argument(
        "--variants", type=lambda text: [v for v in text.split(",") if v], default=None,
        metavar="V1,V2,...",
        help="--domain calls: the voice variants (timbres) that speak, e.g. the training "
             "timbres (for pretraining) or the validation ones (held-out calls); never the "
             "joint test's (or give --voices-of)",
    )
    parser.add_argument(
        "--voices-of", nargs="+", metavar="MANIFEST",
        help="--domain calls: the timbres of these prepared manifests speak (CREMA-D "
             "actors are looked up in --speakers)",
    )
    parser.add_argument(
        "--speakers", metavar="JSON",
        help="--voices-of: the banking corpus's speakers.json (default: --out's)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)
    return parser


def check_speakers_seed(speakers: str, seed: int) -> None:
    """Refuse a ``speakers.json`` of another seed's corpus: its voices are split otherwise,
    so the joint test's voices would be checked against the wrong pool."""
    recorded = recorded_seed(speakers)
    if recorded != seed:
        raise ValueError(f"{speakers}: the corpus of seed {recorded}, not --seed {seed}")


def run(args: argparse.Namespace) -> int:
    """Run :func:`generate` from parsed arguments, print where things went; exit status 0
    (the ``multitask`` command's contract: a handler returns an exit status)."""
    try:
        variants = args.variants
        if args.speakers and not args.voices_of:
            raise ValueError("--speakers is read with --voices-of only")
        if args.voices_of:
            if variants:
                raise ValueError("give --variants or --voices-of, not both")
            speakers = args.speakers or os.path.join(args.out, "speakers.json")
            check_speakers_seed(speakers, args.seed)
            variants = manifest_timbres(args.voices_of, speakers)
        paths = generate(
            args.out,
            size=args.size,
            seed=args.seed,
            jobs=args.jobs,
            domain=args.domain,
            shots=args.shots,
            progress=not args.no_progress,
            caller_affect=args.caller_affect,
            variants=variants,
        )
    except (ValueError, OSError) as err:
        raise SystemExit(f"multitask synth: {err}") from None
    for key, path in paths.items():
        print(f"{key:>10}: {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Stand-alone entry point: ``python -m multitask.synth --out DIR``."""
    parser = argparse.ArgumentParser(prog="multitask")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["synth", *(sys.argv[1:] if argv is None else argv)])
    args.func(args)
