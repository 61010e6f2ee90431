"""The auxiliary CTC loss: masking, the training-only head, transcripts in the data, the recipe."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file

from multitask.ctc import SYMBOLS, CTCHead, ctc_loss_sum, tokens
from multitask.data import load_split, make_dataset
from multitask.export import export_model
from multitask.inference import MultitaskClassifier
from multitask.manifest import ManifestError, read_manifest, write_manifest
from multitask.model import CTC_OUTPUT, MultitaskModel, TaskHead, Wav2Vec2Encoder, tiny_config
from multitask.optim import param_groups


def test_rows_without_a_transcript_get_no_ctc_gradient():
    logits = torch.randn(3, 20, len(SYMBOLS), requires_grad=True)
    targets = torch.tensor([tokens("card"), [0, 0, 0, 0], tokens("loan")])
    total, count = ctc_loss_sum(logits, torch.tensor([20, 20, 12]), targets, torch.tensor([4, 0, 4]))
    total.backward()
    assert int(count) == 2 and torch.isfinite(total)
    assert logits.grad[1].abs().max() == 0
    assert logits.grad[0].abs().max() > 0 and logits.grad[2, :12].abs().max() > 0


def test_a_batch_without_transcripts_gives_a_zero_that_still_backpropagates():
    logits = torch.randn(2, 5, len(SYMBOLS), requires_grad=True)
    total, count = ctc_loss_sum(logits, torch.tensor([5, 5]), torch.zeros(2, 1, dtype=torch.long),
                                torch.tensor([0, 0]))
    total.backward()
    assert int(count) == 0 and float(total.detach()) == 0 and logits.grad is not None


def tiny_model(tmp_path, ctc=True):
    tiny_config().save_pretrained(tmp_path)
    encoder = Wav2Vec2Encoder(tmp_path, save_path=tmp_path)
    heads = {"intent": TaskHead(encoder.num_layers, encoder.output_size, 3, 8, 8)}
    return MultitaskModel(encoder, heads, CTCHead(encoder.output_size) if ctc else None)


def test_the_ctc_head_speaks_only_in_training_and_learns_with_the_heads(tmp_path):
    model = tiny_model(tmp_path)
    wavs, lens = torch.randn(2, 8000), torch.tensor([1.0, 0.6])
    out = model.train()(wavs, lens)
    logits, frames = out[CTC_OUTPUT]
    assert logits.shape[:2] == (2, int(frames.max())) and logits.shape[2] == len(SYMBOLS)
    assert frames[1] < frames[0]
    assert set(model.eval()(wavs, lens)) == {"intent"}
    in_heads = {id(p) for g in param_groups(model, 1e-4, 1e-3) if g["name"] == "heads"
                for p in g["params"]}
    assert all(id(p) in in_heads for p in model.ctc_head.parameters())


def test_the_ctc_loss_alone_reaches_the_encoder(tmp_path):
    model = tiny_model(tmp_path).train()
    logits, frames = model(torch.randn(2, 8000), torch.tensor([1.0, 0.8]))[CTC_OUTPUT]
    total, _ = ctc_loss_sum(logits, frames, torch.tensor([tokens("ab"), tokens("cd")]),
                            torch.tensor([2, 2]))
    total.backward()
    grads = [p.grad for p in model.encoder.model.encoder.layers.parameters()]
    assert any(g is not None and g.abs().max() > 0 for g in grads)
    assert all(p.grad is None for p in model.heads.parameters())


def test_transcripts_become_tokens_and_a_split_without_any_is_refused(toy_corpus, tmp_path):
    rows = read_manifest(toy_corpus["train"])
    for row in rows:
        row["template"] = f"a {row['intent']} tone" if row["intent"] else ""
    item = make_dataset(rows, {}, transcripts="template")[0]
    assert item["token_count"] == len(tokens(rows[0]["template"])) > 0
    assert item["tokens"].tolist() == tokens(rows[0]["template"])
    emotion_row = next(i for i, r in enumerate(rows) if r["task"] == "emotion")
    assert make_dataset(rows, {}, transcripts="template")[emotion_row]["token_count"] == 0
    with pytest.raises(ManifestError, match="no row has a 'transcript' transcript"):
        load_split(toy_corpus["train"], {}, probe=False, transcripts="transcript")


def with_transcripts(toy_corpus, folder) -> dict:
    """The toy corpus's train and valid manifests, intent rows given a transcript."""
    corpus = {}
    for split in ("train", "valid"):
        rows = read_manifest(toy_corpus[split])
        for row in rows:
            row["wav"] = os.path.join(os.path.dirname(toy_corpus[split]), row["wav"])
            row["template"] = f"a {row['intent']} tone" if row["intent"] else ""
        corpus[split] = str(folder / f"{split}.csv")
        write_manifest(corpus[split], rows)
    return corpus


def train_command(encoder, corpus, out, *extra) -> list[str]:
    return ["recipes/train.py", "hparams/tiny.yaml", f"--encoder_source={encoder}",
            f"--output_folder={out}", f"--train_manifests=[{corpus['train']}]",
            f"--valid_manifests=[{corpus['valid']}]", *extra]


@pytest.mark.slow
def test_the_recipe_trains_with_ctc_and_exports_without_its_head(
        group_norm_encoder, toy_corpus, tmp_path):
    """The CTC loss reaches the encoder (its weights differ from the same run without
    it), the head is checkpointed for resuming, and the export leaves it out."""
    corpus = with_transcripts(toy_corpus, tmp_path)
    runs = {}
    for name, weight in (("plain", 0), ("ctc", 0.5)):
        runs[name] = tmp_path / name
        subprocess.run(
            [sys.executable, *train_command(group_norm_encoder, corpus, runs[name],
                                            "--number_of_epochs=1", f"--ctc_weight={weight}")],
            cwd=REPO, check=True, capture_output=True, timeout=600)
    ckpt = {name: next((run / "save").glob("CKPT+*")) for name, run in runs.items()}
    assert (ckpt["ctc"] / "ctc_head.ckpt").is_file() and not (ckpt["plain"] / "ctc_head.ckpt").exists()
    encoder = {name: torch.load(c / "encoder.ckpt", weights_only=True) for name, c in ckpt.items()}
    assert any(not torch.equal(encoder["plain"][k], encoder["ctc"][k]) for k in encoder["plain"])
    export = tmp_path / "export"
    export_model(runs["ctc"], export)
    for name in ("heads.safetensors", "encoder.safetensors"):
        assert not any("ctc" in key for key in load_file(export / name))
    text = (export / "hyperparams.yaml").read_text()  # (the wav2vec2 config has ctc_* keys)
    assert "ctc_head" not in text and "multitask.ctc" not in text
    assert "CTC spelling the `template` transcripts" in (export / "README.md").read_text()
    model = MultitaskClassifier.from_hparams(source=str(export), run_opts={"device": "cpu"})
    assert set(model.classify_file(corpus_wav(corpus["valid"]))) == {"intent", "emotion"}


def corpus_wav(manifest):
    return read_manifest(manifest)[0]["wav"]


@pytest.mark.slow
def test_ctc_trains_in_sync_on_two_processes_and_a_run_without_it_is_not_resumed_with_it(
        group_norm_encoder, toy_corpus, tmp_path):
    """Under DDP every batch gives the CTC head a loss (zero without transcripts), so
    the replicas stay identical; turning CTC on in a folder trained without it is
    refused, naming the checkpoint, before SpeechBrain's loader fails on it."""
    corpus = with_transcripts(toy_corpus, tmp_path)
    out = tmp_path / "two"
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         "hparams/accelerate/cpu_2proc.yaml",
         *train_command(group_norm_encoder, corpus, out, "--number_of_epochs=1",
                        "--ctc_weight=0.5")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "ACCELERATE_USE_CPU": "true"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "world size 2" in proc.stdout
    assert "parameters identical on all 2 processes" in proc.stdout
    assert (next((out / "save").glob("CKPT+*")) / "ctc_head.ckpt").is_file()

    plain = tmp_path / "plain"
    subprocess.run([sys.executable, *train_command(group_norm_encoder, corpus, plain,
                                                   "--number_of_epochs=1")],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    proc = subprocess.run([sys.executable, *train_command(
        group_norm_encoder, corpus, plain, "--number_of_epochs=2", "--ctc_weight=0.5")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr  # SpeechBrain logs the exception to stdout
    assert proc.returncode != 0
    assert "CKPT+epoch-0001: cannot resume from this checkpoint" in output
    assert "this run also has ctc_head" in output
