"""Checkpoints appear whole or not at all; a killed save is never loaded."""

import pytest
import torch

from multitask.checkpoints import STAGING, AtomicCheckpointer


def test_a_save_killed_in_staging_is_neither_listed_nor_loaded_and_is_discarded(tmp_path):
    layer = torch.nn.Linear(2, 2)
    ckpt = AtomicCheckpointer(tmp_path, recoverables={"layer": layer})
    ckpt.save_checkpoint(meta={"accuracy": 0.5}, name="epoch-0001")
    # What a process killed between SpeechBrain's meta file and its weights leaves behind.
    partial = tmp_path / STAGING / "CKPT+epoch-0002"
    partial.mkdir(parents=True)
    (partial / "CKPT.yaml").write_text("accuracy: 0.9\nend-of-epoch: true\nunixtime: 1\n")

    reader = AtomicCheckpointer(tmp_path, recoverables={"layer": torch.nn.Linear(2, 2)})
    assert [c.path.name for c in reader.list_checkpoints()] == ["CKPT+epoch-0001"]
    assert partial.exists()  # a reader never touches a save that may be in progress
    assert reader.recover_if_possible().path.name == "CKPT+epoch-0001"

    reader.discard_interrupted_save()  # what a training run does before it saves
    assert not (tmp_path / STAGING).exists()


def test_a_published_checkpoint_is_never_overwritten(tmp_path):
    ckpt = AtomicCheckpointer(tmp_path, recoverables={"layer": torch.nn.Linear(2, 2)})
    first = ckpt.save_checkpoint(name="epoch-0001")
    second = ckpt.save_checkpoint(name="epoch-0001")
    assert first.path != second.path and first.path.exists() and second.path.exists()


def test_a_checkpoint_saved_with_other_parts_is_refused_by_name(tmp_path):
    AtomicCheckpointer(tmp_path, recoverables={"layer": torch.nn.Linear(2, 2)}).save_checkpoint(
        name="epoch-0001")
    same = AtomicCheckpointer(tmp_path, recoverables={"layer": torch.nn.Linear(2, 2)})
    same.check_resumable()
    grown = AtomicCheckpointer(tmp_path, recoverables={"layer": torch.nn.Linear(2, 2),
                                                       "ctc_head": torch.nn.Linear(2, 3)})
    with pytest.raises(ValueError, match=r"CKPT\+epoch-0001: cannot resume .*this run also "
                                         r"has ctc_head; ctc_weight adds"):
        grown.check_resumable({"ctc_head": "ctc_weight adds the ctc_head"})
    shrunk = AtomicCheckpointer(tmp_path, recoverables={})
    with pytest.raises(ValueError, match=r"the checkpoint also has layer\);"):
        shrunk.check_resumable({"ctc_head": "ctc_weight adds the ctc_head"})  # not named
    AtomicCheckpointer(tmp_path, recoverables={"layer": torch.nn.Linear(2, 2),
                                               "ctc_head": torch.nn.Linear(2, 3)},
                       allow_partial_load=True).check_resumable()  # SpeechBrain skips it
