#!/usr/bin/env python3
"""Run a recipe, SIGKILLing this process at a chosen point (test-only fault injection).

    python tests/fault_runner.py --kill-at POINT [--rank R] recipes/train.py ARGS...

The recipe runs unchanged (``runpy``, with ``sys.argv`` set to its own arguments);
the kill comes from wrappers installed here, so production code carries no test
hooks. ``POINT`` is one of

``train:E:B``   before training batch ``B`` (0-based) of epoch ``E``
``valid:E:B``   before validation batch ``B`` of epoch ``E``
``save:E:NAME`` while writing ``NAME.ckpt`` of checkpoint ``epoch-E``: the file is
                left truncated to half its size, the later files unwritten

With ``--rank R`` only the process whose ``RANK`` is ``R`` kills itself;
``--signal STOP`` freezes it instead (a hung rather than a dead process). Before
the signal, the process appends ``SIGKILL <point> rank <R> pid <pid> <unix time>`` to
``$FAULT_LOG`` if set.
"""

from __future__ import annotations

import argparse
import inspect
import os
import pathlib
import runpy
import signal
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


SIGNAL = signal.SIGKILL


def die(point: str) -> None:
    if os.environ.get("FAULT_LOG"):
        with open(os.environ["FAULT_LOG"], "a", encoding="utf-8") as fout:
            fout.write(f"{SIGNAL.name} {point} rank {os.environ.get('RANK', '0')} "
                       f"pid {os.getpid()} {time.time():.3f}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), SIGNAL)


class KillingLoader:
    """Iterates ``loader`` and dies before batch ``at``."""

    def __init__(self, loader, at: int, point: str):
        self.loader, self.at, self.point = loader, at, point

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if index == self.at:
                die(self.point)
            yield batch


def install(point: str) -> None:
    import multitask.train as T

    where, epoch, what = point.split(":")
    epoch = int(epoch)
    if where == "train":
        original_train = T.train_one_epoch

        def train_one_epoch(*args, **kwargs):
            bound = inspect.signature(original_train).bind(*args, **kwargs)
            if bound.arguments["epoch"] == epoch:
                bound.arguments["loader"] = KillingLoader(bound.arguments["loader"], int(what), point)
            return original_train(*bound.args, **bound.kwargs)

        T.train_one_epoch = train_one_epoch
    elif where == "valid":
        original_evaluate = T.evaluate

        def evaluate(*args, **kwargs):
            bound = inspect.signature(original_evaluate).bind(*args, **kwargs)
            if bound.arguments.get("desc") == f"valid {epoch}":
                bound.arguments["loader"] = KillingLoader(bound.arguments["loader"], int(what), point)
            return original_evaluate(*bound.args, **bound.kwargs)

        T.evaluate = evaluate
    elif where == "save":
        from speechbrain.utils import checkpoints as sb_ckpt

        target = (f"CKPT+epoch-{epoch:04d}", f"{what}.ckpt")

        def truncating(hook):
            def save(obj, path, *args, **kwargs):
                result = hook(obj, path, *args, **kwargs)
                if (path.parent.name, path.name) == target:
                    with open(path, "r+b") as fout:
                        fout.truncate(os.path.getsize(path) // 2)
                    die(point)
                return result

            return save

        for cls, hook in list(sb_ckpt.DEFAULT_SAVE_HOOKS.items()):
            sb_ckpt.DEFAULT_SAVE_HOOKS[cls] = truncating(hook)
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kill-at", required=True)
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--signal", default="KILL", choices=["KILL", "STOP"])
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    global SIGNAL
    SIGNAL = signal.Signals[f"SIG{options.signal}"]
    if options.rank is None or int(os.environ.get("RANK", "0")) == options.rank:
        install(options.kill_at)
    sys.argv = [options.script, *options.args]
    sys.path.insert(0, str(REPO))
    runpy.run_path(options.script, run_name="__main__")


if __name__ == "__main__":
    main()
