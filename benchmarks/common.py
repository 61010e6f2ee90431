"""Shared pieces of the benchmarks: the machine's description, the fp32 ceiling, timing.

Timings on a shared machine are noisy and only ever too slow, never too fast, so
every figure is the best of several repetitions, and the matrix-multiply ceiling
is measured between the model measurements of the same run (``Rounds``): load that
slows one slows the other, and the ratios stay meaningful.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess

# The machine's description and its fp32 ceiling live in the package (the demo records
# them too); the benchmark scripts import them from here.
from multitask.host import machine, matmul_gflops, seconds  # noqa: F401


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
                self.times[name].append(seconds(fn))
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
