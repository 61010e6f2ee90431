"""A bank's own recordings, listed in a CSV, to train/valid/test manifests.

The CSV's header names its columns::

    path,intent[,emotion][,speaker][,id]

``path`` is relative to the CSV's folder (or absolute); at least one of ``intent`` and
``emotion`` must be a column, and each row needs at least one of the two labels.
Any other column is kept in the manifests. Splits:

* ``speaker`` when a speaker column is filled in: no speaker in two splits (rows
  without a speaker are then rejected, since they could not be placed safely);
* ``random`` otherwise: a seeded split stratified by label, so every class large
  enough appears in each split;
* ``single`` with ``split_as``: the whole file becomes one split (e.g. a held-out
  test set recorded separately), and only that manifest is written.

Row ids are the ``id`` column when present, else the path without its extension,
both after ``id_prefix``.

Example
-------
>>> import os, tempfile
>>> import numpy as np, soundfile as sf
>>> calls = tempfile.mkdtemp()
>>> tone = np.sin(2 * np.pi * 220 * np.arange(16000) / 16000).astype("float32")
>>> with open(os.path.join(calls, "labels.csv"), "w") as fout:
...     _ = fout.write("path,intent\\n")
...     for i in range(40):
...         sf.write(os.path.join(calls, f"call{i}.wav"), (0.1 + 0.02 * i) * tone, 16000)
...         _ = fout.write(f"call{i}.wav,{['block', 'lost'][i % 2]}\\n")
>>> from multitask.manifest import read_manifest
>>> paths = prepare_generic_csv(os.path.join(calls, "labels.csv"), os.path.join(calls, "out"))
>>> {split: len(read_manifest(path)) for split, path in paths.items()}  # 10 % each, per intent
{'train': 32, 'valid': 4, 'test': 4}
>>> held_out = os.path.join(calls, "held_out")
>>> prepare_generic_csv(os.path.join(calls, "labels.csv"), held_out, split_as="test") == {
...     "test": os.path.join(held_out, "test.csv")}
True
"""

from __future__ import annotations

import os

from multitask.audio import MIN_SECONDS
from multitask.manifest import COLUMNS, SPLITS, task_of
from multitask.prepare import common

NAME = "csv"
KNOWN = ("path", "intent", "emotion", "speaker", "id")
# Columns the preparer writes itself; a CSV column of that name would be overwritten.
RESERVED = tuple(c for c in COLUMNS if c not in KNOWN) + ("sample_rate", "split_scheme")


def read_rows(csv_path, id_prefix: str = "") -> tuple[list[dict], list[dict], bool]:
    """Candidate rows, rows refused for their labels, and whether speakers are given."""
    header, table = common.read_label_csv(csv_path, ("path",))
    if "intent" not in header and "emotion" not in header:
        raise common.CorpusError(f"{csv_path}: needs an 'intent' or an 'emotion' column")
    if not table:
        raise common.CorpusError(f"{csv_path}: lists no recordings (a header, no rows)")
    clash = [name for name in header if name in RESERVED]
    if clash:
        raise common.CorpusError(
            f"{csv_path}: column(s) {', '.join(clash)} are written by the preparer; "
            "rename them"
        )
    extras = [name for name in header if name not in KNOWN]
    has_speakers = any(row.get("speaker") for row in table)
    root = os.path.dirname(os.path.abspath(csv_path))
    rows, rejected = [], []
    for raw in table:
        row_id = id_prefix + (raw.get("id") or os.path.splitext(raw["path"])[0].replace("\\", "/"))
        wav = os.path.join(root, raw["path"])
        intent, emotion = raw.get("intent", ""), raw.get("emotion", "")
        if not raw["path"]:
            reason = "no path"
        elif not (intent or emotion):
            reason = "no intent or emotion label"
        elif has_speakers and not raw.get("speaker"):
            reason = "no speaker, but other rows have one and the split is speaker-disjoint"
        else:
            reason = ""
        if reason:
            rejected.append(common.rejection(row_id, wav, f"{reason} (line {raw['_line']})"))
            continue
        rows.append({
            "id": row_id, "wav": wav, "task": task_of(intent, emotion),
            "intent": intent, "emotion": emotion, "speaker": raw.get("speaker", ""),
            "split": "", "sample_rate": "", "split_scheme": "",
            **{name: raw[name] for name in extras},
            "_where": f"line {raw['_line']}",
        })
    return rows, rejected, has_speakers


def prepare_generic_csv(
    csv_path,
    out_dir,
    seed: int = 1234,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_as: str | None = None,
    min_seconds: float = MIN_SECONDS,
    force: bool = False,
    id_prefix: str = "",
) -> dict[str, str]:
    """Write manifests for the recordings listed in ``csv_path``.

    Parameters
    ----------
    csv_path : str or os.PathLike
        The CSV (see the module docstring for its columns).
    out_dir : str or os.PathLike
        Where the manifests, ``rejected.csv`` and ``prepare_options.json`` go.
    seed : int
        Seed of the split; the same seed gives byte-identical manifests.
    valid_fraction, test_fraction : float
        Shares of utterances (ignored with ``split_as``).
    split_as : {"train", "valid", "test"} or None
        Put every row into this one split and write only its manifest.
    min_seconds : float
        Recordings shorter than this are rejected.
    force : bool
        Redo the work even if ``out_dir`` is up to date.
    id_prefix : str
        Prepended to every id, to keep ids unique when manifests are combined.

    Returns
    -------
    dict
        ``{split: manifest path}``: all three splits, or only ``split_as``.
    """
    if split_as is not None and split_as not in SPLITS:
        raise ValueError(f"split_as must be one of {', '.join(SPLITS)}; got {split_as!r}")
    if split_as is None:
        common.check_fractions(valid_fraction, test_fraction)
    csv_path = os.path.abspath(csv_path)
    if not os.path.isfile(csv_path):
        raise common.CorpusError(f"{csv_path}: CSV not found")
    options = {"csv": csv_path, "seed": seed, "split_as": split_as, "min_seconds": min_seconds,
               "id_prefix": id_prefix,
               "valid_fraction": None if split_as else valid_fraction,
               "test_fraction": None if split_as else test_fraction}
    inputs = {os.path.basename(csv_path): common.file_digest(csv_path)}
    outputs = (split_as,) if split_as else SPLITS
    record = common.make_record(NAME, options, inputs, outputs)

    def build():
        rows, rejected, has_speakers = read_rows(csv_path, id_prefix)
        rows, duplicates = common.drop_duplicate_ids(rows, csv_path)
        if split_as:
            scheme = "single"
            for row in rows:
                row["split"] = split_as
        elif has_speakers:
            scheme = "speaker"
            try:
                common.assign_speaker_splits(rows, valid_fraction, test_fraction, seed)
            except common.CorpusError as err:  # say which file, and what was left out
                left_out = rejected + duplicates
                note = (f" ({len(left_out)} row(s) left out before the split; the first: "
                        f"{left_out[0]['reason']})" if left_out else "")
                raise common.CorpusError(f"{csv_path}: {err}{note}") from None
        else:
            scheme = "random"
            common.assign_random_splits(rows, valid_fraction, test_fraction, seed,
                                        key=lambda row: f"{row['intent']}|{row['emotion']}")
        for row in rows:
            row["split_scheme"] = scheme
        return rows, rejected + duplicates, {"split_scheme": scheme,
                                             "speaker_disjoint": scheme == "speaker"}

    return common.run_preparer(out_dir, record, build, min_seconds=min_seconds, force=force)


def add_parser(subparsers) -> None:
    """Register ``prepare-csv`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "prepare-csv",
        help="CSV of path,intent[,emotion][,speaker] -> train/valid/test manifests",
        description="Write manifests for recordings listed in a CSV with header "
                    "path,intent[,emotion][,speaker]; paths are relative to the CSV.",
    )
    parser.add_argument("--csv", required=True, help="the CSV listing the recordings")
    parser.add_argument("--split-as", choices=SPLITS, default=None,
                        help="take the whole file as this one split (e.g. test)")
    parser.add_argument("--id-prefix", default="", help="prefix for every row id")
    common.add_common_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args) -> None:
    paths = prepare_generic_csv(args.csv, args.out, seed=args.seed,
                                valid_fraction=args.valid_fraction,
                                test_fraction=args.test_fraction, split_as=args.split_as,
                                min_seconds=args.min_seconds, force=args.force,
                                id_prefix=args.id_prefix)
    common.print_outputs(paths)
