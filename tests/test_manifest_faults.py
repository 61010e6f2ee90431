"""Manifest faults stop a run before training, with an error naming the manifest and rows."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from multitask.data import build_label_encoders, check_manifests, row_problems
from multitask.manifest import ManifestError, corpus_version, read_manifest, write_manifest


@pytest.fixture
def corpus(toy_corpus, tmp_path):
    """A private copy of the toy corpus (manifests and audio) that a test may change."""
    root = tmp_path / "corpus"
    shutil.copytree(os.path.dirname(toy_corpus["train"]), root)
    return {split: str(root / f"{split}.csv") for split in ("train", "valid", "test")}


def encoders_for(corpus, folder):
    return build_label_encoders(read_manifest(corpus["train"]), folder)


def check(corpus, folder, **kwargs):
    manifests = {"train": [corpus["train"]], "valid": [corpus["valid"]],
                 "test": [corpus["test"]], **kwargs.pop("manifests", {})}
    check_manifests(manifests, encoders_for(corpus, folder / "save"), folder / "save", **kwargs)


def rewrite(path, change):
    """Apply ``change(rows)`` to a manifest (wav paths kept relative to its folder)."""
    rows = read_manifest(path)
    for row in rows:
        row["wav"] = os.path.relpath(row["wav"], os.path.dirname(path))
    write_manifest(path, change(rows))


def test_the_toy_manifests_pass(corpus, tmp_path):
    check(corpus, tmp_path, data_root=os.path.dirname(corpus["train"]))


def test_a_duplicate_id_within_a_manifest_is_named_with_the_manifest(corpus, tmp_path):
    rewrite(corpus["valid"], lambda rows: rows + [dict(rows[0], wav=rows[1]["wav"])])
    with pytest.raises(ManifestError) as err:
        check(corpus, tmp_path)
    first = read_manifest(corpus["valid"])[0]["id"]
    assert f"{corpus['valid']}: id {first!r}" in str(err.value)
    assert "duplicate id" in str(err.value)


def test_an_id_in_two_training_manifests_is_refused(corpus, tmp_path):
    copy = os.path.join(os.path.dirname(corpus["train"]), "train_again.csv")
    shutil.copyfile(corpus["train"], copy)
    with pytest.raises(ManifestError) as err:
        check(corpus, tmp_path, manifests={"train": [corpus["train"], copy]})
    assert f"{copy} (train): 48 id(s) also in {corpus['train']} (train)" in str(err.value)


def test_a_test_row_that_is_also_a_training_row_is_refused(corpus, tmp_path):
    leaked = read_manifest(corpus["train"])[5]["id"]
    rewrite(corpus["test"], lambda rows: rows + [r for r in read_manifest(corpus["train"])
                                                 if r["id"] == leaked])
    with pytest.raises(ManifestError) as err:
        check(corpus, tmp_path)
    assert f"{corpus['test']} (test): 1 id(s) also in {corpus['train']} (train): {leaked!r}" in str(
        err.value)


def test_one_test_set_scored_under_two_names_or_a_subset_of_it_is_allowed(corpus, tmp_path):
    subset = os.path.join(os.path.dirname(corpus["test"]), "test_intent.csv")
    shutil.copyfile(corpus["test"], subset)
    rewrite(subset, lambda rows: [r for r in rows if r["intent"]])
    check(corpus, tmp_path, manifests={"test": [corpus["test"], corpus["test"], subset]})


def test_a_label_the_training_rows_do_not_have_is_refused_in_valid_and_test(corpus, tmp_path):
    rewrite(corpus["test"], lambda rows: [dict(rows[0], id="odd", intent="teleport")] + rows)
    with pytest.raises(ManifestError) as err:
        check(corpus, tmp_path)
    message = str(err.value)
    assert f"{corpus['test']}: id 'odd'" in message
    assert "intent label 'teleport' is not one of the 2 the model has: high, low" in message


def test_a_resumed_run_whose_saved_label_encoder_lacks_a_new_label_is_refused(corpus, tmp_path):
    encoders_for(corpus, tmp_path / "save")  # the run's first start saved its encoders
    rewrite(corpus["train"], lambda rows: rows + [dict(rows[0], id="new", intent="teleport")])
    with pytest.raises(ManifestError) as err:
        check(corpus, tmp_path)
    assert f"{corpus['train']}: id 'new'" in str(err.value)
    assert "'teleport' is not one of the 2 the model has" in str(err.value)


@pytest.mark.parametrize("escape", ["dotdot", "symlink", "absolute"])
def test_audio_outside_data_root_is_refused_after_following_dotdot_and_symlinks(
    escape, corpus, tmp_path
):
    root = os.path.dirname(corpus["train"])
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    first = read_manifest(corpus["train"])[0]
    shutil.copyfile(first["wav"], outside / "x.wav")
    if escape == "symlink":
        os.symlink(outside / "x.wav", os.path.join(root, "wav", "link.wav"))
        wav = os.path.join("wav", "link.wav")
    else:
        wav = "../elsewhere/x.wav" if escape == "dotdot" else str(outside / "x.wav")
    rewrite(corpus["train"], lambda rows: [dict(rows[0], id="escapee", wav=wav)] + rows[1:])
    check(corpus, tmp_path)  # no data_root: any path
    with pytest.raises(ManifestError) as err:
        check(corpus, tmp_path, data_root=root)
    message = str(err.value)
    assert f"{corpus['train']}: id 'escapee'" in message
    assert f"resolves to {outside / 'x.wav'}, outside data_root ({os.path.realpath(root)})" in message


def prepared(folder, inputs):
    """What a preparer leaves beside its manifests (``prepare_options.json``)."""
    record = {"preparer": "skit_s2i", "format_version": 1, "inputs": inputs,
              "options": {"corpus_dir": str(folder)}, "outputs": ["train", "valid", "test"]}
    (folder / "prepare_options.json").write_text(json.dumps(record))


def test_manifests_from_two_versions_of_one_corpus_are_refused(corpus, tmp_path):
    release1 = tmp_path / "corpus"
    prepared(release1, {"train.csv": "aaa"})
    release2 = tmp_path / "corpus_v2"
    shutil.copytree(release1, release2)
    prepared(release2, {"train.csv": "bbb"})  # e.g. a relabelled release
    v1, v2 = corpus_version(release1 / "test.csv"), corpus_version(release2 / "test.csv")
    assert v1["preparer"] == "skit_s2i" and v1["version"] != v2["version"]
    with pytest.raises(ManifestError) as err:
        check(corpus, tmp_path, manifests={"test": [str(release2 / "test.csv")]})
    message = str(err.value)
    assert "skit_s2i manifests from 2 corpus versions" in message
    assert f"version {v1['version']}: {corpus['train']} (train), {corpus['valid']} (valid)" in message
    assert f"version {v2['version']}: {release2 / 'test.csv'} (test)" in message


def test_the_same_release_moved_elsewhere_keeps_its_version(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        record = {"preparer": "crema_d", "format_version": 1, "inputs": {"AudioWAV": "x"},
                  "options": {"corpus_dir": f"/data/{name}", "seed": 1}}
        (tmp_path / name / "prepare_options.json").write_text(json.dumps(record))
    assert corpus_version(tmp_path / "a" / "t.csv") == corpus_version(tmp_path / "b" / "t.csv")
    assert corpus_version(tmp_path / "t.csv") is None  # made without a preparer


def test_resuming_checkpoints_on_another_corpus_version_is_refused(corpus, tmp_path):
    check(corpus, tmp_path)  # the first start records the rows
    (tmp_path / "save" / "CKPT+epoch-0001").mkdir()  # ... and a checkpoint was saved
    check(corpus, tmp_path)  # the same rows resume
    prepared(tmp_path / "corpus", {"train.csv": "release 2"})
    rewrite(corpus["train"], lambda rows: rows[:-4])  # release 2 dropped four recordings
    with pytest.raises(ManifestError) as err:
        check(corpus, tmp_path)
    message = str(err.value)
    assert "data_signature.json: the checkpoints in" in message
    assert f"train: trained on {corpus['train']} (48 rows); now {corpus['train']} (44 rows, " \
           "skit_s2i corpus version" in message
    assert "new output_folder" in message


def test_resuming_on_as_many_rows_with_other_labels_says_what_changed(corpus, tmp_path):
    check(corpus, tmp_path)
    (tmp_path / "save" / "CKPT+epoch-0001").mkdir()

    def swap_first_intents(rows):
        intents = [i for i, row in enumerate(rows) if row["intent"]]
        low, high = (next(i for i in intents if rows[i]["intent"] == label)
                     for label in ("low", "high"))
        rows[low]["intent"], rows[high]["intent"] = "high", "low"
        return rows

    rewrite(corpus["train"], swap_first_intents)
    with pytest.raises(ManifestError, match=r"\(48 rows\) \(as many rows, but other ids, "
                                            r"labels or durations\)"):
        check(corpus, tmp_path)


def test_before_the_first_checkpoint_changed_manifests_are_simply_recorded(corpus, tmp_path):
    check(corpus, tmp_path)
    rewrite(corpus["train"], lambda rows: rows[:-4])
    check(corpus, tmp_path)  # nothing was trained on the old rows
    signature = json.loads((tmp_path / "save" / "data_signature.json").read_text())
    assert signature["train"][0]["rows"] == 44


def test_the_recipe_stops_before_training_and_names_the_faulty_manifest(
    corpus, group_norm_encoder, tmp_path
):
    rewrite(corpus["valid"], lambda rows: rows + [dict(rows[0], id="odd", emotion="smug",
                                                       intent="", task="emotion")])
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "recipes/train.py", "hparams/tiny.yaml",
         f"--encoder_source={group_norm_encoder}", f"--output_folder={out}",
         f"--train_manifests=[{corpus['train']}]", f"--valid_manifests=[{corpus['valid']}]",
         f"--data_root={os.path.dirname(corpus['train'])}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "error: 1 problem(s) in the manifests; nothing was trained" in output
    assert f"{corpus['valid']}: id 'odd'" in output and "Traceback" not in output
    assert "emotion label 'smug'" in output
    assert not (out / "train_log.txt").exists() and not list((out / "save").glob("CKPT+*"))


def test_a_preparer_stamps_its_manifests_with_the_corpus_release_not_its_place_or_split(tmp_path):
    from corpus_fixtures import make_skit_s2i

    from multitask.prepare import prepare_skit_s2i

    make_skit_s2i(tmp_path / "skit", speakers=("1", "2", "3", "4"), train_per_pair=1, broken=())
    first = prepare_skit_s2i(tmp_path / "skit", tmp_path / "out1", seed=1)
    shutil.copytree(tmp_path / "skit", tmp_path / "moved")
    other_split = prepare_skit_s2i(tmp_path / "moved", tmp_path / "out2", seed=2)
    assert corpus_version(first["train"]) == corpus_version(other_split["test"])

    lines = (tmp_path / "moved" / "train.csv").read_text().splitlines(keepends=True)
    (tmp_path / "moved" / "train.csv").write_text("".join(lines[:-1]))  # release 2: one fewer
    release2 = prepare_skit_s2i(tmp_path / "moved", tmp_path / "out3", seed=1)
    assert corpus_version(release2["test"]) != corpus_version(first["test"])
    rows = read_manifest(first["train"])
    with pytest.raises(ManifestError, match="skit-s2i manifests from 2 corpus versions"):
        check_manifests({"train": first["train"], "valid": first["valid"], "test": release2["test"]},
                        build_label_encoders(rows, tmp_path / "save", tasks=["intent"]),
                        probe=False)


def test_generic_csv_splits_prepared_from_separate_files_are_not_versions_of_one_corpus(
    corpus, tmp_path
):
    for split, name in (("train", "train.csv"), ("valid", "valid.csv")):
        folder = tmp_path / f"bank_{split}"
        folder.mkdir()
        write_manifest(folder / f"{split}.csv", read_manifest(corpus[split]))  # absolute wavs
        record = {"preparer": "generic-csv", "format_version": 1, "inputs": {name: split}}
        (folder / "prepare_options.json").write_text(json.dumps(record))
        corpus[split] = str(folder / f"{split}.csv")
    check(corpus, tmp_path)


def test_a_silent_clip_in_any_split_is_named_before_training(corpus, tmp_path):
    import numpy as np
    import soundfile as sf

    silent_test = read_manifest(corpus["test"])[0]
    sf.write(silent_test["wav"], np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(ManifestError) as err:
        check(corpus, tmp_path)
    assert f"{corpus['test']}: id {silent_test['id']!r}" in str(err.value)
    assert "silent" in str(err.value)
    sf.write(silent_test["wav"], np.random.default_rng(0).uniform(-.3, .3, 16000), 16000)
    check(corpus, tmp_path)
    silent_train = read_manifest(corpus["train"])[0]
    sf.write(silent_train["wav"], np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(ManifestError, match=re.escape(f"{corpus['train']}: id {silent_train['id']!r}")):
        check(corpus, tmp_path)


def test_a_row_without_any_label_and_a_spreadsheets_byte_order_mark(corpus, tmp_path):
    rewrite(corpus["valid"], lambda rows: [dict(rows[0], intent="", emotion="", task=""),
                                           *rows[1:]])
    with pytest.raises(ManifestError, match=r"valid\.csv: row 2 \(id '.*'\) has neither an intent "
                                            "nor an emotion label"):
        read_manifest(corpus["valid"])
    text = open(corpus["train"], encoding="utf-8").read()
    with open(corpus["train"], "w", encoding="utf-8-sig") as fout:  # Excel's "CSV UTF-8"
        fout.write(text)
    assert [row["id"] for row in read_manifest(corpus["train"])][:1] == [text.split("\n")[1].split(",")[0]]


def test_a_ragged_row_and_a_manifest_without_label_columns_are_named(tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("id,wav,duration,intent\nu1,a.wav,1.0,lost\nu2,b.wav\n")
    with pytest.raises(ManifestError, match=r"ragged\.csv: row 3 has fewer fields than the header"):
        read_manifest(ragged)
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("id,wav,duration,speaker\nu1,a.wav,1.0,ann\n")
    with pytest.raises(ManifestError, match=r"unlabelled\.csv: no intent or emotion column "
                                            r"\(columns: id, wav, duration, speaker\)"):
        read_manifest(unlabelled)


def test_a_manifest_row_with_an_unknown_task_or_no_label_is_named(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("id,wav,duration,task,intent,emotion\nr,a.wav,1.0,sentiment,low,\n")
    with pytest.raises(ManifestError, match=r"train.csv: row 2 \(id 'r'\) has task 'sentiment'; "
                                            r"the task column is one of intent, emotion, both"):
        read_manifest(path)
    path.write_text("id,wav,duration,task,intent,emotion\nr,a.wav,1.0,intent,,\n")
    rows = read_manifest(path)  # the commands that read it say what they need of its labels
    encoders = build_label_encoders([{"intent": "low", "emotion": "dull"}], tmp_path / "save")
    assert row_problems(rows, encoders, probe=False) == [
        f"id 'r' ({tmp_path / 'a.wav'}): no label of the run's tasks (intent, emotion)"]


@pytest.mark.parametrize("text, message", [
    ("id,wav,duration,intent,intent\na,a.wav,1.0,x,y\n",
     "column(s) 'intent' appear more than once in the header"),
    ("id,wav,duration,intent\na,a.wav,nan,x\n", "row 2 (id 'a') has duration nan"),
    ("id,wav,duration,intent\na,a.wav,-1,x\n", "row 2 (id 'a') has duration -1.0"),
    ("id,wav,duration,intent\na,a.wav,inf,x\n", "row 2 (id 'a') has duration inf"),
    ("id,wav,duration,intent\na,,1.0,x\n", "row 2 (id 'a') has no wav path"),
])
def test_a_csv_manifest_that_would_be_read_wrongly_is_refused(tmp_path, text, message):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ManifestError, match=re.escape(f"{path}: {message}")):
        read_manifest(path)


@pytest.mark.parametrize("data, message", [
    ([{"wav": "a.wav"}], "a JSON manifest is an object of entries by id, not a list"),
    ({"a": 1}, "entry 'a' is not an object of columns"),
    ({"a": {"wav": None, "duration": 1.0, "intent": "x"}}, "entry 'a' has no value (null) for wav"),
])
def test_a_json_manifest_of_another_shape_is_refused(tmp_path, data, message):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=re.escape(f"{path}: {message}")):
        read_manifest(path)


def test_a_spreadsheets_empty_trailing_columns_are_not_a_repeated_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,wav,duration,intent,,\na,a.wav,1.0,x,,\n")
    assert read_manifest(path)[0]["intent"] == "x"
