"""Self-supervised pretraining: targets, masking, resume, and an encoder recipes can load."""

import json
import os

import pytest
import torch
from accelerate import Accelerator
from speechbrain.utils.epoch_loop import EpochCounter

from multitask.model import Wav2Vec2Encoder
from multitask.pretrain import FrameTargets, MaskedPredictionModel, pretrain


def pretrain_hparams(encoder_config, corpus, out, epochs):
    return {
        "seed": 3,
        "train_manifests": [corpus["train"]],
        "train_batching": {"batch_size": 8, "max_batch_seconds": None, "task_ratio": None},
        "encoder_config": encoder_config,
        "encoder_out": str(out / "encoder"),
        "save_folder": str(out / "save"),
        "num_clusters": 8,
        "kmeans_frames": 5000,
        "mask_prob": 0.65,
        "mask_length": 4,
        "lr": 2e-3,
        "warmup_steps": 0,
        "epoch_counter": EpochCounter(epochs),
    }


def test_targets_follow_the_encoder_frames_and_ignore_padding(group_norm_encoder):
    from transformers import Wav2Vec2Config

    model = MaskedPredictionModel(Wav2Vec2Config.from_pretrained(group_norm_encoder), 5)
    frames = model.encoder._get_feat_extract_output_lengths
    wavs = torch.randn(3, 16000)
    samples = torch.tensor([16000] * 3)
    targets = FrameTargets.fit([(wavs, samples, frames(samples))], k=5, seed=0)
    logits, frame_lens, mask = model(wavs, torch.tensor([1.0, 0.5, 0.25]), mask_prob=0.65)
    ids = targets(wavs, logits.shape[1])
    assert ids.shape == logits.shape[:2] and int(ids.max()) < 5
    for row, length in enumerate(frame_lens.tolist()):
        assert mask[row, :length].any() and not mask[row, length:].any()


def test_pretraining_learns_resumes_and_writes_an_encoder_the_recipes_load(
        group_norm_encoder, toy_corpus, tmp_path):
    first = pretrain(pretrain_hparams(group_norm_encoder, toy_corpus, tmp_path, 1), Accelerator(cpu=True))
    assert len(first["history"]) == 1
    # Same command with a larger budget: resumes after epoch 1, does not start over.
    second = pretrain(pretrain_hparams(group_norm_encoder, toy_corpus, tmp_path, 2), Accelerator(cpu=True))
    assert [h["epoch"] for h in second["history"]] == [1, 2]  # epoch 1 kept, not rerun
    assert second["history"][0] == first["history"][0]
    assert second["history"][-1]["loss"] < first["history"][0]["loss"]
    # A smaller budget than the run has trained would train nothing and record 1 epoch.
    with pytest.raises(ValueError, match=r"CKPT\+epoch-0002: this run has trained 2 epochs, "
                                         "more than number_of_epochs=1"):
        pretrain(pretrain_hparams(group_norm_encoder, toy_corpus, tmp_path, 1), Accelerator(cpu=True))

    folder = tmp_path / "encoder"
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["mask_time_prob"] == 0.0
    summary = json.loads((folder / "pretraining.json").read_text())
    assert summary["num_clusters"] == 8 and summary["history"]

    encoder = Wav2Vec2Encoder(folder, save_path=str(tmp_path / "cache"))
    assert "masked_spec_embed" not in dict(encoder.model.named_parameters())
    from safetensors.torch import load_file

    weights = load_file(os.fspath(folder / "model.safetensors"))
    name, tensor = next(iter(weights.items()))
    assert torch.equal(encoder.model.state_dict()[name], tensor)


def test_continued_pretraining_starts_from_the_given_encoder(group_norm_encoder, toy_corpus,
                                                             tmp_path):
    from safetensors.torch import load_file
    from transformers import Wav2Vec2Config

    from multitask.pretrain import load_encoder_weights, write_summary

    first = tmp_path / "first"
    pretrain(pretrain_hparams(group_norm_encoder, toy_corpus, first, 1), Accelerator(cpu=True))
    # No epoch: the saved encoder is exactly the one it started from.
    hparams = pretrain_hparams(group_norm_encoder, toy_corpus, tmp_path / "start", 0)
    hparams["init_encoder"] = str(first / "encoder")
    pretrain(hparams, Accelerator(cpu=True))
    before = load_file(first / "encoder" / "model.safetensors")
    after = load_file(tmp_path / "start" / "encoder" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    hparams = pretrain_hparams(group_norm_encoder, toy_corpus, tmp_path / "second", 1)
    hparams["init_encoder"] = str(first / "encoder")
    pretrain(hparams, Accelerator(cpu=True), unlabelled=[toy_corpus["valid"]])
    summary = json.loads((tmp_path / "second" / "encoder" / "pretraining.json").read_text())
    assert summary["init_encoder"]["pretraining"]["epochs"] == 1
    assert summary["unlabelled_manifests"] and len(summary["train_manifests"]) == 1

    wider = Wav2Vec2Config.from_pretrained(group_norm_encoder)
    wider.hidden_size, wider.intermediate_size = 48, 64
    with pytest.raises(ValueError, match="do not fit encoder_config"):
        load_encoder_weights(MaskedPredictionModel(wider, 8), first / "encoder")

    # An encoder pretrained on another seed's corpus has heard this corpus's test voices.
    write_summary(first / "encoder", {"corpus_seed": 5})
    hparams = {**pretrain_hparams(group_norm_encoder, toy_corpus, tmp_path / "third", 1),
               "init_encoder": str(first / "encoder"), "corpus_seed": 6}
    with pytest.raises(ValueError, match="corpus of seed 5, not 6"):
        pretrain(hparams, Accelerator(cpu=True))


def test_a_next_iteration_clusters_a_layer_of_the_previous_encoder(group_norm_encoder, toy_corpus,
                                                                   tmp_path):
    from transformers import Wav2Vec2Config

    from multitask.prepare.common import file_digest
    from multitask.pretrain import EncoderLayerFeatures, write_summary

    first = tmp_path / "first"
    pretrain(pretrain_hparams(group_norm_encoder, toy_corpus, first, 1), Accelerator(cpu=True))
    teacher = str(first / "encoder")
    hparams = {**pretrain_hparams(group_norm_encoder, toy_corpus, tmp_path / "next", 1),
               "init_encoder": teacher, "target_encoder": teacher, "target_layer": 1}
    pretrain(hparams, Accelerator(cpu=True))
    state = torch.load(tmp_path / "next" / "save" / "frame_targets.pt", weights_only=True)
    width = json.loads((first / "encoder" / "config.json").read_text())["hidden_size"]
    assert state["centroids"].shape == (8, width)  # clusters of hidden states, not MFCCs
    assert state["features"] == {"features": "encoder layer", "layer": 1,
                                 "weights_sha256": file_digest(
                                     first / "encoder" / "model.safetensors")[:16]}
    summary = json.loads((tmp_path / "next" / "encoder" / "pretraining.json").read_text())
    assert "layer 1 of" in summary["objective"] and summary["targets"]["layer"] == 1

    # A frame's target is its nearest centroid among the teacher's standardised layer-1 frames.
    targets = FrameTargets.from_state_dict(state, EncoderLayerFeatures(teacher, 1))
    wavs = torch.randn(2, 16000)
    hidden = Wav2Vec2Encoder(teacher, save_path=str(tmp_path / "cache")).model(
        wavs, output_hidden_states=True).hidden_states[1]
    standard = (hidden - state["mean"]) / state["std"]
    nearest = torch.cdist(standard, state["centroids"].expand(2, -1, -1)).argmin(-1)
    assert torch.equal(targets(wavs, hidden.shape[1]), nearest)

    # The same encoder through another path resumes; other targets do not.
    pretrain({**hparams, "target_encoder": os.path.abspath(teacher) + "/",
              "epoch_counter": EpochCounter(1)}, Accelerator(cpu=True))
    with pytest.raises(ValueError, match="frame_targets.pt: the clusters were fit on .*encoder "
                                         "layer.*but this run's targets are .*mfcc"):
        pretrain({**hparams, "target_encoder": None}, Accelerator(cpu=True))

    # Refused before anything runs.
    with pytest.raises(ValueError, match="is also encoder_out"):
        pretrain({**hparams, "encoder_out": teacher}, Accelerator(cpu=True))
    with pytest.raises(ValueError, match="target_layer 5: .* has hidden layers 0..2"):
        EncoderLayerFeatures(teacher, 5)
    with pytest.raises(ValueError, match="not an encoder folder"):
        EncoderLayerFeatures(tmp_path, 1)
    other = Wav2Vec2Config.from_pretrained(group_norm_encoder)
    other.conv_stride = [5, 2, 2]  # a front end with another frame rate
    other.save_pretrained(tmp_path / "other_config")
    with pytest.raises(ValueError, match="conv_stride .* differs from encoder_config's"):
        pretrain({**hparams, "encoder_config": str(tmp_path / "other_config"),
                  "save_folder": str(tmp_path / "s2")}, Accelerator(cpu=True))
    write_summary(first / "encoder", {"corpus_seed": 5})  # the teacher heard other voices
    with pytest.raises(ValueError, match="corpus of seed 5, not 6"):
        pretrain({**hparams, "init_encoder": None, "corpus_seed": 6}, Accelerator(cpu=True))


@pytest.mark.slow
def test_the_recipe_refuses_a_resume_with_other_settings_and_leaves_the_run_as_it_was(
        group_norm_encoder, tmp_path):
    """recipes/pretrain.py on the generator's tiny corpus, then rerun with another seed or
    another number of clusters: one line naming the file, and the run folder unchanged."""
    import hashlib
    import subprocess
    import sys

    from conftest import REPO

    run = tmp_path / "run"

    def pretrain_recipe(*changes):
        settings = dict(arg.split("=", 1) for arg in (
            f"--demo_folder={tmp_path / 'demo'}", "--synth_size=tiny", f"--output_folder={run}",
            f"--encoder_config={group_norm_encoder}", f"--encoder_out={tmp_path / 'encoder'}",
            "--number_of_epochs=1", "--num_clusters=8", "--kmeans_frames=5000",
            "--warmup_steps=0", "--num_workers=0", *changes))
        return subprocess.run(
            [sys.executable, "recipes/pretrain.py", "hparams/pretrain.yaml",
             *(f"{key}={value}" for key, value in settings.items())],
            cwd=REPO, capture_output=True, text=True, timeout=600)

    def digests():
        return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(run.rglob("*")) if p.is_file() and p.name != "log.txt"}

    proc = pretrain_recipe()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    before = digests()
    for change, named in (("--seed=99", "train_sampler.ckpt: checkpoint was written with "
                                        "sampler seed 1234, this run uses 99"),
                          ("--num_clusters=6", "frame_targets.pt: 8 clusters were fit there, "
                                               "this run has num_clusters=6")):
        proc = pretrain_recipe(change)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert named in proc.stderr.strip().splitlines()[-1]
        assert digests() == before, change
