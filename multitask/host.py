"""What machine a figure was measured on: its description and its fp32 matrix-multiply rate.

A wall time says little without the machine's speed: two hosts of the same name
("AMD EPYC", 2 cores) have differed by three to five times in fp32 matrix-multiply rate
(179 GFLOP/s on 2026-11-24, 32-61 on 2026-12-06), and the demo's training time by
about three. The demo and the benchmarks record both, so a time can be scaled.

Example
-------
>>> info = machine()
>>> info["logical_cpus"] >= 1 and info["torch_threads"] >= 1
True
>>> matmul_gflops(size=64, repeats=1) > 0
True
"""

from __future__ import annotations

import datetime
import os
import platform
import time

import torch

FLAG_NAMES = ("sse4_2", "fma", "avx", "avx2", "avx512f", "avx512_bf16", "avx512_vnni",
              "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "f16c")


def machine() -> dict:
    """CPU model, core count, relevant CPU flags, thread settings, versions, date."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fin:
            for line in fin:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    import transformers

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "cpu_flags": [f for f in FLAG_NAMES if f in flags],
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "quantized_engine": torch.backends.quantized.engine,
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
    }


def matmul_gflops(size: int = 2048, repeats: int = 3) -> float:
    """Best fp32 ``size x size`` matrix-multiply rate over ``repeats`` runs, in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    best = min(seconds(lambda: torch.mm(a, b, out=out)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def seconds(fn) -> float:
    """Wall time of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
