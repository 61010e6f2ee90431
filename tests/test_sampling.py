"""Length-aware, task-mixing batches: coverage, budgets, ratios, reproducibility."""

import random

import pytest

from multitask.sampling import TaskMixingBatchSampler


def corpus(n_intent=60, n_emotion=20, seed=0):
    rng = random.Random(seed)
    durations = [rng.uniform(1.0, 8.0) for _ in range(n_intent + n_emotion)]
    tasks = ["intent"] * n_intent + ["emotion"] * n_emotion
    return durations, tasks


def test_every_row_appears_once_per_epoch_without_a_ratio():
    durations, tasks = corpus()
    sampler = TaskMixingBatchSampler(durations, tasks, max_batch_seconds=30, seed=1)
    assert sorted(i for b in sampler for i in b) == list(range(len(durations)))


def test_padded_batch_cost_stays_within_the_budget():
    durations, tasks = corpus()
    sampler = TaskMixingBatchSampler(durations, tasks, max_batch_seconds=30, seed=1)
    for batch in sampler:
        assert len(batch) == 1 or max(durations[i] for i in batch) * len(batch) <= 30


def test_length_sorting_wastes_less_padding_than_random_fixed_batches():
    durations, tasks = corpus(600, 200)
    bucketed = TaskMixingBatchSampler(durations, tasks, max_batch_seconds=60, seed=1)
    fixed = TaskMixingBatchSampler(durations, tasks, batch_size=12, seed=1)
    assert bucketed.padding_waste() < 0.10 < fixed.padding_waste()


def test_task_ratio_sets_each_tasks_share_and_oversamples_the_small_corpus():
    durations, tasks = corpus(60, 20)
    sampler = TaskMixingBatchSampler(durations, tasks, max_batch_seconds=40,
                                     task_ratio={"intent": 0.5, "emotion": 0.5}, seed=2)
    drawn = [tasks[i] for b in sampler for i in b]
    assert drawn.count("intent") == drawn.count("emotion") == 40
    assert any(len({tasks[i] for i in b}) == 2 for b in sampler)  # batches mix tasks


def test_same_seed_and_epoch_give_the_same_batches_and_epochs_differ():
    durations, tasks = corpus()
    a = TaskMixingBatchSampler(durations, tasks, max_batch_seconds=30, seed=5)
    b = TaskMixingBatchSampler(durations, tasks, max_batch_seconds=30, seed=5)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)


def test_evaluation_shards_cover_every_row_exactly_once():
    durations, tasks = corpus(13, 6)
    shards = [TaskMixingBatchSampler(durations, tasks, max_batch_seconds=10, shuffle=False,
                                     shard=(k, 3)) for k in range(3)]
    rows = sorted(i for s in shards for b in s for i in b)
    assert rows == list(range(len(durations)))


def test_a_ratio_that_misses_a_task_is_refused():
    durations, tasks = corpus()
    with pytest.raises(ValueError, match="emotion"):
        TaskMixingBatchSampler(durations, tasks, max_batch_seconds=30, task_ratio={"intent": 1.0})


def test_resuming_with_another_seed_is_refused(tmp_path):
    durations, tasks = corpus()
    TaskMixingBatchSampler(durations, tasks, batch_size=4, seed=1)._save(tmp_path / "s")
    other = TaskMixingBatchSampler(durations, tasks, batch_size=4, seed=2)
    with pytest.raises(ValueError, match="seed"):
        other._recover(tmp_path / "s")


def test_rows_per_class_balances_classes_and_rotates_a_large_class_through_epochs():
    classes = ["rare"] * 5 + ["common"] * 100
    sampler = TaskMixingBatchSampler([1.0] * 105, max_batch_seconds=8, classes=classes,
                                     rows_per_class=20, seed=4)
    seen_common = set()
    for epoch in range(5):
        sampler.set_epoch(epoch)
        drawn = [i for b in sampler for i in b]
        assert [classes[i] for i in drawn].count("rare") == 20   # 5 clips, each 4 times
        common = [i for i in drawn if classes[i] == "common"]
        assert len(common) == len(set(common)) == 20             # a different fifth each epoch
        seen_common |= set(common)
    assert len(seen_common) > 60


def test_rows_per_class_needs_a_class_per_row_and_excludes_task_ratio():
    with pytest.raises(ValueError, match="class key per row"):
        TaskMixingBatchSampler([1.0] * 3, batch_size=2, rows_per_class=2)
    with pytest.raises(ValueError, match="not both"):
        TaskMixingBatchSampler([1.0] * 2, ["intent", "emotion"], batch_size=2, rows_per_class=2,
                               classes=["a", "b"], task_ratio={"intent": 1, "emotion": 1})


@pytest.mark.parametrize("budget", [
    {"max_batch_seconds": 30, "batch_size": 8},   # train.yaml, demo.yaml, pretrain.yaml
    {"max_batch_seconds": 30},
    {"batch_size": 8},                            # tiny.yaml, finetune.yaml
])
@pytest.mark.parametrize("processes", [2, 3])
def test_accelerates_sharding_trains_every_batch_of_the_epoch(budget, processes):
    # accelerator.prepare wraps the training sampler in this class, one per process.
    from accelerate.data_loader import BatchSamplerShard

    durations, tasks = corpus(300, 100)
    sampler = TaskMixingBatchSampler(durations, tasks, seed=1, **budget)
    sampler.set_epoch(3)
    shards = [list(BatchSamplerShard(sampler, processes, rank)) for rank in range(processes)]
    per_process = -(-len(sampler) // processes)
    assert [len(shard) for shard in shards] == [per_process] * processes
    dealt = [batch for shard in shards for batch in shard]
    assert sorted(map(tuple, sampler)) == sorted({tuple(batch) for batch in dealt})
    assert all(batch in sampler.batches() for batch in dealt)  # whole batches, none merged


def test_an_epoch_that_skips_batches_is_refused():
    from multitask.sampling import check_epoch_complete

    check_epoch_complete(4, [[0]] * 4, epoch=2)
    with pytest.raises(RuntimeError, match="epoch 2: this process went through 1 of the 4"):
        check_epoch_complete(1, [[0]] * 4, epoch=2)
