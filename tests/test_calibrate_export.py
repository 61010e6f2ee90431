"""``multitask calibrate``: an exported model's head calibrated on labelled calls
(multitask.calibrate_export), on the session's tiny export (toy emotions ``dull`` and
``bright``) with calls by voices its test manifest does not have."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from hub_server import running_hub
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from toy_data import write_calls

from multitask import calibrate_export
from multitask.calibrate_export import calibrate_export as calibrate
from multitask.class_bias import ClassBiasError
from multitask.cli import main
from multitask.finetune import FinetuneError
from multitask.inference import MultitaskClassifier

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    return write_calls(tmp_path_factory.mktemp("calls"))


@pytest.fixture(scope="module")
def calibrated(exported_model, calls, toy_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrated") / "model"
    code = main(["calibrate", "--from", str(exported_model), "--calls", calls, "--out", str(out),
                 "--test", toy_corpus["test"], "--repo-id", "bank/calibrated",
                 "--parent-repo-id", "org/name", "--min-per-class", "5"])
    assert code == 0
    return out


def _rows(manifest):
    with open(manifest, newline="") as fin:
        return list(csv.DictReader(fin))


def _write_rows(path, rows):
    with open(path, "w", newline="") as fout:
        writer = csv.DictWriter(fout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _wav(manifest, row):
    return os.path.join(os.path.dirname(manifest), row["wav"])


def test_only_the_calibrated_heads_last_bias_moves_and_by_the_recorded_biases(
        exported_model, calibrated):
    record = json.loads((calibrated / "calibration.json").read_text())
    before = load_file(exported_model / "heads.safetensors")
    after = load_file(calibrated / "heads.safetensors")
    assert before.keys() == after.keys()
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert len(changed) == 1 and changed[0].startswith("emotion.") and changed[0].endswith(".bias")
    assert torch.allclose(after[changed[0]] - before[changed[0]], torch.tensor(record["bias"]),
                          atol=1e-6)
    assert record["bias"][0] == 0.0 and sorted(record["classes"]) == ["bright", "dull"]
    for name in ("encoder.safetensors", "hyperparams.yaml", "custom_interface.py",
                 "label_encoder_intent.txt", "label_encoder_emotion.txt"):
        assert (calibrated / name).read_bytes() == (exported_model / name).read_bytes(), name


def test_the_calibrated_folder_scores_the_parents_log_probs_plus_the_biases(
        exported_model, calibrated, calls):
    record = json.loads((calibrated / "calibration.json").read_text())
    parent = MultitaskClassifier.from_hparams(source=str(exported_model), run_opts={"device": "cpu"})
    model = MultitaskClassifier.from_hparams(source=str(calibrated), run_opts={"device": "cpu"})
    for row in _rows(calls)[:6]:
        path = _wav(calls, row)
        want, got = parent.classify_file(path), model.classify_file(path)
        log_probs = torch.log(torch.tensor([want["emotion"]["probs"][n] for n in record["classes"]]))
        expected = torch.softmax(log_probs + torch.tensor(record["bias"]), 0)
        assert np.allclose([got["emotion"]["probs"][n] for n in record["classes"]], expected,
                           atol=1e-5)
        assert got["intent"]["probs"] == pytest.approx(want["intent"]["probs"], abs=1e-6)


def test_the_record_holds_the_fit_its_cross_validation_and_the_test_without_and_with(
        calibrated, calls, toy_corpus):
    record = json.loads((calibrated / "calibration.json").read_text())
    assert record["task"] == "emotion" and record["calls_voices"] == ["callerA", "callerB", "callerC"]
    assert sum(record["calls_clips"].values()) == sum(1 for r in _rows(calls) if r["emotion"])
    assert record["cross_validation"]["folds"] and record["calls_skipped"] == []
    assert record["parent"]["repo_id"] == "org/name" and record["parent"]["weights_sha256"]
    (test,) = record["tests"].values()
    assert test["clips"] == sum(1 for r in _rows(toy_corpus["test"]) if r["emotion"])
    for side in ("without", "with"):
        assert set(test[side]) == {"accuracy", "unweighted_accuracy", "macro_f1", "recall"}


def test_the_card_names_the_parent_and_replaces_only_the_calibrated_tasks_figures(calibrated):
    card = ModelCard.load(calibrated / "README.md")
    assert card.data.base_model == "org/name" and card.data.model_name == "calibrated"
    configs = {(r.dataset_config, r.dataset_split, r.dataset_name) for r in card.data.eval_results}
    emotion = {c for c in configs if c[0] == "emotion"}
    assert emotion and all(split == "test" and "(calibrated)" in name for _, split, name in emotion)
    assert any(c[0] == "intent" and c[1] == "validation" for c in configs)  # the parent's, still true
    assert "# calibrated\n" in card.text and "multitask calibrate" in card.text
    assert 'source="bank/calibrated"' in card.text and 'source="org/name"' not in card.text


def test_unreadable_calls_are_reported_and_left_out(exported_model, calls, tmp_path, capsys):
    rows = _rows(calls)
    for row in rows:
        row["wav"] = _wav(calls, row)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    first, second = [row for row in rows if row["emotion"]][:2]
    first["wav"], second["wav"] = str(broken), str(empty)
    manifest = _write_rows(tmp_path / "calls.csv", rows)
    record = calibrate(exported_model, manifest, tmp_path / "out", min_per_class=5)
    assert len(record["calls_skipped"]) == 2
    assert str(broken) in record["calls_skipped"][0] + record["calls_skipped"][1]
    assert str(empty) in "".join(record["calls_skipped"])
    assert "could not be read" in capsys.readouterr().err


def test_a_class_left_short_by_unreadable_clips_is_refused_naming_the_file(
        exported_model, calls, tmp_path):
    rows = [row for row in _rows(calls) if row["emotion"]]
    for row in rows:
        row["wav"] = _wav(calls, row)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    short_class = rows[0]["emotion"]
    for row in [r for r in rows if r["emotion"] == short_class][:4]:
        row["wav"] = str(bad)
    manifest = _write_rows(tmp_path / "calls.csv", rows)
    count = sum(1 for r in rows if r["emotion"] == short_class)
    with pytest.raises(ClassBiasError, match="too few") as err:
        calibrate(exported_model, manifest, tmp_path / "out", min_per_class=count - 1)
    assert manifest in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, match", [
    ("shared_voice", "share speakers"),
    ("unknown_label", "not among the model's"),
    ("one_voice", "2 speakers or more"),
    ("no_speaker", "name no speaker"),
    ("too_few", "too few"),
    ("no_labels", "no row carries an emotion label"),
])
def test_calls_that_cannot_calibrate_are_refused_before_any_scoring(
        case, match, exported_model, calls, toy_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate_export, "class_log_probs",
                        lambda *a: pytest.fail("scored before the calls were checked"))
    rows = _rows(calls)
    for row in rows:
        row["wav"] = _wav(calls, row)
    if case == "shared_voice":
        rows[0]["speaker"] = _rows(toy_corpus["test"])[0]["speaker"]
        rows[0]["emotion"] = rows[0]["emotion"] or "dull"
    elif case == "unknown_label":
        next(r for r in rows if r["emotion"])["emotion"] = "furious"
    elif case == "one_voice":
        for row in rows:
            row["speaker"] = "callerA"
    elif case == "no_speaker":
        next(r for r in rows if r["emotion"])["speaker"] = ""
    elif case == "no_labels":
        for row in rows:
            row["emotion"] = ""
    manifest = _write_rows(tmp_path / "calls.csv", rows)
    with pytest.raises((ClassBiasError, ValueError), match=match) as err:
        calibrate(exported_model, manifest, tmp_path / "out", tests=[toy_corpus["test"]],
                  min_per_class=100 if case == "too_few" else 5)
    assert "calls.csv" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_wrong_sources_and_an_existing_out_are_clear_errors(exported_model, calls, tmp_path, capsys):
    (tmp_path / "exists").mkdir()
    with pytest.raises(ClassBiasError, match="already exists"):
        calibrate(exported_model, calls, tmp_path / "exists")
    with pytest.raises(FinetuneError, match="not a multitask model folder"):
        calibrate(tmp_path, calls, tmp_path / "out")
    with pytest.raises(ClassBiasError, match="no emotion2 head"):
        calibrate(exported_model, calls, tmp_path / "out", task="emotion2", min_per_class=5)
    assert main(["calibrate", "--from", str(tmp_path / "nowhere"), "--calls", calls,
                 "--out", str(tmp_path / "out")]) == 1
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_run_killed_before_the_rename_leaves_no_model_and_a_rerun_finishes(
        exported_model, calls, tmp_path, monkeypatch):
    out = tmp_path / "model"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(calibrate_export, "_check_calibrated", killed)
    with pytest.raises(KeyboardInterrupt):
        calibrate(exported_model, calls, out, min_per_class=5)
    assert not out.exists() and (tmp_path / ".model.partial").is_dir()
    monkeypatch.undo()
    record = calibrate(exported_model, calls, out, min_per_class=5)
    assert (out / "calibration.json").is_file() and not (tmp_path / ".model.partial").exists()
    assert json.loads((out / "calibration.json").read_text())["bias"] == record["bias"]


def test_a_hub_parent_is_calibrated_from_its_snapshot(exported_model, calls, run_python, tmp_path):
    with running_hub(token="hf_test") as hub:
        run_python(["-m", "multitask.cli", "push", "--model", str(exported_model),
                    "--repo-id", "org/hubbed"],
                   env=hub.client_env(hf_home=tmp_path / "pusher", token="hf_test"))
        env = hub.client_env(hf_home=tmp_path / "user")
        done = run_python(["-m", "multitask.cli", "calibrate", "--from", "org/hubbed", "--calls",
                           calls, "--out", str(tmp_path / "out"), "--min-per-class", "5"], env=env)
        missing = run_python(["-m", "multitask.cli", "calibrate", "--from", "org/absent",
                              "--calls", calls, "--out", str(tmp_path / "out2")],
                             env=env, check=False)
    record = json.loads((tmp_path / "out" / "calibration.json").read_text())
    # standard output is the command's JSON alone (messages and progress go to stderr)
    assert json.loads(done.stdout)["bias"] == dict(zip(record["classes"], record["bias"], strict=True))
    assert "scoring calls" in done.stderr
    assert record["parent"]["repo_id"] == "org/hubbed" and not record["parent"]["local_folder"]
    assert ModelCard.load(tmp_path / "out" / "README.md").data.base_model == "org/hubbed"
    assert not any(p.is_symlink() for p in (tmp_path / "out").iterdir())
    assert missing.returncode == 1 and "org/absent" in missing.stderr
    assert "Traceback" not in missing.stderr
    shutil.rmtree(tmp_path / "out")
