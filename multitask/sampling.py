"""Length-aware batching that mixes tasks in a set ratio, reproducible from (seed, epoch).

Each epoch:

1. **Compose**: with ``task_ratio`` set, draw ``ratio[t] * epoch_size`` rows from the
   rows of task ``t`` (cycling through fresh permutations when a corpus is smaller
   than its share, so a small corpus is oversampled rather than a large one cut);
   with ``rows_per_class`` set, draw that many rows of every class the same way
   (class-balanced epochs: a class with a few clips repeats them, one with many
   shows a different part of them each epoch); otherwise take every row once.
2. **Bucket**: shuffle, cut into chunks of ``bucket_size`` rows, sort each chunk by
   duration, and fill batches greedily until ``rows * longest_duration`` (the audio
   seconds the padded batch costs) would pass ``max_batch_seconds``. Sorting within
   chunks keeps padding small while leaving batches random across the epoch; a
   batch may hold rows of both tasks.
3. **Shuffle** the batch order.

Evaluation batching (``shuffle=False``) sorts all rows by duration.

The order is a pure function of ``(seed, epoch)``: resuming at epoch ``e`` replays
exactly the batches an uninterrupted run would have seen, and every process of a
data-parallel job computes the same list (Accelerate then deals batches out).

Example
-------
>>> sampler = TaskMixingBatchSampler(durations=[1.0, 2.0, 1.5, 3.0], tasks=["intent", "emotion"] * 2,
...                                  max_batch_seconds=4.0, seed=3)
>>> sorted(i for batch in sampler for i in batch)
[0, 1, 2, 3]
>>> list(sampler) == list(sampler)              # same epoch, same batches
True
"""

from __future__ import annotations

import math

import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from torch.utils.data import Sampler

from .checkpoints import ResumeError


@register_checkpoint_hooks
class TaskMixingBatchSampler(Sampler):
    """Batches of row indices; see the module docstring.

    Parameters
    ----------
    durations : list of float
        Seconds per row.
    tasks : list of str
        Task column per row (``intent``, ``emotion`` or ``both``).
    max_batch_seconds : float or None
        Padded audio seconds per batch. ``None`` gives fixed-size batches of
        ``batch_size`` rows (no length sorting), as in a plain DataLoader.
    batch_size : int or None
        Upper bound on rows per batch (the fixed size when ``max_batch_seconds`` is None).
    task_ratio : dict or None
        Share of each task in an epoch, e.g. ``{"intent": 0.5, "emotion": 0.5}``;
        every task present in ``tasks`` must be named.
    epoch_size : int or None
        Rows per epoch when ``task_ratio`` is set; defaults to the number of rows.
    classes : list or None
        A class key per row (any hashable, e.g. ``("intent", "card_block")``);
        needed with ``rows_per_class``.
    rows_per_class : int or None
        Rows drawn from each class every epoch; excludes ``task_ratio``.
    shuffle : bool
        False for evaluation: batches in duration order, no resampling.
    bucket_size : int
        Rows sorted together when forming batches.
    seed : int
    shard : tuple of (index, count) or None
        Evaluation across processes: yield only batches ``index, index + count, ...``.
        Unlike Accelerate's even-batches sharding this never repeats a batch, so
        gathered predictions cover every row exactly once.
    """

    def __init__(
        self,
        durations,
        tasks=None,
        max_batch_seconds=None,
        batch_size=None,
        task_ratio=None,
        epoch_size=None,
        classes=None,
        rows_per_class=None,
        shuffle=True,
        bucket_size=400,
        seed=0,
        shard=None,
    ):
        if max_batch_seconds is None and batch_size is None:
            raise ValueError("give max_batch_seconds, batch_size, or both")
        self.durations = [float(d) for d in durations]
        self.tasks = list(tasks) if tasks is not None else ["intent"] * len(self.durations)
        self.max_batch_seconds = max_batch_seconds
        # Not named batch_size: Accelerate's sharding reads that attribute as a fixed size
        # and drops every batch of another size, which here is most of them.
        self.max_rows = batch_size
        self.task_ratio = dict(task_ratio) if task_ratio else None
        self.epoch_size = epoch_size or len(self.durations)
        self.rows_per_class = rows_per_class
        if rows_per_class is not None:
            if task_ratio:
                raise ValueError("give task_ratio or rows_per_class, not both")
            if classes is None or len(classes) != len(self.durations):
                raise ValueError("rows_per_class needs one class key per row (classes)")
            if int(rows_per_class) < 1:
                raise ValueError(f"rows_per_class must be at least 1, not {rows_per_class}")
        self.classes = list(classes) if classes is not None else None
        self.shuffle = shuffle
        self.bucket_size = bucket_size
        self.seed = seed
        self.epoch = 0
        self.shard = shard
        if self.task_ratio and shuffle:
            unnamed = sorted(set(self.tasks) - set(self.task_ratio))
            if unnamed:
                raise ValueError(f"task_ratio {self.task_ratio} does not name task(s) {unnamed}")
        self._cache = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        return gen

    def epoch_indices(self) -> list[int]:
        """Rows drawn for this epoch, in random order."""
        gen = self._generator()
        if not self.shuffle:
            return sorted(range(len(self.durations)), key=lambda i: self.durations[i])
        if self.rows_per_class is not None:
            drawn = []
            for key in sorted(set(self.classes), key=repr):  # a fixed order: same draws everywhere
                pool = [i for i, c in enumerate(self.classes) if c == key]
                drawn.extend(_draw(pool, int(self.rows_per_class), gen))
        elif self.task_ratio:
            total = sum(self.task_ratio.values())
            drawn = []
            for task, share in self.task_ratio.items():
                pool = [i for i, t in enumerate(self.tasks) if t == task]
                drawn.extend(_draw(pool, round(self.epoch_size * share / total), gen))
        else:
            return torch.randperm(len(self.durations), generator=gen).tolist()
        order = torch.randperm(len(drawn), generator=gen).tolist()
        return [drawn[j] for j in order]

    def _cut(self, indices: list[int]) -> list[list[int]]:
        batches, current, longest = [], [], 0.0
        for index in indices:
            duration = self.durations[index]
            longer = max(longest, duration)
            full_rows = self.max_rows is not None and len(current) >= self.max_rows
            full_seconds = (
                self.max_batch_seconds is not None
                and current
                and longer * (len(current) + 1) > self.max_batch_seconds
            )
            if current and (full_rows or full_seconds):
                batches.append(current)
                current, longer = [], duration
            current.append(index)
            longest = longer
        if current:
            batches.append(current)
        return batches

    def batches(self) -> list[list[int]]:
        """This epoch's batches (computed once per epoch)."""
        key = (self.seed, self.epoch)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        indices = self.epoch_indices()
        if self.max_batch_seconds is None or not self.shuffle:
            batches = self._cut(indices)
        else:
            batches = []
            for start in range(0, len(indices), self.bucket_size):
                chunk = indices[start : start + self.bucket_size]
                batches.extend(self._cut(sorted(chunk, key=lambda i: -self.durations[i])))
            order = torch.randperm(len(batches), generator=self._generator()).tolist()
            batches = [batches[j] for j in order]
        if self.shard is not None:
            index, count = self.shard
            batches = batches[index::count]
        self._cache = (key, batches)
        return batches

    def __iter__(self):
        yield from self.batches()

    def __len__(self) -> int:
        return len(self.batches())

    def padding_waste(self) -> float:
        """Share of computed audio that is padding, over this epoch's batches."""
        computed = real = 0.0
        for batch in self.batches():
            lengths = [self.durations[i] for i in batch]
            computed += max(lengths) * len(lengths)
            real += sum(lengths)
        return 0.0 if computed == 0 else 1.0 - real / computed

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as fout:
            fout.write(f"{self.seed} {self.epoch}\n")

    @mark_as_loader
    def _recover(self, path, end_of_epoch=True):
        with open(path, encoding="utf-8") as fin:
            seed, epoch = (int(v) for v in fin.read().split())
        if seed != self.seed:
            raise ResumeError(
                f"{path}: checkpoint was written with sampler seed {seed}, this run uses "
                f"{self.seed}; resume with the same seed or start a new output folder"
            )
        self.set_epoch(epoch + 1 if end_of_epoch else epoch)


def _draw(pool: list[int], wanted: int, gen: torch.Generator) -> list[int]:
    """``wanted`` rows of ``pool``: whole fresh permutations, then part of one more."""
    drawn = []
    while pool and wanted > 0:
        take = min(wanted, len(pool))
        drawn.extend(pool[j] for j in torch.randperm(len(pool), generator=gen)[:take].tolist())
        wanted -= take
    return drawn


def steps_per_epoch(num_batches: int, world_size: int, accumulation: int) -> int:
    """Optimizer updates per epoch when ``num_batches`` are dealt out over processes."""
    return math.ceil(math.ceil(num_batches / world_size) / accumulation)


# Far apart, so that no process's epoch seed is another's (see seed_epoch).
PROCESS_SEED_STRIDE = 1_000_003


def seed_epoch(seed: int, epoch: int, process_index: int) -> int:
    """Seed Python, NumPy and Torch for one process's epoch (dropout, masking,
    augmentation), and return the seed: ``seed + epoch`` on the first process, as in a
    run of one process, and on the others seeds that no process uses in any epoch.
    (Accelerate's ``device_specific`` adds the process index, so process r would have
    drawn in epoch e what process 0 drew in epoch e + r.) Reseeding each epoch keeps an
    epoch's draws the same whether or not the run was resumed before it.

    >>> seed_epoch(1234, 3, 0), seed_epoch(1234, 3, 1) - seed_epoch(1234, 4, 0) > 1000
    (1237, True)
    """
    from accelerate.utils import set_seed

    value = seed + epoch + PROCESS_SEED_STRIDE * process_index
    set_seed(value)
    return value


def check_epoch_complete(trained: int, loader, epoch: int) -> None:
    """Refuse an epoch in which this process went through fewer batches than its loader
    promised: a sharded loader that silently drops batches would otherwise train on part
    of the data, and every figure after it would look like a normal run's.

    >>> check_epoch_complete(3, [[0], [1], [2]], epoch=1)
    >>> check_epoch_complete(1, [[0], [1], [2]], epoch=1)
    Traceback (most recent call last):
    ...
    RuntimeError: epoch 1: this process went through 1 of the 3 batches its data loader holds ...
    """
    expected = len(loader)
    if trained != expected:
        raise RuntimeError(
            f"epoch {epoch}: this process went through {trained} of the {expected} batches its "
            "data loader holds (a sampler whose batches the sharding across processes drops?); "
            "the epoch's figures would not be the whole data's")
