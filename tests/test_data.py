"""Manifests into datasets: labels, missing labels, and bad rows named before training."""

import os

import pytest

from multitask.data import build_label_encoders, load_split
from multitask.losses import IGNORE_INDEX
from multitask.manifest import ManifestError, read_manifest, write_manifest


def test_rows_become_signals_and_class_indices_with_missing_labels_ignored(toy_corpus, tmp_path):
    rows = read_manifest(toy_corpus["train"])
    encoders = build_label_encoders(rows, tmp_path)
    dataset, _ = load_split(toy_corpus["train"], encoders)
    item = dataset[0]
    assert item["sig"].ndim == 1 and abs(float(item["sig"].mean())) < 1e-4
    has_intent = rows[0]["intent"] != ""
    assert (item["intent_id"] != IGNORE_INDEX) == has_intent
    assert (item["emotion_id"] != IGNORE_INDEX) != has_intent


def test_label_encoders_are_saved_and_reused(toy_corpus, tmp_path):
    rows = read_manifest(toy_corpus["train"])
    first = build_label_encoders(rows, tmp_path)
    assert os.path.isfile(tmp_path / "label_encoder_intent.txt")
    again = build_label_encoders(rows[:3], tmp_path)  # fewer rows: same saved classes
    assert again["intent"].lab2ind == first["intent"].lab2ind


def test_bad_rows_are_all_reported_with_id_and_path_before_training(toy_corpus, tmp_path):
    rows = read_manifest(toy_corpus["train"])
    encoders = build_label_encoders(rows, tmp_path / "enc")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 10)
    bad = [dict(rows[0], id="gone", wav=str(tmp_path / "missing.wav")),
           dict(rows[0], id="empty", wav=str(empty)),
           dict(rows[0], id="junk", wav=str(junk)),
           dict(rows[1], id="odd-label", intent="teleport", emotion="", task="intent"),
           dict(rows[2], id=rows[3]["id"])]
    path = tmp_path / "bad.csv"
    write_manifest(path, rows[:5] + bad)
    with pytest.raises(ManifestError) as err:
        load_split(str(path), encoders)
    message = str(err.value)
    for expected in ("'gone'", "missing.wav", "file not found", "'empty'", "0 bytes", "'junk'",
                     "not a readable audio file", "'odd-label'", "'teleport'", "duplicate id"):
        assert expected in message
