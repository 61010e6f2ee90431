"""Shared fixtures: tiny encoders and toy corpora, generated once per session."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub

from toy_data import save_tiny_encoder, write_toy_corpus  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
