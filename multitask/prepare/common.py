"""Shared machinery of the corpus preparers: read label files, check audio, split, write.

Every preparer follows the same path, and this module owns each step of it so the
corpus-specific modules only know their corpus's layout:

1. :func:`read_label_csv` reads a corpus's label file, failing with a
   :class:`CorpusError` that names the file when a required column is missing.
2. The preparer turns it into *candidate rows* (manifest columns, ``wav`` absolute)
   and assigns each a split with :func:`assign_speaker_splits` (speaker-disjoint,
   closest to the requested fractions) or :func:`assign_random_splits` (stratified by
   label). Splits are assigned before the audio is checked so that fixing or breaking
   one file never reshuffles the others.
3. :func:`run_preparer` skips everything when ``prepare_options.json`` shows the same
   options and inputs were already prepared; otherwise it checks every file with
   :func:`check_audio` (the same checks training applies, through
   :mod:`multitask.audio`), writes ``train.csv``/``valid.csv``/``test.csv``, writes
   every refused row to ``rejected.csv`` with its reason, refuses to write a
   speaker-disjoint split that is not, and logs a one-line summary.

Example
-------
>>> rows = [{"id": f"u{i}", "speaker": f"s{i % 5}", "intent": "block"} for i in range(20)]
>>> assign_speaker_splits(rows, valid_fraction=0.2, test_fraction=0.2, seed=1)
>>> check_speaker_disjoint(rows, "example")
>>> sorted({row["split"] for row in rows})
['test', 'train', 'valid']
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from tqdm import tqdm

from multitask.audio import MIN_SECONDS, AudioInfo, AudioInputError, check_file
from multitask.manifest import PREPARATION_RECORD, SPLITS, repeated_columns, write_manifest

logger = logging.getLogger(__name__)

# Also the corpus version of the manifests beside it (multitask.manifest.corpus_version).
OPTIONS_NAME = PREPARATION_RECORD
REJECTED_NAME = "rejected.csv"
WRITING_NAME = ".preparing"  # present while a preparer writes its manifests
REJECTED_COLUMNS = ("id", "path", "reason")
# Bump when the manifests a preparer writes change shape, so old outputs are redone.
FORMAT_VERSION = 1


class CorpusError(ValueError):
    """A corpus folder or label file that cannot be prepared; the message names the file."""


# ----------------------------------------------------------------------------- audio


def check_audio(path, min_seconds: float = MIN_SECONDS) -> AudioInfo:
    """Decode a file and apply the checks training applies; return what was decoded.

    The file goes through :func:`multitask.audio.check_file`, the checks of
    :func:`multitask.audio.load_audio` applied block by block, so a row the preparer
    keeps is a row the data pipeline can load: missing, empty, unreadable (a git-lfs
    pointer said so), NaN, too short and silent files all raise here rather than
    mid-epoch, and an hour-long file is checked in bounded memory.

    Parameters
    ----------
    path : str or os.PathLike
    min_seconds : float
        Shortest accepted duration.

    Returns
    -------
    AudioInfo
        Sample rate, channels and the number of frames actually decoded (which is
        what the duration is computed from, not the header's claim).

    Raises
    ------
    AudioInputError
        With a reason.
    """
    return check_file(path, min_seconds)


def round_ms(seconds: float) -> float:
    """Round half up to the millisecond, as :func:`multitask.audio.duration_seconds` does."""
    return math.floor(seconds * 1000 + 0.5) / 1000


def rejection(row_id: str, path, reason: str) -> dict:
    """One ``rejected.csv`` row."""
    return {"id": row_id, "path": os.fspath(path), "reason": reason}


def scan_audio(
    rows: list[dict], min_seconds: float, desc: str = "checking audio"
) -> tuple[list[dict], list[dict]]:
    """Check every row's file; fill ``duration`` and ``sample_rate`` of the good ones.

    Parameters
    ----------
    rows : list of dict
        Candidate rows with ``id`` and an absolute ``wav``.
    min_seconds : float
        Shortest accepted duration.
    desc : str
        Label of the progress bar.

    Returns
    -------
    kept, rejected : list of dict, list of dict
        Every input row ends up in exactly one of the two lists.
    """
    kept, rejected = [], []
    # disable=None: a bar on a terminal, nothing in non-interactive logs.
    for row in tqdm(rows, desc=desc, unit="file", disable=None):
        try:
            info = check_audio(row["wav"], min_seconds)
        except AudioInputError as err:
            rejected.append(rejection(row["id"], row["wav"], err.reason))
            continue
        except OSError as err:  # e.g. permission denied: still reported, never dropped
            rejected.append(rejection(row["id"], row["wav"], f"cannot be read ({err})"))
            continue
        kept.append({**row, "duration": round_ms(info.duration), "sample_rate": info.sample_rate})
    return kept, rejected


# ------------------------------------------------------------------------ label files


def read_label_csv(path, required: Iterable[str]) -> tuple[list[str], list[dict]]:
    """Read a comma-separated label file whose header names its columns.

    Header names and values are stripped of surrounding spaces, and a UTF-8 byte
    order mark (as spreadsheet exports write) is ignored.

    Parameters
    ----------
    path : str or os.PathLike
    required : iterable of str
        Columns that must be present.

    Returns
    -------
    header : list of str
        The column names, in file order.
    rows : list of dict
        One dict per data row, plus ``_line``: its line number in the file.

    Raises
    ------
    CorpusError
        When the file is missing, lacks a required column, names a column twice, or has a
        row with more fields than the header.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CorpusError(f"{path}: label file not found")
    with io.StringIO(read_csv_text(path), newline="") as fin:
        reader = csv.reader(fin)
        header = [name.strip() for name in next(reader, [])]
        twice = repeated_columns(header)
        if twice:  # each row's dict would keep the last column of the name, silently
            raise CorpusError(f"{path}: {twice}")
        missing = [name for name in required if name not in header]
        if missing:
            raise CorpusError(
                f"{path}: missing required column(s) {', '.join(missing)} "
                f"(header is {','.join(header) or 'empty'})"
            )
        rows = []
        for values in reader:
            if not any(value.strip() for value in values):
                continue  # blank lines are formatting, not rows
            if len(values) > len(header):
                # Usually an unquoted comma in a text field: every later column would shift.
                raise CorpusError(
                    f"{path}: line {reader.line_num} has {len(values)} fields but the header "
                    f"has {len(header)} (an unquoted comma?)"
                )
            row = {name: value.strip() for name, value in zip(header, values, strict=False)}
            for name in header[len(values) :]:
                row[name] = ""
            row["_line"] = reader.line_num
            rows.append(row)
    return header, rows


def drop_duplicate_ids(rows: list[dict], source: str) -> tuple[list[dict], list[dict]]:
    """Keep the first row of each id; reject the others, saying where the first was."""
    first: dict[str, dict] = {}
    kept, rejected = [], []
    for row in rows:
        if row["id"] in first:
            reason = f"duplicate id (first seen at {first[row['id']].get('_where', source)})"
            rejected.append(rejection(row["id"], row["wav"], reason))
        else:
            first[row["id"]] = row
            kept.append(row)
    return kept, rejected


# ----------------------------------------------------------------------------- splits


def _take_closest(
    sizes: dict[str, int], order: list[str], target: float, keep_back: int
) -> list[str]:
    """Take groups from ``order`` while that moves the total closer to ``target``."""
    taken, total = [], 0
    for name in order[: max(len(order) - keep_back, 0)]:
        if taken and abs(total + sizes[name] - target) > abs(total - target):
            break
        taken.append(name)
        total += sizes[name]
    return taken


def portable_wav(wav: str, out_dir) -> str:
    """A manifest's ``wav``: relative to ``out_dir`` (the manifests' folder) for audio inside
    it, such as a Hub copy unpacked there, so that the folder can be moved; else as given.

    >>> portable_wav("/data/out/hub_copy/wav_audios/1.wav", "/data/out")
    'hub_copy/wav_audios/1.wav'
    >>> portable_wav("/corpora/crema/AudioWAV/1001_DFA_ANG_XX.wav", "/data/out")
    '/corpora/crema/AudioWAV/1001_DFA_ANG_XX.wav'
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.commonpath([os.path.abspath(wav), out_dir]) == out_dir:
        return os.path.relpath(os.path.abspath(wav), out_dir)
    return wav


def assign_speaker_splits(
    rows: list[dict], valid_fraction: float, test_fraction: float, seed: int
) -> None:
    """Set each row's ``split`` so that no speaker appears in two splits.

    Speakers are shuffled (sorted first, then a seeded shuffle, so the result does
    not depend on row order), then handed to test and then valid until each holds
    the speaker set whose utterance count is closest to its fraction of all rows;
    the rest are train. A split with a non-zero fraction gets at least one speaker,
    and train always keeps at least one.

    Raises
    ------
    CorpusError
        When there are too few speakers for the requested splits.
    """
    sizes = Counter(row["speaker"] for row in rows)
    speakers = sorted(sizes)
    wanted = [name for name, fraction in (("test", test_fraction), ("valid", valid_fraction))
              if fraction > 0]
    if len(speakers) < len(wanted) + 1:
        raise CorpusError(
            f"a speaker-disjoint split into train/{'/'.join(wanted)} needs at least "
            f"{len(wanted) + 1} speakers; found {len(speakers)} ({', '.join(speakers)})"
        )
    random.Random(seed).shuffle(speakers)
    fractions = {"test": test_fraction, "valid": valid_fraction}
    split_of: dict[str, str] = {}
    for position, split in enumerate(wanted):
        left = [s for s in speakers if s not in split_of]
        # Keep one speaker back for train and one for every split still to fill.
        keep_back = len(wanted) - position
        for speaker in _take_closest(sizes, left, fractions[split] * len(rows), keep_back):
            split_of[speaker] = split
    for row in rows:
        row["split"] = split_of.get(row["speaker"], "train")


def assign_random_splits(
    rows: list[dict],
    valid_fraction: float,
    test_fraction: float,
    seed: int,
    key: Callable[[dict], str],
) -> None:
    """Set each row's ``split`` at random, stratified by ``key`` (usually the label).

    Within each stratum, rows are sorted by id and shuffled with the seed; the first
    ``round(test_fraction * n)`` go to test, the next ``round(valid_fraction * n)``
    to valid. Stratifying keeps every class in every split when the class is large
    enough, which matters for the small sets banks bring.
    """
    strata: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        strata[key(row)].append(row)
    rng = random.Random(seed)
    for name in sorted(strata):
        group = sorted(strata[name], key=lambda row: row["id"])
        rng.shuffle(group)
        n_test = round(test_fraction * len(group))
        n_valid = round(valid_fraction * len(group))
        for index, row in enumerate(group):
            if index < n_test:
                row["split"] = "test"
            elif index < n_test + n_valid:
                row["split"] = "valid"
            else:
                row["split"] = "train"


def check_speaker_disjoint(rows: Iterable[dict], source: str) -> None:
    """Raise :class:`CorpusError` if any speaker has rows in more than one split."""
    splits_of: dict[str, set] = defaultdict(set)
    for row in rows:
        splits_of[row["speaker"]].add(row["split"])
    crossing = {s: sorted(v) for s, v in sorted(splits_of.items()) if len(v) > 1}
    if crossing:
        shown = "; ".join(f"{s}: {', '.join(v)}" for s, v in list(crossing.items())[:10])
        raise CorpusError(
            f"{source}: the split claims to be speaker-disjoint but {len(crossing)} "
            f"speaker(s) appear in several splits ({shown})"
        )


def read_csv_text(path) -> str:
    """The text of the CSV at ``path`` (a BOM dropped), decoded whole first, so that a
    non-UTF-8 byte anywhere in it is an error naming the file, not a traceback."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fin:
            return fin.read()
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8 "
                          "CSV") from None


def check_fractions(valid_fraction: float, test_fraction: float) -> None:
    """Refuse fractions that leave no training data."""
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1):
        raise CorpusError(f"--valid-fraction and --test-fraction must be in [0, 1); got "
                          f"{valid_fraction} and {test_fraction}")
    if valid_fraction + test_fraction >= 1:
        raise CorpusError(f"--valid-fraction + --test-fraction must be below 1, to leave "
                          f"training data; got {valid_fraction + test_fraction}")


# ---------------------------------------------------------------------- idempotency


def file_digest(path) -> str:
    """SHA-256 of a (label) file, so an edited label file triggers a fresh run."""
    digest = hashlib.sha256()
    with open(path, "rb") as fin:
        for block in iter(lambda: fin.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_digest(lines: Iterable[str]) -> str:
    """SHA-256 of lines of text (e.g. a folder listing)."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def make_record(preparer: str, options: dict, inputs: dict, outputs: Iterable[str]) -> dict:
    """What ``prepare_options.json`` must match for a run to be skipped."""
    return {
        "preparer": preparer,
        "format_version": FORMAT_VERSION,
        "options": options,
        "inputs": inputs,
        "outputs": list(outputs),
    }


def _read_previous(out_dir) -> dict | None:
    path = os.path.join(out_dir, OPTIONS_NAME)
    try:
        with open(path, encoding="utf-8") as fin:
            return json.load(fin)
    except (OSError, json.JSONDecodeError):
        return None


def is_up_to_date(out_dir, record: dict) -> bool:
    """True when ``out_dir`` holds every output of a run with exactly this record."""
    previous = _read_previous(out_dir)
    if previous is None:
        return False
    if {key: previous.get(key) for key in record} != record:
        return False
    names = [f"{split}.csv" for split in record["outputs"]] + [REJECTED_NAME]
    return all(os.path.isfile(os.path.join(out_dir, name)) for name in names)


def manifest_paths(out_dir, splits: Iterable[str]) -> dict[str, str]:
    """``{split: out_dir/split.csv}``."""
    return {split: os.path.join(os.path.abspath(out_dir), f"{split}.csv") for split in splits}


# --------------------------------------------------------------------------- writing


def run_preparer(
    out_dir,
    record: dict,
    build: Callable[[], tuple[list[dict], list[dict], dict]],
    *,
    min_seconds: float,
    force: bool = False,
) -> dict[str, str]:
    """Skip if already prepared; else build rows, check audio, validate and write.

    Parameters
    ----------
    out_dir : str or os.PathLike
    record : dict
        From :func:`make_record`; ``record["outputs"]`` names the splits to write.
    build : callable
        Returns ``(candidate_rows, rejected_rows, result)``: rows with manifest
        columns, an absolute ``wav`` and a ``split``; rows refused before any audio
        was read; and a description of the split for ``prepare_options.json`` with
        at least ``split_scheme`` and ``speaker_disjoint`` (when true, checked).
    min_seconds : float
        Shortest accepted duration.
    force : bool
        Redo the work even if the outputs are up to date.

    Returns
    -------
    dict
        ``{split: manifest path}`` for every split in ``record["outputs"]``.

    Raises
    ------
    CorpusError
        If ``min_seconds`` is not a duration, ``out_dir`` holds files no preparer wrote,
        or every row is rejected (nothing is written then).
    """
    if not 0 <= min_seconds < math.inf:  # nan too
        raise CorpusError(f"min_seconds (--min-seconds) must be a duration of 0 s or more; "
                          f"got {min_seconds}")
    check_out_dir(out_dir)
    paths = manifest_paths(out_dir, record["outputs"])
    if not force and is_up_to_date(out_dir, record):
        logger.info("%s: %s is up to date, skipping (force=True redoes it)",
                    record["preparer"], out_dir)
        return paths
    candidates, rejected, result = build()
    kept, bad_audio = scan_audio(candidates, min_seconds,
                                 desc=f"{record['preparer']}: checking audio")
    rejected = rejected + bad_audio
    if rejected and not kept:
        first = min(rejected, key=lambda row: (row["id"], row["path"]))
        raise CorpusError(f"{record['preparer']}: every row was rejected "
                          f"({reason_counts(rejected)}; the first: {first['path']}: "
                          f"{first['reason']}); no manifest was written")
    if result["speaker_disjoint"]:
        check_speaker_disjoint(kept, record["preparer"])
    by_split = {split: [] for split in record["outputs"]}
    for row in kept:
        by_split[row["split"]].append(row)
    os.makedirs(out_dir, exist_ok=True)
    previous = _read_previous(out_dir)
    # A previous run's options file must not vouch for half-written outputs; the marker
    # says the manifests are a preparer's while they are written (check_out_dir).
    options_path = os.path.join(out_dir, OPTIONS_NAME)
    marker = os.path.join(out_dir, WRITING_NAME)
    with open(marker, "w", encoding="utf-8"):
        pass
    if os.path.exists(options_path):
        os.remove(options_path)
    if previous:
        _remove_stale_manifests(out_dir, previous.get("outputs", []), record["outputs"])
    for split, rows in by_split.items():
        rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        for row in rows:
            row["wav"] = portable_wav(row["wav"], out_dir)
        write_manifest(paths[split], sorted(rows, key=lambda row: row["id"]))
    write_rejected(os.path.join(out_dir, REJECTED_NAME), rejected)
    summary = {split: len(rows) for split, rows in by_split.items()}
    with open(options_path, "w", encoding="utf-8") as fout:
        json.dump({**record, "result": {**result, "rows": summary, "rejected": len(rejected)}},
                  fout, indent=1, sort_keys=True)
        fout.write("\n")
    os.remove(marker)
    _log_summary(record["preparer"], summary, rejected, out_dir)
    return paths


def check_out_dir(out_dir) -> None:
    """Refuse an output folder that is a file, an exported model, or holds manifests no
    preparer wrote there (a corpus's own ``train.csv``, the user's CSVs): preparing
    writes ``<split>.csv`` and ``rejected.csv`` over them. A folder a preparer wrote (its
    ``prepare_options.json``, or the marker of a preparation that was interrupted) is
    prepared again."""
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise CorpusError(f"{out_dir}: a file, not a folder (--out)")
    from multitask.export import is_exported_model

    if is_exported_model(out_dir):
        raise CorpusError(f"{out_dir}: an exported model; give another --out for manifests")
    if any(os.path.isfile(os.path.join(out_dir, name)) for name in (OPTIONS_NAME, WRITING_NAME)):
        return
    found = [name for name in [*(f"{split}.csv" for split in SPLITS), REJECTED_NAME]
             if os.path.exists(os.path.join(out_dir, name))]
    if found:
        raise CorpusError(f"{out_dir}: holds {', '.join(found)}, which no preparer wrote there; "
                          "preparing would write over it: give a new --out")


def _remove_stale_manifests(out_dir, before: Iterable[str], now: Iterable[str]) -> None:
    """Delete manifests an earlier run wrote and this one does not, so none looks fresh.

    Only files a previous preparation listed are touched, never a user's own files.
    """
    for split in sorted(set(before) - set(now)):
        path = os.path.join(out_dir, f"{split}.csv")
        if split in SPLITS and os.path.isfile(path):
            os.remove(path)
            logger.info("removed %s: not part of this preparation", path)


def write_rejected(path, rejected: list[dict]) -> None:
    """Write ``rejected.csv`` (header only when nothing was rejected), sorted by id."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fout:
        writer = csv.DictWriter(fout, fieldnames=REJECTED_COLUMNS)
        writer.writeheader()
        for row in sorted(rejected, key=lambda row: (row["id"], row["path"])):
            writer.writerow(row)
    os.replace(tmp, path)


def reason_kind(reason: str) -> str:
    """The stable part of a reason ("too short: 0.05 s ..." -> "too short")."""
    return reason.split(":")[0].split(" (")[0].strip()


def reason_counts(rejected: list[dict]) -> str:
    """How many rows were rejected for each kind of reason.

    >>> reason_counts([{"reason": "too short: 0.05 s"}, {"reason": "too short: 0.1 s"},
    ...                {"reason": "unreadable (not audio)"}])
    '2 too short, 1 unreadable'
    """
    kinds = Counter(reason_kind(row["reason"]) for row in rejected)
    return ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))


def _log_summary(preparer: str, summary: dict, rejected: list[dict], out_dir) -> None:
    kept = ", ".join(f"{split} {count}" for split, count in summary.items())
    if not rejected:
        logger.info("%s: kept %d rows (%s), rejected none; wrote %s",
                    preparer, sum(summary.values()), kept, out_dir)
        return
    reasons = reason_counts(rejected)
    # A warning, so the line is shown even when nobody configured logging.
    logger.warning("%s: kept %d rows (%s), rejected %d (%s); see %s",
                   preparer, sum(summary.values()), kept, len(rejected), reasons,
                   os.path.join(out_dir, REJECTED_NAME))


# ------------------------------------------------------------------------------- CLI


def add_common_arguments(parser: argparse.ArgumentParser, fractions: bool = True,
                         test_fraction_help: str = "share of utterances for test (default 0.1)",
                         ) -> None:
    """Options every preparer shares: output folder, seed, fractions, minimum, force."""
    parser.add_argument("--out", required=True, help="folder for train/valid/test.csv")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the split (default 1234)")
    if fractions:
        parser.add_argument("--valid-fraction", type=float, default=0.1,
                            help="share of utterances for validation (default 0.1)")
        parser.add_argument("--test-fraction", type=float, default=0.1, help=test_fraction_help)
    parser.add_argument("--min-seconds", type=float, default=MIN_SECONDS,
                        help=f"reject recordings shorter than this (default {MIN_SECONDS})")
    parser.add_argument("--force", action="store_true",
                        help="redo the preparation even if the outputs are up to date")


def print_outputs(paths: dict[str, str]) -> None:
    """What a preparer subcommand prints: one manifest path per split."""
    for split, path in paths.items():
        print(f"{split}\t{path}")
