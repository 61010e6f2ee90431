"""Training throughput of a config on its corpus: audio-hours per hour, data-wait share, padding.

    python benchmarks/train.py                      # hparams/demo.yaml, ~45 s of training
    python benchmarks/train.py --seconds 5 --override encoder_source=DIR \\
        --train-manifests a.csv b.csv               # any config, any manifests

Writes ``results/bench/train.json``. The step is the one ``multitask.train`` runs
(augmentation, forward, masked joint loss, backward, clipping, AdamW), on the
config's own loader (``TaskMixingBatchSampler``, its ``num_workers``), one process.

* **audio-hours per hour**: real (unpadded) audio seconds trained on / wall seconds;
* **data-wait share**: time blocked in ``next(loader)`` / whole step time;
* **padding waste**: share of computed encoder frames that are padding, over one
  epoch of the config's length-aware batches vs fixed-size shuffled batches with the
  same mean number of rows (computed from the manifest durations).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from common import machine, write_json
from hyperpyyaml import load_hyperpyyaml

from multitask import data as D
from multitask.losses import joint_loss, task_loss_sums
from multitask.manifest import TASKS, manifest_paths, read_manifests
from multitask.optim import param_groups
from multitask.sampling import TaskMixingBatchSampler
from multitask.train import augment_batch, build_model

SAMPLE_RATE = 16000
WARMUP_STEPS = 2


def padding_waste(durations, tasks, batching: dict, frames_of, seed: int) -> dict:
    """Padded share of computed frames: the config's sampler vs fixed-size batches."""
    aware = TaskMixingBatchSampler(durations, tasks, seed=seed, **batching)
    rows = round(sum(len(b) for b in aware.batches()) / len(aware))
    fixed = TaskMixingBatchSampler(durations, tasks, max_batch_seconds=None, batch_size=rows, seed=seed)
    frames = [frames_of(d) for d in durations]

    def waste(sampler):
        computed = sum(len(b) * max(frames[i] for i in b) for b in sampler.batches())
        real = sum(frames[i] for b in sampler.batches() for i in b)
        return 1.0 - real / computed

    return {
        "length_aware": {"batches": len(aware), "mean_rows": rows,
                         "padded_share_of_frames": round(waste(aware), 4),
                         "padded_share_of_seconds": round(aware.padding_waste(), 4),
                         "settings": batching},
        "fixed_size_shuffled": {"batches": len(fixed), "rows": rows,
                                "padded_share_of_frames": round(waste(fixed), 4)},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hparams", default="hparams/demo.yaml")
    parser.add_argument("--seconds", type=float, default=45.0, help="training time measured")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--train-manifests", nargs="+", help="default: the config's")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="hparams overrides, e.g. encoder_source=DIR")
    parser.add_argument("--out", default="results/bench/train.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as work:  # checkpoints unused
        return _measure(args, work)


def _measure(args, work: str) -> dict:
    overrides = {"output_folder": work, **dict(o.split("=", 1) for o in args.override)}
    if args.train_manifests:
        overrides["train_manifests"] = args.train_manifests
    with open(args.hparams, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    torch.manual_seed(hparams["seed"])

    rows = read_manifests(hparams["train_manifests"])
    tasks = hparams.get("tasks", TASKS)
    encoders = D.build_label_encoders(rows, hparams["save_folder"], tasks)
    dataset, rows = D.load_split(hparams["train_manifests"], encoders, rows=rows, probe=False)
    num_workers = hparams.get("num_workers", 0)
    loader = D.make_loader(dataset, rows, hparams["train_batching"], True, hparams["seed"], num_workers)
    model = build_model(hparams, encoders)
    optimizer = hparams["optimizer"](param_groups(model, hparams["encoder_lr"], hparams["head_lr"],
                                                  hparams.get("weight_decay", 0.0)))
    weights = hparams.get("task_weights", {})
    max_norm = hparams.get("max_grad_norm", 5.0)

    model.train()
    waits, steps, audio = [], [], []
    measured = 0.0
    batches = iter(loader)
    while len(steps) < args.max_steps and measured < args.seconds:
        start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        got = time.perf_counter()
        wavs, wav_lens = batch.sig
        real_seconds = float((wav_lens * wavs.shape[1]).sum()) / SAMPLE_RATE
        labels = D.batch_labels(batch, model.tasks)
        wavs, wav_lens = augment_batch(hparams, wavs, wav_lens, labels)
        logits = model(wavs, wav_lens)
        sums, counts = task_loss_sums(logits, labels)
        loss = joint_loss(sums, counts, weights, 1)
        optimizer.zero_grad()
        loss.backward()
        if max_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        end = time.perf_counter()
        waits.append(got - start)
        steps.append(end - start)
        audio.append(real_seconds)
        if len(steps) > WARMUP_STEPS:
            measured += end - start
    skip = WARMUP_STEPS if len(steps) > WARMUP_STEPS else 0
    wall, waited, trained = sum(steps[skip:]), sum(waits[skip:]), sum(audio[skip:])

    encoder = model.encoder

    def frames_of(seconds):
        samples = torch.tensor(int(round(seconds * SAMPLE_RATE)))
        return int(encoder.model._get_feat_extract_output_lengths(samples))

    batching = dict(hparams["train_batching"])
    result = {
        "machine": machine(),
        "config": args.hparams,
        "train_manifests": [os.fspath(m) for m in manifest_paths(hparams["train_manifests"])],
        "rows": len(rows),
        "corpus_hours": round(sum(float(r["duration"]) for r in rows) / 3600, 3),
        "num_workers": num_workers,
        "steps_measured": len(steps) - skip,
        "warmup_steps_excluded": skip,
        "seconds_measured": round(wall, 2),
        "audio_seconds_trained": round(trained, 1),
        "audio_hours_per_hour": round(trained / wall, 2) if wall else None,
        "data_wait_share": round(waited / wall, 4) if wall else None,
        "mean_step_seconds": round(wall / max(1, len(steps) - skip), 3),
        "padding": padding_waste([float(r["duration"]) for r in rows], [r["task"] for r in rows],
                                 batching, frames_of, hparams["seed"]),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}: {result['audio_hours_per_hour']} audio-h/h, "
          f"data wait {result['data_wait_share']}")
    return result


if __name__ == "__main__":
    main()
