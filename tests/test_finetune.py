"""Fine-tuning the tiny trained model on new intents: replace, extend, frozen emotion, errors.

The parent is the session's tiny exported model (``trained_tiny``: toy intents ``low``
and ``high``, toy emotions ``dull`` and ``bright``). The new domain is generated here
in the generic CSV layout: two new tone intents, a few clips each, with speakers.
"""

import csv
import json
import os
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file
from toy_data import NEW_INTENTS, write_calls, write_new_domain

from multitask.cli import main
from multitask.finetune import (
    FinetuneError,
    finetune,
    init_from_parent,
    intent_label_set,
    parse_overrides,
)
from multitask.inference import MultitaskClassifier
from multitask.manifest import read_manifest
from multitask.model import DROPOUT_KEYS

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]

# The toy intents are tone frequencies, which speed perturbation would move across
# classes: finetune.yaml's augmentation is off in these runs.
FAST = ["--number_of_epochs=6", "--batch_size=4", "--warmup_steps=0", "--task_augmentation=null",
        "--train_batching={batch_size: 4, max_batch_seconds: null, task_ratio: null, rows_per_class: 8}"]


@pytest.fixture(scope="module")
def new_domain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("new_domain")
    return {split: write_new_domain(folder, shots, seed, split=split)
            for split, shots, seed in (("train", 8, 1), ("valid", 3, 2), ("test", 4, 3))}


@pytest.fixture(scope="module")
def replaced(exported_model, new_domain, toy_corpus, tmp_path_factory):
    """replace mode with the whole encoder trainable: only the frozen emotion head is kept."""
    out = tmp_path_factory.mktemp("ft_replace") / "run"
    code = main(["finetune", "--from", str(exported_model), "--out", str(out),
                 "--train", new_domain["train"], "--valid", new_domain["valid"],
                 "--test", new_domain["test"], "--emotion", toy_corpus["test"],
                 "--freeze_encoder=none", "--encoder_lr=0.001", *FAST])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def extended(exported_model, new_domain, toy_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft_extend") / "run"
    record = finetune(str(exported_model), new_domain["train"], out, valid=[new_domain["valid"]],
                      test=new_domain["test"], mode="extend", emotion=toy_corpus["test"],
                      old_intent=toy_corpus["test"], old_valid=toy_corpus["valid"],
                      replay=[toy_corpus["train"]], parent_repo_id="org/name",
                      overrides=EXTEND)
    return out, record


EXTEND = {"number_of_epochs": 10, "batch_size": 4, "warmup_steps": 0, "task_augmentation": None,
          "head_lr": 0.01,
          "train_batching": {"batch_size": 4, "max_batch_seconds": None, "task_ratio": None,
                             "rows_per_class": 8}}


def parent_heads(exported_model):
    return load_file(exported_model / "heads.safetensors")


def test_replace_learns_the_new_intents_from_a_few_examples(replaced):
    record = json.loads((replaced / "finetune.json").read_text())
    assert record["intent_labels"] == sorted(NEW_INTENTS)
    assert record["shots"] == {label: 8 for label in NEW_INTENTS}
    assert record["results"]["new_intent"]["accuracy"] >= 0.75  # chance 0.5


def test_frozen_emotion_head_is_bit_identical_after_fine_tuning(replaced, exported_model):
    tuned = load_file(replaced / "export" / "heads.safetensors")
    parent = parent_heads(exported_model)
    emotion = [k for k in parent if k.startswith("emotion.")]
    assert emotion and all(torch.equal(tuned[k], parent[k]) for k in emotion)
    # ... while the encoder did move (it was trainable here).
    tuned_enc = load_file(replaced / "export" / "encoder.safetensors")
    parent_enc = load_file(exported_model / "encoder.safetensors")
    assert any(not torch.equal(tuned_enc[k], parent_enc[k]) for k in parent_enc)


def accuracy_of(model_dir, manifest, task):
    """``task`` accuracy of an exported model on a manifest, each clip scored alone."""
    # As fine-tuning scores: the modules as trained, not the CPU rewrite (optimize=None).
    model = MultitaskClassifier.from_hparams(source=str(model_dir), run_opts={"device": "cpu"},
                                             optimize=None)
    rows = [row for row in read_manifest(manifest) if row[task]]  # rows labelled for the task
    results = model.classify_files([row["wav"] for row in rows])
    return sum(r[task]["label"] == row[task] for r, row in zip(results, rows, strict=True)) / len(rows)


def test_emotion_retention_is_measured_before_and_after(replaced, exported_model, toy_corpus):
    emotion = json.loads((replaced / "finetune.json").read_text())["results"]["emotion"]
    assert {"before", "accuracy", "change", "warning"} <= set(emotion)
    # "before" is the parent's own figure, "accuracy" the fine-tuned export's.
    assert emotion["before"] == pytest.approx(
        accuracy_of(exported_model, toy_corpus["test"], "emotion"))
    assert emotion["accuracy"] == pytest.approx(
        accuracy_of(replaced / "export", toy_corpus["test"], "emotion"))
    assert emotion["change"] == pytest.approx(emotion["accuracy"] - emotion["before"])
    assert emotion["warning"] == (emotion["change"] < -0.01)


def test_the_fine_tuned_export_loads_and_its_card_names_the_parent(replaced, exported_model):
    export = replaced / "export"
    model = MultitaskClassifier.from_hparams(source=str(export), run_opts={"device": "cpu"})
    assert model.labels["intent"] == sorted(NEW_INTENTS)
    parent = MultitaskClassifier.from_hparams(source=str(exported_model), run_opts={"device": "cpu"})
    assert model.labels["emotion"] == parent.labels["emotion"]
    card = (export / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    # A local parent without a Hub id: named by its folder (no path of this machine).
    assert front["base_model"] == f"{exported_model.parent.name}/model"
    assert front["base_model_relation"] == "finetune"
    assert "## Fine-tuned from" in card and "`chirp`" in card and "emotion accuracy" in card
    # The parent card's license, read when the run started, is the child's.
    parent_front = yaml.safe_load((exported_model / "README.md").read_text().split("---")[1])
    assert json.loads((replaced / "finetune.json").read_text())["parent_license"] == \
        parent_front["license"] == front["license"]


def test_replace_pools_its_new_intent_head_as_finetune_yaml_says(replaced, exported_model):
    """The new intent head is `new_intent_head`'s (stats, linear); the emotion head stays the
    parent's; the export rebuilds both and the card tells them apart."""
    heads = yaml.safe_load(re.sub(r"!\S+", "", (replaced / "export" / "hyperparams.yaml").read_text()))
    heads = heads["heads"]["modules"]
    parent = yaml.safe_load(re.sub(r"!\S+", "", (exported_model / "hyperparams.yaml").read_text()))
    assert heads["intent"]["pooling"] == "stats"
    assert heads["emotion"]["pooling"] == parent["heads"]["modules"]["emotion"]["pooling"] != "stats"
    model = MultitaskClassifier.from_hparams(source=str(replaced / "export"), run_opts={"device": "cpu"})
    assert model.mods.heads["intent"].pooling == "stats"
    card = (replaced / "export" / "README.md").read_text()
    assert "- intent head: mean and standard deviation of each of the encoder's layers" in card
    assert "linear classifier" in card
    assert heads["intent"]["hidden_size"] == 0 and len(model.mods.heads["intent"].classifier) == 2
    record = json.loads((replaced / "finetune.json").read_text())
    assert record["intent_head"]["pooling"] == "stats" and record["intent_head"]["hidden_size"] == 0


def test_extend_keeps_the_parents_intent_head_whole_beside_a_head_for_the_new(
        extended, exported_model, toy_wavs, run_foreign_class, tmp_path):
    """The default extended head: the parent's intent weights bit-identical in the export,
    the new intents learnt by a stats head (the offset in its bias), loadable both ways."""
    out, record = extended
    assert record["intent_head"]["added"]["pooling"] == "stats"
    assert record["intent_head"]["kept"]["num_classes"] == 2
    tuned, parent = load_file(out / "export" / "heads.safetensors"), parent_heads(exported_model)
    intent = [k for k in parent if k.startswith("intent.")]
    assert intent and all(torch.equal(tuned[k.replace("intent.", "intent.kept.", 1)], parent[k])
                          for k in intent)
    assert any(k.startswith("intent.added.") for k in tuned)
    model = MultitaskClassifier.from_hparams(source=str(out / "export"), run_opts={"device": "cpu"})
    assert type(model.mods.heads["intent"]).__name__ == "ExtendedHead"
    assert "kept fixed" in (out / "export" / "README.md").read_text()
    result = run_foreign_class(out / "export", *toy_wavs[:2], cwd=tmp_path)
    assert result["multitask_importable"] is False
    for wav in toy_wavs[:2]:
        expected = model.classify_file(wav)["intent"]["probs"]
        got = result["probs"][wav]["intent"]
        assert max(abs(got[label] - p) for label, p in expected.items()) < 1e-6


def test_an_extended_parent_is_extended_again_with_both_heads_kept_whole(extended, tmp_path):
    """Extending a model that was extended before nests its two heads in the kept one."""
    out, record = extended
    train = write_new_domain(tmp_path, 6, 4, labels={"hoot": 1500, "hum": 6000})
    with pytest.warns(UserWarning, match="extend without --(replay|old-valid)"):  # both provoked
        again = finetune(str(out / "export"), train, tmp_path / "again", mode="extend",
                         overrides={**EXTEND, "number_of_epochs": 1}, export=False)
    assert again["intent_labels"] == [*record["intent_labels"], "hoot", "hum"]
    assert again["intent_head"]["kept"]["num_classes"] == len(record["intent_labels"])
    assert again["intent_head"]["kept"]["kept"]["num_classes"] == 2
    with pytest.raises(FinetuneError, match="extended one .*extend mode needs a new_intent_head"), \
            pytest.warns(UserWarning, match="extend without --replay"):
        finetune(str(out / "export"), train, tmp_path / "null", mode="extend",
                 overrides={**EXTEND, "new_intent_head": None})
    tuned = torch.load(next((tmp_path / "again" / "save").glob("CKPT*/heads.ckpt")),
                       weights_only=True)
    parent = load_file(out / "export" / "heads.safetensors")
    assert all(torch.equal(tuned[k.replace("intent.", "intent.kept.", 1)], v)
               for k, v in parent.items() if k.startswith("intent."))


def test_the_stats_head_runs_from_custom_interface_without_the_package(
        replaced, toy_wavs, run_foreign_class, tmp_path):
    export = replaced / "export"
    result = run_foreign_class(export, *toy_wavs[:2], cwd=tmp_path)
    assert result["multitask_importable"] is False and result["class_module"] == "custom_interface"
    model = MultitaskClassifier.from_hparams(source=str(export), run_opts={"device": "cpu"})
    for wav in toy_wavs[:2]:
        for task, expected in model.classify_file(wav).items():
            got = result["probs"][wav][task]
            assert max(abs(got[label] - p) for label, p in expected["probs"].items()) < 1e-6


def test_replace_with_the_parents_head_design_copies_its_layers(exported_model, new_domain,
                                                                toy_corpus, tmp_path):
    overrides = {**parse_overrides(FAST), "number_of_epochs": 1, "new_intent_head": None}
    record = finetune(str(exported_model), new_domain["train"], tmp_path / "run",
                      valid=[new_domain["valid"]], emotion=toy_corpus["test"],
                      overrides=overrides, export=False)
    parent = MultitaskClassifier.from_hparams(source=str(exported_model), run_opts={"device": "cpu"})
    assert record["intent_head"]["pooling"] == parent.mods.heads["intent"].pooling != "stats"
    assert record["results"]["emotion"]["change"] == 0.0  # frozen encoder and emotion head


def test_finetuning_can_calibrate_the_frozen_emotion_head_to_a_banks_calls(
        exported_model, new_domain, toy_corpus, tmp_path):
    """class_bias_tasks: after training, only the emotion head's last bias moves, by the
    biases fitted on the calls; the record, the retention figures and the card say so."""
    calls = write_calls(tmp_path / "calls")
    overrides = {**parse_overrides(FAST), "number_of_epochs": 1,
                 "class_bias_tasks": ["emotion"], "class_bias_calls": calls}
    record = finetune(str(exported_model), new_domain["train"], tmp_path / "run",
                      valid=[new_domain["valid"]], emotion=toy_corpus["test"], overrides=overrides)
    bias = record["class_bias"]["tasks"]["emotion"]["bias"]
    assert record["class_bias"]["calls_voices"] == ["callerA", "callerB", "callerC"]
    tuned = load_file(tmp_path / "run" / "export" / "heads.safetensors")
    parent = parent_heads(exported_model)
    emotion = [k for k in parent if k.startswith("emotion.")]
    last = max((k for k in emotion if k.startswith("emotion.classifier.") and k.endswith(".bias")),
               key=lambda k: int(k.split(".")[2]))
    assert all(torch.equal(tuned[k], parent[k]) for k in emotion if k != last)
    torch.testing.assert_close(tuned[last], parent[last] + torch.tensor(bias), atol=1e-4, rtol=0)
    assert "without_class_bias" in json.loads(
        (tmp_path / "run" / "test_metrics.json").read_text())["emotion"]["emotion"]
    assert "Calibration: the emotion logits carry per-class biases" in (
        tmp_path / "run" / "export" / "README.md").read_text()
    with pytest.raises(FinetuneError, match="at least 13 labelled clips of every emotion class"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "refused",
                 valid=[new_domain["valid"]], overrides={**overrides, "class_bias_min_per_class": 13})
    assert not list((tmp_path / "refused").glob("save/CKPT+*"))  # refused before training
    with pytest.raises(FinetuneError, match="extend keeps the parent's intent logits whole"), \
            pytest.warns(UserWarning, match="extend without --(replay|old-valid)"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "extend", mode="extend",
                 valid=[new_domain["valid"]],
                 overrides={**overrides, "class_bias_tasks": ["intent", "emotion"]})


def test_a_run_folder_refuses_to_resume_with_another_intent_head(replaced, exported_model, new_domain):
    with pytest.raises(FinetuneError, match="intent head is .*'stats'.*use a new --out"):
        finetune(str(exported_model), new_domain["train"], replaced, valid=[new_domain["valid"]],
                 overrides={"new_intent_head": None, "freeze_encoder": "none"})


def test_extend_keeps_the_old_intents_within_two_points_and_learns_the_new(extended,
                                                                            exported_model,
                                                                            toy_corpus):
    out, record = extended
    assert record["intent_labels"] == ["high", "low", *sorted(NEW_INTENTS)]  # parent's first
    old = record["results"]["old_intent"]
    assert old["before"] == pytest.approx(accuracy_of(exported_model, toy_corpus["test"], "intent"))
    assert old["accuracy"] == pytest.approx(accuracy_of(out / "export", toy_corpus["test"], "intent"))
    assert old["accuracy"] >= old["before"] - 0.02
    assert record["results"]["new_intent"]["accuracy"] >= 0.75
    # Encoder and emotion head frozen (the default): emotion is exactly the parent's.
    assert record["results"]["emotion"]["change"] == 0
    front = yaml.safe_load((out / "export" / "README.md").read_text().split("---")[1])
    assert front["base_model"] == "org/name"


def test_extend_scores_macro_f1_over_the_labels_each_test_holds(extended):
    """The record's figures are the tests' own, with macro-F1 over the labels each holds."""
    out, record = extended
    tested = json.loads((out / "test_metrics.json").read_text())
    for name, key in (("new", "new_intent"), ("old_intent", "old_intent")):
        per_class = tested[name]["intent"]["per_class"]
        held = [c["f1"] for c in per_class.values() if c["support"]]
        assert len(held) == (len(NEW_INTENTS) if name == "new" else 2)
        assert record["results"][key]["macro_f1"] == pytest.approx(sum(held) / len(held))
        assert record["results"][key]["accuracy"] == tested[name]["intent"]["accuracy"]
        # and the accuracy in each voice: the new domain's CSV names its speakers
        if name == "new":
            assert set(record["results"][key]["by_speaker"]) == {"test0", "test1", "test2"}
        assert record["results"][key].get("by_speaker") == tested[name]["intent"].get("by_speaker")


def test_a_label_the_test_does_not_hold_counts_against_recall_not_as_a_class():
    """Four new-intent clips, one given an old intent: F1 over the 2 new labels, not 3."""
    from multitask.metrics import classification_report, macro_f1_over_references

    report = classification_report([1, 1, 2, 0], [1, 1, 2, 2], ["old", "new_a", "new_b"], "intent")
    assert macro_f1_over_references(report) == pytest.approx((1.0 + 2 / 3) / 2)
    assert report["macro_f1"] == pytest.approx((0.0 + 1.0 + 2 / 3) / 3)  # what it was


def test_extend_rehearses_every_old_clip_and_offsets_the_new_intents_on_old_validation(
        extended, toy_corpus):
    out, record = extended
    old_rows = [r for r in csv.DictReader(open(toy_corpus["train"])) if r["intent"]]
    assert record["replayed"] == len(old_rows) and record["rows_per_class"] == 8
    calibration = record["calibration"]
    assert calibration["old_valid"].endswith("valid.csv")
    assert calibration["accuracy"] >= calibration["accuracy_without_new"] - calibration["tolerance"]
    assert [row["offset"] for row in calibration["trade_off"]] == [-4, -3, -2, -1, 0, 1, 2]


def test_a_fixed_offset_reaches_the_export_and_a_resumed_run_does_not_add_it_twice(
        exported_model, new_domain, toy_corpus, tmp_path):
    """new_intent_offset=-100 switches the new intents off in the exported model."""
    out = tmp_path / "run"
    kwargs = dict(valid=[new_domain["valid"]], test=new_domain["test"], mode="extend",
                  old_intent=toy_corpus["test"], replay=[toy_corpus["train"]],
                  overrides={**EXTEND, "number_of_epochs": 2, "new_intent_offset": -100})
    record = finetune(str(exported_model), new_domain["train"], out, **kwargs)
    assert record["calibration"]["offset"] == -100
    assert record["results"]["new_intent"]["accuracy"] == 0
    heads = load_file(out / "export" / "heads.safetensors")
    again = finetune(str(exported_model), new_domain["train"], out, **kwargs)
    assert again["calibration"] == record["calibration"]
    assert all(torch.equal(heads[k], v)
               for k, v in load_file(out / "export" / "heads.safetensors").items())
    # The offset is in the weights: the folder cannot choose it again another way.
    with pytest.raises(FinetuneError, match="offset -100.00 was chosen with .*'new_intent_offset'"
                                            ": -100.0.*use a new --out"):
        finetune(str(exported_model), new_domain["train"], out, **{
            **kwargs, "overrides": {**kwargs["overrides"], "new_intent_offset": -50}})
    model = MultitaskClassifier.from_hparams(source=str(out / "export"), run_opts={"device": "cpu"})
    wavs = [r["path"] for r in csv.DictReader(open(new_domain["test"]))]
    folder = os.path.dirname(new_domain["test"])
    predicted = {model.classify_file(os.path.join(folder, w))["intent"]["label"] for w in wavs}
    assert predicted <= {"low", "high"}


def test_old_validation_clips_of_other_intents_are_refused(exported_model, new_domain, toy_corpus,
                                                           tmp_path):
    from multitask.manifest import read_manifest, write_manifest

    rows = [dict(r, intent="chirp") if r["intent"] == "low" else r
            for r in read_manifest(toy_corpus["valid"])]
    old_valid = tmp_path / "old_valid.csv"
    write_manifest(old_valid, rows)
    with pytest.raises(FinetuneError, match="old-valid .*: intent.s. chirp are not the parent's"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "run", mode="extend",
                 valid=[new_domain["valid"]], old_valid=str(old_valid),
                 replay=[toy_corpus["train"]], overrides=EXTEND)


@pytest.fixture(scope="module")
def extended_preserving(exported_model, new_domain, toy_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft_extend_preserving") / "run"
    with pytest.warns(UserWarning, match="extend without --old-valid"):  # not offset: exact logits
        record = finetune(str(exported_model), new_domain["train"], out,
                          valid=[new_domain["valid"]], test=new_domain["test"], mode="extend",
                          old_intent=toy_corpus["test"], replay=[toy_corpus["train"]],
                          overrides={**EXTEND, "number_of_epochs": 3, "new_intent_head": None,
                                     "preserve_old_intents": True})
    return out, record


def test_extend_preserving_old_intents_keeps_the_parents_logits_exactly(extended_preserving,
                                                                        exported_model):
    """The parent's head retrained with rows appended (new_intent_head null) and
    preserve_old_intents: only the new rows of the last layer learn."""
    out, record = extended_preserving
    tuned = load_file(out / "export" / "heads.safetensors")
    parent = parent_heads(exported_model)
    last = max(int(k.split(".")[2]) for k in parent if k.startswith("intent.classifier."))
    last_keys = {f"intent.classifier.{last}.weight", f"intent.classifier.{last}.bias"}
    shared = [k for k in parent if k.startswith("intent.") and k not in last_keys]
    assert shared and all(torch.equal(tuned[k], parent[k]) for k in shared)
    kept = len(record["intent_labels"]) - len(NEW_INTENTS)
    for key in last_keys:
        assert torch.equal(tuned[key][:kept], parent[key])
        assert not torch.equal(tuned[key][kept:], tuned[key][kept:].mean(0).expand_as(tuned[key][kept:]))
    assert record["results"]["old_intent"]["accuracy"] >= record["results"]["old_intent"]["before"] - 0.02


def test_extend_copies_the_old_rows_and_starts_new_rows_from_their_mean(exported_model, tmp_path):
    from speechbrain.dataio.encoder import CategoricalEncoder

    from multitask.inference import encoder_from_config
    from multitask.model import MultitaskModel, TaskHead

    parent = MultitaskClassifier.from_hparams(source=str(exported_model), savedir=tmp_path / "p",
                                              run_opts={"device": "cpu"})
    old = parent.labels["intent"]
    labels = intent_label_set(old, ["chirp"], "extend")
    encoders = {}
    for task, names in (("intent", labels), ("emotion", parent.labels["emotion"])):
        encoders[task] = CategoricalEncoder()
        encoders[task].update_from_iterable(names)
    encoder = encoder_from_config(parent.mods.encoder.config.to_dict())
    size = parent.mods.heads["intent"].projector.out_features
    pooling = parent.mods.heads["intent"].pooling
    heads = {t: TaskHead(encoder.num_layers, encoder.output_size, len(e), size, size, pooling=pooling)
             for t, e in encoders.items()}
    model = MultitaskModel(encoder, heads)
    init_from_parent(model, encoders, str(exported_model), savedir=tmp_path / "p", mode="extend")
    src = parent.mods.heads["intent"].classifier[-1]
    dst = model.heads["intent"].classifier[-1]
    assert torch.equal(dst.weight[: len(old)], src.weight) and torch.equal(dst.bias[: len(old)], src.bias)
    assert torch.allclose(dst.weight[len(old)], src.weight.mean(0), atol=0.05 * src.weight.std().item())
    assert not any(p.requires_grad for p in model.heads["emotion"].parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_a_label_spelled_like_a_parent_intent_is_refused_in_extend(exported_model, tmp_path):
    train = write_new_domain(tmp_path, 3, 0, labels={"Low": 3000, "chirp": 5000})
    with pytest.raises(FinetuneError, match=r"'Low' and the parent's intent 'low'"):
        finetune(str(exported_model), train, tmp_path / "run", mode="extend")
    with pytest.raises(FinetuneError, match=r"'card_lost' and the parent's intent 'lost card'"):
        intent_label_set(["lost card"], ["card_lost"], "extend")


def test_an_intent_without_training_examples_is_refused(exported_model, tmp_path):
    train = write_new_domain(tmp_path, 3, 0, labels={"chirp": 3000})
    test = write_new_domain(tmp_path, 2, 1, labels={"chirp": 3000, "whistle": 5000}, split="test")
    with pytest.raises(FinetuneError, match=rf"^--test {test}: intent\(s\) whistle have no "
                                            rf"training example in the part of {train} kept for "
                                            r"training \(empty class\)"):
        finetune(str(exported_model), train, tmp_path / "run", test=test)


def test_a_parent_folder_that_is_not_a_multitask_model_is_refused(trained_run, new_domain, tmp_path, capsys):
    with pytest.raises(FinetuneError, match="export it first"):
        finetune(str(trained_run), new_domain["train"], tmp_path / "run")
    (tmp_path / "empty").mkdir()
    code = main(["finetune", "--from", str(tmp_path / "empty"), "--train", new_domain["train"],
                 "--out", str(tmp_path / "run2")])
    assert code == 1 and "not a model folder written by" in capsys.readouterr().err
    typo = tmp_path / "results" / "no-such-run" / "model"
    code = main(["finetune", "--from", str(typo), "--train", new_domain["train"],
                 "--out", str(tmp_path / "run3")])
    err = capsys.readouterr().err
    assert code == 1 and f"no model folder at {typo}, and it is not a Hub repo id" in err
    assert "cannot load" not in err  # refused before loading is tried, as a folder's faults are


def test_other_commands_still_refuse_unknown_arguments(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--from", "x", "--out", "y", "--number_of_epochs=3"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --number_of_epochs=3" in capsys.readouterr().err


def test_the_shipped_augmentation_runs_in_the_training_loop(exported_model, new_domain, tmp_path):
    """finetune.yaml's task_augmentation (speed, pauses: rows change length) through the
    real loop, and on the card; the other tests switch it off because their classes are
    tone pitches."""
    out = tmp_path / "run"
    finetune(str(exported_model), new_domain["train"], out, valid=[new_domain["valid"]],
             overrides={"number_of_epochs": 2, "batch_size": 4, "warmup_steps": 0})
    used = (out / "hyperparams.yaml").read_text()
    assert "task_augmentation:" in used and "PauseInsertion" in used and "SpeedPerturb" in used
    assert "epoch: 2" in (out / "train_log.txt").read_text()
    assert ("- Augmentation (training only), on the intent rows: in 80% of the batches, 1 of: "
            "SpeedPerturb (speeds 0.80-1.25), PauseInsertion.") in (out / "export" / "README.md").read_text()


def test_time_masking_fine_tunes_a_parent_trained_without_it_and_the_export_loads(
        exported_model, new_domain, tmp_path):
    """--apply_spec_augment with --mask_time_prob: the parent has no masked-frame vector;
    the run starts it fresh, and the export (whose config masks) carries it and reloads.
    That masking acts while training, and only then: tests/test_model.py."""
    from safetensors import safe_open

    def mask_vector(folder):
        with safe_open(str(folder / "encoder.safetensors"), "pt") as weights:
            return weights.get_tensor("model.masked_spec_embed") if (
                "model.masked_spec_embed" in weights.keys()) else None

    assert mask_vector(exported_model) is None
    out = tmp_path / "run"
    finetune(str(exported_model), new_domain["train"], out, valid=[new_domain["valid"]],
             overrides={"apply_spec_augment": True, "mask_time_prob": 0.3,
                        "freeze_encoder": "none", "number_of_epochs": 2, "batch_size": 4,
                        "warmup_steps": 0, "task_augmentation": None})
    assert "mask_time_prob: 0.3" in (out / "hyperparams.yaml").read_text()
    assert ("- Time masking (training only): Transformers' mask_time_prob 0.3, spans of 10 "
            "frames") in (out / "export" / "README.md").read_text()
    assert mask_vector(out / "export") is not None
    model = MultitaskClassifier.from_hparams(source=str(out / "export"), savedir=tmp_path / "m",
                                             run_opts={"device": "cpu"})
    assert model.mods.encoder.config.mask_time_prob == 0.3 and not model.mods.encoder.training
    with open(new_domain["test"], newline="") as fin:
        clip = os.path.join(os.path.dirname(new_domain["test"]), next(csv.DictReader(fin))["path"])
    assert model.classify_file(clip)["intent"]["label"] in NEW_INTENTS


def test_encoder_dropout_reaches_the_encoder_that_fine_tunes(exported_model, new_domain,
                                                            tmp_path):
    """--encoder_dropout overrides the parent config's dropout (0 in the tiny parent, as in
    the demo's) for the encoder the run trains; the export keeps the run's config."""
    def dropouts(folder):  # loaded elsewhere: a savedir writes into its folder
        model = MultitaskClassifier.from_hparams(source=str(folder),
                                                 savedir=tmp_path / "loaded" / folder.name,
                                                 run_opts={"device": "cpu"})
        return [getattr(model.mods.encoder.config, key) for key in DROPOUT_KEYS]

    assert dropouts(exported_model) == [0.0] * len(DROPOUT_KEYS)
    out = tmp_path / "run"
    finetune(str(exported_model), new_domain["train"], out, valid=[new_domain["valid"]],
             overrides={"encoder_dropout": 0.2, "freeze_encoder": "none",
                        "number_of_epochs": 1, "batch_size": 4, "warmup_steps": 0,
                        "task_augmentation": None})
    assert "encoder_dropout: 0.2" in (out / "hyperparams.yaml").read_text()
    assert dropouts(out / "export") == [0.2] * len(DROPOUT_KEYS)


def test_emotion_replay_rehearses_emotion_through_a_trainable_encoder(exported_model, new_domain,
                                                                     toy_corpus, tmp_path):
    from multitask.manifest import read_manifest

    overrides = {**parse_overrides(FAST), "number_of_epochs": 2, "freeze_encoder": "none"}
    record = finetune(str(exported_model), new_domain["train"], tmp_path / "run",
                      valid=[new_domain["valid"]], emotion=toy_corpus["test"],
                      emotion_replay=[toy_corpus["train"]], overrides=overrides)
    emotion_rows = [r for r in read_manifest(toy_corpus["train"]) if r["emotion"]]
    assert record["emotion_replayed"] == len(emotion_rows) > 0
    used = yaml.safe_load(re.sub(r"!\S+", "", (tmp_path / "run" / "hyperparams.yaml").read_text()))
    assert used["task_weights"] == {"intent": 1.0, "emotion": 1.0}
    tuned = load_file(tmp_path / "run" / "export" / "heads.safetensors")
    parent = parent_heads(exported_model)
    assert all(torch.equal(tuned[k], parent[k]) for k in parent if k.startswith("emotion."))
    tuned_enc = load_file(tmp_path / "run" / "export" / "encoder.safetensors")
    parent_enc = load_file(exported_model / "encoder.safetensors")
    assert any(not torch.equal(tuned_enc[k], parent_enc[k]) for k in parent_enc)
    assert "emotion clips rehearsed" in (tmp_path / "run" / "export" / "README.md").read_text()
    with pytest.raises(FinetuneError, match=r"rehearsed \d+ emotion clips .*not 0; use a new"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "run",  # resumed without
                 valid=[new_domain["valid"]], emotion=toy_corpus["test"], overrides=overrides)


def test_emotion_replay_is_refused_when_it_cannot_act_or_has_unknown_labels(
        exported_model, new_domain, toy_corpus, tmp_path, monkeypatch):
    with pytest.raises(FinetuneError, match="encoder and the emotion head are both frozen"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "a",
                 valid=[new_domain["valid"]], emotion_replay=[toy_corpus["train"]])
    with pytest.raises(FinetuneError, match="task_weights gives it weight 0.0"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "b",
                 valid=[new_domain["valid"]], emotion_replay=[toy_corpus["train"]],
                 overrides={"freeze_encoder": "none", "task_weights": {"emotion": 0.0}})
    with pytest.raises(FinetuneError, match="also in --emotion"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "d",
                 valid=[new_domain["valid"]], emotion=toy_corpus["train"],
                 emotion_replay=[toy_corpus["train"]], overrides={"freeze_encoder": "none"})
    layers = MultitaskClassifier.from_hparams(source=str(exported_model), savedir=tmp_path / "p",
                                              run_opts={"device": "cpu"}).mods.encoder.config
    with pytest.raises(FinetuneError, match="encoder and the emotion head are both frozen"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "e",  # every layer: all
                 valid=[new_domain["valid"]], emotion_replay=[toy_corpus["train"]],
                 overrides={"freeze_encoder": layers.num_hidden_layers})
    odd = tmp_path / "odd.csv"
    odd.write_text("id,wav,duration,emotion\nx,x.wav,1.0,furious\n")
    with pytest.raises(FinetuneError, match=r"odd.csv: emotion label\(s\) \['furious'\]"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "c",
                 valid=[new_domain["valid"]], emotion_replay=[str(odd)],
                 overrides={"freeze_encoder": "none"})
    import multitask.finetune.run as run_module  # a parent without an emotion head

    parent = run_module.load_parent(str(exported_model), None, tmp_path / "p2")
    del parent.labels["emotion"]
    monkeypatch.setattr(run_module, "load_parent", lambda *args, **kwargs: parent)
    with pytest.raises(FinetuneError, match="the parent has no emotion head to rehearse"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "f",
                 valid=[new_domain["valid"]], emotion_replay=[toy_corpus["train"]],
                 overrides={"freeze_encoder": "none"})


def test_a_frozen_stats_head_keeps_its_batch_statistics_while_the_model_trains(
        exported_model, tmp_path):
    """A frozen head stays in eval mode: a stats head's running statistics do not move."""
    from multitask.inference import encoder_from_config
    from multitask.model import MultitaskModel, TaskHead

    parent = MultitaskClassifier.from_hparams(source=str(exported_model), savedir=tmp_path / "p",
                                              run_opts={"device": "cpu"})
    encoder = encoder_from_config(parent.mods.encoder.config.to_dict())
    head = TaskHead(encoder.num_layers, encoder.output_size, 2, hidden_size=0, pooling="stats")
    model = MultitaskModel(encoder, {"emotion": head})
    model.freeze_head("emotion")
    before = head.normaliser.running_mean.clone()
    model.train()(torch.randn(3, 16000), torch.ones(3))
    assert torch.equal(head.normaliser.running_mean, before)
    assert not any(p.requires_grad for p in head.parameters())


def test_the_kept_logits_are_tempered_only_while_the_new_head_trains():
    from multitask.model import ExtendedHead

    head = ExtendedHead(2, 4, num_classes=3, kept={"num_classes": 2, "pooling": "mean"},
                        added={"hidden_size": 0}, proj_size=4, hidden_size=4, dropout=0.0)
    hidden, lens = torch.randn(2, 1, 5, 4), torch.tensor([5])
    plain = head.eval()(hidden, lens)
    head.kept_temperature = 4.0
    assert torch.equal(head.eval()(hidden, lens), plain)  # inference: the parent's logits
    assert torch.allclose(head.train()(hidden, lens)[:, :2], plain[:, :2] / 4.0)


def test_an_automatic_temperature_is_measured_on_the_parent_and_recorded(
        exported_model, new_domain, toy_corpus, tmp_path, capsys):
    record = finetune(str(exported_model), new_domain["train"], tmp_path / "run", mode="extend",
                      valid=[new_domain["valid"]], old_valid=toy_corpus["valid"],
                      replay=[toy_corpus["train"]],
                      overrides={**EXTEND, "number_of_epochs": 1, "kept_temperature": "auto"},
                      export=False)
    measured = record["kept_temperature"]
    assert measured["temperature"] >= 1.0 and measured["held_out_nll"] > 0
    assert f"kept logits divided by {measured['temperature']:.2f}" in capsys.readouterr().out
    assert measured["setting"] == "auto"
    with pytest.raises(FinetuneError, match="tempered the kept logits with kept_temperature "
                                            "auto, not 1.0"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "run", mode="extend",
                 valid=[new_domain["valid"]], old_valid=toy_corpus["valid"],
                 replay=[toy_corpus["train"]], overrides={**EXTEND, "number_of_epochs": 1},
                 export=False)
    with pytest.raises(FinetuneError, match="kept_temperature auto tempers an extended"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "replace",
                 valid=[new_domain["valid"]], overrides={"kept_temperature": "auto"})
    with pytest.raises(FinetuneError, match="kept_temperature 2.0: only an extended"):
        finetune(str(exported_model), new_domain["train"], tmp_path / "replace2",
                 valid=[new_domain["valid"]], overrides={"kept_temperature": 2})
    with pytest.raises(FinetuneError, match="already one of the parent's"):
        old_only = write_new_domain(tmp_path / "old", 4, 5, labels={"low": 300, "high": 1200})
        finetune(str(exported_model), old_only, tmp_path / "none_new", mode="extend",
                 valid=[old_only])


def test_calibrate_refuses_an_extended_intent_head_before_scoring(extended, tmp_path, monkeypatch):
    """multitask calibrate: an extend export's kept intents are its parent's, whole."""
    from toy_data import write_calls

    from multitask import calibrate_export
    from multitask.class_bias import ClassBiasError

    out, _ = extended
    monkeypatch.setattr(calibrate_export, "class_log_probs",
                        lambda *a: pytest.fail("scored before the head was checked"))
    with pytest.raises(ClassBiasError, match="extended head"):
        calibrate_export.calibrate_export(out / "export", write_calls(tmp_path / "calls"),
                                          tmp_path / "cal", task="intent", min_per_class=1)
    assert not (tmp_path / "cal").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_the_default_hparams_ship_inside_the_package_with_the_file_they_include():
    """An installed package has no repository beside it: finetune.yaml and the model.yaml it
    includes are package data (links to hparams/ in a clone, copies in a wheel)."""
    import multitask
    from multitask.finetune import DEFAULT_HPARAMS

    package = os.path.dirname(os.path.abspath(multitask.__file__))
    assert os.path.dirname(str(DEFAULT_HPARAMS)) == os.path.join(package, "hparams")
    text = open(DEFAULT_HPARAMS, encoding="utf-8").read()
    assert "!include:model.yaml" in text
    assert os.path.isfile(os.path.join(package, "hparams", "model.yaml"))
    with open(os.path.join(os.path.dirname(package), "pyproject.toml"), encoding="utf-8") as fin:
        assert '"hparams/*.yaml"' in fin.read()


def test_a_fine_tuned_export_keeps_the_license_on_its_parents_card(tmp_path):
    from multitask.finetune import parent_license

    parent = tmp_path / "parent"
    parent.mkdir()
    assert parent_license(parent) is None  # no card: the export says `unknown`, and warns
    (parent / "README.md").write_text("---\nlicense: cc-by-nc-4.0\nlibrary_name: speechbrain\n"
                                      "---\n# a parent\n")
    assert parent_license(parent) == "cc-by-nc-4.0"
