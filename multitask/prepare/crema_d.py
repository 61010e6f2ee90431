"""CREMA-D (acted emotional speech, 91 actors) to actor-disjoint manifests.

The labels live in the file names, as released
(github.com/CheyneyComputerScience/CREMA-D)::

    AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav      e.g. 1001_DFA_ANG_XX.wav

``EMO`` is one of ANG DIS FEA HAP NEU SAD (mapped to angry disgust fear happy
neutral sad) and ``level`` one of LO MD HI XX (low, medium, high, unspecified).
The actors speak the same twelve sentences (7,442 clips of 91 actors: a few are
missing), so only an actor-disjoint split measures anything beyond recognising the
actor: train, valid and test share no actor.

Two known faults of the release are handled by name: ``1076_MTI_SAD_XX.wav``, which the
corpus's README lists as having no audio, is rejected by name (it is not digital
silence, so the silence check alone may let it through as "sad"); and
``1040_ITH_SAD_X.wav``, misnamed in copies made before October 2022, is read with level
``XX``, under the id the corrected name gives.

Rows get ids ``crema-<file stem>``, ``speaker`` = actor id, and keep ``sentence``,
``level``, ``sample_rate`` and ``split_scheme`` (``actor``) as extra columns. A ``.wav``
whose name does not follow the pattern is rejected with the reason, like a bad file.

Example
-------
>>> parse_name("1001_DFA_ANG_XX.wav")
{'actor': '1001', 'sentence': 'DFA', 'emotion': 'angry', 'level': 'XX'}
"""

from __future__ import annotations

import logging
import os
import re

from multitask.audio import MIN_SECONDS
from multitask.manifest import SPLITS
from multitask.prepare import common

logger = logging.getLogger(__name__)

NAME = "crema-d"
AUDIO_DIR = "AudioWAV"
# The corpus's emotion codes and the names the model's emotion head uses.
EMOTION_CODES = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
LEVELS = ("LO", "MD", "HI", "XX")
# Faults of the release itself (its README, "Audio Files"; upstream issues 6 and 8).
KNOWN_DEFECTS = {"1076_MTI_SAD_XX": "no speech in the recording (listed as such by CREMA-D)"}
RENAMED_UPSTREAM = {"1040_ITH_SAD_X": "1040_ITH_SAD_XX"}
# Only the extension may vary in case; the label codes are upper case in the corpus.
_NAME_PATTERN = re.compile(r"^([^_]+)_([^_]+)_([^_]+)_([^_]+)\.(?i:wav)$")


def parse_name(file_name: str) -> dict[str, str]:
    """Actor, sentence, emotion name and level from a CREMA-D file name.

    Raises
    ------
    ValueError
        With the reason, when the name does not follow the corpus's pattern.
    """
    match = _NAME_PATTERN.match(file_name)
    if not match:
        raise ValueError("file name does not follow <actor>_<sentence>_<EMO>_<level>.wav")
    actor, sentence, code, level = match.groups()
    if code not in EMOTION_CODES:
        raise ValueError(
            f"unknown emotion code {code!r} in file name (expected {' '.join(EMOTION_CODES)})"
        )
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r} in file name (expected {' '.join(LEVELS)})")
    return {"actor": actor, "sentence": sentence, "emotion": EMOTION_CODES[code], "level": level}


def list_wavs(audio_dir) -> list[str]:
    """Sorted ``.wav`` names in ``AudioWAV`` (broken links included: they are reported)."""
    names = sorted(os.listdir(audio_dir))
    wavs = [name for name in names if name.lower().endswith(".wav")]
    if len(wavs) < len(names):
        logger.info("%s: ignoring %d file(s) that are not .wav", audio_dir, len(names) - len(wavs))
    return wavs


def candidate_rows(audio_dir, names: list[str]) -> tuple[list[dict], list[dict]]:
    """Rows for well-named files; rejections for the others."""
    rows, rejected = [], []
    stems = {os.path.splitext(name)[0] for name in names}
    for name in names:
        path = os.path.join(audio_dir, name)
        stem, extension = os.path.splitext(name)
        if stem in RENAMED_UPSTREAM and RENAMED_UPSTREAM[stem] in stems:
            rejected.append(common.rejection(
                f"crema-{stem}", path, f"{RENAMED_UPSTREAM[stem]}{extension} is here too "
                "(this was its name before October 2022)"))
            continue
        if stem in RENAMED_UPSTREAM:
            logger.info("%s: read as %s%s, its name since October 2022", path,
                        RENAMED_UPSTREAM[stem], extension)
            stem = RENAMED_UPSTREAM[stem]
        row_id = f"crema-{stem}"
        if stem in KNOWN_DEFECTS:
            rejected.append(common.rejection(row_id, path, KNOWN_DEFECTS[stem]))
            continue
        try:
            fields = parse_name(stem + extension)
        except ValueError as err:
            rejected.append(common.rejection(row_id, path, str(err)))
            continue
        rows.append({
            "id": row_id,
            "wav": path,
            "task": "emotion",
            "intent": "",
            "emotion": fields["emotion"],
            "speaker": fields["actor"],
            "split": "",
            "sample_rate": "",
            "split_scheme": "actor",
            "sentence": fields["sentence"],
            "level": fields["level"],
        })
    return rows, rejected


def _listing_digest(audio_dir, names: list[str]) -> str:
    # Names and sizes: cheap to compute, and changes whenever a file is added,
    # removed, replaced by a real download (git-lfs pull) or truncated.
    return common.text_digest(
        f"{name}\t{os.lstat(os.path.join(audio_dir, name)).st_size}" for name in names
    )


def prepare_crema_d(
    corpus_dir,
    out_dir,
    seed: int = 1234,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    min_seconds: float = MIN_SECONDS,
    force: bool = False,
) -> dict[str, str]:
    """Write actor-disjoint CREMA-D manifests ``train.csv``, ``valid.csv``, ``test.csv``.

    Parameters
    ----------
    corpus_dir : str or os.PathLike
        The CREMA-D folder (the one that contains ``AudioWAV``).
    out_dir : str or os.PathLike
        Where the manifests, ``rejected.csv`` and ``prepare_options.json`` go.
    seed : int
        Seed of the actor assignment; the same seed gives byte-identical manifests.
    valid_fraction, test_fraction : float
        Shares of utterances, met as closely as whole actors allow.
    min_seconds : float
        Recordings shorter than this are rejected.
    force : bool
        Redo the work even if ``out_dir`` is up to date.

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.
    """
    common.check_fractions(valid_fraction, test_fraction)
    corpus_dir = os.path.abspath(corpus_dir)
    audio_dir = os.path.join(corpus_dir, AUDIO_DIR)
    if not os.path.isdir(audio_dir):
        nested = os.path.join(corpus_dir, "data", AUDIO_DIR)
        hint = (f" (older copies keep it under data/: pass {os.path.dirname(nested)})"
                if os.path.isdir(nested) else "")
        raise common.CorpusError(
            f"{audio_dir}: not found; is {corpus_dir} a CREMA-D folder?{hint}")
    names = list_wavs(audio_dir)
    if not names:
        raise common.CorpusError(f"{audio_dir}: contains no .wav files")
    options = {"corpus_dir": corpus_dir, "seed": seed, "valid_fraction": valid_fraction,
               "test_fraction": test_fraction, "min_seconds": min_seconds}
    inputs = {AUDIO_DIR: _listing_digest(audio_dir, names)}
    record = common.make_record(NAME, options, inputs, SPLITS)

    def build():
        rows, rejected = candidate_rows(audio_dir, names)
        common.assign_speaker_splits(rows, valid_fraction, test_fraction, seed)
        return rows, rejected, {"split_scheme": "actor", "speaker_disjoint": True,
                                "note": "actor-disjoint train/valid/test: test actors are unseen"}

    return common.run_preparer(out_dir, record, build, min_seconds=min_seconds, force=force)


def add_parser(subparsers) -> None:
    """Register ``prepare-crema-d`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "prepare-crema-d",
        help="CREMA-D corpus folder -> actor-disjoint train/valid/test manifests",
        description="Write actor-disjoint train/valid/test manifests for CREMA-D.",
    )
    parser.add_argument("--corpus", required=True, help="CREMA-D folder (contains AudioWAV/)")
    common.add_common_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args) -> None:
    paths = prepare_crema_d(args.corpus, args.out, seed=args.seed,
                            valid_fraction=args.valid_fraction,
                            test_fraction=args.test_fraction,
                            min_seconds=args.min_seconds, force=args.force)
    common.print_outputs(paths)
