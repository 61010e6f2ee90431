"""The training recipe as users run it: learning, outputs, resume, two processes.

Each test runs ``recipes/train.py hparams/tiny.yaml`` in a subprocess with
command-line overrides, on generated toy audio and a tiny generated encoder.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO

from multitask.curves import read_train_log

pytestmark = pytest.mark.slow


def recipe_command(encoder, corpus, out, *extra):
    return [
        "recipes/train.py", "hparams/tiny.yaml",
        f"--encoder_source={encoder}", f"--output_folder={out}",
        f"--train_manifests=[{corpus['train']}]", f"--valid_manifests=[{corpus['valid']}]",
        *extra,
    ]


def run(args, launcher=None, env=None, check=True):
    cmd = (launcher or [sys.executable]) + args
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def final_weights(out, epoch):
    ckpt = os.path.join(out, "save", f"CKPT+epoch-{epoch:04d}")
    weights = {}
    for name in ("encoder", "heads"):
        for key, value in torch.load(os.path.join(ckpt, f"{name}.ckpt")).items():
            weights[f"{name}.{key}"] = value.float()
    return weights


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_recipe_learns_both_toy_tasks_and_writes_its_outputs(group_norm_encoder, toy_corpus, tmp_path):
    out = tmp_path / "run"
    run(recipe_command(group_norm_encoder, toy_corpus, out, f"--test_manifests={{toy: {toy_corpus['test']}}}"))
    results = json.loads((out / "test_metrics.json").read_text())
    # Two classes per task: chance is 0.5.
    assert results["toy"]["intent"]["accuracy"] >= 0.75
    assert results["toy"]["emotion"]["accuracy"] >= 0.75
    # Accuracy by speaker, recounted from the predictions file and the manifest's speakers.
    speaker_of = {row["id"]: row["speaker"] for row in csv.DictReader(open(toy_corpus["test"]))}
    predicted = list(csv.DictReader(open(out / "predictions_toy.csv")))
    for task in ("intent", "emotion"):
        recount = {}
        for row in predicted:
            if row[f"{task}_ref"]:
                recount.setdefault(speaker_of[row["id"]], []).append(row[f"{task}_ref"] == row[f"{task}_pred"])
        assert results["toy"][task]["by_speaker"] == {
            spk: {"num_examples": len(hits), "accuracy": sum(hits) / len(hits)}
            for spk, hits in sorted(recount.items())}
        assert len(recount) == 3
    for produced in ("save/label_encoder_intent.txt", "save/label_encoder_emotion.txt",
                     "train_log.txt", "log.txt", "hyperparams.yaml", "predictions_toy.csv",
                     "confusion_toy_intent.png", "confusion_toy_emotion.png",
                     "training_curves.png"):
        assert (out / produced).is_file(), produced
    assert "epoch: 4" in (out / "train_log.txt").read_text()
    assert [e["epoch"] for e in read_train_log(out / "train_log.txt")] == [1, 2, 3, 4]
    checkpoints = [p for p in os.listdir(out / "save") if p.startswith("CKPT+")]
    assert checkpoints and all((out / "save" / c / "encoder.ckpt").is_file() for c in checkpoints)


def test_brain_run_options_are_refused_because_accelerate_owns_them(group_norm_encoder, toy_corpus, tmp_path):
    proc = run(recipe_command(group_norm_encoder, toy_corpus, tmp_path / "x", "--precision=bf16"),
               check=False)
    assert proc.returncode != 0 and "--mixed_precision" in proc.stderr


def test_a_stopped_run_resumes_at_the_next_epoch_and_ends_with_the_same_weights(
    group_norm_encoder, toy_corpus, tmp_path
):
    """Stopped (SIGKILL) right after epoch 1's checkpoint; the same command resumes.
    Tolerance 1e-6: the resumed run replays the same batches and seeds, so on one
    CPU it is expected to be bit-identical; the margin only absorbs BLAS noise."""
    args = ["--number_of_epochs=2"]
    straight = tmp_path / "straight"
    run(recipe_command(group_norm_encoder, toy_corpus, straight, *args))

    stopped = tmp_path / "stopped"
    cmd = [sys.executable, *recipe_command(group_norm_encoder, toy_corpus, stopped, *args)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = stopped / "save" / "CKPT+epoch-0001"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the run ended before its first checkpoint"
    assert not (stopped / "save" / "CKPT+epoch-0002").exists(), "killed too late to test resume"

    resumed = run(recipe_command(group_norm_encoder, toy_corpus, stopped, *args))
    assert "Resuming from" in resumed.stdout and "epoch 1 done" in resumed.stdout
    assert "epoch 1:" not in resumed.stdout and "epoch 2:" in resumed.stdout
    assert max_difference(final_weights(straight, 2), final_weights(stopped, 2)) < 1e-6


def test_two_processes_train_in_sync_and_match_one_process_with_the_same_global_batch(
    layer_norm_encoder, toy_corpus, tmp_path
):
    """World size 2 with 4 rows each vs one process with 8 rows: the same global
    batches, the loss normalised over the global batch, gradients averaged by DDP.
    The layer-norm encoder makes the outputs independent of padding, so the only
    difference is float summation order: tolerance 1e-4 after 4 epochs (measured
    about 6e-7). Mean pooling: with attention pooling the same runs were already 1e-3
    apart after one epoch (its per-batch gradients agree to 1e-5 relative, as mean
    pooling's do; the learned frame scores amplify the rounding over the steps)."""
    one = tmp_path / "one"
    run(recipe_command(layer_norm_encoder, toy_corpus, one, "--batch_size=8", "--head_pooling=mean"))
    two = tmp_path / "two"
    launcher = [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", "hparams/accelerate/cpu_2proc.yaml"]
    proc = run(recipe_command(layer_norm_encoder, toy_corpus, two, "--batch_size=4",
                              "--head_pooling=mean"),
               launcher=launcher, env={"ACCELERATE_USE_CPU": "true"})
    assert "world size 2" in proc.stdout
    assert "parameters identical on all 2 processes" in proc.stdout
    assert max_difference(final_weights(one, 4), final_weights(two, 4)) < 1e-4


def test_two_processes_train_every_batch_of_length_bucketed_epochs(
    layer_norm_encoder, toy_corpus, tmp_path
):
    """train.yaml's kind of batching (seconds and rows both capped, so batches differ in
    size), which Accelerate's sharding used to thin out to a batch or two per epoch; each
    epoch now checks that every process went through all of its batches."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", "hparams/accelerate/cpu_2proc.yaml"]
    proc = run(recipe_command(layer_norm_encoder, toy_corpus, tmp_path / "two",
                              "--train_batching={batch_size: 4, max_batch_seconds: 2.5}",
                              "--number_of_epochs=2", "--head_pooling=mean"),
               launcher=launcher, env={"ACCELERATE_USE_CPU": "true"})
    assert "world size 2" in proc.stdout and "epoch 2: train loss" in proc.stdout


def test_processes_that_do_not_form_a_group_are_stopped(group_norm_encoder, toy_corpus, tmp_path):
    """Without ACCELERATE_USE_CPU on a CPU machine, the launcher starts two separate
    single-process runs that would overwrite each other's files."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", "hparams/accelerate/cpu_2proc.yaml"]
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    cmd = launcher + recipe_command(group_norm_encoder, toy_corpus, tmp_path / "x")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode != 0 and "did not form one group" in proc.stdout + proc.stderr


def test_the_real_recipe_prepares_both_corpora_and_trains_on_their_union(group_norm_encoder, tmp_path):
    """hparams/train.yaml as shipped, on fixture folders in the released Skit-S2I and
    CREMA-D layouts; only the encoder (no network here) and the sizes are overridden."""
    from corpus_fixtures import make_crema_d, make_skit_s2i

    make_skit_s2i(tmp_path / "skit", broken=("empty",))
    make_crema_d(tmp_path / "crema", broken=("empty",))
    out = tmp_path / "run"
    run(["recipes/train.py", "hparams/train.yaml", f"--output_folder={out}",
         f"--skit_s2i_folder={tmp_path / 'skit'}", f"--crema_d_folder={tmp_path / 'crema'}",
         f"--encoder_source={group_norm_encoder}", "--number_of_epochs=1", "--num_workers=0",
         "--encoder_freeze_steps=0", "--warmup_steps=0", "--apply_spec_augment=False"])
    for produced in ("data/skit_s2i/train.csv", "data/skit_s2i/rejected.csv",
                     "data/crema_d/test.csv", "data_report/report.md", "test_metrics.json"):
        assert (out / produced).is_file(), produced
    results = json.loads((out / "test_metrics.json").read_text())
    assert results["intent"]["intent"]["num_examples"] > 0
    assert results["emotion"]["emotion"]["num_examples"] > 0
    train_rows = (out / "data/skit_s2i/train.csv").read_text() + (out / "data/crema_d/train.csv").read_text()
    assert ",intent," in train_rows and ",emotion," in train_rows


def test_the_real_recipe_trains_on_manifests_made_elsewhere(group_norm_encoder, toy_corpus, tmp_path):
    """The README's command for manifests a user prepared: no preparer runs."""
    out = tmp_path / "run"
    run(["recipes/train.py", "hparams/train.yaml", f"--output_folder={out}",
         "--prepare_corpora=False", "--skit_s2i_folder=none", "--crema_d_folder=none",
         f"--train_manifests=[{toy_corpus['train']}]", f"--valid_manifests=[{toy_corpus['valid']}]",
         # Mapping overrides merge into the YAML's mapping: replace its keys.
         f"--test_manifests={{intent: {toy_corpus['test']}, emotion: {toy_corpus['test']}}}",
         f"--encoder_source={group_norm_encoder}", "--number_of_epochs=1", "--num_workers=0",
         "--encoder_freeze_steps=0", "--warmup_steps=0", "--apply_spec_augment=False"])
    assert not (out / "data").exists()
    assert (out / "test_metrics.json").is_file() and (out / "export" / "hyperparams.yaml").is_file()


@pytest.mark.parametrize("arg, key", [
    ("--grad_accum=2", "grad_accum"),  # --grad_accumulation_factor's abbreviation
    ("--prec=bf16", "prec"),           # --precision's: it slipped past Accelerate's rule
])
def test_an_abbreviated_brain_run_option_is_an_override_not_swallowed(tmp_path, arg, key):
    from multitask.recipe import load_hparams, parse_arguments

    hparams = tmp_path / "h.yaml"
    hparams.write_text("seed: 1\ngrad_accumulation: 1\noptimizer: adam\n")
    hparams_file, overrides = parse_arguments([str(hparams), arg])
    assert overrides == f"{key}: {arg.split('=')[1]}"
    with pytest.raises(SystemExit, match=f"{key}"):  # the file has no such key
        load_hparams(hparams_file, overrides)
    # The hparams keys SpeechBrain's parser used to take for its own options
    _, overrides = parse_arguments([str(hparams), "--grad_accumulation=2", "--optimizer=sgd"])
    assert load_hparams(str(hparams), overrides) == {
        "seed": 1, "grad_accumulation": 2, "optimizer": "sgd"}


def test_a_key_an_earlier_version_read_is_refused_with_its_replacement(tmp_path):
    from multitask.recipe import load_hparams

    hparams = tmp_path / "old.yaml"
    hparams.write_text("seed: 1\naugment_tasks: [intent]\n")
    with pytest.raises(SystemExit, match=r"old\.yaml: `augment_tasks` is no longer read; use task_augmentation"):
        load_hparams(str(hparams))
    hparams.write_text("seed: 1\n")
    assert load_hparams(str(hparams)) == {"seed": 1}


def test_an_override_of_a_key_the_file_lacks_or_bad_yaml_is_refused_in_a_line(tmp_path):
    from multitask.recipe import load_hparams

    hparams = tmp_path / "run.yaml"
    hparams.write_text("seed: 1\nnumber_of_epochs: 2\n")
    assert load_hparams(str(hparams), "number_of_epochs: 3")["number_of_epochs"] == 3
    with pytest.raises(SystemExit, match=r"run\.yaml: no key `number_of_epoch` to override"):
        load_hparams(str(hparams), "number_of_epoch: 3")
    with pytest.raises(SystemExit, match=r"run\.yaml or its overrides: not valid YAML"):
        load_hparams(str(hparams), "seed: [1")
    # A KeyError that is not HyperPyYAML's refusal of an override keeps its traceback.
    hparams.write_text("table: !new:dict\n    a: 1\nvalue: !apply:operator.getitem [!ref <table>, b]\n")
    with pytest.raises(KeyError):
        load_hparams(str(hparams))
