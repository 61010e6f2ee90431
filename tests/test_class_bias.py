"""Per-class biases fitted after training on held-out calls (multitask.class_bias).

The math (multitask.calibration) on generated log-probabilities; the recipe step on a
copy of the session's tiny trained run (toy emotions ``dull`` and ``bright``), with
calls written here by voices the run's test does not have.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO
from toy_data import write_calls

from multitask.calibration import class_bias_cross_validation, fit_class_bias, unweighted_accuracy
from multitask.class_bias import (
    ClassBiasError,
    add_figures_without_bias,
    calibrate,
    check_calls,
    read_record,
    scores,
)
from multitask.export import export_model
from multitask.recipe import load_hparams
from multitask.train import make_accelerator
from multitask.train import test as run_test

pytest_plugins = ["trained_tiny"]


def _fair_model(log_probs_seed=0):
    """Log-probs of a fairly good, unskewed 3-class model on imbalanced rows, and their
    targets."""
    generator = torch.Generator().manual_seed(log_probs_seed)
    targets = torch.arange(3).repeat_interleave(torch.tensor([200, 30, 30]))
    logits = 2.5 * torch.nn.functional.one_hot(targets, 3) + torch.randn(260, 3, generator=generator)
    return torch.log_softmax(logits, dim=1), targets


def test_a_fitted_bias_undoes_a_constant_skew_whatever_the_class_counts():
    log_probs, targets = _fair_model()
    skewed = log_probs + torch.tensor([0.0, -3.0, 1.5])  # class 1 seldom wins, class 2 often
    bias = fit_class_bias(skewed, targets)
    assert bias[0] == 0 and bias.shape == (3,)
    assert unweighted_accuracy(skewed, targets) < unweighted_accuracy(log_probs, targets) - 0.2
    assert unweighted_accuracy(skewed + bias, targets) >= unweighted_accuracy(log_probs, targets) - 0.02
    # Balanced: the 200 rows of class 0 do not pull the biases towards it.
    assert bias[1] > 2.0 and bias[2] < -1.0


def test_cross_validation_by_voice_splits_each_way_once_and_skips_halves_missing_a_class():
    log_probs, targets = _fair_model()
    for count, splits in ((2, 1), (3, 3), (4, 3), (5, 10)):
        voices = [f"v{i % count}" for i in range(len(targets))]
        cv = class_bias_cross_validation(log_probs, targets, voices)
        pairs = {(tuple(f["fitted_on"]), tuple(f["scored_on"])) for f in cv["folds"]}
        assert len(cv["folds"]) == len(pairs) == 2 * splits and not cv["skipped"]
        assert all(not set(a) & set(b) for a, b in pairs)
    # Voice "b" speaks class 0 only: a bias fitted on it alone would be unbounded.
    voices = ["a"] * 230 + ["b"] * 30
    order = torch.cat([torch.arange(30), torch.arange(200, 260), torch.arange(30, 200)])
    cv = class_bias_cross_validation(log_probs[order], targets[order], voices)
    assert cv["skipped"] == [["b"]] and len(cv["folds"]) == 1
    with pytest.raises(ValueError, match="2 voices or more"):
        class_bias_cross_validation(log_probs, targets, ["a"] * len(targets))
    # Many voices: a bounded number of random halvings, not every one.
    voices = [f"v{i % 40}" for i in range(len(targets))]
    assert len(class_bias_cross_validation(log_probs, targets, voices)["folds"]) == 20


def test_the_figures_without_the_biases_are_the_uncalibrated_decisions():
    log_probs, targets = _fair_model()
    skew = torch.tensor([0.0, -3.0, 1.5])
    rows = [{"id": str(i), "emotion": (int(t), p.tolist())}
            for i, (t, p) in enumerate(zip(targets, torch.softmax(log_probs + skew, 1), strict=True))]
    stats = {"rows": rows, "emotion": {}}
    add_figures_without_bias(stats, {"tasks": {"emotion": {"bias": skew.tolist()}}},
                             lambda task: ["a", "b", "c"])
    without = stats["emotion"]["without_class_bias"]
    assert without == scores(log_probs, targets, ["a", "b", "c"], "emotion")
    assert without["unweighted_accuracy"] > scores(log_probs + skew, targets, ["a", "b", "c"],
                                                   "emotion")["unweighted_accuracy"] + 0.2


# ---------------------------------------------------------------- the recipe step


def _hparams(run, toy_corpus, encoder, calls, **extra):
    return load_hparams(os.path.join(REPO, "hparams", "tiny.yaml"), {
        "output_folder": str(run), "encoder_source": str(encoder),
        "train_manifests": [toy_corpus["train"]], "valid_manifests": [toy_corpus["valid"]],
        "test_manifests": {"toy": toy_corpus["test"]},
        "class_bias_tasks": ["emotion"], "class_bias_calls": calls, **extra})


def _heads_file(run, record) -> Path:
    return Path(run) / "save" / record["checkpoint"] / "heads.ckpt"


def _last_bias(heads_file, task="emotion") -> torch.Tensor:
    state = torch.load(heads_file, weights_only=True)
    keys = sorted((k for k in state if k.startswith(f"{task}.classifier.") and k.endswith(".bias")),
                  key=lambda k: int(k.split(".")[2]))
    return state[keys[-1]]


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the session's trained run, which other modules use unchanged."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_the_biases_go_into_the_checkpoint_once_and_the_test_keeps_the_figures_without_them(
        run_copy, trained_run, toy_corpus, group_norm_encoder, tmp_path):
    hparams = _hparams(run_copy, toy_corpus, group_norm_encoder, write_calls(tmp_path / "calls"))
    accelerator = make_accelerator(hparams)
    record = calibrate(hparams, accelerator)
    entry = record["tasks"]["emotion"]
    assert entry["classes"] == ["bright", "dull"] or entry["classes"] == ["dull", "bright"]
    assert entry["bias"][0] == 0 and entry["calls_clips"] == {"dull": 12, "bright": 12}
    assert record["calls_voices"] == ["callerA", "callerB", "callerC"] and not record["pending"]
    assert len(entry["cross_validation"]["folds"]) == 6
    assert set(entry["validation"]) == {"without", "with"}

    heads = _heads_file(run_copy, record)
    original = _last_bias(_heads_file(trained_run, record))
    torch.testing.assert_close(_last_bias(heads), original + torch.tensor(entry["bias"]),
                               atol=1e-4, rtol=0)
    written = heads.read_bytes()

    # A rerun (the recipe run again) finds the biases there and adds nothing.
    assert calibrate(hparams, accelerator) == record
    assert heads.read_bytes() == written

    # The test on the calibrated checkpoint: its figures without the biases are the
    # uncalibrated run's own.
    results = run_test(hparams, accelerator)
    before = json.loads((trained_run / "test_metrics.json").read_text())["toy"]["emotion"]
    without = results["toy"]["emotion"]["without_class_bias"]
    assert without == {key: before[key] for key in ("accuracy", "unweighted_accuracy", "macro_f1")}

    card = (export_model(run_copy, tmp_path / "export") / "README.md").read_text()
    assert "- Calibration: the emotion logits carry per-class biases" in card
    assert "calls/train.csv" in card


def test_a_run_killed_while_calibrating_is_calibrated_exactly_once_when_rerun(
        run_copy, trained_run, toy_corpus, group_norm_encoder, tmp_path):
    hparams = _hparams(run_copy, toy_corpus, group_norm_encoder, write_calls(tmp_path / "calls"))
    accelerator = make_accelerator(hparams)
    record = calibrate(hparams, accelerator)
    heads, trained = _heads_file(run_copy, record), _heads_file(trained_run, record)
    calibrated = _last_bias(heads)
    pending = {key: value for key, value in record.items() if key != "heads_sha256_after"}
    pending["pending"] = True

    # Killed after the record was begun, before the weights were rewritten.
    shutil.copyfile(trained, heads)
    (run_copy / "class_bias.json").write_text(json.dumps(pending))
    again = calibrate(hparams, accelerator)
    assert not again["pending"] and again["tasks"] == record["tasks"]
    torch.testing.assert_close(_last_bias(heads), calibrated)

    # Killed after the weights were rewritten, before the record was completed.
    (run_copy / "class_bias.json").write_text(json.dumps(pending))
    written = heads.read_bytes()
    again = calibrate(hparams, accelerator)
    assert not again["pending"] and heads.read_bytes() == written  # not added twice


def test_calls_that_cannot_calibrate_are_refused_before_training_naming_the_file(
        run_copy, toy_corpus, group_norm_encoder, tmp_path):
    calls = write_calls(tmp_path / "calls")

    def refused(calls_path, match, **extra):
        with pytest.raises(ClassBiasError, match=match):
            check_calls(_hparams(run_copy, toy_corpus, group_norm_encoder, calls_path, **extra))

    # The test's own voices: the test would score biases fitted on them.
    refused(toy_corpus["test"], r"test.csv and the toy test .* share speakers \['spk0', 'spk1', 'spk2'\]",
            class_bias_min_per_class=1)
    refused(calls, r"calls/train.csv: a per-class bias needs at least 13 .* every emotion class "
                   r".*\{'bright': 12, 'dull': 12\}", class_bias_min_per_class=13)
    calm = Path(write_calls(tmp_path / "calm"))
    calm.write_text(calm.read_text().replace(",emotion,,bright,", ",emotion,,calm,", 1))
    refused(str(calm), r"calm/train.csv: emotion label\(s\) \['calm'\] are not among the model's")
    lonely = write_calls(tmp_path / "lonely", speakers=("callerA",))
    refused(lonely, r"lonely/train.csv: the emotion calls need 2 speakers or more")
    refused(calls, r"class_bias_tasks must be a list of tasks, e.g. \[emotion\], not 'emotion'",
            class_bias_tasks="emotion")
    refused(calls, r"class_bias_min_per_class must be a whole number of at least 1, not 0", class_bias_min_per_class=0)
    nameless = write_calls(tmp_path / "nameless", speakers=("",))
    refused(nameless, r"nameless/train.csv: 48 row\(s\) name no speaker")
    with pytest.raises(ClassBiasError, match="needs class_bias_calls"):
        check_calls(_hparams(run_copy, toy_corpus, group_norm_encoder, None))
    with pytest.raises(ClassBiasError, match=r"class_bias_tasks \['mood'\]: not among"):
        check_calls(_hparams(run_copy, toy_corpus, group_norm_encoder, calls,
                             class_bias_tasks=["mood"]))
    assert check_calls(_hparams(run_copy, toy_corpus, group_norm_encoder, calls,
                                class_bias_tasks=[])) == {}


def test_weights_changed_after_calibration_are_not_calibrated_again(
        run_copy, toy_corpus, group_norm_encoder, tmp_path):
    hparams = _hparams(run_copy, toy_corpus, group_norm_encoder, write_calls(tmp_path / "calls"))
    accelerator = make_accelerator(hparams)
    record = calibrate(hparams, accelerator)
    heads = _heads_file(run_copy, record)
    checkpoint = heads.parent
    # The option turned off afterwards: the weights still carry the biases, and say so.
    off = _hparams(run_copy, toy_corpus, group_norm_encoder, None, class_bias_tasks=[])
    assert calibrate(off, accelerator) == record
    state = torch.load(heads, weights_only=True)
    state[next(iter(state))] += 1.0
    torch.save(state, heads)
    # Weights that no longer carry what the record says (e.g. retrained into the same
    # checkpoint name): the record no longer applies to them.
    assert read_record(run_copy, type("Checkpoint", (), {"path": str(checkpoint)})) is None
    with pytest.raises(ClassBiasError, match="heads.ckpt: changed since its class biases"):
        calibrate(hparams, accelerator)
    other = _hparams(run_copy, toy_corpus, group_norm_encoder, write_calls(tmp_path / "other",
                                                                           per_class=11))
    with pytest.raises(ClassBiasError, match=r"fitted for \['emotion'\] on calls/train.csv as "
                                             r"it was then, not for \['emotion'\] on .*other"):
        calibrate(other, accelerator)
