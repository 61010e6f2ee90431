"""Parameter groups and the learning-rate schedule.

The encoder and the heads learn at different rates (a pretrained encoder needs a
small one, fresh heads a large one), so they are two groups of one optimizer with
one scheduler. The encoder may stay frozen for the first ``encoder_freeze_steps``
updates (the heads settle before their gradients reach the encoder); its schedule
starts when it thaws.

Steps are optimizer updates, whatever the number of processes or the gradient
accumulation, so ``warmup_steps: 100`` means the same on one CPU and eight GPUs.
"""

from __future__ import annotations

from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model, encoder_lr: float, head_lr: float, weight_decay: float = 0.01) -> list:
    """Two groups, ``encoder`` and ``heads``; frozen parameters are left out.

    Biases and normalisation weights get no weight decay, nor any parameter marked
    ``no_weight_decay`` (rows that must not move, see
    :func:`multitask.finetune.weights.preserve_parent_rows`).
    """
    groups = []
    heads = model.heads
    if getattr(model, "ctc_head", None) is not None:  # a training-only head learns as heads do
        heads = nn.ModuleList([model.heads, model.ctc_head])
    for name, module, lr in (("encoder", model.encoder, encoder_lr), ("heads", heads, head_lr)):
        decay, no_decay = [], []
        for param_name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            exempt = param.ndim < 2 or "layer_weights" in param_name or getattr(
                param, "no_weight_decay", False)
            (no_decay if exempt else decay).append(param)
        groups.append({"name": name, "params": decay, "lr": lr, "weight_decay": weight_decay})
        groups.append({"name": name, "params": no_decay, "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


class WarmupLinearDecay:
    """Multiplier: linear warm-up from 0 to 1 over ``warmup`` steps after ``start``,
    then linear decay to ``floor`` at ``total``; 0 before ``start``."""

    def __init__(self, warmup: int, total: int, start: int = 0, floor: float = 0.0):
        self.warmup, self.total, self.start, self.floor = warmup, total, start, floor

    def __call__(self, step: int) -> float:
        if step < self.start:
            return 0.0
        step -= self.start
        span = max(1, self.total - self.start)
        if step < self.warmup:
            return (step + 1) / self.warmup
        remaining = max(0.0, 1.0 - (step - self.warmup) / max(1, span - self.warmup))
        return self.floor + (1.0 - self.floor) * remaining


def warmup_linear_decay(optimizer, total_steps: int, warmup_steps: int = 0,
                        encoder_freeze_steps: int = 0, floor: float = 0.0) -> LambdaLR:
    """A ``LambdaLR`` with a :class:`WarmupLinearDecay` per parameter group.

    Example
    -------
    >>> import torch
    >>> p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.SGD([{"name": "encoder", "params": [p], "lr": 1.0},
    ...                        {"name": "heads", "params": [q], "lr": 1.0}])
    >>> sched = warmup_linear_decay(opt, total_steps=10, warmup_steps=2, encoder_freeze_steps=4)
    >>> [g["lr"] for g in opt.param_groups]       # encoder waits, heads warm up
    [0.0, 0.5]
    """
    lambdas = []
    for group in optimizer.param_groups:
        start = encoder_freeze_steps if group.get("name") == "encoder" else 0
        lambdas.append(WarmupLinearDecay(warmup_steps, total_steps, start=start, floor=floor))
    return LambdaLR(optimizer, lambdas)


def constant(optimizer, total_steps: int = 0, warmup_steps: int = 0,
             encoder_freeze_steps: int = 0) -> LambdaLR:
    """Constant rates, the encoder's held at 0 while frozen (``total_steps`` and
    ``warmup_steps`` are accepted so either schedule fits the same call)."""
    return warmup_linear_decay(optimizer, total_steps=10**12, warmup_steps=1,
                               encoder_freeze_steps=encoder_freeze_steps, floor=1.0)
