"""Shared fixtures: tiny encoders and toy corpora, generated once per session."""

import logging
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub

from toy_data import save_tiny_encoder, write_toy_corpus  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def restore_root_logging():
    """Undo a test's logging set-up (SpeechBrain's experiment directory attaches handlers to
    the root logger): a stream handler left on one test's captured output writes
    "--- Logging error ---" tracebacks into a later test's stderr, and file handlers would
    keep every run folder's log.txt open."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def group_norm_encoder(tmp_path_factory):
    """Like wav2vec2-base: group-norm conv front end, post-norm transformer."""
    return save_tiny_encoder(tmp_path_factory.mktemp("enc_group"))


@pytest.fixture(scope="session")
def layer_norm_encoder(tmp_path_factory):
    """Like wav2vec2-large-lv60 / XLS-R: layer-norm front end, stable layer norm."""
    return save_tiny_encoder(
        tmp_path_factory.mktemp("enc_layer"), feat_extract_norm="layer", do_stable_layer_norm=True
    )


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory):
    return write_toy_corpus(tmp_path_factory.mktemp("toy"), per_class=12, seed=0)
