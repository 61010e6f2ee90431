"""The Markdown table of ``results/bench/*.json``, written beside them and into README.md.

    python benchmarks/report.py [--bench results/bench] [--readme README.md]

Every figure in the table is read from the JSON files; README.md is updated only
between the ``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import os

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _pct(x) -> str:
    return f"{100 * x:.1f}%"


def table(inference: dict, train: dict | None) -> str:
    m = inference["machine"]
    t, s, c = inference["throughput"], inference["summary"], inference["ceiling"]
    flops = inference["flops"]
    lines = [
        f"Measured {m['date'][:10]} on {m['cpu']}, {m['logical_cpus']} logical CPUs "
        f"(flags: {', '.join(m['cpu_flags'])}), torch {m['torch']}, {m['torch_threads']} threads, "
        f"load average at start {m['load_average_at_start'][0]:.1f}. Encoder: {inference['encoder']}, "
        f"{inference['clip_seconds']:g} s clips; rates are the best of "
        f"{len(t['multitask/fp32/b4']['audio_s_per_s_rounds'])} interleaved rounds.",
        "",
        "| inference | figure |",
        "| --- | --- |",
        f"| encoder FLOPs per audio second (by hand; FlopCounterMode agrees to "
        f"{_pct(abs(1 - flops['hand_vs_counter']))}) | {flops['gflop_per_audio_second']:.2f} GFLOP |",
        f"| fp32 matmul ceiling | {c['matmul_gflops_best']:.1f} GFLOP/s = {c['audio_s_per_s']:.2f} audio-s/s |",
    ]
    for name in ("multitask/eager/b4", "multitask/fp32/b1", "multitask/fp32/b4", "multitask/fp32/b16",
                 "multitask/int8/b4", "two_single_task/fp32/b4"):
        if name in t:
            lines.append(f"| {name}: audio-s/s (share of ceiling) | {t[name]['audio_s_per_s_best']:.2f} "
                         f"({_pct(t[name]['fraction_of_ceiling_best'])}) |")
    lines += [
        f"| multitask vs two single-task models, batch 4 | "
        f"{s['multitask_vs_two_single_task_b4']['best']:.2f}x |",
        f"| fp32 rewrite vs Transformers' modules, batch 4 | {s['fp32_rewrite_vs_eager_b4']['best']:.2f}x |",
        f"| int8 vs Transformers' modules (fp32), batch 4 | {s['int8_vs_eager_b4']['best']:.2f}x |",
        f"| fp32 share of ceiling at its best batch ({s['fp32_best_batch'].split('/')[-1]}) | "
        f"{_pct(s['fp32_fraction_of_ceiling_best_batch'])} |",
    ]
    mixed = inference["mixed_durations"]
    lines.append(
        f"| mixed {min(mixed['durations_s']):g}-{max(mixed['durations_s']):g} s clips, batch 4: "
        f"length-sorted vs arrival order | {mixed['sorted_vs_arrival']:.2f}x (padding "
        f"{_pct(mixed['length_sorted']['padded_share_of_computed_samples'])} vs "
        f"{_pct(mixed['arrival_order']['padded_share_of_computed_samples'])}) |")
    demo = inference.get("demo_joint_test", {})
    if "intent" in demo:
        for task in ("intent", "emotion"):
            acc = demo[task]["accuracy"]
            lines.append(
                f"| demo joint test ({demo['clips']} clips), {task}: accuracy fp32 / int8; agreement | "
                f"{acc['eager']:.3f} / {acc['int8']:.3f}; {_pct(demo[task]['agreement_with_fp32']['int8'])} |")
    rss = inference.get("peak_rss_mb", {})
    if "fp32" in rss:
        lines.append("| resident memory loaded / peak in a batch-4 forward, fp32; int8 | "
                     + "; ".join(f"{rss[p]['after_load_mb']:.0f} / {rss[p]['peak_mb']:.0f} MB"
                                 for p in ("fp32", "int8")) + " |")
    if train:
        pad = train["padding"]
        lines += [
            "",
            "| training (" + os.path.basename(train["config"]) + ") | figure |",
            "| --- | --- |",
            f"| throughput | {train['audio_hours_per_hour']:.1f} audio-hours per hour "
            f"({train['steps_measured']} steps, {train['seconds_measured']:.0f} s) |",
            f"| data-wait share of step time ({train['num_workers']} worker) | {_pct(train['data_wait_share'])} |",
            f"| padded frames, length-aware sampler | {_pct(pad['length_aware']['padded_share_of_frames'])} |",
            f"| padded frames, fixed {pad['fixed_size_shuffled']['rows']}-row shuffled batches | "
            f"{_pct(pad['fixed_size_shuffled']['padded_share_of_frames'])} |",
        ]
        split = train.get("step_split")
        if split:
            lines.append("| step time: " + " / ".join(split) + " | "
                         + " / ".join(_pct(v) for v in split.values()) + " |")
        convs = train.get("profile", {}).get("convolutions_ms_per_step")
        if convs:
            lines.append("| convolutions, ms per step forward + backward: " + "; ".join(convs) + " | "
                         + "; ".join(f"{c['forward_ms']:.0f} + {c['backward_ms']:.0f}" for c in convs.values())
                         + f" (of {train['profile']['ms_per_step']:.0f} profiled) |")
    return "\n".join(lines) + "\n"


def update_readme(readme: str, text: str) -> bool:
    if not os.path.isfile(readme):
        return False
    with open(readme, encoding="utf-8") as fin:
        content = fin.read()
    if START not in content or END not in content:
        return False
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(readme, "w", encoding="utf-8") as fout:
        fout.write(f"{head}{START}\n{text}{END}{tail}")
    return True


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="results/bench")
    parser.add_argument("--readme", default="README.md", help="'' leaves README.md alone")
    args = parser.parse_args(argv)
    with open(os.path.join(args.bench, "inference.json"), encoding="utf-8") as fin:
        inference = json.load(fin)
    train = None
    if os.path.isfile(os.path.join(args.bench, "train.json")):
        with open(os.path.join(args.bench, "train.json"), encoding="utf-8") as fin:
            train = json.load(fin)
    text = table(inference, train)
    with open(os.path.join(args.bench, "README_table.md"), "w", encoding="utf-8") as fout:
        fout.write(text)
    if args.readme and update_readme(args.readme, text):
        print(f"updated {args.readme}")
    print(text)
    return text


if __name__ == "__main__":
    main()
