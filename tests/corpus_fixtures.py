"""Builders of tiny fixture corpora in the exact released on-disk layouts.

Each builder writes generated audio (harmonic tones whose pitch depends on speaker and
label, plus a little noise) and a known set of broken files, and returns a
:class:`FixtureCorpus` saying which manifest ids must be kept (with their labels) and
which must be rejected (with a word the rejection reason must contain). Nothing is
downloaded; everything is deterministic.

* :func:`make_skit_s2i`: ``train.csv``, ``test.csv``, ``intent_info.csv``,
  ``wav_audios/{train,test}/*.wav`` at 8 kHz 16-bit; test speakers also speak in train,
  and ids restart at 0 in each file (the ids the preparer makes must stay unique if they do).
* :func:`make_crema_d`: ``AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav`` at 16 kHz.
* :func:`make_generic_csv`: ``labels.csv`` (``path,intent,emotion,speaker``) and audio.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

# The broken files every corpus fixture contains, and a word their reason must contain.
BROKEN_REASONS = {
    "missing": "not found",
    "empty": "empty",
    "truncated_header": "not a readable audio file",
    "not_audio": "not a readable audio file",
    "silent": "silent",
    "too_short": "too short",
}
SKIT_INTENTS = ("branch_address", "activate_card", "past_transactions", "dispatch_status")
CREMA_CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fear",
               "HAP": "happy", "NEU": "neutral", "SAD": "sad"}


@dataclass
class FixtureCorpus:
    """A generated corpus and what a correct preparer must make of it."""

    root: Path
    # manifest id -> expected columns (intent/emotion, speaker, ...)
    good: dict[str, dict] = field(default_factory=dict)
    # manifest id -> a word its rejection reason must contain
    broken: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- audio


def tone(seconds: float, sample_rate: int, pitch: float, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal: three harmonics with a pitch glide, and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    glide = pitch * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))
    phase = 2 * np.pi * np.cumsum(glide) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in (1, 2, 3))
    wave = 0.25 * wave / np.max(np.abs(wave)) + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def write_wav(path, samples, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write a WAV, creating its folder."""
    os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
    sf.write(os.fspath(path), samples, sample_rate, subtype=subtype)


def write_broken(path, kind: str, sample_rate: int) -> str:
    """Write (or, for ``missing``, do not write) a broken file; return its reason word."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        return BROKEN_REASONS[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated_header":
        write_wav(path, tone(0.5, sample_rate, 200), sample_rate)
        path.write_bytes(path.read_bytes()[:20])  # cut inside the 'fmt ' chunk
    elif kind == "not_audio":
        path.write_text("id,intent\nthis is a CSV someone saved as .wav\n")
    elif kind == "silent":
        write_wav(path, np.zeros(sample_rate, dtype=np.float32), sample_rate)
    elif kind == "too_short":
        write_wav(path, tone(0.05, sample_rate, 200), sample_rate)
    elif kind == "lfs_pointer":
        path.write_text("version https://git-lfs.github.com/spec/v1\n"
                        "oid sha256:0123456789abcdef\nsize 123456\n")
        return "git-lfs"
    elif kind == "nan":
        samples = tone(0.5, sample_rate, 200)
        samples[100:200] = np.nan
        write_wav(path, samples, sample_rate, subtype="FLOAT")
        return "NaN"
    else:
        raise ValueError(f"unknown broken kind {kind!r}")
    return BROKEN_REASONS[kind]


def _write_csv(path, header, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        writer.writerow(header)
        writer.writerows(rows)


# ------------------------------------------------------------------------ Skit-S2I


def make_skit_s2i(
    root,
    speakers=("1", "2", "3", "4", "5", "6"),
    intents=SKIT_INTENTS,
    train_per_pair: int = 2,
    test_per_pair: int = 1,
    broken=tuple(BROKEN_REASONS),
) -> FixtureCorpus:
    """A Skit-S2I folder: 8 kHz 16-bit WAVs, one row per (speaker, intent, take).

    The broken files are listed in ``train.csv`` (speaker ``speakers[0]``).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    corpus = FixtureCorpus(root)
    _write_csv(root / "intent_info.csv", ["intent_class", "intent_name", "description"],
               [[index, name, f"caller asks about {name.replace('_', ' ')}"]
                for index, name in enumerate(intents)])
    for split, takes in (("train", train_per_pair), ("test", test_per_pair)):
        rows = []
        for s_index, speaker in enumerate(speakers):
            for i_index, intent in enumerate(intents):
                for take in range(takes):
                    row_id = len(rows)  # restarting in each file: the hard case
                    audio_path = f"wav_audios/{split}/{row_id}.wav"
                    seconds = 0.3 + 0.1 * ((s_index + i_index + take) % 4)
                    pitch = 110 + 25 * s_index + 40 * i_index + 5 * take
                    write_wav(root / audio_path, tone(seconds, 8000, pitch, seed=row_id), 8000)
                    rows.append([row_id, i_index, f"template for {intent}", audio_path, speaker])
                    corpus.good[f"s2i-{split}-{row_id}"] = {
                        "intent": intent, "speaker": speaker, "official_split": split,
                        "duration": seconds,
                    }
        if split == "train":
            for kind in broken:
                row_id = len(rows)
                audio_path = f"wav_audios/train/{row_id}.wav"
                word = write_broken(root / audio_path, kind, 8000)
                rows.append([row_id, 0, f"broken: {kind}", audio_path, speakers[0]])
                corpus.broken[f"s2i-train-{row_id}"] = word
        _write_csv(root / f"{split}.csv",
                   ["id", "intent_class", "template", "audio_path", "speaker_id"], rows)
    return corpus


def make_skit_s2i_hub(zip_root, hub_root) -> Path:
    """The Hugging Face Hub's Parquet copy of the Skit-S2I folder ``zip_root``.

    As on the Hub: ``data/train-0000{0,1}-of-00002.parquet`` and
    ``data/test-00000-of-00001.parquet`` with ``audio`` (``{"bytes", "path"}``),
    ``intent_class`` and ``speaker_id`` as integers and ``template``, no ``id`` and no
    ``audio_path``, and ``intent_info.csv`` beside ``data/``. The zip's files are in row
    order, its train file split in two shards.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    zip_root, hub_root = Path(zip_root), Path(hub_root)
    (hub_root / "data").mkdir(parents=True)
    (hub_root / "intent_info.csv").write_bytes((zip_root / "intent_info.csv").read_bytes())
    for split in ("train", "test"):
        with open(zip_root / f"{split}.csv", newline="") as fin:
            rows = list(csv.DictReader(fin))
        shards = [rows[: len(rows) // 2], rows[len(rows) // 2:]] if split == "train" else [rows]
        for index, shard in enumerate(shards):
            audio = [{"bytes": (zip_root / row["audio_path"]).read_bytes(),
                      "path": os.path.basename(row["audio_path"])} for row in shard]
            table = pa.table({
                "audio": audio,
                "intent_class": pa.array([int(row["intent_class"]) for row in shard], pa.int64()),
                "template": [row["template"] for row in shard],
                "speaker_id": pa.array([int(row["speaker_id"]) for row in shard], pa.int64()),
            })
            pq.write_table(table, hub_root / "data" / f"{split}-{index:05d}-of-{len(shards):05d}.parquet")
    return hub_root


# ------------------------------------------------------------------------- CREMA-D


def make_crema_d(
    root,
    actors=tuple(str(a) for a in range(1001, 1009)),
    sentences=("DFA", "IEO", "ITS"),
    broken=tuple(BROKEN_REASONS) + ("lfs_pointer",),
) -> FixtureCorpus:
    """A CREMA-D folder: ``AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav`` at 16 kHz.

    Besides the broken audio (filed under actor ``actors[0]``, sentence ``TIE``; the
    missing one is a dangling symlink, since a missing file cannot be listed
    otherwise), it holds a well-formed file with an unknown emotion code, a
    ``README.txt`` that the preparer must ignore, and the release's own two faults:
    ``1076_MTI_SAD_XX.wav`` with no speech (here a faint hiss, loud enough to pass the
    silence check) and ``1040_ITH_SAD_X.wav``, a good clip under its pre-2022 name.
    """
    root = Path(root)
    audio = root / "AudioWAV"
    audio.mkdir(parents=True, exist_ok=True)
    corpus = FixtureCorpus(root)
    levels = ("LO", "MD", "HI")
    for a_index, actor in enumerate(actors):
        for s_index, sentence in enumerate(sentences):
            for e_index, (code, emotion) in enumerate(CREMA_CODES.items()):
                # The corpus varies the level for one sentence only (IEO), and not for
                # neutral; XX elsewhere.
                graded = sentence == "IEO" and code != "NEU"
                level = levels[(a_index + e_index) % 3] if graded else "XX"
                stem = f"{actor}_{sentence}_{code}_{level}"
                pitch = 120 + 15 * a_index + 30 * e_index
                seconds = 0.3 + 0.05 * ((a_index + s_index + e_index) % 5)
                write_wav(audio / f"{stem}.wav", tone(seconds, 16000, pitch, seed=a_index), 16000)
                corpus.good[f"crema-{stem}"] = {
                    "emotion": emotion, "speaker": actor, "sentence": sentence, "level": level,
                    "duration": seconds,
                }
    # Sentence codes the good files do not use, one per broken file, so names are unique.
    spare = ("TIE", "TSI", "TAI", "MTI", "IWW", "IWL", "ITH", "IOM")
    for index, kind in enumerate(broken):
        stem = f"{actors[0]}_{spare[index]}_ANG_XX"
        if kind == "missing":
            os.symlink("no-such-recording.wav", audio / f"{stem}.wav")
        word = write_broken(audio / f"{stem}.wav", kind, 16000)
        corpus.broken[f"crema-{stem}"] = word
    write_wav(audio / f"{actors[0]}_WSI_XXX_XX.wav", tone(0.4, 16000, 150), 16000)
    corpus.broken[f"crema-{actors[0]}_WSI_XXX_XX"] = "unknown emotion code"
    (audio / "README.txt").write_text("not a recording\n")
    hiss = 0.002 * np.random.default_rng(0).standard_normal(32000).astype(np.float32)
    write_wav(audio / "1076_MTI_SAD_XX.wav", hiss, 16000)
    corpus.broken["crema-1076_MTI_SAD_XX"] = "no speech in the recording"
    write_wav(audio / "1040_ITH_SAD_X.wav", tone(0.5, 16000, 170, seed=40), 16000)
    corpus.good["crema-1040_ITH_SAD_XX"] = {
        "emotion": "sad", "speaker": "1040", "sentence": "ITH", "level": "XX", "duration": 0.5}
    return corpus


# --------------------------------------------------------------------- generic CSV


def make_generic_csv(
    root,
    speakers=("alice", "bob", "carol", "dave", "erin"),
    intents=("open_account", "close_account", "report_fraud"),
    emotions=("neutral", "angry"),
    with_speakers: bool = True,
    broken=("missing", "nan"),
) -> FixtureCorpus:
    """A bank's ``labels.csv`` (``path,intent,emotion[,speaker]``) with audio under it.

    Paths are relative to the CSV's folder; ids are the paths without extension.
    Also holds one row with neither label, which must be rejected.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    corpus = FixtureCorpus(root)
    header = ["path", "intent", "emotion"] + (["speaker"] if with_speakers else [])
    rows = []
    for s_index, speaker in enumerate(speakers):
        for i_index, intent in enumerate(intents):
            for e_index, emotion in enumerate(emotions):
                rel = f"audio/{speaker}/{intent}_{emotion}.wav"
                pitch = 100 + 20 * s_index + 30 * i_index + 60 * e_index
                write_wav(root / rel, tone(0.4, 16000, pitch, seed=s_index), 16000)
                rows.append([rel, intent, emotion] + ([speaker] if with_speakers else []))
                corpus.good[rel[:-4]] = {"intent": intent, "emotion": emotion,
                                         "speaker": speaker if with_speakers else ""}
    for kind in broken:
        rel = f"audio/broken/{kind}.wav"
        corpus.broken[rel[:-4]] = write_broken(root / rel, kind, 16000)
        rows.append([rel, intents[0], ""] + ([speakers[0]] if with_speakers else []))
    rel = "audio/broken/unlabelled.wav"
    write_wav(root / rel, tone(0.4, 16000, 180), 16000)
    rows.append([rel, "", ""] + ([speakers[0]] if with_speakers else []))
    corpus.broken[rel[:-4]] = "no intent or emotion label"
    _write_csv(root / "labels.csv", header, rows)
    return corpus
