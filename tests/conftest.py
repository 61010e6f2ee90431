"""Shared fixtures: tiny encoders and toy corpora, generated once per session."""

import logging
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub

from toy_data import save_tiny_encoder, write_toy_corpus  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


ROOT_LOG_LEVEL = logging.getLogger().level


def _speechbrain_handler(handler) -> bool:
    """A handler of SpeechBrain's logging set-up (its console handler, or the plain
    FileHandler of a run folder's log.txt; pytest's own handlers are other classes)."""
    from speechbrain.utils.logger import TqdmCompatibleStreamHandler

    return isinstance(handler, TqdmCompatibleStreamHandler) or type(handler) is logging.FileHandler


@pytest.fixture(autouse=True)
def remove_speechbrain_logging():
    """Undo SpeechBrain's logging set-up after each test (its experiment directory attaches
    handlers to the root logger, in a test or in a module fixture before it). Left in place,
    a console handler on one test's captured output writes "--- Logging error ---"
    tracebacks into a later test's stderr, and a run folder's log.txt stays open and
    collects later tests' lines."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if _speechbrain_handler(h)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(ROOT_LOG_LEVEL)


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
