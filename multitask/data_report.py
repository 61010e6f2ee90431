"""Data report: what the manifests contain, before any GPU hour is spent on them.

:func:`write_data_report` reads one or more manifests and writes ``report.md`` with:
utterances, hours and speakers per split; speakers shared between splits (the leak a
speaker-disjoint split must not have); counts per class and split for each task;
duration statistics; sample rates; and the rows the preparers rejected (from the
``rejected.csv`` next to each manifest). Two kinds of PNG go next to it: class
distributions (one per task) and a duration histogram.

Plots are drawn on matplotlib's Agg canvas directly, without pyplot, so making a
report neither needs a display nor changes the backend of the calling program.

Example
-------
>>> import os, tempfile
>>> from multitask.manifest import write_manifest
>>> folder = tempfile.mkdtemp()
>>> for split, n in (("train", 6), ("test", 2)):
...     write_manifest(os.path.join(folder, f"{split}.csv"), [
...         {"id": f"{split}{i}", "wav": f"{split}{i}.wav", "duration": 1.5 + i, "task": "intent",
...          "intent": ["block", "lost"][i % 2], "speaker": f"{split}-caller{i % 2}"}
...         for i in range(n)])
>>> report = write_data_report([os.path.join(folder, "train.csv"), os.path.join(folder, "test.csv")],
...                            os.path.join(folder, "report"))
>>> sorted(os.listdir(os.path.dirname(report)))
['class_distribution_intent.png', 'durations.png', 'report.md']
"""

from __future__ import annotations

import csv
import os
import statistics
from collections import Counter, defaultdict
from itertools import combinations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from multitask.manifest import SPLITS, TASKS, ManifestError, read_manifest
from multitask.prepare.common import REJECTED_COLUMNS, REJECTED_NAME, reason_kind

REPORT_NAME = "report.md"
# How many rejected rows are listed one by one; the per-reason counts cover all of them.
MAX_REJECTED_LISTED = 100


def write_data_report(manifest_paths, out_dir, rejected_paths=None) -> str:
    """Write ``report.md`` and its PNG plots into ``out_dir``.

    Parameters
    ----------
    manifest_paths : str or list of str
        Manifests (CSV or JSON). A row's split is its ``split`` column, or the
        manifest's file name (``train.csv`` -> ``train``) when that is empty.
    out_dir : str or os.PathLike
        Created if needed.
    rejected_paths : list of str, optional
        ``rejected.csv`` files to summarise. By default, the ``rejected.csv`` found
        next to each manifest, if any.

    Returns
    -------
    str
        Path of ``report.md``.
    """
    if isinstance(manifest_paths, (str, os.PathLike)):
        manifest_paths = [manifest_paths]
    manifest_paths = [os.fspath(path) for path in manifest_paths]
    if rejected_paths is None:
        rejected_paths = _rejected_next_to(manifest_paths)
    check_out_dir(out_dir)
    rows, per_manifest = [], []
    for path in manifest_paths:
        manifest_rows = read_manifest(path)
        default_split = os.path.splitext(os.path.basename(path))[0]
        for row in manifest_rows:
            row["split"] = row["split"] or default_split
        rows.extend(manifest_rows)
        per_manifest.append((path, manifest_rows))
    if not rows:
        raise ManifestError(f"{', '.join(map(os.fspath, manifest_paths))}: no rows, so nothing "
                            "to report")
    rejected = [row for path in rejected_paths for row in _read_rejected(path)]
    splits = _split_order(rows)
    os.makedirs(out_dir, exist_ok=True)

    sections = [
        "# Data report",
        _manifests_section(per_manifest),
        _splits_section(rows, splits),
        _speakers_section(rows, splits),
    ]
    for task in TASKS:
        labelled = [row for row in rows if row[task]]
        if labelled:
            image = f"class_distribution_{task}.png"
            _plot_classes(labelled, task, splits, os.path.join(out_dir, image))
            sections.append(_classes_section(labelled, task, splits, image))
    _plot_durations(rows, splits, os.path.join(out_dir, "durations.png"))
    sections.append(_durations_section(rows, splits, "durations.png"))
    if any(row.get("sample_rate") for row in rows):
        sections.append(_sample_rate_section(rows, splits))
    sections.append(_rejected_section(rejected, rejected_paths))

    report = os.path.join(out_dir, REPORT_NAME)
    with open(report, "w", encoding="utf-8") as fout:
        fout.write("\n\n".join(section.rstrip() for section in sections) + "\n")
    return report


def check_out_dir(out_dir) -> None:
    """Refuse an ``out_dir`` that is a file, or holds a ``report.md`` this command did not
    write (a demo's, a user's): the report would be written over it."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ManifestError(f"{out_dir}: a file, not a folder (--out)")
    report = os.path.join(out_dir, REPORT_NAME)
    if os.path.isfile(report):
        with open(report, encoding="utf-8", errors="replace") as fin:
            if fin.readline().strip() != "# Data report":
                raise ManifestError(f"{report}: not a data report, and it would be written "
                                    "over: give another --out")


# ------------------------------------------------------------------------- reading


def _rejected_next_to(manifest_paths) -> list[str]:
    found = []
    for path in manifest_paths:
        candidate = os.path.join(os.path.dirname(os.path.abspath(path)), REJECTED_NAME)
        if os.path.isfile(candidate) and candidate not in found:
            found.append(candidate)
    return found


def _read_rejected(path) -> list[dict]:
    """The rows of a preparer's ``rejected.csv``; anything else is refused, naming it."""
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: not found (--rejected)" if not os.path.exists(path)
                            else f"{path}: a folder, not a rejected.csv (--rejected)")
    try:
        with open(path, newline="", encoding="utf-8") as fin:
            reader = csv.DictReader(fin)
            missing = sorted(set(REJECTED_COLUMNS) - set(reader.fieldnames or []))
            if missing:
                raise ManifestError(f"{path}: not a preparer's rejected.csv (no "
                                    f"{', '.join(missing)} column)")
            return [{**row, "file": path} for row in reader]
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text (byte {err.start})") from None


def _split_order(rows) -> list[str]:
    present = {row["split"] for row in rows}
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


# ------------------------------------------------------------------------ sections


def _cell(value) -> str:
    # A '|' inside a value (a reason, a path) would split the Markdown cell.
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list, body: list[list]) -> str:
    lines = ["| " + " | ".join(_cell(cell) for cell in header) + " |",
             "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(cell) for cell in line) + " |" for line in body]
    return "\n".join(lines)


def _hours(rows) -> str:
    return f"{sum(row['duration'] for row in rows) / 3600:.2f}"


def _manifests_section(per_manifest) -> str:
    body = [[f"`{path}`", len(rows), ", ".join(_split_order(rows)) or "-", _hours(rows)]
            for path, rows in per_manifest]
    return "## Manifests\n\n" + _table(["manifest", "rows", "splits", "hours"], body)


def _splits_section(rows, splits) -> str:
    body = []
    for split in splits:
        part = [row for row in rows if row["split"] == split]
        tasks = Counter(row["task"] for row in part)
        schemes = sorted({row.get("split_scheme", "") for row in part} - {""})
        body.append([split, len(part), _hours(part),
                     ", ".join(f"{task} {count}" for task, count in sorted(tasks.items())),
                     ", ".join(schemes) or "-"])
    return "## Splits\n\n" + _table(["split", "utterances", "hours", "tasks", "split scheme"],
                                    body)


def _speakers_section(rows, splits) -> str:
    speakers = {split: {row["speaker"] for row in rows if row["split"] == split and row["speaker"]}
                for split in splits}
    missing = Counter(row["split"] for row in rows if not row["speaker"])
    body = [[split, len(speakers[split]), missing.get(split, 0)] for split in splits]
    text = "## Speakers\n\n" + _table(["split", "speakers", "rows without speaker"], body)
    overlaps = []
    for first, second in combinations(splits, 2):
        shared = speakers[first] & speakers[second]
        if shared:
            shown = ", ".join(sorted(shared)[:10]) + (", ..." if len(shared) > 10 else "")
            overlaps.append(f"- **{first} / {second} share {len(shared)} speaker(s)**: {shown}")
    if overlaps:
        text += ("\n\nSpeakers shared between splits (scores on the later split are "
                 "optimistic for unseen callers):\n\n" + "\n".join(overlaps))
    else:
        text += "\n\nNo speaker appears in two splits."
    return text


def _class_counts(rows, task, splits) -> tuple[list[str], dict]:
    counts = defaultdict(Counter)
    for row in rows:
        counts[row[task]][row["split"]] += 1
    return sorted(counts), counts


def _classes_section(rows, task, splits, image) -> str:
    classes, counts = _class_counts(rows, task, splits)
    body = [[name] + [counts[name][split] for split in splits] + [sum(counts[name].values())]
            for name in classes]
    totals = [sum(counts[name][split] for name in classes) for split in splits]
    body.append(["**total**"] + totals + [sum(totals)])
    empty = [f"{name} ({split})" for name in classes for split in splits
             if not counts[name][split]]
    text = (f"## {task.capitalize()} classes\n\n{len(classes)} classes.\n\n"
            + _table([task] + splits + ["total"], body))
    if empty:
        text += "\n\nClasses missing from a split: " + ", ".join(empty)
    return text + f"\n\n![{task} class distribution]({image})"


def _durations_section(rows, splits, image) -> str:
    body = []
    for split in splits:
        durations = sorted(row["duration"] for row in rows if row["split"] == split)
        body.append([split, f"{durations[0]:.2f}", f"{statistics.median(durations):.2f}",
                     f"{statistics.fmean(durations):.2f}", f"{durations[-1]:.2f}"])
    return ("## Durations (seconds)\n\n"
            + _table(["split", "min", "median", "mean", "max"], body)
            + f"\n\n![duration histogram]({image})")


def _rate_of(row) -> str:
    return str(row.get("sample_rate") or "") or "unknown"


def _sample_rate_section(rows, splits) -> str:
    rates = sorted({_rate_of(row) for row in rows},
                   key=lambda rate: (not rate.isdigit(), int(rate) if rate.isdigit() else 0))
    counts = Counter((_rate_of(row), row["split"]) for row in rows)
    body = [[f"{rate} Hz" if rate.isdigit() else rate] + [counts[rate, s] for s in splits]
            for rate in rates]
    return "## Sample rates\n\n" + _table(["sample rate"] + splits, body)


def _rejected_section(rejected, rejected_paths) -> str:
    if not rejected_paths:
        return "## Rejected rows\n\nNo rejected.csv found next to the manifests."
    sources = ", ".join(f"`{path}`" for path in rejected_paths)
    if not rejected:
        return f"## Rejected rows\n\nNone (from {sources})."
    kinds = Counter(reason_kind(row.get("reason", "")) or "unspecified" for row in rejected)
    text = (f"## Rejected rows\n\n{len(rejected)} row(s) rejected (from {sources}).\n\n"
            + _table(["reason", "rows"], [[kind, n] for kind, n in kinds.most_common()]))
    listed = [[row.get("id", ""), f"`{row.get('path', '')}`", row.get("reason", "")]
              for row in rejected[:MAX_REJECTED_LISTED]]
    text += "\n\n" + _table(["id", "path", "reason"], listed)
    if len(rejected) > MAX_REJECTED_LISTED:
        text += f"\n\n... and {len(rejected) - MAX_REJECTED_LISTED} more; see the files above."
    return text


# --------------------------------------------------------------------------- plots


def _save(fig: Figure, path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_classes(rows, task, splits, path) -> None:
    classes, counts = _class_counts(rows, task, splits)
    fig = Figure(figsize=(8, 1.5 + 0.35 * len(classes)))
    ax = fig.add_subplot()
    left = [0] * len(classes)
    for split in splits:
        widths = [counts[name][split] for name in classes]
        ax.barh(classes, widths, left=left, label=split)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()  # first class on top, as in the table
    ax.set_xlabel("utterances")
    ax.set_title(f"{task} classes per split")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a bar
    _save(fig, path)


def _plot_durations(rows, splits, path) -> None:
    longest = max(row["duration"] for row in rows)
    bins = [longest * i / 40 for i in range(41)] if longest > 0 else 10
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    for split in splits:
        durations = [row["duration"] for row in rows if row["split"] == split]
        # Shares, not counts: a small test split stays as readable as a large train split.
        ax.hist(durations, bins=bins, weights=[1 / len(durations)] * len(durations),
                histtype="step", linewidth=1.5, label=f"{split} ({len(durations)})")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("share of the split's utterances")
    ax.set_title("duration histogram")
    ax.legend()
    _save(fig, path)


# ----------------------------------------------------------------------------- CLI


def add_parser(subparsers) -> None:
    """Register ``data-report MANIFEST... --out DIR`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "data-report",
        help="Markdown + PNG summary of manifests (classes, durations, speakers, rejects)",
        description="Write report.md and plots describing one or more manifests.",
    )
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST", help="manifest files")
    parser.add_argument("--out", required=True, help="folder for report.md and the PNGs")
    parser.add_argument("--rejected", nargs="*", default=None, metavar="CSV",
                        help="rejected.csv files (default: those next to the manifests)")
    parser.set_defaults(func=_run)


def _run(args) -> None:
    print(write_data_report(args.manifests, args.out, rejected_paths=args.rejected))
