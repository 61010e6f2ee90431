"""Tests of the Skit-S2I, CREMA-D and generic-CSV preparers on generated corpora."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from multitask.manifest import read_manifest, read_manifests
from multitask.prepare import (
    CorpusError,
    add_parsers,
    common,
    prepare_crema_d,
    prepare_generic_csv,
    prepare_skit_s2i,
    skit_s2i_hub,
)

try:  # the tests folder may be a package or just a folder on sys.path
    from tests.corpus_fixtures import (
        make_crema_d,
        make_generic_csv,
        make_skit_s2i,
        make_skit_s2i_hub,
    )
except ImportError:
    from corpus_fixtures import make_crema_d, make_generic_csv, make_skit_s2i, make_skit_s2i_hub


@pytest.fixture(scope="module")
def skit(tmp_path_factory):
    return make_skit_s2i(tmp_path_factory.mktemp("skit"))


@pytest.fixture(scope="module")
def crema(tmp_path_factory):
    return make_crema_d(tmp_path_factory.mktemp("crema"))


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    return make_generic_csv(tmp_path_factory.mktemp("bank"))


@pytest.fixture(scope="module")
def skit_speaker(skit, tmp_path_factory):
    return prepare_skit_s2i(skit.root, tmp_path_factory.mktemp("skit_speaker"), split="speaker")


@pytest.fixture(scope="module")
def skit_official(skit, tmp_path_factory):
    return prepare_skit_s2i(skit.root, tmp_path_factory.mktemp("skit_official"),
                            split="official")


@pytest.fixture(scope="module")
def crema_out(crema, tmp_path_factory):
    return prepare_crema_d(crema.root, tmp_path_factory.mktemp("crema_out"))


def rows_by_id(paths: dict) -> dict:
    rows = read_manifests(list(paths.values()))
    return {row["id"]: row for row in rows}


def rejected_of(paths: dict) -> dict:
    folder = next(iter(paths.values())).rsplit("/", 1)[0]
    with open(f"{folder}/{common.REJECTED_NAME}", newline="") as fin:
        return {row["id"]: row for row in csv.DictReader(fin)}


def speakers_per_split(paths: dict) -> dict:
    return {split: {row["speaker"] for row in read_manifest(path)}
            for split, path in paths.items()}


def manifest_bytes(paths: dict) -> dict:
    return {split: open(path, "rb").read() for split, path in paths.items()}


# ---------------------------------------------------------------------- Skit-S2I


def test_skit_keeps_every_good_row_with_its_labels(skit, skit_speaker):
    rows = rows_by_id(skit_speaker)
    assert set(rows) == set(skit.good)
    for row_id, expected in skit.good.items():
        row = rows[row_id]
        assert row["task"] == "intent" and row["emotion"] == ""
        assert row["intent"] == expected["intent"]
        assert row["speaker"] == expected["speaker"]
        assert row["official_split"] == expected["official_split"]
        assert row["sample_rate"] == "8000"
        assert row["duration"] == pytest.approx(expected["duration"], abs=1e-3)
        assert row["split_scheme"] == "speaker"
        assert open(row["wav"], "rb").read(4) == b"RIFF"  # the path resolves


def test_skit_rejects_every_broken_file_with_its_reason(skit, skit_speaker):
    rejected = rejected_of(skit_speaker)
    assert set(rejected) == set(skit.broken)
    for row_id, word in skit.broken.items():
        assert word in rejected[row_id]["reason"], rejected[row_id]
        assert rejected[row_id]["path"].endswith(".wav")


def test_skit_speaker_split_is_speaker_disjoint_and_complete(skit_speaker):
    speakers = speakers_per_split(skit_speaker)
    assert all(speakers.values()), speakers
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]


def test_skit_official_split_keeps_the_corpus_test_set(skit, skit_official):
    rows = rows_by_id(skit_official)
    official_test = {i for i, e in skit.good.items() if e["official_split"] == "test"}
    test_ids = {row["id"] for row in read_manifest(skit_official["test"])}
    valid_ids = {row["id"] for row in read_manifest(skit_official["valid"])}
    assert test_ids == official_test
    assert valid_ids and all(rows[i]["official_split"] == "train" for i in valid_ids)
    assert {row["split_scheme"] for row in rows.values()} == {"official"}


def test_skit_official_split_says_its_speakers_overlap(skit_official):
    speakers = speakers_per_split(skit_official)
    assert speakers["train"] & speakers["test"]  # as in the real corpus
    folder = skit_official["train"].rsplit("/", 1)[0]
    with open(f"{folder}/{common.OPTIONS_NAME}") as fin:
        result = json.load(fin)["result"]
    assert result["split_scheme"] == "official"
    assert result["speaker_disjoint"] is False
    assert "optimistic" in result["note"]


def test_skit_intent_names_come_from_intent_info(tmp_path):
    corpus = make_skit_s2i(tmp_path / "corpus", speakers=("a", "b", "c"),
                           intents=("say_hello", "say_bye"), broken=())
    paths = prepare_skit_s2i(corpus.root, tmp_path / "out")
    intents = {row["intent"] for row in read_manifests(list(paths.values()))}
    assert intents == {"say_hello", "say_bye"}


def test_skit_unknown_intent_class_names_the_file_and_line(tmp_path):
    corpus = make_skit_s2i(tmp_path / "corpus", speakers=("a", "b", "c"), broken=())
    info = corpus.root / "intent_info.csv"
    lines = info.read_text().splitlines()
    info.write_text("\n".join(lines[:-1]) + "\n")  # drop the last intent
    with pytest.raises(CorpusError, match=r"train\.csv: line \d+ has intent_class '3'"):
        prepare_skit_s2i(corpus.root, tmp_path / "out")


def test_skit_missing_column_names_the_file(tmp_path):
    corpus = make_skit_s2i(tmp_path / "corpus", speakers=("a", "b", "c"), broken=())
    test_csv = corpus.root / "test.csv"
    test_csv.write_text(test_csv.read_text().replace("speaker_id", "speaker"))
    with pytest.raises(CorpusError, match=r"test\.csv: missing required column\(s\) speaker_id"):
        prepare_skit_s2i(corpus.root, tmp_path / "out")


def test_skit_missing_label_file_names_it(tmp_path):
    corpus = make_skit_s2i(tmp_path / "corpus", speakers=("a", "b", "c"), broken=())
    (corpus.root / "intent_info.csv").unlink()
    with pytest.raises(CorpusError, match=r"intent_info\.csv: not found"):
        prepare_skit_s2i(corpus.root, tmp_path / "out")


def test_skit_hub_parquet_copy_reads_as_the_zip_does(tmp_path):
    corpus = make_skit_s2i(tmp_path / "zip", broken=("empty",))
    hub = make_skit_s2i_hub(corpus.root, tmp_path / "hub")
    from_zip = prepare_skit_s2i(corpus.root, tmp_path / "from_zip")
    from_hub = prepare_skit_s2i(hub, tmp_path / "from_hub")
    zip_rows, hub_rows = rows_by_id(from_zip), rows_by_id(from_hub)
    assert set(hub_rows) == set(zip_rows) == set(corpus.good)  # ids: the row order, as here
    for row_id, row in hub_rows.items():
        assert Path(row["wav"]).read_bytes() == Path(zip_rows[row_id]["wav"]).read_bytes()
        for column in ("intent", "speaker", "split", "official_split", "template", "duration"):
            assert row[column] == zip_rows[row_id][column], (row_id, column)
    assert set(rejected_of(from_hub)) == set(corpus.broken)
    assert Path(from_hub["train"]).parent.joinpath("hub_copy", "unpacked.json").is_file()


def test_skit_hub_copy_is_unpacked_once_and_again_when_its_files_change(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    corpus = make_skit_s2i(tmp_path / "zip", speakers=("1", "2", "3"), broken=())
    hub = make_skit_s2i_hub(corpus.root, tmp_path / "hub")
    prepare_skit_s2i(hub, tmp_path / "out")
    calls = []
    real = skit_s2i_hub._unpack_split
    monkeypatch.setattr(skit_s2i_hub, "_unpack_split", lambda *a: calls.append(a) or real(*a))
    prepare_skit_s2i(hub, tmp_path / "out")
    assert calls == []
    shard = hub / "data" / "test-00000-of-00001.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.take(list(range(table.num_rows))[::-1]), shard)  # other contents
    prepare_skit_s2i(hub, tmp_path / "out")
    assert [call[2] for call in calls] == ["train", "test"]
    with open(tmp_path / "out" / "hub_copy" / "test.csv", newline="") as fin:
        first = next(csv.DictReader(fin))
    assert int(first["speaker_id"]) == table["speaker_id"][table.num_rows - 1].as_py()
    calls.clear()
    shard.write_bytes(shard.read_bytes() + b"\0")
    with pytest.raises(CorpusError, match=r"test-00000-of-00001\.parquet: not a readable"):
        prepare_skit_s2i(hub, tmp_path / "out")
    assert calls == []  # every shard is opened before anything is written
    assert (tmp_path / "out" / "hub_copy" / "train.csv").is_file()  # the last good unpacking
    assert not (tmp_path / "out" / "hub_copy.partial").exists()


def test_skit_hub_copy_row_without_audio_is_rejected_and_logged(tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = make_skit_s2i(tmp_path / "zip", speakers=("1", "2", "3"), broken=())
    hub = make_skit_s2i_hub(corpus.root, tmp_path / "hub")
    shard = hub / "data" / "test-00000-of-00001.parquet"
    table = pq.read_table(shard)
    audio = table["audio"].to_pylist()
    audio[0] = None
    pq.write_table(table.set_column(0, "audio", pa.array(audio, table["audio"].type)), shard)
    out = prepare_skit_s2i(hub, tmp_path / "out")
    assert "not found" in rejected_of(out)["s2i-test-0"]["reason"]
    assert "data/test-00000-of-00001.parquet row 0: no audio bytes" in caplog.text
    assert len(rows_by_id(out)) == len(corpus.good) - 1


def test_skit_hub_copy_without_a_column_names_the_shard(tmp_path):
    import pyarrow.parquet as pq

    corpus = make_skit_s2i(tmp_path / "zip", speakers=("1", "2", "3"), broken=())
    hub = make_skit_s2i_hub(corpus.root, tmp_path / "hub")
    shard = hub / "data" / "test-00000-of-00001.parquet"
    pq.write_table(pq.read_table(shard).drop_columns(["speaker_id"]), shard)
    with pytest.raises(CorpusError, match=r"test-00000-of-00001\.parquet: missing column\(s\) "
                                          r"speaker_id"):
        prepare_skit_s2i(hub, tmp_path / "out")


def test_skit_with_parquet_files_but_not_both_splits_says_so(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    (tmp_path / "intent_info.csv").write_text("intent_class,intent_name,description\n")
    with pytest.raises(CorpusError, match=r"train\.csv: not found.*Parquet files.*not both"):
        prepare_skit_s2i(tmp_path, tmp_path / "out")


def test_same_seed_gives_byte_identical_manifests(skit, skit_speaker, tmp_path):
    again = prepare_skit_s2i(skit.root, tmp_path / "again", split="speaker")
    assert manifest_bytes(again) == manifest_bytes(skit_speaker)


def test_other_seeds_give_other_speaker_splits(skit, skit_speaker, tmp_path):
    reference = speakers_per_split(skit_speaker)
    others = [speakers_per_split(prepare_skit_s2i(skit.root, tmp_path / f"s{seed}", seed=seed))
              for seed in (1, 2, 3)]
    assert any(other != reference for other in others)


def test_rerun_with_same_options_skips_and_force_redoes(skit, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = prepare_skit_s2i(skit.root, out)
    before = manifest_bytes(first)
    calls = []
    real_scan = common.scan_audio
    monkeypatch.setattr(common, "scan_audio",
                        lambda *a, **k: calls.append(1) or real_scan(*a, **k))
    assert prepare_skit_s2i(skit.root, out) == first
    assert calls == []  # skipped: no audio was read
    assert prepare_skit_s2i(skit.root, out, force=True) == first
    assert calls == [1]
    assert manifest_bytes(first) == before


def test_rerun_with_other_options_redoes(skit, tmp_path):
    out = tmp_path / "out"
    prepare_skit_s2i(skit.root, out, split="speaker")
    prepare_skit_s2i(skit.root, out, split="official")
    assert {row["split_scheme"] for row in read_manifest(out / "test.csv")} == {"official"}


def test_edited_label_file_is_not_skipped(tmp_path):
    corpus = make_skit_s2i(tmp_path / "corpus", speakers=("a", "b", "c"), broken=())
    out = tmp_path / "out"
    prepare_skit_s2i(corpus.root, out)
    info = corpus.root / "intent_info.csv"
    info.write_text(info.read_text().replace("branch_address", "branch_location"))
    paths = prepare_skit_s2i(corpus.root, out)
    assert "branch_location" in {row["intent"] for row in read_manifests(list(paths.values()))}


@pytest.mark.parametrize("layout", ["zip", "hub"])
def test_manifests_still_resolve_after_moving_the_output_folder(layout, tmp_path):
    # The Hub copy's audio is unpacked into the output folder (hub_copy/), the zip's stays
    # where the corpus is: both must survive the output folder being moved.
    corpus = make_skit_s2i(tmp_path / "zip", speakers=("1", "2", "3"), broken=())
    source = make_skit_s2i_hub(corpus.root, tmp_path / "hub") if layout == "hub" else corpus.root
    out, moved = tmp_path / "out", tmp_path / "moved"
    prepare_skit_s2i(source, out)
    shutil.move(out, moved)
    rows = read_manifests([moved / f"{split}.csv" for split in ("train", "valid", "test")])
    assert rows
    for row in rows:
        assert not row["wav"].startswith(str(out) + os.sep)
        assert open(row["wav"], "rb").read(4) == b"RIFF"


# ----------------------------------------------------------------------- CREMA-D


def test_crema_keeps_every_good_file_with_its_labels(crema, crema_out):
    rows = rows_by_id(crema_out)
    assert set(rows) == set(crema.good)
    for row_id, expected in crema.good.items():
        row = rows[row_id]
        assert row["task"] == "emotion" and row["intent"] == ""
        assert row["emotion"] == expected["emotion"]
        assert row["speaker"] == expected["speaker"]
        assert row["sentence"] == expected["sentence"]
        assert row["level"] == expected["level"]
        assert row["sample_rate"] == "16000"
        assert row["split_scheme"] == "actor"
        assert row["duration"] == pytest.approx(expected["duration"], abs=1e-3)


def test_crema_rejects_broken_files_and_bad_names(crema, crema_out):
    rejected = rejected_of(crema_out)
    assert set(rejected) == set(crema.broken)  # README.txt is not a recording: not listed
    for row_id, word in crema.broken.items():
        assert word in rejected[row_id]["reason"], rejected[row_id]


def test_crema_split_is_actor_disjoint(crema_out):
    speakers = speakers_per_split(crema_out)
    assert all(speakers.values()), speakers
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]


def test_crema_without_audio_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="AudioWAV: not found"):
        prepare_crema_d(tmp_path, tmp_path / "out")


def test_crema_kept_under_an_older_copys_data_folder_is_named_in_the_error(tmp_path):
    (tmp_path / "data" / "AudioWAV").mkdir(parents=True)
    with pytest.raises(CorpusError, match=r"older copies keep it under data/: pass .*data\)"):
        prepare_crema_d(tmp_path, tmp_path / "out")


def test_crema_with_both_names_of_the_renamed_clip_keeps_it_once(tmp_path):
    corpus = make_crema_d(tmp_path / "crema", broken=())
    audio = corpus.root / "AudioWAV"
    shutil.copy(audio / "1040_ITH_SAD_X.wav", audio / "1040_ITH_SAD_XX.wav")
    out = prepare_crema_d(corpus.root, tmp_path / "out")
    assert set(rows_by_id(out)) == set(corpus.good)
    assert "1040_ITH_SAD_XX.wav is here too" in rejected_of(out)["crema-1040_ITH_SAD_X"]["reason"]


def test_crema_same_seed_gives_identical_manifests(crema, crema_out, tmp_path):
    again = prepare_crema_d(crema.root, tmp_path / "again")
    assert manifest_bytes(again) == manifest_bytes(crema_out)


# ------------------------------------------------------------------- generic CSV


def test_csv_with_speakers_gets_a_speaker_disjoint_split(bank, tmp_path):
    paths = prepare_generic_csv(bank.root / "labels.csv", tmp_path / "out")
    rows = rows_by_id(paths)
    assert set(rows) == set(bank.good)
    for row_id, expected in bank.good.items():
        assert rows[row_id]["intent"] == expected["intent"]
        assert rows[row_id]["emotion"] == expected["emotion"]
        assert rows[row_id]["task"] == "both"
        assert rows[row_id]["split_scheme"] == "speaker"
    speakers = speakers_per_split(paths)
    assert not speakers["train"] & (speakers["valid"] | speakers["test"])
    assert not speakers["valid"] & speakers["test"]


def test_csv_rejects_broken_and_unlabelled_rows(bank, tmp_path):
    paths = prepare_generic_csv(bank.root / "labels.csv", tmp_path / "out")
    rejected = rejected_of(paths)
    assert set(rejected) == set(bank.broken)
    for row_id, word in bank.broken.items():
        assert word in rejected[row_id]["reason"]


def test_csv_without_speakers_gets_a_stratified_random_split(tmp_path):
    corpus = make_generic_csv(tmp_path / "bank", with_speakers=False, broken=())
    paths = prepare_generic_csv(corpus.root / "labels.csv", tmp_path / "out",
                                valid_fraction=0.2, test_fraction=0.2)
    rows = read_manifests(list(paths.values()))
    assert {row["split_scheme"] for row in rows} == {"random"}
    for split in ("train", "valid", "test"):
        intents = {row["intent"] for row in rows if row["split"] == split}
        assert intents == {"open_account", "close_account", "report_fraud"}, split
    # Stratified: each intent's share of each split is its own 20 %, not the draw's luck.
    for intent in ("open_account", "close_account", "report_fraud"):
        mine = [row["split"] for row in rows if row["intent"] == intent]
        assert mine.count("valid") == mine.count("test") == round(0.2 * len(mine)), intent


def test_csv_split_as_test_writes_only_the_test_manifest(bank, tmp_path):
    out = tmp_path / "out"
    prepare_generic_csv(bank.root / "labels.csv", out)
    paths = prepare_generic_csv(bank.root / "labels.csv", out, split_as="test")
    assert list(paths) == ["test"]
    assert {row["id"] for row in read_manifest(paths["test"])} == set(bank.good)
    # The earlier run's train/valid manifests must not linger as if current.
    assert not (out / "train.csv").exists() and not (out / "valid.csv").exists()


def test_csv_duplicate_rows_are_rejected_not_dropped(bank, tmp_path):
    folder = tmp_path / "bank"
    shutil.copytree(bank.root, folder)
    labels = folder / "labels.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines + [lines[1]]) + "\n")
    paths = prepare_generic_csv(labels, tmp_path / "out")
    duplicate = lines[1].split(",")[0][: -len(".wav")]
    assert duplicate in rows_by_id(paths)
    assert "duplicate id (first seen at line 2)" in rejected_of(paths)[duplicate]["reason"]


def test_label_row_with_extra_fields_is_a_clear_error(tmp_path):
    corpus = make_skit_s2i(tmp_path / "corpus", speakers=("a", "b", "c"), broken=())
    train = corpus.root / "train.csv"
    lines = train.read_text().splitlines()
    lines[3] = lines[3].replace("template for", "template, for")
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=r"train\.csv: line 4 has 6 fields but the header has 5"):
        prepare_skit_s2i(corpus.root, tmp_path / "out")


def test_csv_without_label_columns_is_a_clear_error(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,speaker\na.wav,s1\n")
    with pytest.raises(CorpusError, match=r"labels\.csv: needs an 'intent' or an 'emotion'"):
        prepare_generic_csv(labels, tmp_path / "out")


def test_csv_without_path_column_is_a_clear_error(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,intent\na.wav,block\n")
    with pytest.raises(CorpusError, match=r"labels\.csv: missing required column\(s\) path"):
        prepare_generic_csv(labels, tmp_path / "out")


# ------------------------------------------------------------------------ common


def test_a_speaker_in_two_splits_is_refused():
    rows = [{"id": "a", "speaker": "s1", "split": "train"},
            {"id": "b", "speaker": "s1", "split": "test"}]
    with pytest.raises(CorpusError, match="s1: test, train"):
        common.check_speaker_disjoint(rows, "demo")


def test_too_few_speakers_for_a_speaker_split_is_refused():
    rows = [{"id": "a", "speaker": "s1"}, {"id": "b", "speaker": "s2"}]
    with pytest.raises(CorpusError, match="needs at least 3 speakers; found 2"):
        common.assign_speaker_splits(rows, 0.1, 0.1, seed=0)


def test_speaker_split_sizes_follow_the_fractions():
    rows = [{"id": f"{s}-{i}", "speaker": f"s{s:02d}"} for s in range(20) for i in range(10)]
    common.assign_speaker_splits(rows, valid_fraction=0.1, test_fraction=0.2, seed=7)
    counts = {split: sum(row["split"] == split for row in rows) for split in ("valid", "test")}
    assert counts == {"valid": 20, "test": 40}


def test_preparer_subcommands_parse_and_run(skit, crema, bank, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="multitask")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    commands = [
        ["prepare-skit-s2i", "--corpus", str(skit.root), "--out", str(tmp_path / "s"),
         "--split", "official", "--seed", "5"],
        ["prepare-crema-d", "--corpus", str(crema.root), "--out", str(tmp_path / "c"),
         "--valid-fraction", "0.15"],
        ["prepare-csv", "--csv", str(bank.root / "labels.csv"), "--out", str(tmp_path / "b"),
         "--split-as", "test", "--id-prefix", "bank-"],
    ]
    for argv in commands:
        args = parser.parse_args(argv)
        args.func(args)
    printed = capsys.readouterr().out
    assert str(tmp_path / "s" / "valid.csv") in printed
    assert str(tmp_path / "c" / "test.csv") in printed
    assert all(row["id"].startswith("bank-") for row in read_manifest(tmp_path / "b/test.csv"))
    # The options reached the preparers, as their records say.
    options = {name: json.loads((tmp_path / name / "prepare_options.json").read_text())
               for name in ("s", "c")}
    assert options["s"]["options"]["split"] == "official" and options["s"]["options"]["seed"] == 5
    assert options["c"]["options"]["valid_fraction"] == 0.15


@pytest.mark.parametrize("valid, test, named", [
    (1.5, 0.1, r"must be in \[0, 1\); got 1.5 and 0.1"),
    (float("nan"), 0.1, r"must be in \[0, 1\); got nan and 0.1"),
    (0.5, 0.5, r"must be below 1, to leave training data; got 1.0"),
])
def test_split_fractions_that_leave_no_training_data_are_refused(tmp_path, valid, test, named):
    with pytest.raises(CorpusError, match=named):
        prepare_generic_csv(tmp_path / "labels.csv", tmp_path / "out", valid_fraction=valid,
                            test_fraction=test)


def test_a_label_csv_that_is_not_utf8_is_named_wherever_the_bad_byte_is(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(("path,intent\n" + "a.wav,x\n" * 3000 + "caf\xe9.wav,x\n").encode("latin-1"))
    with pytest.raises(CorpusError, match=rf"{labels}: not UTF-8 text \(byte 24015\)"):
        prepare_generic_csv(labels, tmp_path / "out")


@pytest.mark.parametrize("text, message", [
    ("path,intent\n", "lists no recordings (a header, no rows)"),
    ("path,intent,intent\na.wav,x,y\n", "column(s) 'intent' appear more than once in the header"),
    ("path,intent,speaker\na.wav,x,s1\nb.wav,y,s1\n",
     "a speaker-disjoint split into train/test/valid needs at least 3 speakers"),
])
def test_generic_csv_that_cannot_be_split_as_written_names_the_csv(tmp_path, text, message):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(text)
    with pytest.raises(CorpusError, match=re.escape(f"{csv_path}: {message}")):
        prepare_generic_csv(csv_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_skit_hub_copy_is_never_unpacked_over_itself_or_another_folder(tmp_path):
    corpus = make_skit_s2i(tmp_path / "zip", speakers=("1", "2", "3"), broken=())
    out = tmp_path / "out"
    hub = make_skit_s2i_hub(corpus.root, out / "hub_copy")  # downloaded where it would go
    with pytest.raises(CorpusError, match="would go inside the Hub copy"):
        prepare_skit_s2i(hub, out)
    assert (hub / "data" / "test-00000-of-00001.parquet").is_file()
    other = tmp_path / "other"
    (other / "hub_copy").mkdir(parents=True)
    (other / "hub_copy" / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="is not an unpacking of the Hub copy"):
        prepare_skit_s2i(hub, other)
    assert (other / "hub_copy" / "notes.txt").read_text() == "mine"
