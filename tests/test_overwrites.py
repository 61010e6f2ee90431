"""Output folders that already hold something of the user's are refused, not replaced:
an evaluation over a demo's results, an export over its own training run or another
folder, manifests over a corpus's own CSVs.

The model and run are the session's tiny ones (``trained_tiny``); every folder at risk
is a copy, checked byte for byte afterwards.
"""

import hashlib
import json
import shutil

import pytest
from toy_data import write_new_domain

from multitask.evaluate_export import EvaluationError, evaluate_export
from multitask.export import ExportError, export_model
from multitask.prepare import CorpusError
from multitask.prepare.generic_csv import prepare_generic_csv

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]


def contents(folder) -> dict:
    """Every file under ``folder`` and its digest."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_an_evaluation_is_not_written_over_a_results_folder_with_a_metrics_file(
        exported_model, toy_corpus, tmp_path):
    """A demo's results folder holds a metrics.json too (and the model, and its data)."""
    results = tmp_path / "results" / "demo"
    shutil.copytree(exported_model, results / "model")
    (results / "metrics.json").write_text(json.dumps({"intent": {"accuracy": 0.64}}))
    before = contents(results)
    with pytest.raises(EvaluationError, match="holds no earlier evaluation"):
        evaluate_export(exported_model, [toy_corpus["test"]], results, progress=False)
    assert contents(results) == before


def test_an_export_does_not_replace_its_training_run_or_a_folder_holding_it(
        trained_run, tmp_path):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(trained_run, run)
    before = contents(tmp_path / "runs")
    for out in (run, run.parent):
        with pytest.raises(ExportError, match=r"holds the training run .* would delete the run"):
            export_model(run, out, overwrite=True, verify=False)
    assert contents(tmp_path / "runs") == before


def test_an_export_replaces_an_earlier_export_but_no_other_folder(trained_run, tmp_path):
    model = export_model(trained_run, tmp_path / "model", verify=False)
    (model / "heads.ckpt").symlink_to(model / "heads.safetensors")  # loading into itself
    export_model(trained_run, model, overwrite=True, verify=False)
    assert not (model / "heads.ckpt").exists()
    (model / "NOTES.md").write_text("the user's")  # would be deleted with the export
    with pytest.raises(ExportError, match=r"model: an exported model, but it also holds "
                                          r"NOTES.md, which replacing it would delete"):
        export_model(trained_run, model, overwrite=True, verify=False)
    assert (model / "NOTES.md").read_text() == "the user's"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.csv").write_text("path,intent\n")
    with pytest.raises(ExportError, match=r"corpus: not an exported model, so it is not "
                                          r"replaced"):
        export_model(trained_run, corpus, overwrite=True, verify=False)
    assert (corpus / "train.csv").read_text() == "path,intent\n"


def test_manifests_are_not_written_over_csvs_no_preparer_wrote(tmp_path):
    """--out the folder of the user's own train.csv (as Skit-S2I's corpus folder holds)."""
    folder = tmp_path / "calls"
    train = write_new_domain(folder, 4, 1)
    before = contents(folder)
    with pytest.raises(CorpusError, match=r"calls: holds train.csv, which no preparer wrote "
                                          r"there"):
        prepare_generic_csv(train, folder)
    assert contents(folder) == before


def test_manifests_are_not_written_into_an_exported_model(exported_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(exported_model, model)
    before = contents(model)
    with pytest.raises(CorpusError, match=r"model: an exported model"):
        prepare_generic_csv(write_new_domain(tmp_path / "calls", 4, 1), model)
    assert contents(model) == before


def test_a_preparation_folder_is_prepared_again_even_after_an_interruption(tmp_path):
    train = write_new_domain(tmp_path / "calls", 4, 1)
    out = tmp_path / "manifests"
    prepare_generic_csv(train, out)
    (out / "prepare_options.json").unlink()  # as a preparation killed while writing leaves it
    (out / ".preparing").write_text("")
    paths = prepare_generic_csv(train, out)
    assert set(paths) == {"train", "valid", "test"} and (out / "prepare_options.json").is_file()
    assert not (out / ".preparing").exists()


def test_exporting_an_export_or_an_incomplete_run_says_what_it_is(exported_model, trained_run,
                                                                  tmp_path):
    with pytest.raises(ExportError, match=r"an exported model, not a training run"):
        export_model(exported_model, tmp_path / "again", verify=False)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "save" / "label_encoder_intent.txt").unlink()
    with pytest.raises(ExportError, match=r"not a complete training run \(missing "
                                          r".*label_encoder_intent.txt\)"):
        export_model(run, tmp_path / "model", verify=False)


def test_exporting_a_run_whose_settings_were_edited_after_training_names_the_weights(
        trained_run, tmp_path):
    """Its hyperparams.yaml describes heads of another width than the checkpoint holds: the
    export's settings would not load these weights either, so nothing is written, whether
    or not the export is verified."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    settings = run / "hyperparams.yaml"
    text = settings.read_text()
    head = text.index("head: &")  # the head factory's settings
    width = text.index("hidden_size: 32", head)
    settings.write_text(text[:width] + "hidden_size: 24" + text[width + len("hidden_size: 32"):])
    for verify in (True, False):  # without verification too: the export could not load
        with pytest.raises(ExportError, match=r"heads.ckpt: these weights do not fit the model "
                                              r"the run's hyperparams.yaml describes \(size mismatch"):
            export_model(run, tmp_path / "model", verify=verify)
        assert not (tmp_path / "model").exists()
