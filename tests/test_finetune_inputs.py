"""`multitask finetune` given bad input: a clear error naming the problem and the file,
before anything of the user's is overwritten.

The parent is the session's tiny exported model (``trained_tiny``); the new domain is
``toy_data.write_new_domain``'s two tone intents. Most cases are refused before any
training, so they take a second or two each.
"""

import csv
import hashlib
import shutil
from pathlib import Path

import pytest
from toy_data import write_new_domain

from multitask.cli import main
from multitask.finetune import FinetuneError, finetune, parse_overrides
from multitask.prepare import CorpusError

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]

ONE_EPOCH = {"number_of_epochs": 1, "batch_size": 4, "warmup_steps": 0,
             "task_augmentation": None}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    return write_new_domain(tmp_path_factory.mktemp("new_domain"), 6, 1)


def test_a_run_folder_that_is_a_file_is_refused(exported_model, train_csv, tmp_path):
    out = tmp_path / "run.txt"
    out.write_text("notes\n")
    with pytest.raises(FinetuneError, match=r"run.txt: a file, not a folder"):
        finetune(str(exported_model), train_csv, out)
    assert out.read_text() == "notes\n"


@pytest.mark.parametrize("where", ["the parent", "a folder holding the parent"])
def test_a_run_folder_that_would_overwrite_the_parent_is_refused(exported_model, train_csv,
                                                                 tmp_path, where):
    parent = tmp_path / "run" / "export"
    shutil.copytree(exported_model, parent)
    before = {p.name: digest(p) for p in parent.iterdir() if p.is_file()}
    out = parent if where == "the parent" else parent.parent
    with pytest.raises(FinetuneError, match=r"holds the parent model .* use another --out"):
        finetune(str(parent), train_csv, out)
    assert {p.name: digest(p) for p in parent.iterdir() if p.is_file()} == before


def test_a_run_folder_that_is_another_exported_model_is_refused(exported_model, train_csv,
                                                                tmp_path):
    other = tmp_path / "other_model"
    shutil.copytree(exported_model, other)
    before = digest(other / "hyperparams.yaml")
    with pytest.raises(FinetuneError, match=r"other_model is an exported model; the run would "
                                            r"write over it"):
        finetune(str(exported_model), train_csv, other)
    assert digest(other / "hyperparams.yaml") == before


@pytest.mark.parametrize("overrides, named", [
    ({"seed": "abc"}, r"seed must be a whole number of at least 0, not 'abc'"),
    ({"number_of_epochs": 0}, r"number_of_epochs must be a whole number of at least 1, not 0"),
    ({"encoder_lr": "abc"}, r"encoder_lr must be a number of at least 0.0, not 'abc'"),
    ({"head_lr": -1}, r"head_lr must be a number of at least 0.0, not -1"),
    ({"batch_size": 0}, r"batch_size must be a whole number of at least 1, not 0"),
    ({"train_batching": {"batch_size": 0, "max_batch_seconds": None}},
     r"--train_batching.batch_size must be a whole number of at least 1, not 0"),
])
def test_a_setting_that_is_not_a_usable_number_is_refused(exported_model, train_csv, tmp_path,
                                                          overrides, named):
    with pytest.raises(FinetuneError, match=named):
        finetune(str(exported_model), train_csv, tmp_path / "run", overrides=overrides)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("count", [0, -3])
def test_replay_per_class_below_one_is_refused(exported_model, train_csv, tmp_path, count):
    with pytest.raises(FinetuneError, match=rf"--replay-per-class must be a whole number of at least 1, not {count}"):
        finetune(str(exported_model), train_csv, tmp_path / "run", mode="extend",
                 replay=[train_csv], replay_per_class=count)


def test_a_missing_or_broken_hparams_file_is_named(exported_model, train_csv, tmp_path):
    with pytest.raises(FinetuneError, match=r"--hparams .*nope.yaml: cannot be read"):
        finetune(str(exported_model), train_csv, tmp_path / "a",
                 hparams_file=str(tmp_path / "nope.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1\n")
    with pytest.raises(FinetuneError, match=r"--hparams .*broken.yaml: not valid YAML"):
        finetune(str(exported_model), train_csv, tmp_path / "b", hparams_file=str(broken))


def test_an_hparams_file_whose_setting_is_not_a_number_or_lacks_its_include_is_named(
        exported_model, train_csv, tmp_path):
    from multitask.finetune.run import DEFAULT_HPARAMS

    text = DEFAULT_HPARAMS.read_text(encoding="utf-8")
    assert "\nnumber_of_epochs: 20\n" in text
    folder = tmp_path / "hparams"
    folder.mkdir()
    (folder / "epochs.yaml").write_text(text.replace("\nnumber_of_epochs: 20\n",
                                                     "\nnumber_of_epochs: abc\n"))
    with pytest.raises(FinetuneError, match=r"epochs.yaml: number_of_epochs must be a whole "
                                            r"number of at least 1, not 'abc'"):
        finetune(str(exported_model), train_csv, tmp_path / "a",
                 hparams_file=str(folder / "epochs.yaml"))
    (folder / "alone.yaml").write_text(text)  # without the model.yaml it includes
    with pytest.raises(FinetuneError, match=r"alone.yaml: loading it needs .*model.yaml \(a "
                                            r"file it includes or names\), which is not found"):
        finetune(str(exported_model), train_csv, tmp_path / "b",
                 hparams_file=str(folder / "alone.yaml"))


def test_an_override_that_is_not_yaml_is_named():
    with pytest.raises(FinetuneError, match=r"--task_weights: '\{emotion: \[1' is not a YAML"):
        parse_overrides(["--task_weights={emotion: [1"])


def test_a_new_intent_head_that_is_not_a_mapping_is_refused(exported_model, train_csv, tmp_path):
    with pytest.raises(FinetuneError, match=r"new_intent_head must be a mapping .* not 'banana'"):
        finetune(str(exported_model), train_csv, tmp_path / "run",
                 overrides={"new_intent_head": "banana"})


def test_a_training_csv_that_is_missing_a_folder_or_not_utf8_is_named(exported_model, tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("path,intent\nwavs/caf\xe9.wav,chirp\n".encode("latin-1"))
    late = tmp_path / "late.csv"  # past the first buffer a reader decodes
    late.write_bytes(("path,intent\n" + "wavs/a.wav,chirp\n" * 2000 + "wavs/caf\xe9.wav,"
                      "chirp\n").encode("latin-1"))
    for train, problem in ((tmp_path / "nope.csv", "not found"),
                           (tmp_path, "a folder, not a CSV file"),
                           (latin1, "not UTF-8 text"), (late, "not UTF-8 text")):
        with pytest.raises(FinetuneError, match=rf"{train}: {problem}"):
            finetune(str(exported_model), str(train), tmp_path / "run")


def test_a_training_csv_without_an_intent_column_says_so(exported_model, train_csv, tmp_path):
    text = open(train_csv, encoding="utf-8").read().replace("path,intent,", "path,label,", 1)
    csv_path = tmp_path / "no_intent.csv"
    csv_path.write_text(text)
    with pytest.raises(FinetuneError, match=rf"{csv_path}: no 'intent' column \(columns: "
                                            r"path, label, emotion, speaker\)"):
        finetune(str(exported_model), str(csv_path), tmp_path / "run")


def test_training_rows_without_an_intent_are_counted_in_the_users_csv(exported_model,
                                                                     train_csv, tmp_path):
    lines = open(train_csv, encoding="utf-8").read().splitlines()
    blanked = [lines[0]] + [line.replace(",chirp,", ",,") for line in lines[1:]]
    csv_path = tmp_path / "blank.csv"
    csv_path.write_text("\n".join(blanked) + "\n")
    with pytest.raises(FinetuneError, match=rf"{csv_path}: 6 row\(s\) without an intent \(e.g. "
                                            r"line 2, 'wavs/train_chirp_0.wav'\)"):
        finetune(str(exported_model), str(csv_path), tmp_path / "run")


def test_a_header_only_training_csv_names_the_users_file(exported_model, tmp_path):
    csv_path = tmp_path / "header.csv"
    csv_path.write_text("path,intent,speaker\n")
    with pytest.raises(CorpusError, match=rf"^{csv_path}: lists no recordings"):
        finetune(str(exported_model), str(csv_path), tmp_path / "run")


def test_an_intent_whose_every_clip_is_unusable_is_refused_when_the_csv_is_split(
        exported_model, train_csv, tmp_path):
    """Without --valid the CSV is split by the run; the lost intent is still named."""
    folder = tmp_path / "data"
    shutil.copytree(str(train_csv).rsplit("/", 1)[0], folder)
    (folder / "wavs" / "empty.wav").write_bytes(b"")
    with open(folder / "train.csv", "a", encoding="utf-8") as fout:
        fout.write("wavs/empty.wav,lonely,dull,train0\n")
    with pytest.raises(FinetuneError, match=r"intent\(s\) lonely have no usable recording left"):
        finetune(str(exported_model), str(folder / "train.csv"), tmp_path / "run")


def test_an_intent_only_in_the_held_out_part_names_the_split(exported_model, train_csv,
                                                             tmp_path):
    """One clip of an intent, its speaker drawn into the validation part."""
    folder = tmp_path / "data"
    shutil.copytree(str(train_csv).rsplit("/", 1)[0], folder)
    shutil.copy(folder / "wavs" / "train_chirp_0.wav", folder / "wavs" / "lonely.wav")
    rows = open(folder / "train.csv", encoding="utf-8").read().splitlines()
    for speaker in ("train0", "train1", "train2"):
        extra = rows + [f"wavs/lonely.wav,lonely,dull,{speaker}"]
        (folder / "one.csv").write_text("\n".join(extra) + "\n")
        try:
            finetune(str(exported_model), str(folder / "one.csv"), tmp_path / speaker,
                     overrides=ONE_EPOCH, export=False)
        except FinetuneError as err:
            message = str(err)
            break
    else:
        pytest.fail("no speaker of the lonely intent was held out")
    assert message.startswith(f"the validation part held out of {folder / 'one.csv'}")
    assert "give --valid" in message
    assert (f"lonely have no training example in the part of {folder / 'one.csv'} kept for "
            "training") in message


def test_a_validation_intent_missing_from_training_names_the_valid_file(exported_model,
                                                                       train_csv, tmp_path):
    valid = write_new_domain(tmp_path, 2, 2, labels={"chirp": 3000, "beep": 7000}, split="valid")
    with pytest.raises(FinetuneError, match=rf"^--valid {valid}: intent\(s\) beep have no "
                                            rf"training example in {train_csv}"):
        finetune(str(exported_model), train_csv, tmp_path / "run", valid=[valid])


def test_intents_spelled_two_ways_name_the_training_csv(exported_model, train_csv, tmp_path):
    text = open(train_csv, encoding="utf-8").read()
    csv_path = Path(train_csv).parent / "twice.csv"  # beside the clips it names
    csv_path.write_text(text.replace("wavs/train_chirp_0.wav,chirp,", "wavs/train_chirp_0.wav,"
                                     "Chirp,", 1))
    with pytest.raises(FinetuneError, match=rf"^{csv_path}: intents 'Chirp' and 'chirp' differ "
                                            r"only in case, spacing or punctuation"):
        finetune(str(exported_model), str(csv_path), tmp_path / "run")


def test_an_emotion_test_with_emotions_the_parent_lacks_names_the_file(exported_model, train_csv,
                                                                      toy_corpus, tmp_path):
    rows = list(csv.DictReader(open(toy_corpus["test"], encoding="utf-8")))
    for row in rows:
        row["emotion"] = "smug" if row["emotion"] == "dull" else row["emotion"]
    smug = tmp_path / "smug.csv"
    with open(smug, "w", newline="", encoding="utf-8") as fout:
        writer = csv.DictWriter(fout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(FinetuneError, match=rf"^--emotion {smug}: emotion label\(s\) smug are "
                                            r"not the parent's \(bright, dull\)"):
        finetune(str(exported_model), train_csv, tmp_path / "run", emotion=str(smug))


def run_files(out) -> dict:
    """Every file of a run folder and its digest (symlinks as their targets), but the log,
    where a refusal is logged."""
    return {str(path.relative_to(out)): (str(path.readlink()) if path.is_symlink()
                                         else digest(path))
            for path in sorted(out.rglob("*"))
            if (path.is_file() or path.is_symlink()) and path.name != "log.txt"}


def test_resuming_with_other_training_data_is_refused_before_the_record_changes(
        exported_model, train_csv, tmp_path):
    out = tmp_path / "run"
    finetune(str(exported_model), train_csv, out, overrides=ONE_EPOCH, export=False)
    before = run_files(out)
    fewer = write_new_domain(tmp_path / "fewer", 4, 1)
    # shots: the training rows left once the run holds a fifth out by speaker
    with pytest.raises(FinetuneError, match=r"was fine-tuned with shots \{'chirp': 4, "
                                            r"'whistle': 4\}, not \{'chirp': 3, 'whistle': 3\}"):
        finetune(str(exported_model), fewer, out, overrides=ONE_EPOCH, export=False)
    assert run_files(out) == before


def test_a_refused_rerun_leaves_the_run_folder_as_it_was(exported_model, train_csv, tmp_path):
    """Other intents: an export of the folder afterwards must still name the run's own
    labels (the label file, hyperparams.yaml and the run's data copies are not rewritten)."""
    out = tmp_path / "run"
    finetune(str(exported_model), train_csv, out, overrides=ONE_EPOCH, export=False)
    before = run_files(out)
    other = write_new_domain(tmp_path / "other", 6, 2, labels={"hum": 2000, "buzz": 4500})
    with pytest.raises(FinetuneError, match="resume it with the data and settings it started"):
        finetune(str(exported_model), other, out, overrides={**ONE_EPOCH, "head_lr": 0.5},
                 export=False)
    assert run_files(out) == before


def test_a_rerun_with_fewer_epochs_than_trained_leaves_the_run_folder_as_it_was(
        exported_model, train_csv, tmp_path):
    """Refused when the run's checkpoint is recovered, just before training: the folder's
    hyperparams.yaml and record must still say 2 epochs, or its export's card would say 1."""
    out = tmp_path / "run"
    finetune(str(exported_model), train_csv, out, overrides={**ONE_EPOCH, "number_of_epochs": 2},
             export=False)
    before = run_files(out)
    with pytest.raises(ValueError, match="this run has trained 2 epochs, more than "
                                         "number_of_epochs=1"):
        finetune(str(exported_model), train_csv, out, overrides=ONE_EPOCH, export=False)
    assert run_files(out) == before


def test_a_first_run_refused_before_training_leaves_nothing_to_refuse_the_next_by(
        exported_model, train_csv, tmp_path):
    """A first run refused after its data copies and settings were written (here: class
    biases asked for with a calls file that is not there) leaves none of them behind, so
    the corrected run is not compared with a run that never trained."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="missing.csv"):
        finetune(str(exported_model), train_csv, out, export=False,
                 overrides={**ONE_EPOCH, "class_bias_tasks": ["emotion"],
                            "class_bias_calls": str(tmp_path / "missing.csv")})
    left = {path.name for path in out.iterdir()} if out.exists() else set()
    assert not left & {"hyperparams.yaml", "data", "parent", "finetune.json"}, left
    assert not list((out / "save").glob("label_encoder_*"))
    finetune(str(exported_model), train_csv, out, overrides=ONE_EPOCH, export=False)


def test_the_command_prints_one_error_line(exported_model, train_csv, tmp_path, capsys):
    code = main(["finetune", "--from", str(exported_model), "--train", train_csv,
                 "--out", str(tmp_path / "run"), "--number_of_epochs=abc"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == "error: --number_of_epochs must be a whole number of at least 1, not 'abc'"


def test_a_parent_with_a_broken_file_is_named_once(exported_model, train_csv, tmp_path):
    parent = tmp_path / "parent"
    shutil.copytree(exported_model, parent)
    data = (parent / "heads.safetensors").read_bytes()
    (parent / "heads.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FinetuneError) as caught:
        finetune(str(parent), train_csv, tmp_path / "run")
    assert str(caught.value).startswith(f"{parent}/heads.safetensors: ")
    assert "cannot load" not in str(caught.value)
