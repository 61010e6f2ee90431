"""Training curves: drawn from train_log.txt after each epoch, never at the cost of the run."""

import logging
from types import SimpleNamespace

from multitask.curves import CURVES_FILE
from multitask.train import redraw_training_curves

LOG = ("epoch: 1 - train loss: 3.5 - valid loss: 2.9, valid intent_accuracy: 0.30\n"
       "epoch: 2 - train loss: 2.3 - valid loss: 2.3, valid intent_accuracy: 0.41\n")


def test_a_figure_that_cannot_be_written_is_a_warning_not_the_end_of_the_run(tmp_path, caplog):
    (tmp_path / "train_log.txt").write_text(LOG)
    (tmp_path / CURVES_FILE).mkdir()  # where the figure goes, a folder: saving fails
    no_checkpoint = SimpleNamespace(find_checkpoint=lambda max_key: None)
    with caplog.at_level(logging.WARNING):
        redraw_training_curves(str(tmp_path), no_checkpoint, "intent_accuracy", epoch=2)
    assert f"could not draw {tmp_path / CURVES_FILE}" in caplog.text


def test_the_figure_is_drawn_with_the_kept_checkpoint_marked(tmp_path):
    (tmp_path / "train_log.txt").write_text(LOG)
    kept = SimpleNamespace(find_checkpoint=lambda max_key: SimpleNamespace(meta={"epoch": 2}))
    redraw_training_curves(str(tmp_path), kept, "intent_accuracy", epoch=2)
    assert (tmp_path / CURVES_FILE).stat().st_size > 1000
