"""The feature baseline (:mod:`multitask.baseline`) on generated audio.

Toy corpora mirror the real ones: an 8 kHz intent corpus where the class is the pitch
of a harmonic tone (C4 vs G4), a 16 kHz emotion corpus where the class is loud and
noisy vs quiet and clean, and an 8 kHz joint test set carrying both labels (the real
IVR case: telephone audio, never seen in training).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from multitask.baseline import (
    MIN_FILES_FOR_POOL,
    FeatureBaseline,
    extract_features,
    feature_names,
    file_features,
    run_baseline,
    utterance_features,
)
from multitask.manifest import ManifestError, read_manifest, write_manifest

PITCHES = {"block": 261.63, "lost": 392.0}  # intent: C4 vs G4
LEVELS = {"angry": (0.5, 0.3), "sad": (0.05, 0.005)}  # emotion: (tone amplitude, noise std)
PER_SPLIT = {"train": 12, "valid": 4, "test": 8}


def harmonic_tone(freq, seconds, sample_rate, rng, amplitude=0.3, noise=0.01):
    """A voiced-like tone (three harmonics) with pitch jitter and white noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    freq = freq * rng.uniform(0.98, 1.02)
    wave = sum(np.sin(2 * np.pi * k * freq * t) / k for k in (1, 2, 3))
    wave = amplitude * wave / np.abs(wave).max()
    return (wave + noise * rng.standard_normal(t.size)).clip(-1, 1)


def write_corpus(folder, seed=0) -> dict:
    """Write the toy corpora; returns the manifest paths by corpus and split."""
    rng = np.random.default_rng(seed)
    manifests = {}

    def write(name, split, rows_audio, sample_rate):
        rows = []
        for i, (labels, audio) in enumerate(rows_audio):
            rel = f"wavs/{name}_{split}_{i:03d}.wav"
            sf.write(os.path.join(folder, name, rel), audio, sample_rate, subtype="PCM_16")
            rows.append(
                {"id": f"{name}-{split}-{i}", "wav": rel, "duration": len(audio) / sample_rate,
                 "speaker": f"{name}{i % 3}", "split": split, **labels}
            )  # fmt: skip
        path = os.path.join(folder, name, f"{split}.csv")
        write_manifest(path, rows)
        manifests[name, split] = path

    for name in ("intent", "emotion", "joint"):
        os.makedirs(os.path.join(folder, name, "wavs"), exist_ok=True)
    for split, count in PER_SPLIT.items():
        # Each corpus varies the other task's factor, as real speakers and recordings do.
        intent = [
            (
                {"intent": label},
                harmonic_tone(pitch, 0.6, 8000, rng, *LEVELS[rng.choice(sorted(LEVELS))]),
            )
            for label, pitch in PITCHES.items()
            for _ in range(count)
        ]
        emotion = [
            ({"emotion": label},
             harmonic_tone(rng.uniform(200, 450), 0.6, 16000, rng, amplitude, noise))
            for label, (amplitude, noise) in LEVELS.items()
            for _ in range(count)
        ]  # fmt: skip
        write("intent", split, intent, 8000)
        write("emotion", split, emotion, 16000)
    joint = []
    for intent, pitch in PITCHES.items():
        for emotion, (amplitude, noise) in LEVELS.items():
            for _ in range(5):
                audio = harmonic_tone(pitch, 0.6, 8000, rng, amplitude, noise)
                joint.append(({"intent": intent, "emotion": emotion}, audio))
    write("joint", "test", joint, 8000)
    return manifests


def run(manifests, **kwargs):
    return run_baseline(
        [manifests["intent", "train"], manifests["emotion", "train"]],
        [manifests["intent", "valid"], manifests["emotion", "valid"]],
        {
            "intent_test": manifests["intent", "test"],
            "emotion_test": manifests["emotion", "test"],
            "joint_test": manifests["joint", "test"],
        },
        num_workers=0,
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("baseline_corpus")))


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    out_json = tmp_path_factory.mktemp("baseline_out") / "baseline.json"
    return run(corpus, out_json=str(out_json)), out_json


def test_feature_vector_length_is_as_documented(corpus):
    wav = torch.randn(8000)
    assert utterance_features(wav).shape == (118,) == (len(feature_names()),)
    assert utterance_features(wav, with_std=True).shape == (236,)
    assert len(feature_names(with_std=True)) == 236
    vector = file_features(read_manifest(corpus["intent", "train"])[0]["wav"])
    assert vector.shape == (118,) and vector.dtype == torch.float32
    assert torch.isfinite(vector).all()


def test_only_rms_sees_the_recording_level(tmp_path):
    rng = np.random.default_rng(1)
    audio = harmonic_tone(200.0, 0.5, 8000, rng, amplitude=0.05, noise=0.005)
    quiet, loud = tmp_path / "quiet.wav", tmp_path / "loud.wav"
    sf.write(quiet, audio, 8000, subtype="FLOAT")
    sf.write(loud, 8 * audio, 8000, subtype="FLOAT")
    a, b = file_features(quiet), file_features(loud)
    rms = feature_names().index("rms_mean")
    assert float(b[rms]) == pytest.approx(8 * float(a[rms]), rel=1e-4)
    others = torch.ones(len(a), dtype=torch.bool)
    others[rms] = False
    torch.testing.assert_close(a[others], b[others], atol=1e-3, rtol=1e-3)


def test_learns_both_toy_tasks_above_chance(first_run):
    results, _ = first_run
    assert set(results) == {"intent_test", "emotion_test", "joint_test"}
    assert set(results["intent_test"]) == {"intent"}
    assert set(results["emotion_test"]) == {"emotion"}
    assert set(results["joint_test"]) == {"intent", "emotion"}
    for name, task in [("intent_test", "intent"), ("emotion_test", "emotion"),
                       ("joint_test", "intent")]:  # fmt: skip
        assert results[name][task]["accuracy"] >= 0.75, (name, task, results[name][task])


def test_telephone_band_carries_16k_emotion_training_over_to_8k_calls(corpus, first_run):
    # Emotion trains on 16 kHz audio, the joint test is 8 kHz. With full-band features
    # the empty upper bands of the calls push them off the training distribution; once
    # both are described in the telephone band, the emotion classifier transfers.
    results = run(corpus, telephone=True)
    for name, task in [("emotion_test", "emotion"), ("joint_test", "intent"),
                       ("joint_test", "emotion")]:  # fmt: skip
        assert results[name][task]["accuracy"] >= 0.75, (name, task, results[name][task])
    full_band = first_run[0]["joint_test"]["emotion"]["accuracy"]
    assert results["joint_test"]["emotion"]["accuracy"] > full_band


def test_label_names_are_the_sorted_training_labels(first_run):
    results, _ = first_run
    assert results["joint_test"]["intent"]["label_names"] == sorted(PITCHES)
    assert results["joint_test"]["emotion"]["label_names"] == sorted(LEVELS)
    assert results["intent_test"]["intent"]["num_examples"] == 2 * PER_SPLIT["test"]


def test_results_are_written_as_json(first_run):
    results, out_json = first_run
    assert json.loads(out_json.read_text()) == results


def test_two_runs_give_identical_results(corpus, first_run):
    assert run(corpus) == first_run[0]


def test_fitting_leaves_the_global_rng_alone(corpus):
    rows = read_manifest(corpus["intent", "train"])
    valid = read_manifest(corpus["intent", "valid"])
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    FeatureBaseline(max_epochs=3, num_workers=0).fit(rows, valid, tasks=("intent",))
    assert torch.equal(torch.rand(3), expected)


def test_broken_file_is_skipped_with_a_warning(corpus, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"this is not a RIFF header" * 10)
    rows = read_manifest(corpus["intent", "test"])
    write_manifest(tmp_path / "test.csv", rows + [{**rows[0], "id": "broken", "wav": str(broken)}])
    train_rows = read_manifest(corpus["intent", "train"])
    train = tmp_path / "train.csv"
    write_manifest(train, train_rows + [{**train_rows[0], "id": "broken", "wav": str(broken)}])

    with pytest.warns(UserWarning, match=f"skipping {broken}"):
        results = run_baseline(
            train, corpus["intent", "valid"], {"test": tmp_path / "test.csv"},
            num_workers=0, progress=False,
        )  # fmt: skip
    report = results["test"]["intent"]
    assert report["skipped_files"] == [str(broken)]
    assert report["num_examples"] == len(rows)


def test_test_label_unseen_in_training_is_rejected(corpus, tmp_path):
    rows = read_manifest(corpus["intent", "test"])
    rows[0]["intent"] = "loan_query"
    write_manifest(tmp_path / "test.csv", rows)
    with pytest.raises(ManifestError, match="loan_query"):
        run_baseline(
            corpus["intent", "train"], corpus["intent", "valid"], {"t": tmp_path / "test.csv"},
            num_workers=0, progress=False,
        )  # fmt: skip


def test_worker_processes_give_the_same_features(corpus):
    paths = [row["wav"] for split in PER_SPLIT for row in read_manifest(corpus["intent", split])]
    paths += [row["wav"] for row in read_manifest(corpus["emotion", "train"])]
    paths = paths[:MIN_FILES_FOR_POOL]  # just enough for extract_features to start the pool
    in_process, _ = extract_features(paths, num_workers=0, progress=False)
    pooled, _ = extract_features(paths, num_workers=2, progress=False)
    assert in_process.keys() == pooled.keys()
    for path in paths:
        assert torch.equal(in_process[path], pooled[path])
