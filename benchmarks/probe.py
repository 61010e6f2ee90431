#!/usr/bin/env python3
"""How separable the joint test's labels are: linear probes on frozen representations.

The joint IVR test asks for emotion on banking queries over the telephone, while the
emotion corpus is wideband speech of a dozen other sentences. A low joint score can
mean that the corpus does not teach what the test asks (a mismatch), or that the
representation does not hold it. This diagnostic tells the two apart by training a
linear probe (softmax regression on standardised features) on:

* ``crema_train``: the emotion corpus's training split (what the model learns from);
* ``calls``: call audio spoken by the *training* timbres in the joint test's
  conditions (``multitask synth --domain calls``; its rendered labels are used here,
  and only here: no recipe trains on them);

and scoring it on the joint test (voices heard nowhere in training), for two
representations:

* ``encoder``: a model export's encoder, frozen, each layer's mean and standard
  deviation over the valid frames;
* ``acoustic``: hand-made features, the feature baseline's (MFCC, chroma, mel, ZCR,
  RMS; means and deviations) plus six prosody measures (median, spread and 10-90 %
  range of log F0, voiced share, active level, seconds per word).

A probe trained on ``calls`` is not a system anyone could ship; it measures how much
of a label the representation carries for unseen voices, when the training material
matches the test. The weight decay is chosen on a fifth of the training source's
speakers, held out; the probe is then refitted on all of it and scored once.

    python benchmarks/probe.py --model results/demo/model --out results/bench/probe.json

Example
-------
>>> x = torch.tensor([[0.0], [0.1], [1.0], [1.1]])
>>> probe_accuracy(x, ["a", "a", "b", "b"], x, ["a", "a", "b", "b"], steps=200)
1.0
>>> sorted(held_out_speakers([{"speaker": s} for s in "abcdefghij"], share=0.2, seed=0))
['g', 'h']
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from multitask.manifest import read_manifest

DEMO = "results/demo"
SENTENCES = f"{DEMO}/synth/crema_d/sentences.csv"  # CREMA-D sentence code -> words
MANIFESTS = {
    "crema_train": f"{DEMO}/data/crema_d/train.csv",
    "calls": f"{DEMO}/synth/calls/calls.csv",
    "joint": f"{DEMO}/synth/joint_test/joint_test.csv",
}
WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1)


def probe_accuracy(train_x, train_y, test_x, test_y, weight_decay=1e-2, steps=300,
                   seed=0) -> float:
    """Test accuracy of softmax regression fitted on standardised ``train_x`` (full batch)."""
    hits = probe_hits(train_x, train_y, test_x, test_y, weight_decay, steps, seed)
    return round(float(hits.float().mean()), 3)


def probe_hits(train_x, train_y, test_x, test_y, weight_decay=1e-2, steps=300,
               seed=0) -> torch.Tensor:
    """``[test rows]`` booleans: is each test row classified right by the fitted probe?"""
    labels = sorted(set(train_y))
    y_train = torch.tensor([labels.index(y) for y in train_y])
    y_test = torch.tensor([labels.index(y) if y in labels else -1 for y in test_y])
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    a, b = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(seed)
    linear = torch.nn.Linear(a.shape[1], len(labels))
    optimizer = torch.optim.AdamW(linear.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(linear(a), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        return linear(b).argmax(-1) == y_test


def held_out_speakers(rows, share=0.2, seed=0) -> set[str]:
    """A ``share`` of the speakers of ``rows``, drawn with ``seed``."""
    speakers = sorted({row["speaker"] for row in rows})
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(speakers), size=max(1, round(share * len(speakers))), replace=False)
    return {speakers[i] for i in picked}


def chosen_probe(train_x, rows, test_x, test_rows, task) -> dict:
    """Weight decay chosen on held-out training speakers, then refitted and scored once."""
    held = held_out_speakers(rows)
    fit = torch.tensor([row["speaker"] not in held for row in rows])
    labels = [row[task] for row in rows]
    dev = {decay: probe_accuracy(train_x[fit], [y for y, f in zip(labels, fit, strict=True) if f],
                                 train_x[~fit], [y for y, f in zip(labels, fit, strict=True) if not f],
                                 decay)
           for decay in WEIGHT_DECAYS}
    decay = max(dev, key=dev.get)
    hits = probe_hits(train_x, labels, test_x, [r[task] for r in test_rows], decay)
    by_level = {level: round(float(hits[[r.get("level") == level for r in test_rows]]
                                   .float().mean()), 3)
                for level in sorted({r.get("level") for r in test_rows if r.get("level")})}
    return {"held_out_speakers": sorted(held), "dev_accuracy": dev, "weight_decay": decay,
            "accuracy": round(float(hits.float().mean()), 3), "accuracy_by_level": by_level}


def load_encoder(model_dir):
    """The frozen encoder of a model export."""
    from multitask.inference import MultitaskClassifier

    classifier = MultitaskClassifier.from_hparams(
        source=model_dir, savedir=tempfile.mkdtemp(prefix="probe_model_"), optimize=None)
    return classifier.model.encoder.eval()


def encoder_features(encoder, rows, batch_size=16) -> torch.Tensor:
    """``[rows, 2 x layers x dim]``: each layer's mean and deviation over valid frames."""
    from multitask.audio import to_model_input
    from multitask.model import frame_mask, masked_mean_std

    order = sorted(range(len(rows)), key=lambda i: rows[i]["duration"])  # less padding
    pooled = [None] * len(rows)
    for start in tqdm(range(0, len(order), batch_size), desc="encoder", unit="batch"):
        chunk = order[start:start + batch_size]
        wavs = [to_model_input(*sf.read(rows[i]["wav"], dtype="float32"), path=rows[i]["wav"])
                for i in chunk]
        longest = max(len(w) for w in wavs)
        batch = torch.stack([torch.nn.functional.pad(w, (0, longest - len(w))) for w in wavs])
        lens = torch.tensor([len(w) / longest for w in wavs])
        with torch.no_grad():
            hidden = encoder(batch, lens)  # [layers, batch, frames, dim]
            frames = encoder.frame_lengths(batch, lens).clamp(max=hidden.shape[2])
            valid = frame_mask(frames, hidden.shape[2])
            stats = torch.cat([torch.cat(masked_mean_std(layer, valid), -1) for layer in hidden], -1)
        for i, row in zip(chunk, stats, strict=True):
            pooled[i] = row
    return torch.stack(pooled)


def _words(row: dict, sentences: dict) -> int:
    """Words spoken in a clip: its text, or its CREMA-D sentence's."""
    text = row.get("text") or sentences.get(row.get("sentence", ""), "")
    if not text:
        raise ValueError(f"{row['wav']}: no text or known sentence code to count words in")
    return len(text.split())


def _acoustic_row(job: tuple[dict, dict]) -> np.ndarray:
    from multitask.baseline import file_features
    from multitask.synth.prosody import active_rms, f0_track, speech_span

    row, sentences = job
    x, sr = sf.read(row["wav"], dtype="float64")
    if x.ndim > 1:
        x = x.mean(1)
    f0 = f0_track(x, sr)  # one value per voiced 40 ms frame, 10 ms apart
    log_f0 = np.log(f0) if f0.size else np.zeros(1)
    frames = max(1, 1 + (len(x) - int(0.04 * sr)) // int(0.01 * sr))
    prosody = [np.median(log_f0), log_f0.std(), np.percentile(log_f0, 90) - np.percentile(log_f0, 10),
               f0.size / frames, 20 * np.log10(active_rms(x, sr) + 1e-12),
               speech_span(x, sr) / _words(row, sentences)]
    spectral = file_features(row["wav"], with_std=True, telephone=True).numpy()
    return np.concatenate([np.nan_to_num(np.array(prosody)), spectral])


def acoustic_features(rows, jobs=None, sentences_file=SENTENCES) -> torch.Tensor:
    """``[rows, features]``: the feature baseline's statistics plus six prosody measures."""
    import csv

    with open(sentences_file, newline="", encoding="utf-8") as fin:
        sentences = {row["code"]: row["text"] for row in csv.DictReader(fin)}
    # spawn, not fork: a child forked after the encoder ran deadlocks in torch's thread pool.
    with multiprocessing.get_context("spawn").Pool(jobs or os.cpu_count(),
                                                   initializer=torch.set_num_threads,
                                                   initargs=(1,)) as pool:
        feats = list(tqdm(pool.imap(_acoustic_row, [(row, sentences) for row in rows],
                                    chunksize=8), total=len(rows), desc="acoustic", unit="clip"))
    return torch.tensor(np.stack(feats), dtype=torch.float32)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=f"{DEMO}/model", help="an exported model folder")
    parser.add_argument("--no-acoustic", action="store_true", help="encoder probes only")
    parser.add_argument("--out", default="results/bench/probe.json")
    args = parser.parse_args(argv)
    missing = [p for p in MANIFESTS.values() if not os.path.isfile(p)]
    if missing:
        raise SystemExit(f"probe: missing {', '.join(missing)}: run `make demo`, then "
                         f"`multitask synth --out {DEMO}/synth --domain calls --voices-of "
                         f"{DEMO}/data/skit_s2i/train.csv {MANIFESTS['crema_train']}`")
    start = time.time()
    rows = {name: read_manifest(path) for name, path in MANIFESTS.items()}
    # The joint test's voices must be unseen. Call audio and the joint test both name
    # timbres; CREMA-D rows name actors, whose timbres the generator keeps out of it.
    shared = {r["speaker"] for r in rows["calls"]} & {r["speaker"] for r in rows["joint"]}
    if shared:
        raise SystemExit(f"probe: {MANIFESTS['calls']} shares speaker(s) {sorted(shared)} "
                         "with the joint test")
    encoder = load_encoder(args.model)
    representations = {"encoder": lambda split_rows: encoder_features(encoder, split_rows)}
    if not args.no_acoustic:
        representations["acoustic"] = acoustic_features
    report = {"model": os.path.abspath(args.model), "manifests": MANIFESTS,
              "weight_decays": list(WEIGHT_DECAYS), "probes": {}}
    for name, featurise in representations.items():
        feats = {split: featurise(split_rows) for split, split_rows in rows.items()}
        for task, sources in (("emotion", ("crema_train", "calls")), ("intent", ("calls",))):
            for source in sources:
                key = f"{name}: {task}, {source} -> joint"
                result = chosen_probe(feats[source], rows[source], feats["joint"], rows["joint"],
                                      task)
                report["probes"][key] = result
                levels = ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy_by_level"].items())
                print(f"{key:45s} {result['accuracy']:.3f} ({levels}; weight decay "
                      f"{result['weight_decay']:g}, held-out speakers "
                      f"{max(result['dev_accuracy'].values()):.3f})")
    report["seconds"] = round(time.time() - start, 1)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fout:
        json.dump(report, fout, indent=2)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
