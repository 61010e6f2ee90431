"""``multitask evaluate``: an exported model scored on labelled manifests
(multitask.evaluate_export), on the session's tiny export and toy test manifest."""

import json
import os
import re

import pytest
from toy_data import read_rows, write_rows

from multitask.cli import main
from multitask.evaluate_export import EvaluationError, evaluate_export
from multitask.inference import MultitaskClassifier
from multitask.manifest import ManifestError

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]


def _absolute(manifest):
    """The manifest's rows with absolute wav paths (to be written elsewhere)."""
    folder = os.path.dirname(manifest)
    return [dict(row, wav=os.path.join(folder, row["wav"])) for row in read_rows(manifest)]


@pytest.fixture(scope="module")
def evaluated(exported_model, toy_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated") / "eval"
    code = main(["evaluate", "--model", str(exported_model), "--test", toy_corpus["test"],
                 "--out", str(out)])
    assert code == 0
    return out


def test_figures_are_those_of_classify_file_on_each_clip(exported_model, toy_corpus, evaluated):
    record = json.loads((evaluated / "metrics.json").read_text())
    (entry,) = record["tests"].values()
    model = MultitaskClassifier.from_hparams(source=str(exported_model))
    rows = _absolute(toy_corpus["test"])
    (name,) = record["tests"]
    written = {line["id"]: line for line in read_rows(evaluated / f"predictions_{name}.csv")}
    for task in ("intent", "emotion"):
        labelled = [row for row in rows if row[task]]
        alone = {row["id"]: model.classify_file(row["wav"])[task] for row in labelled}
        hits = [alone[row["id"]]["label"] == row[task] for row in labelled]
        for row in labelled:  # each clip scored alone: its probability, to the CSV's 4 places
            assert written[row["id"]][f"{task}_pred"] == alone[row["id"]]["label"]
            assert float(written[row["id"]][f"{task}_prob"]) == pytest.approx(
                alone[row["id"]]["prob"], abs=6e-5)
        assert entry[task]["num_examples"] == len(labelled)
        assert entry[task]["accuracy"] == pytest.approx(sum(hits) / len(hits))
        assert sum(map(sum, entry[task]["confusion_matrix"])) == len(labelled)
        assert set(entry[task]["by_speaker"]) == {row["speaker"] for row in labelled}
    assert entry["clips"] == entry["scored"] == len(rows) and entry["skipped"] == []
    assert record["batching"] == {"batch_size": 1}
    assert record["model"]["weights_sha256"]


def test_every_clip_gets_a_prediction_line_and_each_task_a_confusion_plot(toy_corpus, evaluated):
    (name,) = json.loads((evaluated / "metrics.json").read_text())["tests"]
    assert name == os.path.basename(os.path.dirname(toy_corpus["test"])) + "_test"
    lines = read_rows(evaluated / f"predictions_{name}.csv")
    assert sorted(line["id"] for line in lines) == sorted(row["id"] for row in read_rows(toy_corpus["test"]))
    for line in lines:
        assert line["intent_pred"] in {"low", "high"} and line["emotion_pred"] in {"dull", "bright"}
        assert (line["intent_ref"] == "") != (line["emotion_ref"] == "")  # one label per toy row
    for task in ("intent", "emotion"):
        assert (evaluated / f"confusion_{name}_{task}.png").stat().st_size > 0
    report = (evaluated / "report.md").read_text()
    assert "one at a time" in report and f"confusion_{name}_emotion.png" in report


def test_unreadable_clips_are_named_skipped_and_left_out_of_the_figures(
        exported_model, toy_corpus, tmp_path):
    rows = _absolute(toy_corpus["test"])
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    rows[0]["wav"] = str(tmp_path / "missing.wav")
    rows[1]["wav"] = str(empty)
    manifest = write_rows(tmp_path / "test.csv", rows)
    logged = []
    record = evaluate_export(exported_model, [manifest], tmp_path / "out", log=logged.append,
                             progress=False)
    (entry,) = record["tests"].values()
    assert entry["clips"] == len(rows) and entry["scored"] == len(rows) - 2
    assert len(entry["skipped"]) == 2
    assert "missing.wav" in entry["skipped"][0] and "empty.wav" in entry["skipped"][1]
    assert sum(entry[task]["num_examples"] for task in ("intent", "emotion")) == len(rows) - 2
    assert any("missing.wav" in line for line in logged)
    assert "2 clip(s) could not be read" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[0].update(intent="unheard_of"), "label(s) ['unheard_of'] are not among"),
    (lambda rows: [row.update(intent="", emotion="") for row in rows], "no row has a label"),
    (lambda rows: rows[1].update(id=rows[0]["id"]), "on more than one row"),
])
def test_a_manifest_the_model_cannot_score_is_refused_before_any_clip_is(
        exported_model, toy_corpus, tmp_path, change, message):
    rows = _absolute(toy_corpus["test"])
    change(rows)
    manifest = write_rows(tmp_path / "test.csv", rows)
    with pytest.raises(EvaluationError, match=re.escape(message)) as caught:
        evaluate_export(exported_model, [toy_corpus["test"], manifest], tmp_path / "out",
                        progress=False)
    assert manifest in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_manifest_without_a_readable_clip_fails_after_the_others_are_written(
        exported_model, toy_corpus, tmp_path):
    rows = [dict(row, wav=str(tmp_path / "gone.wav")) for row in _absolute(toy_corpus["test"])]
    gone = write_rows(tmp_path / "gone.csv", rows)
    with pytest.raises(EvaluationError, match=r"gone\.csv: none of its 16 clips could be read"):
        evaluate_export(exported_model, [toy_corpus["test"], gone], tmp_path / "out",
                        progress=False, log=lambda line: None)
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    first, second = record["tests"].values()
    assert first["scored"] == 16 and second["scored"] == 0 and len(second["skipped"]) == 16


def test_an_evaluation_folder_is_replaced_whole_and_another_folder_refused(
        exported_model, toy_corpus, tmp_path):
    out = tmp_path / "out"
    evaluate_export(exported_model, [toy_corpus["test"]], out, progress=False)
    (out / "stale.png").write_bytes(b"")
    evaluate_export(exported_model, [toy_corpus["test"]], out, progress=False)
    assert not (out / "stale.png").exists() and (out / "metrics.json").is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(EvaluationError, match="holds no earlier evaluation"):
        evaluate_export(exported_model, [toy_corpus["test"]], other, progress=False)
    assert (other / "notes.txt").read_text() == "keep"


def test_a_manifest_given_twice_or_missing_and_a_bad_batch_size_are_refused(
        exported_model, toy_corpus, tmp_path):
    with pytest.raises(EvaluationError, match="given twice"):
        evaluate_export(exported_model, [toy_corpus["test"], toy_corpus["test"]], tmp_path / "o")
    with pytest.raises(ManifestError, match="manifest not found"):
        evaluate_export(exported_model, [tmp_path / "nope.csv"], tmp_path / "o")
    with pytest.raises(EvaluationError, match="batch-size"):
        evaluate_export(exported_model, [toy_corpus["test"]], tmp_path / "o", batch_size=0)


def test_the_command_names_a_model_it_cannot_load_and_prints_json_alone(
        exported_model, toy_corpus, tmp_path, capsys):
    code = main(["evaluate", "--model", str(tmp_path / "no_model"), "--test", toy_corpus["test"],
                 "--out", str(tmp_path / "out")])
    assert code == 1
    assert str(tmp_path / "no_model") in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "hyperparams.yaml").write_text("model: !new:not.a.Module\n")
    assert main(["evaluate", "--model", str(broken), "--test", toy_corpus["test"],
                 "--out", str(tmp_path / "out")]) == 1
    assert "cannot load a multitask model from" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(exported_model), "--test", toy_corpus["test"],
                 "--out", str(tmp_path / "out"), "--batch-size", "4"]) == 0
    (printed,) = json.loads(capsys.readouterr().out).values()
    assert set(printed) == {"intent", "emotion"}
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["batching"] == {"batch_size": 4}
