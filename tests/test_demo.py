"""`make demo`'s pipeline end to end, at the generator's tiny size: synthetic corpus,
real preparers, joint training, joint test, export, offline reload, baseline, report."""

import csv
import json
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_the_demo_pipeline_runs_end_to_end_and_honours_the_metrics_contract(tmp_path):
    demo = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "recipes/demo.py", "hparams/demo.yaml", f"--demo_folder={demo}",
         "--synth_size=tiny", "--number_of_epochs=1", "--num_workers=0",
         # the option of class biases, on; the tiny corpus's calls hold 1-5 clips of some emotions
         "--class_bias_tasks=[emotion]", "--class_bias_min_per_class=1"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    metrics = json.loads((demo / "metrics.json").read_text())
    assert set(metrics["intent"]) == {"accuracy", "macro_f1"}
    assert set(metrics["emotion"]) == {"accuracy", "unweighted_accuracy", "macro_f1"}
    assert metrics["test_set"] == "joint"
    joint_rows = list(csv.DictReader(open(demo / "synth" / "joint_test" / "joint_test.csv")))
    assert metrics["test_utterances"] == len(joint_rows)
    assert f"| joint ({len(joint_rows)}) | multitask wav2vec2 |" in (demo / "report.md").read_text()
    assert 0 < metrics["train_seconds"] <= metrics["total_seconds"]
    assert set(metrics["baseline"]) == {"intent", "emotion"}
    # The times come with the machine's measured speed, so they can be compared.
    assert metrics["host"]["matmul_gflops_at_start"] > 0 < metrics["host"]["matmul_gflops_at_end"]
    report = (demo / "report.md").read_text()
    assert "feature baseline" in report and "confusion_joint_intent.png" in report
    assert "GFLOP/s at the start" in report
    assert (demo / "confusion_joint_emotion.png").is_file()
    assert "![training curves](training_curves.png)" in report
    assert (demo / "training_curves.png").is_file()
    assert (demo / "model" / "hyperparams.yaml").is_file()
    assert "Reloaded export" in report and "error:" not in report
    joint = csv.DictReader(open(demo / "synth" / "joint_test" / "joint_test.csv"))
    voices = {row["speaker"] for row in joint}
    assert "## By voice" in report and all(f"| {voice} |" in report for voice in voices)
    # The emotion biases: fitted on calls by the validation voices, none of the joint test's;
    # the figures without them reported beside those with them.
    calls = {row["speaker"] for row in csv.DictReader(open(demo / "synth" / "calls" / "calls.csv"))}
    valid = {row["speaker"] for row in csv.DictReader(open(demo / "data" / "skit_s2i" / "valid.csv"))}
    bias = metrics["class_bias"]["emotion"]
    assert set(bias["calls_voices"]) == calls and valid <= calls and not calls & voices
    assert set(bias["test_without"]) == {"accuracy", "unweighted_accuracy", "macro_f1"}
    assert f"| joint ({len(joint_rows)}) | the same, without class biases |" in report
    assert "Calibration: the emotion logits carry per-class biases" in (
        demo / "model" / "README.md").read_text()


def test_the_demo_refuses_a_corpus_seed_its_encoder_was_not_pretrained_on(tmp_path):
    demo = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "recipes/demo.py", "hparams/demo.yaml", f"--demo_folder={demo}",
         "--synth_size=tiny", "--corpus_seed=7"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "pretraining.json" in proc.stderr and "corpus of seed 1234, not 7" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (demo / "synth").exists()


def test_the_demo_refuses_a_corpus_on_disk_dealt_other_voice_pools(tmp_path):
    # An older generator's corpus: the joint pool still held a voice now left out.
    from multitask.synth.voices import split_variants

    synth = tmp_path / "demo" / "synth"
    synth.mkdir(parents=True)
    (synth / "DATASHEET.md").write_text("# made by multitask.synth\n")
    older = split_variants(1234)
    older["joint"] = sorted(older["joint"] + ["Henrique"])
    (synth / "speakers.json").write_text(json.dumps({"seed": 1234, "size": "tiny",
                                                     "variants": older}))
    proc = subprocess.run(
        [sys.executable, "recipes/demo.py", "hparams/demo.yaml",
         f"--demo_folder={tmp_path / 'demo'}", "--synth_size=tiny"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "this corpus was dealt for seed 1234" in proc.stderr and f"delete {synth}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "demo" / "data").exists()  # refused before preparing
