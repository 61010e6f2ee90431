"""Generated audio for tests: a separable toy task for each head, and tiny encoders.

Intent rows are tones (class ``low`` at 300 Hz, ``high`` at 1200 Hz); emotion rows
are noise (class ``dull`` low-passed, ``bright`` high-passed). Every row carries one
label only, as rows from two single-task corpora do. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import soundfile as sf

from multitask.manifest import write_manifest
from multitask.model import tiny_config

SAMPLE_RATE = 16000


def tone(freq, seconds, rng, sample_rate=SAMPLE_RATE):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wav = np.sin(2 * np.pi * freq * (1 + 0.02 * rng.standard_normal()) * t)
    return (0.4 * wav + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def coloured_noise(bright, seconds, rng, sample_rate=SAMPLE_RATE):
    noise = rng.standard_normal(int(seconds * sample_rate))
    kernel = np.ones(8) / 8
    smooth = np.convolve(noise, kernel, mode="same")
    wav = noise - smooth if bright else smooth
    return (0.3 * wav / (np.abs(wav).max() + 1e-9)).astype(np.float32)


def write_toy_corpus(folder, per_class=12, seed=0, prefix="") -> dict:
    """Write wavs and ``train/valid/test.csv`` manifests; returns their paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "wav"), exist_ok=True)
    splits = {}
    for split, count in (("train", per_class), ("valid", max(2, per_class // 3)),
                         ("test", max(2, per_class // 3))):
        rows = []
        for label, freq in (("low", 300), ("high", 1200)):
            for i in range(count):
                rows.append(_row(folder, f"{prefix}{split}_int_{label}_{i}", split, "intent",
                                 label, tone(freq, rng.uniform(0.4, 1.0), rng), speaker=f"spk{i % 3}"))
        for label, bright in (("dull", False), ("bright", True)):
            for i in range(count):
                rows.append(_row(folder, f"{prefix}{split}_emo_{label}_{i}", split, "emotion",
                                 label, coloured_noise(bright, rng.uniform(0.4, 1.0), rng),
                                 speaker=f"spk{i % 3}"))
        path = os.path.join(folder, f"{split}.csv")
        write_manifest(path, rows)
        splits[split] = path
    return splits


def write_calls(folder, speakers=("callerA", "callerB", "callerC"), per_class=12) -> str:
    """Toy clips of both tasks (``per_class`` of each label) spoken, by their speaker
    column, by ``speakers`` (none of the toy corpus's); returns the manifest's path: what
    a bank's labelled calls are to :mod:`multitask.class_bias`."""
    manifest = write_toy_corpus(folder, per_class=per_class, seed=3, prefix="call_")["train"]
    with open(manifest, newline="") as fin:
        rows = list(csv.DictReader(fin))
    for index, row in enumerate(rows):
        row["speaker"] = speakers[index % len(speakers)]
    with open(manifest, "w", newline="") as fout:
        writer = csv.DictWriter(fout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def read_rows(manifest) -> list[dict]:
    """A manifest's rows as written (``wav`` relative to its folder)."""
    with open(manifest, newline="") as fin:
        return list(csv.DictReader(fin))


def write_rows(path, rows) -> str:
    """Write ``rows`` as a manifest at ``path``; returns the path."""
    with open(path, "w", newline="") as fout:
        writer = csv.DictWriter(fout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _row(folder, utt_id, split, task, label, wav, speaker):
    rel = os.path.join("wav", f"{utt_id}.wav")
    sf.write(os.path.join(folder, rel), wav, SAMPLE_RATE, subtype="PCM_16")
    return {"id": utt_id, "wav": rel, "duration": round(len(wav) / SAMPLE_RATE, 3),
            "task": task, "intent": label if task == "intent" else "",
            "emotion": label if task == "emotion" else "", "speaker": speaker, "split": split}


def save_tiny_encoder(folder, **config_overrides) -> str:
    """A tiny randomly initialised wav2vec2 saved with ``save_pretrained`` (config + weights)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = tiny_config(**config_overrides)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        do_normalize=True, return_attention_mask=config.feat_extract_norm == "layer"
    ).save_pretrained(folder)
    return str(folder)


def rewrite_label_file(path, change: str) -> None:
    """Rewrite a SpeechBrain label file (``'label' => index`` lines, then a separator):
    ``reorder`` gives the labels new indices, ``extra`` adds one label."""
    lines = path.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("="))
    labels, indices = zip(*(line.rsplit(" => ", 1) for line in lines[:end]), strict=True)
    if change == "reorder":
        entries = [f"{label} => {index}" for label, index in zip(labels[::-1], indices, strict=True)]
    else:
        entries = [*lines[:end], f"'extra' => {len(labels)}"]
    path.write_text("\n".join(entries + lines[end:]) + "\n")


NEW_INTENTS = {"chirp": 3000, "whistle": 5000}  # fine-tuning's new domain: Hz per intent


def write_new_domain(folder, shots, seed, labels=None, split="train"):
    """A generic CSV (path,intent,emotion,speaker) of tone clips; returns its path."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder / "wavs", exist_ok=True)
    rows = []
    for label, freq in (labels or NEW_INTENTS).items():
        for i in range(shots):
            rel = f"wavs/{split}_{label}_{i}.wav"
            sf.write(folder / rel, tone(freq, rng.uniform(0.5, 1.0), rng), SAMPLE_RATE)
            rows.append({"path": rel, "intent": label, "emotion": "dull", "speaker": f"{split}{i % 3}"})
    path = folder / f"{split}.csv"
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.DictWriter(fout, fieldnames=["path", "intent", "emotion", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)
