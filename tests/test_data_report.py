"""Tests of the data report: Markdown tables and PNG plots from prepared manifests."""

from __future__ import annotations

import argparse
import os

import pytest
from PIL import Image

from multitask import data_report
from multitask.data_report import write_data_report
from multitask.prepare import prepare_crema_d, prepare_skit_s2i

try:  # the tests folder may be a package or just a folder on sys.path
    from tests.corpus_fixtures import make_crema_d, make_skit_s2i
except ImportError:
    from corpus_fixtures import make_crema_d, make_skit_s2i


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Skit-S2I (speaker split) and CREMA-D manifests, with their rejected.csv files."""
    root = tmp_path_factory.mktemp("corpora")
    skit = make_skit_s2i(root / "skit")
    crema = make_crema_d(root / "crema")
    skit_paths = prepare_skit_s2i(skit.root, root / "out_skit")
    crema_paths = prepare_crema_d(crema.root, root / "out_crema")
    return {"skit": skit, "crema": crema, "manifests":
            list(skit_paths.values()) + list(crema_paths.values()), "root": root}


@pytest.fixture(scope="module")
def report(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = write_data_report(prepared["manifests"], out)
    return out, open(path, encoding="utf-8").read()


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row that starts with ``first_cell``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starts with {first_cell!r}")


def test_report_counts_every_class_per_split(report, prepared):
    _, text = report
    assert "## Intent classes" in text and "## Emotion classes" in text
    for name in ("branch_address", "activate_card", "past_transactions", "dispatch_status",
                 "angry", "disgust", "fear", "happy", "neutral", "sad"):
        assert f"| {name} |" in text
    # 6 speakers x 3 takes of each intent; 8 actors x 3 sentences of each emotion.
    assert table_row(text, "branch_address")[-1] == "18"
    assert table_row(text, "angry")[-1] == "24"
    assert table_row(text, "angry")[0] == "angry"
    # Each split's cell counts that split's rows of the class in the manifests.
    from multitask.manifest import read_manifests

    rows = read_manifests(prepared["manifests"])
    splits = [split for split in ("train", "valid", "test") if any(r["split"] == split for r in rows)]
    for label, task in (("branch_address", "intent"), ("angry", "emotion")):
        counts = [str(sum(r[task] == label and r["split"] == split for r in rows)) for split in splits]
        assert table_row(text, label)[1:1 + len(splits)] == counts, label


def test_report_lists_speakers_sample_rates_and_durations(report):
    _, text = report
    assert "## Speakers" in text and "No speaker appears in two splits." in text
    assert "| 8000 Hz |" in text and "| 16000 Hz |" in text
    assert "## Durations (seconds)" in text


def test_report_lists_every_rejected_row_with_its_reason(prepared, report):
    _, text = report
    broken = {**prepared["skit"].broken, **prepared["crema"].broken}
    assert f"{len(broken)} row(s) rejected" in text
    for row_id in broken:
        assert f"| {row_id} |" in text


def test_report_plots_are_valid_nontrivial_pngs(report):
    out, text = report
    images = ["class_distribution_intent.png", "class_distribution_emotion.png",
              "durations.png"]
    for name in images:
        path = os.path.join(out, name)
        assert f"({name})" in text  # embedded in the Markdown
        assert os.path.getsize(path) > 5000
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width >= 400 and image.height >= 200
            # Something was drawn: far more than a blank canvas's single colour.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 20


def test_report_flags_speakers_shared_between_splits(prepared, tmp_path):
    official = prepare_skit_s2i(prepared["skit"].root, tmp_path / "official", split="official")
    path = write_data_report(list(official.values()), tmp_path / "report")
    text = open(path, encoding="utf-8").read()
    assert "train / test share 6 speaker(s)" in text


def test_report_without_rejected_files_says_so(prepared, tmp_path):
    path = write_data_report(prepared["manifests"][:1], tmp_path / "report", rejected_paths=[])
    assert "No rejected.csv found" in open(path, encoding="utf-8").read()


def test_data_report_subcommand_writes_the_report(prepared, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="multitask")
    data_report.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data-report", *prepared["manifests"], "--out", str(tmp_path)])
    args.func(args)
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.md")
    assert (tmp_path / "durations.png").is_file()


def test_a_command_meeting_the_packages_own_error_prints_one_line_not_a_traceback(
        tmp_path, capsys):
    from multitask.cli import main

    missing = tmp_path / "nope.csv"
    assert main(["data-report", str(missing), "--out", str(tmp_path / "report")]) == 1
    assert capsys.readouterr().err == f"error: {missing}: manifest not found\n"
    # A preparer's rejected.csv (one rejected file) is not a manifest: named, in one line.
    rejected = tmp_path / "rejected.csv"
    rejected.write_text("id,path,reason\nx,x.wav,empty\n")
    code = main(["data-report", str(rejected), "--out", str(tmp_path / "r")])
    assert code == 1 and "missing column(s) wav, duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--model", "m", "--batch-size", "0", "x.wav"])
    assert "--batch-size: must be a whole number of at least 1, not 0" in capsys.readouterr().err


def test_a_report_md_it_did_not_write_is_not_written_over(prepared, report, tmp_path):
    mine = tmp_path / "report.md"
    mine.write_text("# Demo results\n")
    with pytest.raises(data_report.ManifestError, match=r"report.md: not a data report"):
        write_data_report(prepared["manifests"], tmp_path)
    assert mine.read_text() == "# Demo results\n"
    out, _ = report  # its own report is written again
    assert write_data_report(prepared["manifests"], out) == os.path.join(out, "report.md")


def test_a_rejected_file_that_is_missing_a_folder_or_not_a_rejected_csv_is_named(prepared,
                                                                                tmp_path):
    manifest = prepared["manifests"][0]
    for rejected, problem in ((tmp_path / "nope.csv", "not found"),
                              (tmp_path, "a folder, not a rejected.csv"),
                              (manifest, r"not a preparer's rejected.csv \(no path, reason column\)")):
        with pytest.raises(data_report.ManifestError, match=rf"{rejected}: {problem}"):
            write_data_report([manifest], tmp_path / "out", rejected_paths=[str(rejected)])
