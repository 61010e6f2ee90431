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
  same mean number of rows (computed from the manifest durations);
* **step split**: shares of step time in the loader, augmentation, forward (with the
  loss), backward (with clipping) and the optimizer;
* **convolutions** (``--profile-steps N``, default 4; 0 skips): ``torch.profiler`` over N
  more steps, the milliseconds per step each convolution of the encoder (front-end
  layers, positional convolution) spends in its forward and its backward, and the
  operators with the most self time.
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
PHASES = ("data", "augment", "forward", "backward", "optimizer")


def _cycle(loader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def encoder_convolutions(wav2vec2) -> dict:
    """Each convolution of a Transformers wav2vec2 model by a readable name, keyed by the
    shape of its weight, which is all the profiler records of it. Front-end layers of one
    shape (wav2vec2-base has four of 512 x 512 x 3) share a key and a name.

    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
    ...     intermediate_size=64, conv_dim=(16, 32, 32), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4),
    ...     num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
    >>> encoder_convolutions(Wav2Vec2Model(config))
    {(16, 1, 10): 'front end layer 0', (32, 16, 4): 'front end layer 1', (32, 32, 4): 'front end layer 2', (32, 8, 8): 'positional conv'}
    >>> config.conv_dim, config.conv_kernel = (16, 16, 16), (10, 4, 4)
    >>> list(encoder_convolutions(Wav2Vec2Model(config)).values())
    ['front end layer 0', 'front end layers 1, 2', 'positional conv']
    """
    layers = {}
    for index, layer in enumerate(wav2vec2.feature_extractor.conv_layers):
        layers.setdefault(tuple(layer.conv.weight.shape), []).append(str(index))
    named = {shape: "front end layer" + ("s " if len(ids) > 1 else " ") + ", ".join(ids)
             for shape, ids in layers.items()}
    pos = wav2vec2.encoder.pos_conv_embed.conv
    named.setdefault(tuple(pos.weight.shape), "positional conv")
    return named


def profile_convolutions(step, wav2vec2, steps: int) -> dict:
    """Profile ``steps`` calls of ``step``: milliseconds per step of each encoder
    convolution's forward and backward, and the ten operators with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    convs = encoder_convolutions(wav2vec2)
    by_conv = {name: {"forward_ms": 0.0, "backward_ms": 0.0} for name in convs.values()}
    # Whole time (with the backend's kernels under them) of the two dispatcher-level
    # operators, which see the 1-D shapes (oneDNN's kernels see 2-D ones); and where
    # each lists the weight.
    operators = {"aten::convolution": ("forward_ms", 1), "aten::convolution_backward": ("backward_ms", 2)}
    for event in prof.key_averages(group_by_input_shape=True):
        phase, at = operators.get(event.key, (None, 0))
        shapes = event.input_shapes or []
        if phase and len(shapes) > at and tuple(shapes[at]) in convs:
            by_conv[convs[tuple(shapes[at])]][phase] += event.cpu_time_total / 1000 / steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]
    return {
        "steps": steps,
        "ms_per_step": round(total / 1000 / steps, 1),
        "convolutions_ms_per_step": {name: {k: round(v, 1) for k, v in ms.items()}
                                     for name, ms in by_conv.items()},
        "top_ops_self_share": {e.key: round(e.self_cpu_time_total / total, 4) for e in top},
    }


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
    parser.add_argument("--profile-steps", type=int, default=4,
                        help="steps profiled after the measured ones (0: none)")
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
    batches = _cycle(loader)

    def step() -> dict:
        """One training step; the seconds of each phase, and the real audio seconds."""
        marks = [time.perf_counter()]
        batch = next(batches)
        marks.append(time.perf_counter())
        wavs, wav_lens = batch.sig
        real_seconds = float((wav_lens * wavs.shape[1]).sum()) / SAMPLE_RATE
        labels = D.batch_labels(batch, model.tasks)
        wavs, wav_lens = augment_batch(hparams, wavs, wav_lens, labels)
        marks.append(time.perf_counter())
        sums, counts = task_loss_sums(model(wavs, wav_lens), labels)
        loss = joint_loss(sums, counts, weights, 1)
        marks.append(time.perf_counter())
        optimizer.zero_grad()
        loss.backward()
        if max_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        phases = {name: b - a for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True)}
        return {**phases, "audio": real_seconds}

    steps = []
    measured = 0.0
    while len(steps) < args.max_steps and measured < args.seconds:
        steps.append(step())
        if len(steps) > WARMUP_STEPS:
            measured += sum(steps[-1][name] for name in PHASES)
    skip = WARMUP_STEPS if len(steps) > WARMUP_STEPS else 0
    spent = {name: sum(s[name] for s in steps[skip:]) for name in PHASES}
    wall, waited, trained = sum(spent.values()), spent["data"], sum(s["audio"] for s in steps[skip:])

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
        "step_split": {name: round(spent[name] / wall, 4) if wall else None for name in PHASES},
        "padding": padding_waste([float(r["duration"]) for r in rows], [r["task"] for r in rows],
                                 batching, frames_of, hparams["seed"]),
    }
    if args.profile_steps > 0:
        result["profile"] = profile_convolutions(step, model.encoder.model, args.profile_steps)
    write_json(args.out, result)
    print(f"wrote {args.out}: {result['audio_hours_per_hour']} audio-h/h, "
          f"data wait {result['data_wait_share']}")
    return result


if __name__ == "__main__":
    main()
