"""Calibration after training: offsets on a trained head's logits, chosen on held-out clips.

Two kinds, each written into the head's last bias so that an export carries it, and
the temperature extend mode gives the parent's logits while training
(:func:`kept_temperature`):

* extend mode's new-intent offset (:func:`choose_offset`, below);
* a per-class bias for callers unlike the training corpus (:func:`fit_class_bias`,
  section *Per-class bias*; the recipe step is :mod:`multitask.class_bias`).

Extend mode: how readily the new intents may take a clip.

A head trained on a few clips of each new intent beside many of the parent's still
gives new intents some of the old intents' clips, most of all from voices it never
heard: on the 40-epoch demo model, rehearsing every old clip kept the old intents' own
decisions (with the new intents switched off, 0.770 against the parent's 0.757 on the
intent test) but the new intents took enough old clips to bring that to 0.713. An
offset on the new intents' logits trades the two (at -2.5: 0.757 old, 0.233 new).

With the parent's intent head kept whole (an extended head, the default) and the
encoder frozen (the default), the old intents' own decisions are exactly the parent's,
and taking old clips is all the new intents can do to them.

The offset is chosen on held-out clips of the parent's intents (``--old-valid``):
the largest one on a grid whose accuracy there stays within ``tolerance`` of the
same model's accuracy with the new intents switched off, i.e. the new intents may
take at most that share of the old clips it gets right. It is written into the bias
of the new intents' rows of the last layer (a bias is an offset on the logits), so
the exported model needs nothing new to carry it. The choice is only as good as the
validation voices are like the callers': on the 60-epoch demo model the demo's intent
validation split (2 timbres) allowed -0.5 to -1.5, and the old intents lost 3.1 to 5.3
points on their test (3 other timbres), where the parent is less sure of itself.

Example
-------
>>> import torch
>>> log_probs = torch.log_softmax(torch.tensor([[2.0, 0.0, 1.5], [0.0, 2.0, 2.4]]), dim=1)
>>> new = torch.tensor([False, False, True])           # the third class is new
>>> choice = choose_offset(log_probs, torch.tensor([0, 1]), new, tolerance=0.0)
>>> choice["offset"], choice["accuracy"], choice["accuracy_without_new"]
(-0.5, 1.0, 1.0)
"""

from __future__ import annotations

import itertools
import math
import random

import torch

# Quarter steps from -8 (new intents nearly switched off) to +4.
OFFSETS = tuple(step / 4 for step in range(-32, 17))


def accuracy_with_offset(log_probs: torch.Tensor, targets: torch.Tensor, new: torch.Tensor,
                         offset: float) -> float:
    """Accuracy when ``offset`` is added to the columns marked ``new`` (``-inf``: removed)."""
    shifted = log_probs.clone()
    shifted[:, new] += offset
    return (shifted.argmax(dim=1) == targets).float().mean().item()


def choose_offset(old_log_probs: torch.Tensor, old_targets: torch.Tensor, new: torch.Tensor,
                  tolerance: float, offsets=OFFSETS) -> dict:
    """The largest offset of ``offsets`` whose accuracy on the old-intent clips stays
    within ``tolerance`` of their accuracy with the new columns removed.

    Returns ``{"offset", "accuracy", "accuracy_without_new", "accuracy_at_zero",
    "within_tolerance"}``; when no offset qualifies (``within_tolerance`` False) the
    smallest one is returned.
    """
    without_new = accuracy_with_offset(old_log_probs, old_targets, new, float("-inf"))
    scores = {offset: accuracy_with_offset(old_log_probs, old_targets, new, offset)
              for offset in offsets}
    eligible = [offset for offset, score in scores.items()
                if score >= without_new - tolerance - 1e-9]
    offset = max(eligible) if eligible else min(offsets)
    return {"offset": offset, "accuracy": scores[offset],
            "accuracy_without_new": without_new,
            "accuracy_at_zero": accuracy_with_offset(old_log_probs, old_targets, new, 0.0),
            "within_tolerance": bool(eligible)}


def trade_off(old: tuple, new_set: tuple, new: torch.Tensor, offsets=(-4, -3, -2, -1, 0, 1, 2)):
    """Old- and new-intent accuracy at a few offsets, for the record (a bank may pick
    another point: ``finetune`` takes ``new_intent_offset`` directly too)."""
    return [{"offset": offset,
             "old_intent_accuracy": accuracy_with_offset(*old, new, offset),
             "new_intent_accuracy": accuracy_with_offset(*new_set, new, offset)}
            for offset in offsets]


PROBABILITY_FLOOR = 1e-30  # a probability of 0 would make a log-probability, and a bias, unbounded


def log_probs_of(rows: list[dict], task: str = "intent") -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_probs [N, classes], targets [N])`` from :func:`multitask.train.evaluate`'s rows."""
    probs = torch.tensor([row[task][1] for row in rows])
    targets = torch.tensor([row[task][0] for row in rows])
    return torch.log(probs.clamp(min=PROBABILITY_FLOOR)), targets


def mean_nll(log_probs: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` with the logits divided by ``temperature``."""
    scaled = torch.log_softmax(log_probs / temperature, dim=1)
    return -scaled.gather(1, targets[:, None]).mean().item()


def kept_temperature(rehearsed: tuple, held_out: tuple, ceiling: float = 100.0) -> dict:
    """The temperature that makes the parent as unsure of its rehearsed clips as of held-out ones.

    The old intents rehearsed in ``extend`` are the parent's training clips, of which it
    is nearly sure (on the demo: NLL 0.047, against 0.418 on its validation split), so a
    new-intents head trained beside it learns to stay below logits far more confident
    than a new caller gets. Dividing the kept logits by this temperature while the new
    head trains (``ExtendedHead.kept_temperature``) brings the rehearsed clips' mean NLL
    to the held-out clips' (``(log_probs, targets)`` pairs, the parent's). 1 when the
    parent is no surer of the rehearsed clips.

    >>> sure = (torch.log_softmax(torch.tensor([[6.0, 0.0], [0.0, 6.0]]), 1), torch.tensor([0, 1]))
    >>> held = (torch.log_softmax(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 1), torch.tensor([0, 1]))
    >>> round(kept_temperature(sure, held)["temperature"], 3)
    6.0
    """
    target = mean_nll(*held_out)
    record = {"rehearsed_nll": mean_nll(*rehearsed), "held_out_nll": target}
    if record["rehearsed_nll"] >= target:
        return {"temperature": 1.0, **record}
    low, high = 1.0, ceiling
    if mean_nll(*rehearsed, high) < target:
        return {"temperature": high, **record}
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if mean_nll(*rehearsed, middle) < target else (low, middle)
    return {"temperature": (low + high) / 2, **record}


# ------------------------------------------------------------------ per-class bias


def fit_class_bias(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The additive per-class bias minimising the class-balanced cross-entropy of
    ``log_probs + bias`` (each class weighs the same whatever its count); the first
    class's bias is 0 (a common shift changes no probability).

    A head trained on one corpus meets callers whose recordings differ (the demo's
    emotion head: studio sentences in training, banking queries over a telephone line
    in use) and some of its classes then win too often, some too rarely. When the
    error is a constant per class, labelled calls of a few voices measure it; this
    moves no decision boundary but the classes' priors. Every class needs rows
    (:func:`multitask.class_bias.check_calls`): with none, its bias would run off to
    minus infinity.

    >>> targets = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> log_probs = torch.log(torch.tensor([[.8, .1, .1], [.8, .1, .1], [.1, .8, .1],
    ...                                     [.1, .8, .1], [.1, .5, .4], [.5, .1, .4]]))
    >>> (log_probs.argmax(1) == targets).tolist()       # class 2 never wins
    [True, True, True, True, False, False]
    >>> bias = fit_class_bias(log_probs, targets)
    >>> ((log_probs + bias).argmax(1) == targets).tolist()
    [True, True, True, True, True, True]
    """
    log_probs = log_probs.detach().double()
    num_classes = log_probs.shape[1]
    counts = torch.bincount(targets, minlength=num_classes).double()
    weights = (1.0 / counts.clamp(min=1))[targets]
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        losses = torch.nn.functional.cross_entropy(log_probs + bias, targets, reduction="none")
        loss = (losses * weights).sum() / weights.sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return (bias - bias[0]).detach().float()


def unweighted_accuracy(log_probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean recall over the classes present in ``targets`` (argmax decisions)."""
    right = (log_probs.argmax(1) == targets).float()
    classes = targets.unique()
    return float(torch.stack([right[targets == c].mean() for c in classes]).mean())


def voice_halvings(speakers: list[str], max_splits: int = 10, seed: int = 0) -> list[tuple]:
    """Splits of ``speakers`` into two halves (the first holding ``len // 2``), each split
    once: all of them when there are at most ``max_splits``, else ``max_splits`` drawn at
    random (seeded), as 20 voices already split 92,378 ways.

    >>> voice_halvings(["a", "b", "c", "d"])
    [('a', 'b'), ('a', 'c'), ('a', 'd')]
    >>> len(voice_halvings([f"v{i}" for i in range(40)])), len(voice_halvings(list("abcde")))
    (10, 10)
    """
    speakers = sorted(speakers)
    half = len(speakers) // 2
    even = len(speakers) % 2 == 0
    count = math.comb(len(speakers), half) // (2 if even else 1)
    if count <= max_splits:
        return [chosen for chosen in itertools.combinations(speakers, half)
                if not even or speakers[0] in chosen]  # even: the complement is the same split
    rng = random.Random(seed)
    drawn = set()
    while len(drawn) < max_splits:
        chosen = tuple(sorted(rng.sample(speakers, half)))
        if even and speakers[0] not in chosen:
            chosen = tuple(sorted(set(speakers) - set(chosen)))
        drawn.add(chosen)
    return sorted(drawn)


def class_bias_cross_validation(log_probs: torch.Tensor, targets: torch.Tensor,
                                voices: list[str]) -> dict:
    """Does a bias fitted on some voices help others? Each split of the voices into two
    halves (:func:`voice_halvings`) is fitted on one half and scored on the other, both
    ways; a fold whose fitting half lacks a class is left out (its bias would be
    unbounded). Returns ``{"without", "with"}`` (mean unweighted accuracy over the
    folds), ``folds`` and ``skipped``.

    >>> targets = torch.tensor([0, 1, 2] * 4)
    >>> log_probs = torch.log_softmax(torch.nn.functional.one_hot(targets, 3) * 2.0
    ...                               - torch.tensor([0.0, 0.0, 3.0]), dim=1)
    >>> cv = class_bias_cross_validation(log_probs, targets, ["a"] * 6 + ["b"] * 6)
    >>> cv["without"], cv["with"], len(cv["folds"])
    (0.6667, 1.0, 2)
    """
    speakers = sorted(set(voices))
    if len(speakers) < 2:
        raise ValueError(f"cross-validation by voice needs 2 voices or more, not {speakers}")
    voices = list(voices)
    folds, skipped = [], []
    for chosen in voice_halvings(speakers):
        first = torch.tensor([voice in chosen for voice in voices])
        for fit, held in ((first, ~first), (~first, first)):
            fitted_on = sorted({v for v, f in zip(voices, fit.tolist(), strict=True) if f})
            scored_on = sorted(set(speakers) - set(fitted_on))
            if targets[fit].unique().numel() < log_probs.shape[1]:
                skipped.append(fitted_on)
                continue
            bias = fit_class_bias(log_probs[fit], targets[fit])
            folds.append({"fitted_on": fitted_on, "scored_on": scored_on,
                          "without": round(unweighted_accuracy(log_probs[held], targets[held]), 4),
                          "with": round(unweighted_accuracy(log_probs[held] + bias,
                                                            targets[held]), 4)})
    mean = {key: round(sum(f[key] for f in folds) / len(folds), 4) if folds else None
            for key in ("without", "with")}
    return {**mean, "folds": folds, "skipped": skipped}
