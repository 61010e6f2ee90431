"""The input catalogue: every kind of file users feed the model, through every entry point.

``CASES`` is the one table. Each case makes a file and states its outcome, which must
be the same for all four entry points (:meth:`MultitaskClassifier.classify_file`,
:meth:`~MultitaskClassifier.classify_files`, ``multitask predict`` and the generic
CSV preparer):

* ``prediction``: the file is classified, and its probabilities equal (within
  ``TOLERANCE``) those of the same content written as a canonical 16 kHz mono float
  WAV, so an odd format is shown not to be silently wrong; the preparer accepts it
  with the right duration;
* ``AudioInputError: <reason>``: every entry point refuses it with an
  :class:`~multitask.audio.AudioInputError` whose message names the file and contains
  the reason (``classify_files``/``predict`` report it in place, the preparer writes
  it to ``rejected.csv``); never another exception type.

``docs/reliability.md`` shows the table; :func:`test_reliability_doc_shows_the_catalogue`
fails when the two differ, and ``python tests/test_input_catalogue.py`` rewrites it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from multitask.audio import SILENCE_PEAK, AudioInputError, check_file, load_audio
from multitask.cli import main
from multitask.inference import MultitaskClassifier
from multitask.prepare.generic_csv import prepare_generic_csv

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
DOC_START = "<!-- input-catalogue:start (generated from tests/test_input_catalogue.py) -->"
DOC_END = "<!-- input-catalogue:end -->"

# Largest probability difference allowed between a file and its canonical twin. The
# measured worst is 0.0007 (MP3; Vorbis 0.0006, 8-bit 0.0004, 8 kHz 0.0003); a wrong read
# moves them more: other content 1.0, the content at half its speed 0.98, at twice its
# speed 0.085, clipped at 8x gain 0.034 (test_the_twin_comparison_tells_...).
TOLERANCE = 0.01
RATE = 16000
CONTENT_SECONDS = 1.5
# The long recording: 30 min 10 s of 8 kHz telephone audio. Windows are 30 s, the
# 40 s remainder is the last window; three windows have sound, the rest are silent:
# digital silence, or (LONG_HELD) the constant offset of a held line.
LONG_SECONDS = 1810
LONG_RATE = 8000
LONG_VOICED = {0: "a", 30: "a", 59: "b"}  # window index -> content; window 59 is 40 s
LONG_HELD = range(40, 50)


def content(rate: int, seconds: float = CONTENT_SECONDS, kind: str = "a",
            speed: float = 1.0) -> np.ndarray:
    """A band-limited (< 1.5 kHz) test signal, the same at every sample rate.

    ``speed`` plays it faster (> 1) or slower: the twin of a file read at a rounded rate.
    """
    t = np.arange(round(seconds * rate)) / rate * speed
    if kind == "a":  # the toy corpus's intent "high" tone with a slow 300 Hz warble
        wav = 0.4 * np.sin(2 * np.pi * 1200 * t) + 0.1 * np.sin(2 * np.pi * 300 * t) \
            * np.sin(2 * np.pi * 3 * t)
    else:  # intent "low" tone, amplitude modulated
        wav = 0.4 * np.sin(2 * np.pi * 300 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    return wav.astype(np.float32)


def canonical(path: Path, wav: np.ndarray) -> None:
    sf.write(path, wav, RATE, subtype="FLOAT")


# ----------------------------------------------------------------------------- makers


def wav_file(rate=RATE, subtype="FLOAT", channels=(1.0,), fmt=None, transform=None):
    """Write ``content`` at ``rate``, each channel a gain of it (or ``transform(content)``)."""
    def make(path):
        wav = content(rate)
        if transform is not None:
            wav = transform(wav)
        data = np.stack([gain * wav for gain in channels], axis=1) if len(channels) > 1 else wav
        sf.write(path, data, rate, subtype=subtype, format=fmt)
    return make


def raw_bytes(data: bytes):
    return lambda path: path.write_bytes(data)


def nothing(path):
    pass


def directory(path):
    path.mkdir()


def truncated_header(path):
    buffer = io.BytesIO()
    sf.write(buffer, content(RATE), RATE, format="WAV", subtype="PCM_16")
    path.write_bytes(buffer.getvalue()[:20])  # cut inside the fmt chunk


def truncated_data(path):
    """A 3 s 16-bit WAV cut after 1.5 s of data and one byte of the next sample."""
    buffer = io.BytesIO()
    sf.write(buffer, content(RATE, 2 * CONTENT_SECONDS), RATE, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    header = data.index(b"data") + 8
    path.write_bytes(data[:header + 2 * round(CONTENT_SECONDS * RATE) + 1])


def with_sample(value):
    def transform(wav):
        wav = wav.copy()
        wav[len(wav) // 2] = value
        return wav
    return transform


def clipped(wav):
    return np.clip(4 * wav, -1.0, 1.0)


def long_recording(path):
    """30 min 10 s at 8 kHz, written block by block (never whole in memory)."""
    window = 30 * LONG_RATE
    windows = {i: content(LONG_RATE, 30, kind) for i, kind in LONG_VOICED.items() if i != 59}
    with sf.SoundFile(path, "w", LONG_RATE, 1, subtype="PCM_16") as fout:
        silence = np.zeros(window, dtype=np.float32)
        held = np.full(window, 0.3, dtype=np.float32)
        for index in range(59):
            fout.write(windows.get(index, held if index in LONG_HELD else silence))
        fout.write(content(LONG_RATE, LONG_SECONDS - 59 * 30, LONG_VOICED[59]))


def long_reference(folder: Path) -> dict:
    """Duration-weighted mean of the voiced windows' probabilities, each its own file."""
    files = []
    for index, kind in LONG_VOICED.items():
        seconds = 30 if index != 59 else LONG_SECONDS - 59 * 30
        path = folder / f"long_window_{index}.wav"
        sf.write(path, content(LONG_RATE, seconds, kind), LONG_RATE, subtype="PCM_16")
        files.append((path, seconds))
    return {"weighted": files}


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    filename: str
    make: Callable[[Path], None]
    expect: str  # "prediction" or "AudioInputError: <reason fragment>"
    description: str
    # The canonical twin: 16 kHz mono float of the same content (default: ``content``).
    reference: Callable[[], np.ndarray] | None = None
    seconds: float = CONTENT_SECONDS  # duration the preparer must record
    extra: dict = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.expect.startswith("AudioInputError")

    @property
    def reason(self) -> str:
        return self.expect.split(": ", 1)[1]


def error(reason: str) -> str:
    return f"AudioInputError: {reason}"


PREDICTION = "prediction"
CASES = [
    Case("missing", "missing.wav", nothing, error("file not found"),
         "path that does not exist"),
    Case("directory", "folder.wav", directory, error("is a directory"),
         "a directory (named .wav)"),
    Case("zero_bytes", "empty.wav", raw_bytes(b""), error("file is empty (0 bytes)"),
         "zero-byte file"),
    Case("truncated_header", "cut_header.wav", truncated_header,
         error("not a readable audio file"), "WAV cut inside its header (20 bytes)"),
    Case("random_bytes", "noise.wav", raw_bytes(np.random.default_rng(0).bytes(4096)),
         error("not a readable audio file"), "4 KiB of random bytes named .wav"),
    Case("lfs_pointer", "pointer.wav",
         raw_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64
                   + b"\nsize 48044\n"),
         error("is a git-lfs pointer"), "git-lfs pointer file left by a clone without LFS"),
    Case("zero_samples", "no_samples.wav", wav_file(transform=lambda w: w[:0]),
         error("contains no samples"), "valid WAV header, zero frames"),
    Case("too_short", "short.wav", wav_file(transform=lambda w: w[:800]),
         error("too short"), "0.05 s, below MIN_SECONDS (0.1 s)"),
    Case("silence", "silence.wav", wav_file(transform=np.zeros_like),
         error("is silent"), "1.5 s of digital silence"),
    Case("near_silence", "hiss.wav",
         wav_file(subtype="PCM_24", transform=lambda w: 3e-5 * w / np.abs(w).max()),
         error("is silent"), "signal peaking at -90 dBFS (below the -80 dBFS floor)"),
    Case("quiet", "quiet.wav", wav_file(transform=lambda w: 3e-4 * w / np.abs(w).max()),
         PREDICTION, "speech peaking at -70 dBFS, above the -80 dBFS floor (normalised to "
         "less than unit variance); twin: the same quiet waveform",
         reference=lambda: 3e-4 * content(RATE) / np.abs(content(RATE)).max()),
    Case("constant", "dc.wav", wav_file(transform=lambda w: np.full_like(w, 0.5)),
         error("holds no sound: at most a constant offset"),
         "1.5 s of one constant value (a DC offset, no sound)"),
    Case("nan", "nan.wav", wav_file(transform=with_sample(np.nan)),
         error("NaN or infinite"), "32-bit float WAV with one NaN sample"),
    Case("inf", "inf.wav", wav_file(transform=with_sample(np.inf)),
         error("NaN or infinite"), "32-bit float WAV with one +Inf sample"),
    Case("clipping", "clipped.wav", wav_file(subtype="PCM_16", transform=clipped), PREDICTION,
         "16-bit WAV clipped at full scale (4x gain); twin: the same clipped waveform",
         reference=lambda: clipped(content(RATE))),
    Case("float_overs", "overs.wav", wav_file(transform=lambda w: 8 * w), PREDICTION,
         "float WAV peaking at 8x full scale, unclipped (normalisation is scale-free)"),
    Case("float_unscaled", "unscaled.wav", wav_file(transform=lambda w: 32767 * w), PREDICTION,
         "float WAV holding 16-bit integer values unscaled (peak about 16,000)"),
    Case("float_huge", "huge.wav", wav_file(transform=lambda w: 1e30 * w),
         error("sample values reach"),
         "float WAV with finite samples near 1e30 (beyond MAX_PEAK, 1e6: its variance "
         "would overflow)"),
    Case("mono_16bit", "mono16.wav", wav_file(subtype="PCM_16"), PREDICTION,
         "16 kHz mono 16-bit PCM (the common case)"),
    Case("stereo", "stereo.wav", wav_file(channels=(1.0, 0.5)), PREDICTION,
         "2 channels (right at half level), downmixed by the channel mean"),
    Case("six_channels", "surround.wav", wav_file(channels=(1.0, 0.8, 0.6, 0.2, 0.5, 0.5)),
         PREDICTION, "6 channels (5.1), downmixed by the channel mean"),
    Case("stereo_cancelling", "antiphase.wav", wav_file(channels=(1.0, -1.0)),
         error("channels cancel out"), "2 channels of opposite polarity: the mono mix is silent"),
    Case("rate_8k", "r8000.wav", wav_file(rate=8000), PREDICTION, "8 kHz"),
    Case("rate_22k", "r22050.wav", wav_file(rate=22050), PREDICTION, "22.05 kHz"),
    Case("rate_44k", "r44100.wav", wav_file(rate=44100), PREDICTION, "44.1 kHz"),
    Case("rate_48k", "r48000.wav", wav_file(rate=48000), PREDICTION, "48 kHz"),
    Case("rate_odd", "r44101.wav", wav_file(rate=44101), PREDICTION,
         "44101 Hz, coprime with 16 kHz (an exact resampling kernel would take 12 GB): "
         "read as 44100 Hz; twin: the content played 23 ppm slower",
         reference=lambda: content(RATE, speed=44100 / 44101)),
    Case("rate_too_low", "r2000.wav", wav_file(rate=2000), error("sample rate 2000 Hz is outside"),
         "2 kHz: below MIN_SAMPLE_RATE (4 kHz)"),
    Case("pcm_u8", "u8.wav", wav_file(subtype="PCM_U8"), PREDICTION, "8-bit unsigned PCM"),
    Case("pcm_24", "pcm24.wav", wav_file(subtype="PCM_24"), PREDICTION, "24-bit PCM"),
    Case("float_32", "float32.wav", wav_file(subtype="FLOAT"), PREDICTION, "32-bit float"),
    Case("flac", "speech.flac", wav_file(subtype="PCM_16", fmt="FLAC"), PREDICTION,
         "FLAC, 16-bit"),
    Case("ogg_vorbis", "speech.ogg", wav_file(subtype="VORBIS", fmt="OGG"), PREDICTION,
         "OGG Vorbis (lossy)"),
    Case("mp3", "speech.mp3", wav_file(subtype="MPEG_LAYER_III", fmt="MP3"), PREDICTION,
         "MP3 (lossy; libsndfile >= 1.1)"),
    Case("flac_named_wav", "really_flac.wav", wav_file(subtype="PCM_16", fmt="FLAC"), PREDICTION,
         "FLAC data under a .wav name (the format is read from the content)"),
    Case("truncated_data", "cut_data.wav", truncated_data, PREDICTION,
         "16-bit WAV whose header promises 3 s, cut after 1.5 s and half a sample: "
         "the decodable 1.5 s are classified"),
    Case("non_ascii_name", "appel_client_é_日本語.wav", wav_file(subtype="PCM_16"), PREDICTION,
         "non-ASCII file name"),
    Case("long_30_min", "call_30min.wav", long_recording, PREDICTION,
         "30 min 10 s at 8 kHz: read in blocks, 30 s windows, silent windows skipped (ten of "
         "them a held line's constant offset); twin: the duration-weighted mean of the voiced "
         "windows, each classified as its own file",
         seconds=LONG_SECONDS, extra={"windows": 3, "silent_windows": 57}),
]
assert len({case.id for case in CASES}) == len(CASES)
assert len({case.filename for case in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- the doc


def outcome_text(case: Case) -> str:
    if case.is_error:
        return f"`AudioInputError`: “…{case.reason}…”"
    suffix = " + `windows`" if case.extra else ""
    return f"prediction = twin ± {TOLERANCE}{suffix}"


def doc_table() -> str:
    """The catalogue as the Markdown table shown in ``docs/reliability.md``."""
    lines = ["| case | input | outcome (all four entry points) |", "| --- | --- | --- |"]
    for case in CASES:
        lines.append(f"| `{case.id}` | {case.description} | {outcome_text(case)} |")
    return "\n".join(lines)


def doc_with_table(text: str) -> str:
    head, rest = text.split(DOC_START, 1)
    _, tail = rest.split(DOC_END, 1)
    return f"{head}{DOC_START}\n{doc_table()}\n{DOC_END}{tail}"


def write_doc() -> None:
    """Rewrite the table in ``docs/reliability.md`` from ``CASES``."""
    DOC.write_text(doc_with_table(DOC.read_text(encoding="utf-8")), encoding="utf-8")


# ----------------------------------------------------------------------------- tests

pytest_plugins = ["trained_tiny"]
ENTRY_POINTS = ("classify_file", "classify_files", "predict", "prepare_csv")


@pytest.fixture(scope="module")
def classifier(exported_model):
    return MultitaskClassifier.from_hparams(source=exported_model, run_opts={"device": "cpu"})


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> dict[str, str]:
    """``{case id: path}`` of every case's file, made once."""
    folder = tmp_path_factory.mktemp("catalogue")
    paths = {}
    for case in CASES:
        path = folder / case.filename
        case.make(path)
        paths[case.id] = str(path)
    return paths


@pytest.fixture(scope="module")
def references(classifier, tmp_path_factory) -> dict[str, dict]:
    """``{case id: {task: {label: prob}}}`` of each prediction case's canonical twin."""
    folder = tmp_path_factory.mktemp("twins")
    out = {}
    for case in CASES:
        if case.is_error:
            continue
        if case.id == "long_30_min":
            files = long_reference(folder)["weighted"]
            total = sum(seconds for _, seconds in files)
            probs = [(classifier.classify_file(p), s) for p, s in files]
            out[case.id] = {t: {label: sum(r[t]["probs"][label] * s for r, s in probs) / total
                                for label in classifier.labels[t]} for t in classifier.tasks}
            continue
        path = folder / f"{case.id}.wav"
        canonical(path, case.reference() if case.reference else content(RATE))
        result = classifier.classify_file(path)
        out[case.id] = {t: result[t]["probs"] for t in classifier.tasks}
    return out


def test_the_twin_comparison_tells_a_wrong_decode_from_a_right_one(classifier, tmp_path):
    """The catalogue's "prediction = twin within TOLERANCE" shows a format is read right only
    if reading it wrong would move the probabilities by more: other content, the content at
    the wrong speed (a rate misread by half or double) and clipping all do, each by more
    than TOLERANCE (clipping, the least, by 3.4 times it)."""
    def probs(name, wav):
        canonical(tmp_path / f"{name}.wav", wav)
        result = classifier.classify_file(tmp_path / f"{name}.wav")
        return {t: np.array([result[t]["probs"][label] for label in classifier.labels[t]])
                for t in classifier.tasks}

    right = probs("right", content(RATE))
    wrong_reads = {
        "other content": content(RATE, kind="b"),
        "read at half its rate": content(RATE, speed=0.5),
        "read at twice its rate": content(RATE, speed=2.0),
        "clipped": np.clip(8 * content(RATE), -1, 1),
    }
    for what, wav in wrong_reads.items():
        wrong = probs(what.replace(" ", "_"), wav)
        moved = max(float(np.abs(wrong[t] - right[t]).max()) for t in classifier.tasks)
        assert moved > TOLERANCE, (what, moved)


@pytest.fixture(scope="module")
def batch_results(classifier, catalogue) -> dict[str, dict]:
    paths = [catalogue[case.id] for case in CASES]
    results = classifier.classify_files(paths, batch_size=8)  # the batched path
    assert [r["file"] for r in results] == paths  # in place, in input order
    return {case.id: result for case, result in zip(CASES, results, strict=True)}


@pytest.fixture(scope="module")
def predict_run(exported_model, catalogue) -> tuple[int, dict[str, dict], str]:
    """``multitask predict --json`` over the whole catalogue: exit code, rows, stderr."""
    paths = [catalogue[case.id] for case in CASES]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["predict", "--model", str(exported_model), "--json", *paths])
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [row["file"] for row in rows] == paths
    return code, {case.id: row for case, row in zip(CASES, rows, strict=True)}, err.getvalue()


@pytest.fixture(scope="module")
def prepared(catalogue, tmp_path_factory) -> tuple[dict, dict]:
    """The generic CSV preparer over the catalogue: ``({id: kept row}, {id: rejected row})``."""
    folder = tmp_path_factory.mktemp("prepared")
    listing = folder / "recordings.csv"
    with open(listing, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        writer.writerow(["path", "intent", "id"])
        for case in CASES:
            writer.writerow([catalogue[case.id], "high", case.id])
    paths = prepare_generic_csv(listing, folder / "manifests", split_as="test")
    with open(paths["test"], newline="", encoding="utf-8") as fin:
        kept = {row["id"]: row for row in csv.DictReader(fin)}
    with open(folder / "manifests" / "rejected.csv", newline="", encoding="utf-8") as fin:
        rejected = {row["id"]: row for row in csv.DictReader(fin)}
    return kept, rejected


def assert_names_file_and_reason(message: str, path: str, case: Case) -> None:
    assert message.startswith(f"{path}: "), message
    assert case.reason in message, message


def assert_same_prediction(got: dict, expected: dict, case: Case) -> None:
    """``got`` and ``expected``: ``{task: {label: prob}}`` (``got`` may list a top-k only)."""
    for task, probs in got.items():
        worst = max(abs(p - expected[task][label]) for label, p in probs.items())
        assert worst < TOLERANCE, (case.id, task, worst)
        assert max(probs, key=probs.get) == max(expected[task], key=expected[task].get)


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_input_catalogue(case, entry, request, catalogue):
    path = catalogue[case.id]
    if entry == "prepare_csv":
        kept, rejected = request.getfixturevalue("prepared")
        if case.is_error:
            assert case.id not in kept and rejected[case.id]["path"] == path
            assert case.reason in rejected[case.id]["reason"]
        else:
            assert case.id not in rejected, rejected.get(case.id)
            assert float(kept[case.id]["duration"]) == pytest.approx(case.seconds, abs=1e-3)
        return
    references = request.getfixturevalue("references")
    tasks = request.getfixturevalue("classifier").tasks
    if entry == "classify_file":
        classifier = request.getfixturevalue("classifier")
        try:
            result = classifier.classify_file(path)
        except AudioInputError as err:
            assert case.is_error, f"{case.id}: unexpected {err}"
            assert err.path == path
            assert_names_file_and_reason(str(err), path, case)
            return
        assert not case.is_error, f"{case.id}: classified, expected {case.expect}"
        assert_same_prediction({t: result[t]["probs"] for t in tasks}, references[case.id], case)
        assert {k: result[k] for k in case.extra} == case.extra
    elif entry == "classify_files":
        result = request.getfixturevalue("batch_results")[case.id]
        if case.is_error:
            assert set(result) == {"file", "error"}
            assert_names_file_and_reason(result["error"], path, case)
            return
        assert "error" not in result, result["error"]
        assert_same_prediction({t: result[t]["probs"] for t in tasks}, references[case.id], case)
        assert {k: result[k] for k in case.extra} == case.extra
    else:
        code, rows, _ = request.getfixturevalue("predict_run")
        row = rows[case.id]
        if case.is_error:
            assert set(row) == {"file", "error"}
            assert_names_file_and_reason(row["error"], path, case)
            return
        assert "error" not in row, row["error"]
        assert_same_prediction({t: dict(row[f"{t}_top_k"]) for t in tasks}, references[case.id],
                               case)
        assert {k: row[k] for k in case.extra} == case.extra


@pytest.mark.slow
def test_predict_exit_code_over_the_catalogue(predict_run, exported_model, catalogue):
    code, _, err = predict_run
    failed = sum(case.is_error for case in CASES)
    assert code == 0  # some files were classified
    assert f"{failed} of {len(CASES)} file(s) could not be classified" in err
    # Every refused case at once: nothing classified, so the exit code says so.
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["predict", "--model", str(exported_model),
                     *[catalogue[case.id] for case in CASES if case.is_error]])
    assert code == 1 and len(out.getvalue().splitlines()) == failed


def test_reliability_doc_shows_the_catalogue():
    text = DOC.read_text(encoding="utf-8")
    assert doc_with_table(text) == text, (
        "docs/reliability.md is out of date with CASES: run `python tests/test_input_catalogue.py`"
    )


# ----------------------------------------------------------------------------- memory

MEMORY_SCRIPT = """
import json, resource, sys, time
from multitask.inference import MultitaskClassifier
model = MultitaskClassifier.from_hparams(source=sys.argv[1], run_opts={"device": "cpu"})
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
model.classify_file(sys.argv[2])                       # 40 s: the largest window, one pass
after_window = peak()
start = time.perf_counter()
result = model.classify_file(sys.argv[3])              # 30 min 10 s, in windows
print(json.dumps({"after_window_mb": after_window, "after_long_mb": peak(),
                  "seconds": time.perf_counter() - start, "windows": result["windows"]}))
"""
# A 30-minute file decoded whole would add at least 115 MB (float32 at 16 kHz) plus
# the resampler's copies; windowed, nothing beyond what one 40 s window needs.
LONG_FILE_EXTRA_MB = 30


@pytest.mark.slow
def test_long_recording_is_classified_in_bounded_memory(exported_model, catalogue, run_client,
                                                        tmp_path):
    window = tmp_path / "window_40s.wav"
    sf.write(window, content(LONG_RATE, 40, "b"), LONG_RATE, subtype="PCM_16")
    measured = run_client(MEMORY_SCRIPT, exported_model, window, catalogue["long_30_min"])
    assert measured["windows"] == 3
    assert measured["after_long_mb"] - measured["after_window_mb"] < LONG_FILE_EXTRA_MB, measured


# ----------------------------------------------------------------------------- properties

WAV_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW",
                "IMA_ADPCM", "MS_ADPCM", "GSM610"]


def load_or_refuse(path: str) -> str:
    """Run ``load_audio`` and ``check_file``; return the reason, or "" for a good file."""
    try:
        wav = load_audio(path)
    except AudioInputError as err:
        assert err.path == path and str(err).startswith(f"{path}: ")
        with pytest.raises(AudioInputError) as streamed:
            check_file(path)
        assert streamed.value.reason == err.reason  # streamed and whole reads agree
        return err.reason
    assert wav.ndim == 1 and wav.dtype.is_floating_point and wav.numel() > 0
    assert bool(wav.isfinite().all())
    info = check_file(path)
    assert wav.numel() == pytest.approx(info.frames * RATE / info.sample_rate, abs=2,
                                        rel=0.01)
    return ""


def riff_wav(fmt_tag, channels, rate, bits, declared, payload) -> bytes:
    """A hand-made RIFF/WAVE file: any header field may be odd or inconsistent."""
    block_align = max(0, channels * bits // 8) % 65536
    fmt = (fmt_tag.to_bytes(2, "little") + channels.to_bytes(2, "little")
           + rate.to_bytes(4, "little") + (rate * block_align % 2**32).to_bytes(4, "little")
           + block_align.to_bytes(2, "little") + bits.to_bytes(2, "little"))
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" \
        + declared.to_bytes(4, "little") + payload
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def drop_unimportable_lazy_modules() -> None:
    """Remove SpeechBrain's lazy modules whose optional dependency is missing (e.g. k2).

    SpeechBrain puts lazy stand-ins for its optional integrations into ``sys.modules``;
    reading any attribute of one whose dependency is absent raises ImportError.
    Hypothesis reads ``__file__`` of every module in ``sys.modules`` (to collect
    constants), so those stand-ins would break it; they could never be imported anyway.
    """
    with warnings.catch_warnings():  # reading __file__ of a deprecated alias warns
        warnings.simplefilter("ignore")
        for name, module in list(sys.modules.items()):
            try:
                getattr(module, "__file__", None)
            except ImportError:
                del sys.modules[name]


drop_unimportable_lazy_modules()  # before hypothesis's plugin scans at collection


@pytest.fixture
def importable_modules_only():
    """Modules imported since collection (by other tests' fixtures) are scanned again."""
    drop_unimportable_lazy_modules()


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.function_scoped_fixture])


@PROPERTY_SETTINGS
@given(data=st.one_of(
    st.binary(max_size=3000),
    st.binary(max_size=3000).map(lambda b: b"RIFF" + len(b).to_bytes(4, "little") + b"WAVE" + b),
    st.builds(riff_wav, st.sampled_from([0, 1, 2, 3, 6, 7, 0xFFFE, 0x55]),
              st.integers(0, 9), st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 8, 12, 16,
                                                                             24, 32, 64]),
              st.integers(0, 2**32 - 1), st.binary(max_size=4000)),
))
def test_random_bytes_load_or_raise_audio_input_error(data, importable_modules_only):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "random.wav")
        with open(path, "wb") as fout:
            fout.write(data)
        load_or_refuse(path)


@PROPERTY_SETTINGS
@given(channels=st.integers(1, 8), rate=st.integers(1, 192000),
       subtype=st.sampled_from(WAV_SUBTYPES), frames=st.integers(0, 6000),
       level=st.sampled_from([0.0, 1e-6, 0.5, 1.0, 3.0]), seed=st.integers(0, 2**16))
@example(channels=1, rate=4000, subtype="GSM610", frames=1, level=0.0, seed=0)  # codec noise
def test_odd_but_valid_wav_headers_load_or_raise_audio_input_error(
        channels, rate, subtype, frames, level, seed, importable_modules_only):
    rng = np.random.default_rng(seed)
    samples = (level * rng.uniform(-1, 1, (frames, channels))).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "odd.wav")
        try:
            sf.write(path, samples, rate, subtype=subtype, format="WAV")
        except (sf.LibsndfileError, RuntimeError, ValueError):
            return  # libsndfile will not even write this combination (e.g. GSM610 stereo)
        reason = load_or_refuse(path)
        # Block codecs (IMA/MS ADPCM, GSM) pad the last block: the file holds more
        # frames than were written, and its own length is what the reader must judge.
        seconds = sf.info(path).frames / rate
        # Silence is judged on what the file decodes to, downmixed: GSM 06.10 turns written
        # zeros into codec noise (peak 0.07 at 4 kHz), which is not silent, and A-law into a
        # constant offset, which is.
        mono = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
        silent = mono.size == 0 or float(np.abs(mono).max()) < SILENCE_PEAK or float(
            mono.max() - mono.min()) < SILENCE_PEAK
        if not reason:
            assert 4000 <= rate and seconds >= 0.1 and not silent
        elif frames == 0:
            assert reason in ("contains no samples",) or "sample rate" in reason
        elif not 4000 <= rate:
            assert "sample rate" in reason
        elif silent:
            assert "too short" in reason or "silent" in reason or "holds no sound" in reason
        else:  # a sound file of a real rate: only its length may be held against it
            assert seconds < 0.1 and "too short" in reason, (reason, rate, subtype, channels)


if __name__ == "__main__":
    write_doc()
    print(f"wrote the input catalogue table into {DOC}")


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    # Linux file names are bytes; soundfile refuses a str it cannot encode as UTF-8.
    name = os.fsdecode(b"appel\xff\xfe.wav")
    canonical(tmp_path / "plain.wav", content(RATE))
    (tmp_path / "plain.wav").rename(tmp_path / name)
    canonical(tmp_path / "plain.wav", content(RATE))
    assert np.array_equal(load_audio(tmp_path / name), load_audio(tmp_path / "plain.wav"))


@pytest.mark.parametrize("denied", ["stat", "access"])
def test_a_file_that_may_not_be_read_is_named_as_such(tmp_path, monkeypatch, denied):
    path = tmp_path / "locked.wav"
    canonical(path, content(RATE))
    if denied == "stat":  # a folder on the path that may not be searched
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(os, "stat", refuse)
    else:  # the file's own mode
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(AudioInputError, match=f"{re.escape(str(path))}: permission denied"):
        load_audio(path)
