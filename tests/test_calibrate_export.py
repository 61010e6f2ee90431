"""``multitask calibrate``: an exported model's head calibrated on labelled calls
(multitask.calibrate_export), on the session's tiny export (toy emotions ``dull`` and
``bright``) with calls by voices its test manifest does not have."""

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
from toy_data import read_rows, write_calls, write_rows

from multitask import calibrate_export
from multitask.calibrate_export import calibrate_export as calibrate
from multitask.class_bias import ClassBiasError
from multitask.cli import main
from multitask.head_labels import read_metadata
from multitask.hub import card_for_repo
from multitask.inference import MultitaskClassifier
from multitask.manifest import ManifestError

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


def _wav(manifest, row):
    return os.path.join(os.path.dirname(manifest), row["wav"])


def test_only_the_calibrated_heads_last_bias_moves_and_by_the_recorded_biases(
        exported_model, calibrated):
    record = json.loads((calibrated / "calibration.json").read_text())
    before = load_file(exported_model / "heads.safetensors")
    after = load_file(calibrated / "heads.safetensors")
    assert before.keys() == after.keys()
    assert read_metadata(calibrated / "heads.safetensors") == read_metadata(exported_model / "heads.safetensors")
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert len(changed) == 1 and changed[0].startswith("emotion.") and changed[0].endswith(".bias")
    assert torch.allclose(after[changed[0]] - before[changed[0]], torch.tensor(record["bias"]),
                          atol=1e-6)
    assert sorted(record["classes"]) == ["bright", "dull"]
    for name in ("encoder.safetensors", "hyperparams.yaml", "custom_interface.py",
                 "label_encoder_intent.txt", "label_encoder_emotion.txt"):
        assert (calibrated / name).read_bytes() == (exported_model / name).read_bytes(), name


def test_the_calibrated_folder_scores_the_parents_log_probs_plus_the_biases(
        exported_model, calibrated, calls):
    record = json.loads((calibrated / "calibration.json").read_text())
    parent = MultitaskClassifier.from_hparams(source=str(exported_model), run_opts={"device": "cpu"})
    model = MultitaskClassifier.from_hparams(source=str(calibrated), run_opts={"device": "cpu"})
    for row in read_rows(calls)[:6]:
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
    assert sum(record["calls_per_class"].values()) == sum(1 for r in read_rows(calls) if r["emotion"])
    assert record["cross_validation"]["folds"] and record["calls_skipped"] == []
    assert record["parent"]["repo_id"] == "org/name" and record["parent"]["weights_sha256"]
    (test,) = record["tests"].values()
    assert test["clips"] == sum(1 for r in read_rows(toy_corpus["test"]) if r["emotion"])
    for side in ("without", "with"):
        assert set(test[side]) == {"accuracy", "unweighted_accuracy", "macro_f1", "recall"}


def test_the_card_names_the_parent_and_replaces_only_the_calibrated_tasks_figures(
        exported_model, calibrated):
    card = ModelCard.load(calibrated / "README.md")
    parent = ModelCard.load(exported_model / "README.md")
    record = json.loads((calibrated / "calibration.json").read_text())
    assert card.data.base_model == "org/name" and card.data.model_name == "calibrated"
    (test,) = record["tests"].values()
    emotion = {r.metric_type: r for r in card.data.eval_results if r.dataset_config == "emotion"}
    assert {(r.dataset_split, r.dataset_name) for r in emotion.values()} == {
        ("test", f"{next(iter(record['tests']))} (calibrated)")}
    assert emotion["accuracy"].metric_value == test["with"]["accuracy"]
    assert emotion["f1"].metric_value == test["with"]["macro_f1"]
    # the intent figures are the parent's, unchanged (its head did not move)
    intent = [(r.dataset_name, r.metric_type, r.metric_value)
              for r in card.data.eval_results if r.dataset_config == "intent"]
    assert intent and intent == [(r.dataset_name, r.metric_type, r.metric_value)
                                 for r in parent.data.eval_results if r.dataset_config == "intent"]
    assert "# calibrated\n" in card.text and "multitask calibrate" in card.text
    assert 'source="bank/calibrated"' in card.text and 'source="org/name"' not in card.text


def test_unreadable_calls_are_reported_and_left_out(exported_model, calls, tmp_path, capsys):
    rows = read_rows(calls)
    for row in rows:
        row["wav"] = _wav(calls, row)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    first, second = [row for row in rows if row["emotion"]][:2]
    first["wav"], second["wav"] = str(broken), str(empty)
    manifest = write_rows(tmp_path / "calls.csv", rows)
    record = calibrate(exported_model, manifest, tmp_path / "out", min_per_class=5)
    assert len(record["calls_skipped"]) == 2
    assert str(broken) in record["calls_skipped"][0] + record["calls_skipped"][1]
    assert str(empty) in "".join(record["calls_skipped"])
    assert "2 clip(s) left out" in capsys.readouterr().err


def test_a_class_left_short_by_unreadable_clips_is_refused_naming_the_file(
        exported_model, calls, tmp_path):
    rows = [row for row in read_rows(calls) if row["emotion"]]
    for row in rows:
        row["wav"] = _wav(calls, row)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    short_class = rows[0]["emotion"]
    for row in [r for r in rows if r["emotion"] == short_class][:4]:
        row["wav"] = str(bad)
    manifest = write_rows(tmp_path / "calls.csv", rows)
    count = sum(1 for r in rows if r["emotion"] == short_class)
    with pytest.raises(ClassBiasError, match="too few") as err:
        calibrate(exported_model, manifest, tmp_path / "out", min_per_class=count - 1)
    assert manifest in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, error, match", [
    ("shared_voice", ClassBiasError, "share speakers"),
    ("unknown_label", ClassBiasError, "not among the model's"),
    ("one_voice", ClassBiasError, "2 speakers or more"),
    ("no_speaker", ClassBiasError, "name no speaker"),
    ("too_few", ClassBiasError, "too few .*--min-per-class|--min-per-class.*too few"),
    ("no_labels", ManifestError, "no row has an emotion label"),
    ("test_without_speakers", ClassBiasError, "test must show its voices"),
    ("test_given_twice", ClassBiasError, "given twice"),
])
def test_calls_that_cannot_calibrate_are_refused_before_any_scoring(
        case, error, match, exported_model, calls, toy_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate_export, "class_log_probs",
                        lambda *a: pytest.fail("scored before the calls were checked"))
    rows = read_rows(calls)
    for row in rows:
        row["wav"] = _wav(calls, row)
    if case == "shared_voice":
        rows[0]["speaker"] = read_rows(toy_corpus["test"])[0]["speaker"]
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
    manifest = write_rows(tmp_path / "calls.csv", rows)
    tests = [toy_corpus["test"]]
    if case == "test_without_speakers":
        test_rows = read_rows(toy_corpus["test"])
        for row in test_rows:
            row["wav"], row["speaker"] = _wav(toy_corpus["test"], row), ""
        tests = [write_rows(tmp_path / "test.csv", test_rows)]
    elif case == "test_given_twice":
        tests = tests * 2
    with pytest.raises(error, match=match) as err:
        calibrate(exported_model, manifest, tmp_path / "out", tests=tests,
                  min_per_class=100 if case == "too_few" else 5)
    assert "calls.csv" in str(err.value) or "test.csv" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_wrong_sources_and_an_existing_out_are_clear_errors(exported_model, calls, tmp_path, capsys):
    (tmp_path / "exists").mkdir()
    with pytest.raises(ClassBiasError, match="already exists"):
        calibrate(exported_model, calls, tmp_path / "exists")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClassBiasError, match="is a folder without hyperparams.yaml: not a model folder"):
        calibrate(tmp_path / "empty", calls, tmp_path / "out")
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
    assert list(tmp_path.iterdir()) == []  # neither the model nor its staging folder
    monkeypatch.undo()
    record = calibrate(exported_model, calls, out, min_per_class=5)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert json.loads((out / "calibration.json").read_text())["bias"] == record["bias"]


def test_a_folder_that_does_not_score_as_the_parent_plus_the_biases_is_not_written(
        exported_model, calls, tmp_path, monkeypatch):
    write_heads = calibrate_export._write_heads
    monkeypatch.setattr(calibrate_export, "_write_heads",
                        lambda parent, task, bias, path: write_heads(parent, task,
                                                                     [2 * b for b in bias], path))
    with pytest.raises(ClassBiasError, match="not the parent's plus the biases"):
        calibrate(exported_model, calls, tmp_path / "model", min_per_class=5)
    assert list(tmp_path.iterdir()) == []


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


def _copy_of(exported_model, folder):
    shutil.copytree(exported_model, folder)
    return folder


def test_long_calls_are_left_out_with_a_reason(exported_model, calls, tmp_path):
    rows = read_rows(calls)
    for row in rows:
        row["wav"] = _wav(calls, row)
    long_wav = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    sf.write(long_wav, 0.1 * rng.standard_normal(16000 * 50).astype(np.float32), 16000)
    first = next(row for row in rows if row["emotion"])
    first["wav"], first["duration"] = str(long_wav), "50.0"
    record = calibrate(exported_model, write_rows(tmp_path / "calls.csv", rows),
                       tmp_path / "out", min_per_class=5)
    assert record["calls_skipped"] == [f"{long_wav}: longer than 45 s (the model averages its "
                                       "windows); cut long calls into utterances"]
    assert sum(record["calls_per_class"].values()) == sum(1 for r in rows if r["emotion"]) - 1


def test_two_tests_of_one_name_are_both_checked_and_both_reported(
        exported_model, calls, toy_corpus, tmp_path):
    tests = []
    for name in ("a", "b"):
        (tmp_path / name / "data").mkdir(parents=True)
        test_rows = read_rows(toy_corpus["test"])
        for row in test_rows:
            row["wav"] = _wav(toy_corpus["test"], row)
        tests.append(write_rows(tmp_path / name / "data" / "test.csv", test_rows))
    record = calibrate(exported_model, calls, tmp_path / "out", tests=tests, min_per_class=5)
    assert sorted(record["tests"]) == sorted(tests)
    shared = read_rows(calls)[0]["speaker"]
    test_rows = read_rows(tests[0])
    test_rows[0]["speaker"] = shared
    write_rows(tests[0], test_rows)
    with pytest.raises(ClassBiasError, match=f"share speakers \\['{shared}'\\]"):
        calibrate(exported_model, calls, tmp_path / "out2", tests=tests, min_per_class=5)


def test_a_test_of_unreadable_clips_only_is_a_clear_error(exported_model, calls, toy_corpus,
                                                          tmp_path, capsys):
    test_rows = [row for row in read_rows(toy_corpus["test"]) if row["emotion"]]
    for row in test_rows:
        row["wav"] = str(tmp_path / "missing" / os.path.basename(row["wav"]))
    test = write_rows(tmp_path / "test.csv", test_rows)
    assert main(["calibrate", "--from", str(exported_model), "--calls", calls, "--test", test,
                 "--out", str(tmp_path / "out"), "--min-per-class", "5"]) == 1
    err = capsys.readouterr().err
    assert f"{test}: none of its {len(test_rows)} clips could be scored" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_parent_without_a_card_or_with_the_out_inside_it_is_refused_before_scoring(
        exported_model, calls, tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate_export, "class_log_probs",
                        lambda *a: pytest.fail("scored before the folders were checked"))
    parent = _copy_of(exported_model, tmp_path / "parent")
    with pytest.raises(ClassBiasError, match="inside the model folder"):
        calibrate(parent, calls, parent / "calibrated")
    (parent / "README.md").unlink()
    with pytest.raises(ClassBiasError, match="no README.md"):
        calibrate(parent, calls, tmp_path / "out")
    (parent / "README.md").write_text("---\nmodel-index: 3\n---\n# x\n")
    with pytest.raises(ClassBiasError, match="model card cannot be read"):
        calibrate(parent, calls, tmp_path / "out")
    with pytest.raises(ClassBiasError, match="no revisions"):
        calibrate(exported_model, calls, tmp_path / "out", revision="v1")
    assert not (tmp_path / "out").exists()


def test_a_local_parent_without_its_hub_id_gets_no_base_model(exported_model, calls, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = calibrate(exported_model, calls, "relative/out/", min_per_class=5)
    card = ModelCard.load(tmp_path / "relative" / "out" / "README.md")
    assert card.data.base_model is None and record["parent"]["repo_id"] is None
    # The local parent is named by its last two folders, never by a path of this machine.
    assert f"`{exported_model.parent.name}/{exported_model.name}` calibrated to its callers" in card.text
    for name in ("README.md", "hyperparams.yaml"):
        text = (tmp_path / "relative" / "out" / name).read_text()
        assert str(exported_model) not in text and str(tmp_path) not in text, name
    # Calibrated without --repo-id: the card names a placeholder, which a push replaces.
    text = (tmp_path / "relative" / "out" / "README.md").read_text()
    assert "your-org/your-calibrated-model" in text
    pushed = card_for_repo(text, "bank/ivr-calibrated")
    assert "your-calibrated-model" not in pushed and 'source="bank/ivr-calibrated"' in pushed


def test_a_calibrated_model_calibrated_again_keeps_its_parents_record(
        exported_model, calibrated, calls, tmp_path):
    record = calibrate(calibrated, calls, tmp_path / "again", task="intent", min_per_class=5)
    first = json.loads((calibrated / "calibration.json").read_text())
    assert record["parent_calibration"] == first and record["task"] == "intent"
    after = load_file(tmp_path / "again" / "heads.safetensors")
    before = load_file(calibrated / "heads.safetensors")
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert all(key.startswith("intent.") for key in changed)
    card = (tmp_path / "again" / "README.md").read_text()
    assert "The parent was itself calibrated" in card
