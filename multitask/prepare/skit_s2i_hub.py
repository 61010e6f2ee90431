"""The Hugging Face Hub's copy of Skit-S2I, unpacked into the layout of the zip.

The Hub copy (``skit-ai/skit-s2i``) is Parquet: ``data/train-*.parquet`` and
``data/test-*.parquet`` with the columns ``audio`` (each recording's bytes and file
name), ``intent_class``, ``template`` and ``speaker_id``, and ``intent_info.csv`` beside
``data/``. It has no ``id`` and no ``audio_path``. :func:`unpack_hub_copy` writes each
recording out as a file and ``train.csv``/``test.csv`` as the zip has them, numbering
each split's rows from 0 in the Parquet files' order, so that
:func:`~multitask.prepare.skit_s2i.prepare_skit_s2i` reads it like the zip (which it
does by itself when given the Hub copy's folder)::

    hf download skit-ai/skit-s2i --repo-type dataset --local-dir skit-s2i-hub
    multitask prepare-skit-s2i --corpus skit-s2i-hub --out manifests/skit

The ids are therefore not the zip's. A row without audio bytes
is written without its file, so the preparer rejects it as "not found" (and it is
logged, naming the Parquet file and row).

Example
-------
>>> import tempfile
>>> is_hub_copy(tempfile.mkdtemp())
False
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import shutil

from tqdm import tqdm

from multitask.prepare import common

logger = logging.getLogger(__name__)

OFFICIAL_SPLITS = ("train", "test")
COLUMNS = ("audio", "intent_class", "template", "speaker_id")
UNPACKED_RECORD = "unpacked.json"
AUDIO_EXTENSIONS = (".wav", ".flac")


def parquet_files(corpus_dir, split: str) -> list[str]:
    """The Hub copy's Parquet shards of one split, in order."""
    return sorted(glob.glob(os.path.join(corpus_dir, "data", f"{split}-*.parquet")))


def is_hub_copy(corpus_dir) -> bool:
    """True for a folder laid out as the Hub's copy (Parquet shards, no ``train.csv``)."""
    return (not os.path.exists(os.path.join(corpus_dir, "train.csv"))
            and all(parquet_files(corpus_dir, split) for split in OFFICIAL_SPLITS))


def _contents(corpus_dir) -> dict[str, str]:
    # Hashed, not listed by size: a shard re-written with other rows may keep its size.
    names = ["intent_info.csv"] + [os.path.relpath(path, corpus_dir) for split in
                                   OFFICIAL_SPLITS for path in parquet_files(corpus_dir, split)]
    return {name: common.file_digest(os.path.join(corpus_dir, name)) for name in names}


def open_shard(path):
    """A ``pyarrow.parquet.ParquetFile`` with the Hub copy's columns, or a clear error."""
    import pyarrow.parquet as pq  # here: only the Hub copy needs it

    try:
        shard = pq.ParquetFile(path)
    except Exception as err:  # pyarrow's errors name neither the file nor the fix
        raise common.CorpusError(f"{path}: not a readable Parquet file ({err})") from err
    missing = [name for name in COLUMNS if name not in shard.schema_arrow.names]
    if missing:
        raise common.CorpusError(f"{path}: missing column(s) {', '.join(missing)} (the Hub "
                                 f"copy of Skit-S2I has {', '.join(COLUMNS)})")
    return shard


def _unpack_split(corpus_dir, dest, split: str, progress) -> None:
    rows = []
    for path in parquet_files(corpus_dir, split):
        shard = os.path.relpath(path, corpus_dir)
        for batch in open_shard(path).iter_batches(batch_size=256, columns=list(COLUMNS)):
            for record in batch.to_pylist():
                index = len(rows)
                audio = record["audio"] or {}
                extension = os.path.splitext(audio.get("path") or "")[1].lower()
                audio_path = (f"wav_audios/{split}/{index:05d}"
                              f"{extension if extension in AUDIO_EXTENSIONS else '.wav'}")
                if audio.get("bytes"):
                    with open(os.path.join(dest, audio_path), "wb") as out:
                        out.write(audio["bytes"])
                else:
                    logger.warning("%s row %d: no audio bytes; it will be rejected", shard,
                                   index)
                rows.append([index, record["intent_class"], record["template"] or "",
                             audio_path, record["speaker_id"]])
                progress.update()
    with open(os.path.join(dest, f"{split}.csv"), "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "intent_class", "template", "audio_path", "speaker_id"])
        writer.writerows(rows)


def unpack_hub_copy(corpus_dir, dest) -> str:
    """Write the Hub copy in ``corpus_dir`` out as the zip's layout in ``dest``.

    Skipped when ``dest`` already holds an unpacking of the same files (by their
    SHA-256); written to ``dest.partial`` and renamed, so an interrupted unpacking is
    redone rather than read.

    Returns
    -------
    str
        ``dest``, absolute.
    """
    corpus_dir, dest = os.path.abspath(corpus_dir), os.path.abspath(dest)
    info = os.path.join(corpus_dir, "intent_info.csv")
    if not os.path.isfile(info):
        raise common.CorpusError(f"{info}: not found; the Hub copy of Skit-S2I keeps it "
                                 "beside data/")
    inside = os.path.commonpath([corpus_dir, dest]) in (corpus_dir, dest)
    if inside:  # replacing dest would delete the download, or unpack it into itself
        raise common.CorpusError(f"{dest}: the unpacking would go inside the Hub copy "
                                 f"{corpus_dir}, or hold it; give an --out outside it")
    if os.path.exists(dest) and not os.path.isfile(os.path.join(dest, UNPACKED_RECORD)):
        raise common.CorpusError(f"{dest}: exists, and is not an unpacking of the Hub copy "
                                 "(no unpacked.json): it would be replaced; give another --out")
    record = {"source": corpus_dir, "files": _contents(corpus_dir)}
    try:
        with open(os.path.join(dest, UNPACKED_RECORD), encoding="utf-8") as handle:
            if json.load(handle) == record:
                return dest
    except (OSError, ValueError):
        pass
    shards = [path for split in OFFICIAL_SPLITS for path in parquet_files(corpus_dir, split)]
    total = sum(open_shard(path).metadata.num_rows for path in shards)  # each checked first
    partial = dest + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    for split in OFFICIAL_SPLITS:
        os.makedirs(os.path.join(partial, "wav_audios", split))
    shutil.copy(info, partial)
    logger.info("%s: the Hub's Parquet copy of Skit-S2I; unpacking it into %s", corpus_dir, dest)
    try:
        with tqdm(total=total, desc="unpacking the Hub copy", unit="clip") as progress:
            for split in OFFICIAL_SPLITS:
                _unpack_split(corpus_dir, partial, split, progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    with open(os.path.join(partial, UNPACKED_RECORD), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    return dest
