"""The joint objective: per-task cross-entropy over the rows that carry that task's label.

A row from the intent corpus has no emotion label (and the reverse); its missing
label is ``IGNORE_INDEX`` and contributes neither loss nor gradient to that head.

Each task's loss is a mean over its labelled rows. Under data parallelism the count
is taken over the *global* batch, so a two-process step computes the same gradient
as a one-process step over the union of the two batches.

Example
-------
>>> logits = {"intent": torch.tensor([[2.0, 0.0], [0.0, 2.0]]),
...           "emotion": torch.tensor([[0.0, 0.0], [1.0, 0.0]])}
>>> labels = {"intent": torch.tensor([0, IGNORE_INDEX]), "emotion": torch.tensor([IGNORE_INDEX, 0])}
>>> sums, counts = task_loss_sums(logits, labels)
>>> {t: int(c) for t, c in counts.items()}
{'intent': 1, 'emotion': 1}
>>> round(float(joint_loss(sums, counts, {"intent": 1.0, "emotion": 0.5})), 4)
0.2836
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def task_loss_sums(logits: dict, labels: dict) -> tuple[dict, dict]:
    """Summed cross-entropy and labelled-row count per task.

    Rows whose label is ``IGNORE_INDEX`` are skipped. With no labelled row the sum
    is a zero that still belongs to the graph, so every head gets a (zero) gradient
    and data-parallel all-reduce sees the same parameters on every process.
    """
    sums, counts = {}, {}
    for task, task_logits in logits.items():
        target = labels[task]
        sums[task] = F.cross_entropy(
            task_logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        counts[task] = (target != IGNORE_INDEX).sum()
    return sums, counts


def joint_loss(sums: dict, counts: dict, weights: dict, world_size: int = 1) -> torch.Tensor:
    """``sum_t w_t * CE_t`` with each CE a mean over the task's labelled rows.

    Parameters
    ----------
    sums, counts : dict
        From :func:`task_loss_sums`; ``counts`` may already be summed over processes.
    weights : dict
        Task weight per task name.
    world_size : int
        Data-parallel processes. Gradients are averaged over processes afterwards, so
        each process scales its sum by ``world_size / global_count``.
    """
    total = None
    for task, task_sum in sums.items():
        denominator = counts[task].to(task_sum.dtype).clamp(min=1.0) / world_size
        term = weights.get(task, 1.0) * task_sum / denominator
        total = term if total is None else total + term
    return total
