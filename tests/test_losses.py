"""The joint loss: missing labels are masked, task weights apply, counts are global."""

import torch

from multitask.losses import IGNORE_INDEX, joint_loss, task_loss_sums
from multitask.model import TaskHead


def heads_and_grads(intent_labels, emotion_labels):
    torch.manual_seed(0)
    heads = {t: TaskHead(2, 8, n, 8, 8, dropout=0.0) for t, n in (("intent", 4), ("emotion", 3))}
    hidden = torch.randn(2, len(intent_labels), 5, 8)
    logits = {t: h(hidden, torch.full((len(intent_labels),), 5)) for t, h in heads.items()}
    labels = {"intent": torch.tensor(intent_labels), "emotion": torch.tensor(emotion_labels)}
    sums, counts = task_loss_sums(logits, labels)
    joint_loss(sums, counts, {"intent": 1.0, "emotion": 1.0}).backward()
    return {t: max(p.grad.abs().max().item() for p in h.parameters()) for t, h in heads.items()}


def test_rows_without_an_intent_label_give_zero_gradient_to_the_intent_head():
    grads = heads_and_grads([IGNORE_INDEX] * 3, [0, 1, 2])
    assert grads["intent"] == 0.0 and grads["emotion"] > 0


def test_rows_without_an_emotion_label_give_zero_gradient_to_the_emotion_head():
    grads = heads_and_grads([0, 1, 3], [IGNORE_INDEX] * 3)
    assert grads["emotion"] == 0.0 and grads["intent"] > 0


def test_each_task_loss_is_a_mean_over_its_labelled_rows_only():
    logits = {"intent": torch.tensor([[3.0, 0.0], [0.0, 0.0], [9.0, -9.0]])}
    labels = {"intent": torch.tensor([0, 1, IGNORE_INDEX])}
    sums, counts = task_loss_sums(logits, labels)
    expected = torch.nn.functional.cross_entropy(logits["intent"][:2], labels["intent"][:2])
    assert torch.isclose(joint_loss(sums, counts, {}), expected)


def test_task_weights_scale_each_task():
    # Unequal losses, so that a weight applied to the other task would show.
    logits = {"intent": torch.tensor([[0.0, 1.0]]), "emotion": torch.tensor([[3.0, 0.0]])}
    labels = {"intent": torch.tensor([0]), "emotion": torch.tensor([1])}
    ce = {task: torch.nn.functional.cross_entropy(logits[task], labels[task]) for task in logits}
    sums, counts = task_loss_sums(logits, labels)
    intent_only = joint_loss(sums, counts, {"intent": 1.0, "emotion": 0.0})
    emotion_only = joint_loss(sums, counts, {"intent": 0.0, "emotion": 1.0})
    weighted = joint_loss(sums, counts, {"intent": 0.5, "emotion": 2.0})
    assert torch.isclose(intent_only, ce["intent"]) and torch.isclose(emotion_only, ce["emotion"])
    assert torch.isclose(weighted, 0.5 * ce["intent"] + 2.0 * ce["emotion"])


def test_global_counts_make_two_shards_add_up_to_the_whole_batch():
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, IGNORE_INDEX, 2, 2, IGNORE_INDEX])
    whole_sums, whole_counts = task_loss_sums({"t": logits}, {"t": labels})
    whole = joint_loss(whole_sums, whole_counts, {})
    shards = []
    for part in (slice(0, 2), slice(2, 6)):  # uneven labelled counts: 2 and 2 of 4 rows
        s, _ = task_loss_sums({"t": logits[part]}, {"t": labels[part]})
        shards.append(joint_loss(s, whole_counts, {}, world_size=2))
    # data parallelism averages the processes' gradients, i.e. their losses
    assert torch.isclose(sum(shards) / 2, whole)
