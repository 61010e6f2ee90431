"""Shared pieces of the benchmarks: the machine's description, the fp32 ceiling, timing.

Timings on a shared machine are noisy and only ever too slow, never too fast, so
every figure is the best of several repetitions, and the matrix-multiply ceiling
is measured between the model measurements of the same run (``Rounds``): load that
slows one slows the other, and the ratios stay meaningful.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
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
    best = min(_seconds(lambda: torch.mm(a, b, out=out)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Rounds:
    """Interleaved timing: each round measures the ceiling, then every case once.

    ``add(name, fn, work)`` registers a case doing ``work`` units (audio seconds) per
    call; ``run(rounds)`` warms every case up once, then times them round by round.
    ``best(name)`` is the best rate over rounds; ``paired(name)`` is the median over
    rounds of (case rate / ceiling of that round), the load-robust figure.
    """

    def __init__(self, matmul_size: int = 2048):
        self.cases, self.times, self.ceilings = {}, {}, []
        self.matmul_size = matmul_size

    def add(self, name: str, fn, work: float) -> None:
        self.cases[name] = (fn, work)
        self.times[name] = []

    def run(self, rounds: int, warm_up: bool = True) -> None:
        for fn, _ in self.cases.values() if warm_up else ():
            fn()
        for _ in range(rounds):
            self.ceilings.append(matmul_gflops(self.matmul_size))
            for name, (fn, _) in self.cases.items():
                self.times[name].append(_seconds(fn))
        self.ceilings.append(matmul_gflops(self.matmul_size))

    def best_rate(self, name: str) -> float:
        return self.cases[name][1] / min(self.times[name])

    def ceiling(self) -> float:
        return max(self.ceilings)

    def round_rates(self, name: str) -> list[float]:
        return [self.cases[name][1] / t for t in self.times[name]]

    def round_ceilings(self) -> list[float]:
        """Per round, the better of the ceilings measured just before and just after it."""
        return [max(a, b) for a, b in zip(self.ceilings[:-1], self.ceilings[1:], strict=True)]


def median(values) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory of this process now."""
    with open("/proc/self/status", encoding="utf-8") as fin:
        for line in fin:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as fout:
            fout.write("5")
        return True
    except OSError:
        return False


def window_peak_rss_mb() -> float:
    """Peak resident memory since the last :func:`reset_peak_rss` (VmHWM)."""
    with open("/proc/self/status", encoding="utf-8") as fin:
        for line in fin:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_json(path, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fout:
        json.dump(data, fout, indent=2)
        fout.write("\n")


def run_json(args: list[str]) -> dict:
    """Run a Python subprocess that prints one JSON object on its last line."""
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])
