"""Command-line input that cannot work is refused in one line that names it, before any
work or any file is written: a training run given where an exported model goes, a
revision of a local folder, a device this machine lacks, an invalid Hub repo id, a
duration or a job count that is not one, a test fraction the split ignores, manifests
with no rows, a preparation that would keep no row.

The model and run are the session's tiny ones (``trained_tiny``).
"""

import re

import pytest
from corpus_fixtures import make_generic_csv, make_skit_s2i

from multitask.cli import main

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]


def refused(argv, capsys) -> str:
    """Run ``multitask argv``; the one error line it printed (argparse's or the command's)."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: usage, then "multitask CMD: error: ..."
        code = exit_.code
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    return make_generic_csv(tmp_path_factory.mktemp("bank")).root / "labels.csv"


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_training_run_is_sent_to_export_first(command, trained_run, toy_corpus, toy_wavs,
                                                tmp_path, capsys):
    argv = (["predict", "--model", str(trained_run), toy_wavs[0]] if command == "predict" else
            ["evaluate", "--model", str(trained_run), "--test", toy_corpus["test"],
             "--out", str(tmp_path / "eval")])
    line = refused(argv, capsys)
    assert line == (f"error: {trained_run} is a training run, not an exported model: export "
                    f"it first (`multitask export --from {trained_run} --out DIR`)")
    assert not (tmp_path / "eval").exists()


def test_a_revision_of_a_local_folder_is_refused(exported_model, toy_wavs, capsys):
    line = refused(["predict", "--model", str(exported_model), "--revision", "v9",
                    toy_wavs[0]], capsys)
    assert line == (f"error: {exported_model} is a folder here, which has no revisions; a "
                    "revision (v9) is for a Hub repo id")


@pytest.mark.parametrize("device, named", [
    ("bogus", r"argument --device: not a device: 'bogus' \(cpu, cuda, cuda:1 \.\.\.\)"),
    ("cuda:99", r"argument --device: cuda:99: this machine has (no CUDA GPU|\d+ CUDA GPU)"),
])
def test_a_device_this_machine_lacks_is_named(device, named, exported_model, toy_wavs, capsys):
    line = refused(["predict", "--model", str(exported_model), "--device", device,
                    toy_wavs[0]], capsys)
    assert re.search(named, line), line


@pytest.mark.parametrize("command", ["export", "finetune", "calibrate"])
def test_an_invalid_repo_id_is_refused_before_any_work(command, trained_run, exported_model,
                                                       toy_corpus, tmp_path, capsys):
    source = trained_run if command == "export" else exported_model
    extra = {"export": [], "finetune": ["--train", toy_corpus["train"]],
             "calibrate": ["--calls", toy_corpus["test"]]}[command]
    line = refused([command, "--from", str(source), "--out", str(tmp_path / "out"),
                    *extra, "--repo-id", "org/my model"], capsys)
    assert line.endswith("argument --repo-id: not a Hub repo id ('name' or 'org/name' of "
                         "letters, digits, '-', '_', '.'): 'org/my model'")


@pytest.mark.parametrize("value", ["inf", "-1", "nan"])
def test_min_seconds_that_is_not_a_duration_is_refused(value, bank, tmp_path, capsys):
    line = refused(["prepare-csv", "--csv", str(bank), "--out", str(tmp_path / "p"),
                    f"--min-seconds={value}"], capsys)
    assert line.startswith("error: min_seconds (--min-seconds) must be a duration of 0 s or "
                           "more; got ")
    assert not (tmp_path / "p").exists()


def test_a_preparation_that_would_keep_no_row_writes_nothing(bank, tmp_path, capsys):
    line = refused(["prepare-csv", "--csv", str(bank), "--out", str(tmp_path / "p"),
                    "--min-seconds=100"], capsys)
    assert line.startswith("error: csv: every row was rejected (")
    assert "too short" in line and "minimum 100.0 s" in line and str(bank.parent) in line
    assert line.endswith("; no manifest was written")
    assert not (tmp_path / "p").exists()


def test_a_test_fraction_is_refused_with_the_official_split(tmp_path, capsys):
    corpus = make_skit_s2i(tmp_path / "skit", broken=())
    line = refused(["prepare-skit-s2i", "--corpus", str(corpus.root), "--out",
                    str(tmp_path / "p"), "--split", "official", "--test-fraction", "0.2"],
                   capsys)
    assert line == ("error: a test fraction (0.2) is for --split speaker; --split official "
                    "keeps the corpus's own test.csv as test")


@pytest.mark.parametrize("jobs", ["0", "-4"])
def test_synth_jobs_below_one_is_refused(jobs, tmp_path, capsys):
    line = refused(["synth", "--out", str(tmp_path / "s"), "--size", "tiny",
                    f"--jobs={jobs}"], capsys)
    assert line.endswith(f"argument --jobs: must be a whole number of at least 1, not {jobs}")


@pytest.mark.parametrize("content", ["", "id,wav,duration,task,intent,emotion,speaker,split\n"])
def test_a_data_report_of_no_rows_is_refused(content, tmp_path, capsys):
    manifest = tmp_path / "test.csv"
    manifest.write_text(content)
    line = refused(["data-report", str(manifest), "--out", str(tmp_path / "report")], capsys)
    assert line == f"error: {manifest}: no rows, so nothing to report"
    assert not (tmp_path / "report").exists()
