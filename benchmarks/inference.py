"""Inference speed of ``MultitaskClassifier`` on this CPU, against the machine's own limit.

    python benchmarks/inference.py                  # wav2vec2-base size, ~3 minutes idle
    python benchmarks/inference.py --tiny           # seconds; for the smoke test

Writes ``results/bench/inference.json``. What it measures, in one run:

* **ceiling**: the best fp32 2048x2048 matrix-multiply rate, measured between the
  model measurements (see ``common.Rounds``), and the encoder's FLOPs per audio
  second counted by hand from its config (cross-checked with
  ``torch.utils.flop_counter.FlopCounterMode``); ceiling in audio-s/s = rate / FLOPs;
* **multitask vs two single-task classifiers** at equal batch size (same encoder size);
* **paths**: Transformers' modules as they are (``eager``: SDPA attention, oneDNN
  convolutions), ``fp32`` (``multitask.optimize``: front end as matrix multiplies,
  exact) and ``int8`` (dynamic int8 of every linear layer incl. the rewritten front end);
* **batch sizes** 1, 4, 16 (4 s clips) and **mixed durations** (1-15 s) in arrival
  order vs sorted by length;
* where the time goes (profiler, by operator and by module);
* the int8 path's accuracy and agreement with fp32 on the demo joint IVR test;
* peak resident memory of a process that loads and runs each path.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import time

import torch
from common import (
    Rounds,
    current_rss_mb,
    machine,
    median,
    peak_rss_mb,
    reset_peak_rss,
    run_json,
    window_peak_rss_mb,
    write_json,
)
from torch import nn

from multitask.inference import MultitaskClassifier, encoder_from_config, pad_batch
from multitask.model import build_heads, tiny_config
from multitask.optimize import optimize_for_cpu

TASK_CLASSES = {"intent": 14, "emotion": 6}
PATHS = ("eager", "fp32", "int8")
SAMPLE_RATE = 16000


def base_config():
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config()  # the defaults are wav2vec2-base's architecture


def bench_config(tiny: bool):
    return tiny_config() if tiny else base_config()


def make_classifier(config, tasks, head_size: int, seed: int = 0) -> MultitaskClassifier:
    """A ``MultitaskClassifier`` with random weights (speed does not depend on them)."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    torch.manual_seed(seed)
    encoder = encoder_from_config(config.to_dict())
    heads = build_heads(encoder, {t: TASK_CLASSES[t] for t in tasks},
                        proj_size=head_size, hidden_size=head_size)
    label_encoders = {}
    for task in tasks:
        label_encoders[task] = CategoricalEncoder()
        label_encoders[task].update_from_iterable(
            [f"{task}_{i}" for i in range(TASK_CLASSES[task])], sequence_input=False)
    return MultitaskClassifier(modules={"encoder": encoder, "heads": nn.ModuleDict(heads)},
                               hparams={"tasks": list(tasks), "label_encoders": label_encoders})


def with_path(classifier: MultitaskClassifier, path: str) -> MultitaskClassifier:
    """A copy of ``classifier`` rewritten for ``path`` (``eager``: unchanged)."""
    clone = copy.deepcopy(classifier)
    if path != "eager":
        optimize_for_cpu(clone, path)
    return clone


# ---------------------------------------------------------------- FLOPs


def hand_flops(config, seconds: float) -> dict:
    """Multiply-adds x 2 of the encoder on one clip of ``seconds``, per component.

    Convolutions: ``2 * k * C_in * C_out`` per output frame; linear layers
    ``2 * in * out`` per frame; attention ``2 * T * H`` per frame each for the scores
    (QK^T) and for the weighted values; the positional convolution ``2 * k *
    (H / groups) * H`` per frame. Norms, activations, softmax and residual additions
    are not counted (they are not matrix arithmetic).
    """
    frames, c_in, conv = int(seconds * SAMPLE_RATE), 1, 0
    for dim, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True):
        frames = (frames - kernel) // stride + 1
        conv += 2 * kernel * c_in * dim * frames
        c_in = dim
    t, h, layers = frames, config.hidden_size, config.num_hidden_layers
    parts = {
        "conv_front_end": conv,
        "feature_projection": 2 * c_in * h * t,
        "positional_conv": 2 * config.num_conv_pos_embeddings
        * (h // config.num_conv_pos_embedding_groups) * h * t,
        "attention_projections": layers * 4 * 2 * h * h * t,
        "attention_scores_values": layers * 2 * 2 * t * t * h,
        "feed_forward": layers * 2 * 2 * h * config.intermediate_size * t,
    }
    parts["total"] = sum(parts.values())
    parts["frames"] = t
    return parts


def counted_flops(classifier, seconds: float) -> dict:
    """FlopCounterMode on the real encoder (eager modules), one clip, per top module."""
    from torch.utils import flop_counter

    # CPU SDPA dispatches to an op the counter has no formula for; give it the same one.
    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if cpu_sdpa not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(cpu_sdpa)
        def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    wav = torch.randn(1, int(seconds * SAMPLE_RATE))
    counter = flop_counter.FlopCounterMode(display=False, depth=None)
    with torch.inference_mode(), counter:
        classifier.mods.encoder(wav, torch.ones(1))
    per_module = counter.get_flop_counts()
    total = counter.get_total_flops()
    model = "Wav2Vec2Encoder.model"

    def module_total(name):
        return sum(per_module.get(f"{model}.{name}", {}).values())

    return {
        "total": total,
        "feature_extractor": module_total("feature_extractor"),
        "feature_projection": module_total("feature_projection"),
        "positional_conv": module_total("encoder.pos_conv_embed"),
        "transformer_layers": module_total("encoder.layers"),
    }


# ---------------------------------------------------------------- timing


def forward_fn(classifier, wavs, lens):
    return lambda: classifier.forward(wavs, lens)


def clips(batch: int, seconds: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, int(seconds * SAMPLE_RATE), generator=gen), torch.ones(batch)


def mixed_batches(durations, batch_size: int, sort: bool):
    order = sorted(range(len(durations)), key=durations.__getitem__) if sort else list(range(len(durations)))
    gen = torch.Generator().manual_seed(1)
    wavs = [torch.randn(int(d * SAMPLE_RATE), generator=gen) for d in durations]
    batches = []
    for start in range(0, len(order), batch_size):
        batches.append(pad_batch([wavs[i] for i in order[start:start + batch_size]]))
    computed = sum(b.shape[0] * b.shape[1] for b, _ in batches)
    real = sum(w.numel() for w in wavs)
    return batches, 1.0 - real / computed


def profile_breakdown(classifier, wavs, lens) -> dict:
    """Share of forward time by operator (profiler) and by module (forward hooks)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        classifier.forward(wavs, lens)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    groups = {
        "matmul (linear, conv-as-matmul)": ("addmm", "mm", "bmm", "matmul", "linear_dynamic",
                                            "quantized::linear", "fbgemm"),
        "convolution (oneDNN)": ("convolution",),
        "attention (SDPA)": ("scaled_dot_product", "flash_attention"),
        "gelu": ("gelu",),
        "norms": ("layer_norm", "group_norm", "_weight_norm"),
        "copies": ("copy_", "contiguous", "clone", "cat", "stack"),
        "quantise activations": ("quantize_per_tensor", "choose_qparams", "aminmax"),
    }
    by_op = {}
    for event in events:
        key = next((g for g, names in groups.items() if any(n in event.key for n in names)), "other")
        by_op[key] = by_op.get(key, 0) + event.self_cpu_time_total
    by_op = {k: round(v / total, 4) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]

    model = classifier.mods.encoder.model
    modules = {"conv front end": model.feature_extractor, "feature projection": model.feature_projection,
               "positional conv": model.encoder.pos_conv_embed,
               "attention": [layer.attention for layer in model.encoder.layers],
               "feed-forward": [layer.feed_forward for layer in model.encoder.layers],
               "heads": list(classifier.mods.heads.values())}
    spent = {name: 0.0 for name in modules}
    handles, starts = [], {}
    for name, mods in modules.items():
        for mod in mods if isinstance(mods, list) else [mods]:
            handles.append(mod.register_forward_pre_hook(
                lambda m, a, n=name: starts.__setitem__(id(m), time.perf_counter())))
            handles.append(mod.register_forward_hook(
                lambda m, a, o, n=name: spent.__setitem__(n, spent[n] + time.perf_counter() - starts[id(m)])))
    start = time.perf_counter()
    classifier.forward(wavs, lens)
    whole = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    by_module = {k: round(v / whole, 4) for k, v in spent.items()}
    by_module["rest (norms, residuals, layer stack, pooling)"] = round(1 - sum(by_module.values()), 4)
    return {
        "by_operator": by_op,
        "top_operators": [[e.key, round(e.self_cpu_time_total / total, 4)] for e in top],
        "by_module": by_module,
    }


# ---------------------------------------------------------------- accuracy


def demo_accuracy(model_dir: str, manifest: str, limit: int | None, batch_size: int = 8) -> dict:
    """fp32 (Transformers' modules) vs the fp32 rewrite vs int8 on the demo joint test."""
    import tempfile

    from multitask.audio import load_audio

    with open(manifest, newline="", encoding="utf-8") as fin:
        rows = list(csv.DictReader(fin))[:limit]
    base = os.path.dirname(manifest)
    wavs = [load_audio(os.path.join(base, r["wav"])) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: wavs[i].numel())
    audio_seconds = sum(w.numel() for w in wavs) / SAMPLE_RATE
    loaded = MultitaskClassifier.from_hparams(source=model_dir, savedir=tempfile.mkdtemp())
    predictions, timings = {}, {}
    for path in PATHS:
        model = with_path(loaded, path)
        preds = {t: [None] * len(rows) for t in model.tasks}
        start = time.perf_counter()
        for first in range(0, len(order), batch_size):
            index = order[first:first + batch_size]
            batch, lens = pad_batch([wavs[i] for i in index])
            probs = model.forward(batch, lens)
            for task in model.tasks:
                for row, p in zip(index, probs[task].argmax(-1).tolist(), strict=True):
                    preds[task][row] = model.labels[task][p]
        timings[path] = audio_seconds / (time.perf_counter() - start)
        predictions[path] = preds
    result = {"clips": len(rows), "audio_seconds": round(audio_seconds, 1),
              "demo_model_audio_s_per_s": {k: round(v, 1) for k, v in timings.items()}}
    for task in loaded.tasks:
        ref = [r[task] for r in rows]
        acc = {p: sum(a == b for a, b in zip(predictions[p][task], ref, strict=True)) / len(rows)
               for p in PATHS}
        result[task] = {
            "accuracy": {p: round(v, 4) for p, v in acc.items()},
            "int8_minus_fp32_points": round(100 * (acc["int8"] - acc["eager"]), 2),
            "agreement_with_fp32": {
                p: round(sum(a == b for a, b in zip(predictions[p][task], predictions["eager"][task],
                                                    strict=True)) / len(rows), 4)
                for p in ("fp32", "int8")},
        }
    return result


# ---------------------------------------------------------------- memory


def memory_probe(path: str, tiny: bool, head_size: int) -> dict:
    """Peak RSS of a fresh process that builds one classifier, rewrites it and runs it."""
    before = current_rss_mb()
    classifier = make_classifier(bench_config(tiny), TASK_CLASSES, head_size)
    if path != "eager":
        optimize_for_cpu(classifier, path)
    loaded = current_rss_mb()
    reset = reset_peak_rss()  # construction has its own, higher, transient peak
    wavs, lens = clips(4, 1.0 if tiny else 4.0)
    classifier.forward(wavs, lens)
    return {"path": path, "after_imports_mb": round(before, 1), "after_load_mb": round(loaded, 1),
            "peak_mb": round(window_peak_rss_mb() if reset else peak_rss_mb(), 1),
            "peak_is": "during one batch-4 forward" if reset else "whole process"}


# ---------------------------------------------------------------- main


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny encoder, few repetitions (tests)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="default: all logical CPUs")
    parser.add_argument("--out", default="results/bench/inference.json")
    parser.add_argument("--demo-model", default="results/demo/model",
                        help="exported demo model for the accuracy check ('' skips it)")
    parser.add_argument("--demo-test", default="results/demo/synth/joint_test/joint_test.csv")
    parser.add_argument("--memory-probe", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    head_size = 32 if args.tiny else 256
    if args.memory_probe:
        print(__import__("json").dumps(memory_probe(args.memory_probe, args.tiny, head_size)))
        return {}
    started = time.perf_counter()
    tiny = args.tiny
    rounds = args.rounds or 2
    seconds = 1.0 if tiny else 4.0
    config = bench_config(tiny)
    result = {"machine": machine(), "encoder": "tiny test config" if tiny else "wav2vec2-base size",
              "weights": "random (speed does not depend on them)", "clip_seconds": seconds}

    multitask = make_classifier(config, TASK_CLASSES, head_size)
    single = {t: make_classifier(config, [t], head_size, seed=i + 1) for i, t in enumerate(TASK_CLASSES)}
    paths = {p: with_path(multitask, p) for p in PATHS}
    for model in single.values():
        optimize_for_cpu(model, "fp32")

    # FLOPs: by hand and counted, per audio second at the benchmark's clip length.
    hand = hand_flops(config, seconds)
    counted = counted_flops(multitask, seconds)
    flops_per_audio_s = hand["total"] / seconds
    result["flops"] = {
        "method": ("counted by hand from the config (hand_flops: 2 x multiply-adds of the convs, "
                   "linear layers, attention scores/values and positional conv; norms and "
                   "activations excluded), cross-checked with torch.utils.flop_counter."
                   "FlopCounterMode on the real module (CPU SDPA registered with sdpa_flop_count)"),
        "clip_seconds": seconds,
        "hand_per_audio_second": {k: (v / seconds if k != "frames" else v) for k, v in hand.items()},
        "flop_counter_per_audio_second": {k: v / seconds for k, v in counted.items()},
        "hand_vs_counter": round(hand["total"] / counted["total"], 4),
        "gflop_per_audio_second": round(flops_per_audio_s / 1e9, 3),
    }

    # Throughput, interleaved with the ceiling.
    timing = Rounds(matmul_size=512 if tiny else 2048)
    batches = {b: clips(b, seconds, seed=b) for b in (1, 4, 16)}
    for path, model in paths.items():
        timing.add(f"multitask/{path}/b4", forward_fn(model, *batches[4]), 4 * seconds)
    wavs4, lens4 = batches[4]
    timing.add("two_single_task/fp32/b4",
               lambda: [m.forward(wavs4, lens4) for m in single.values()], 4 * seconds)
    for b in (1, 16):
        timing.add(f"multitask/fp32/b{b}", forward_fn(paths["fp32"], *batches[b]), b * seconds)
    timing.run(rounds)

    ceiling = timing.ceiling()
    rounds_ceiling = timing.round_ceilings()
    result["ceiling"] = {
        "matmul": f"fp32 {timing.matmul_size}x{timing.matmul_size} torch.mm, best of 3, "
                  f"measured before each round and after the last",
        "matmul_gflops_best": round(ceiling, 2),
        "matmul_gflops_per_measurement": [round(c, 2) for c in timing.ceilings],
        "audio_s_per_s": round(ceiling * 1e9 / flops_per_audio_s, 3),
    }
    throughput = {}
    for name in timing.cases:
        rates = timing.round_rates(name)
        throughput[name] = {
            "audio_s_per_s_best": round(timing.best_rate(name), 3),
            "audio_s_per_s_rounds": [round(r, 3) for r in rates],
            "fraction_of_ceiling_best": round(timing.best_rate(name) * flops_per_audio_s / (ceiling * 1e9), 4),
            "fraction_of_ceiling_paired_median": round(median(
                r * flops_per_audio_s / (c * 1e9) for r, c in zip(rates, rounds_ceiling, strict=True)), 4),
        }
    result["throughput"] = throughput

    def ratio(a, b):
        paired = [x / y for x, y in zip(timing.round_rates(a), timing.round_rates(b), strict=True)]
        return {"best": round(timing.best_rate(a) / timing.best_rate(b), 3),
                "paired_median": round(median(paired), 3)}

    best_fp32 = max((n for n in throughput if n.startswith("multitask/fp32/")),
                    key=lambda n: throughput[n]["fraction_of_ceiling_best"])
    result["summary"] = {
        "multitask_vs_two_single_task_b4": ratio("multitask/fp32/b4", "two_single_task/fp32/b4"),
        "fp32_rewrite_vs_eager_b4": ratio("multitask/fp32/b4", "multitask/eager/b4"),
        "int8_vs_eager_b4": ratio("multitask/int8/b4", "multitask/eager/b4"),
        "eager_fraction_of_ceiling_b4": throughput["multitask/eager/b4"]["fraction_of_ceiling_best"],
        "fp32_best_batch": best_fp32,
        "fp32_fraction_of_ceiling_best_batch": throughput[best_fp32]["fraction_of_ceiling_best"],
        "fp32_fraction_of_ceiling_best_batch_paired": throughput[best_fp32]["fraction_of_ceiling_paired_median"],
    }

    # Mixed durations: arrival order vs length-sorted, batches of 4.
    gen = torch.Generator().manual_seed(7)
    count = 8 if tiny else 12
    low, high = (0.5, 2.0) if tiny else (1.0, 15.0)
    durations = [round(low + (high - low) * float(u), 2) for u in torch.rand(count, generator=gen)]
    mixed = {}
    for policy, sort in (("arrival_order", False), ("length_sorted", True)):
        plan, waste = mixed_batches(durations, 4, sort)
        mixed[policy] = (plan, waste)
    mixed_timing = Rounds(matmul_size=timing.matmul_size)
    for policy, (plan, _) in mixed.items():
        mixed_timing.add(policy, lambda p=plan: [paths["fp32"].forward(w, n) for w, n in p], sum(durations))
    mixed_timing.run(1, warm_up=False)  # the models are warm by now
    result["mixed_durations"] = {
        "clips": count, "durations_s": durations, "batch_size": 4, "path": "fp32",
        **{policy: {"audio_s_per_s": round(mixed_timing.best_rate(policy), 3),
                    "padded_share_of_computed_samples": round(waste, 4)}
           for policy, (_, waste) in mixed.items()},
        "sorted_vs_arrival": round(mixed_timing.best_rate("length_sorted")
                                   / mixed_timing.best_rate("arrival_order"), 3),
        "matmul_gflops": [round(c, 2) for c in mixed_timing.ceilings],
    }

    result["profile_b4"] = {path: profile_breakdown(paths[path], *batches[4]) for path in PATHS}

    if args.demo_model and os.path.isfile(os.path.join(args.demo_model, "hyperparams.yaml")) and os.path.isfile(args.demo_test):
        result["demo_joint_test"] = demo_accuracy(args.demo_model, args.demo_test, 16 if tiny else None)
    else:
        result["demo_joint_test"] = {"skipped": f"no demo model at {args.demo_model} (run make demo)"}

    if tiny:  # a fresh process per path costs more than the whole tiny run
        result["peak_rss_mb"] = {"this_process": round(peak_rss_mb(), 1)}
    else:
        script = os.path.abspath(__file__)
        result["peak_rss_mb"] = {
            path: run_json([sys.executable, script, "--memory-probe", path]) for path in ("fp32", "int8")
        }  # eager holds the same weights as fp32
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out, result)
    print(f"wrote {args.out} in {result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
