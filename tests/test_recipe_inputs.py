"""The training recipe and the Python API given input that cannot work: refused in one
line that names it, before training, and without writing over anything of the user's
or of an earlier run.

Recipe runs are ``recipes/train.py hparams/tiny.yaml`` on the toy corpus (a few seconds
each when refused, about 15 s when one epoch trains).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from multitask.inference import MultitaskClassifier
from multitask.manifest import read_manifest, write_manifest

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]


def train(encoder, corpus, out, *extra, train_manifest=None):
    """``recipes/train.py`` with the toy corpus for one epoch, ``extra`` overriding; the
    finished process."""
    given = {arg.split("=")[0] for arg in extra}
    defaults = [arg for arg in (f"--encoder_source={encoder}", "--number_of_epochs=1")
                if arg.split("=")[0] not in given]
    return subprocess.run(
        [sys.executable, "recipes/train.py", "hparams/tiny.yaml", f"--output_folder={out}",
         f"--train_manifests=[{train_manifest or corpus['train']}]",
         f"--valid_manifests=[{corpus['valid']}]", *defaults, *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})


def refused(proc) -> str:
    """The last line of a refused run, which must not be a traceback's."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def digests(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "log.txt"}


def manifest_copy(path, folder, change=lambda rows: rows) -> str:
    """``path``'s rows, changed, in a manifest in ``folder`` (audio paths absolute)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / os.path.basename(path)
    write_manifest(out, change(read_manifest(path)))
    return str(out)


@pytest.mark.parametrize("holds", ["the user's files", "an exported model"])
def test_an_output_folder_of_other_files_is_refused(holds, group_norm_encoder, toy_corpus,
                                                    exported_model, tmp_path):
    out = tmp_path / "project"
    if holds == "an exported model":
        shutil.copytree(exported_model, out)
    else:
        out.mkdir()
        (out / "train.py").write_text("# the user's own script\n")
        (out / "hyperparams.yaml").write_text("seed: 1\n")
    before = digests(out)
    line = refused(train(group_norm_encoder, toy_corpus, out))
    assert (f"output_folder {out} holds files that are not a training run's" in line
            if holds == "the user's files" else f"output_folder {out}: an exported model" in line)
    assert digests(out) == before


def test_an_export_folder_that_is_not_an_export_is_refused_before_training(
        group_norm_encoder, toy_corpus, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    out = tmp_path / "run"
    line = refused(train(group_norm_encoder, toy_corpus, out, f"--export_folder={notes}"))
    assert line.startswith(f"export folder {notes}: not an exported model, so it is not replaced")
    assert not out.exists() and (notes / "todo.txt").read_text() == "mine"


SETTINGS_THAT_CANNOT_WORK = {
    "--head_lr=-1": "--head_lr must be a number of at least 0.0, not -1",
    "--batch_size=0": "--batch_size must be a whole number of at least 1, not 0",
    "--number_of_epochs=abc": "--number_of_epochs must be a whole number of at least 1, not 'abc'",
    "--head_dropout=2": "--head_dropout must be a number from 0.0 to 1.0, not 2",
    "--test_only": "--test_only: SpeechBrain `Brain` run option(s) these recipes do not read",
    "--encoder_source=no/such/encoder": "encoder_source no/such/encoder: no such folder here",
    "--best_metric=bogus": "best_metric 'bogus' is not one validation reports",
    "--best_metric=loss": "best_metric 'loss': the run keeps the checkpoint with the highest",
    "--tasks=[]": "tasks must be a list of one or more of ['intent', 'emotion'], not []",
    "--test_manifests=[test.csv]": "test_manifests must be a mapping {name: manifest}",
}

# Runs recipes/train.py once per argument list in one interpreter (each refusal is a
# SystemExit before anything is written; a new process per case cost ~5 s of imports).
REFUSALS_IN_ONE_PROCESS = """
import json, runpy, sys, traceback
runs, ends = json.loads(sys.argv[1]), {}
for key, argv in runs.items():
    sys.argv = ["recipes/train.py", *argv]
    try:
        runpy.run_path("recipes/train.py", run_name="__main__")
        ends[key] = {"code": 0}
    except SystemExit as err:
        ends[key] = {"code": err.code, "message": str(err.code)}
    except BaseException:
        ends[key] = {"traceback": traceback.format_exc()}
print("ENDS " + json.dumps(ends))
"""


@pytest.fixture(scope="module")
def setting_refusals(group_norm_encoder, toy_corpus, tmp_path_factory):
    """``{override: (how the recipe ended, its output_folder)}`` for each setting above."""
    root = tmp_path_factory.mktemp("settings")
    defaults = [f"--encoder_source={group_norm_encoder}", "--number_of_epochs=1"]
    runs = {override: ["hparams/tiny.yaml", f"--output_folder={root / str(index)}",
                       f"--train_manifests=[{toy_corpus['train']}]",
                       f"--valid_manifests=[{toy_corpus['valid']}]",
                       *(arg for arg in defaults if arg.split("=")[0] != override.split("=")[0]),
                       override]
            for index, override in enumerate(SETTINGS_THAT_CANNOT_WORK)}
    proc = subprocess.run([sys.executable, "-c", REFUSALS_IN_ONE_PROCESS, json.dumps(runs)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    ends = next((json.loads(line[len("ENDS "):]) for line in proc.stdout.splitlines()
                 if line.startswith("ENDS ")), None)
    assert ends is not None, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]  # none logged on the way
    return {override: (ends[override], root / str(index))
            for index, override in enumerate(SETTINGS_THAT_CANNOT_WORK)}


@pytest.mark.parametrize("override", SETTINGS_THAT_CANNOT_WORK)
def test_a_setting_that_cannot_work_is_named_before_anything_is_written(override,
                                                                        setting_refusals):
    end, out = setting_refusals[override]
    assert "traceback" not in end, end.get("traceback")
    assert end["code"] not in (0, None), end  # a one-line SystemExit, not a finished run
    assert SETTINGS_THAT_CANNOT_WORK[override] in end["message"]
    assert "\n" not in end["message"].strip()  # one line
    assert not out.exists()


def test_labels_spelled_two_ways_are_refused(group_norm_encoder, toy_corpus, tmp_path):
    def respell(rows):
        for row in rows[:3]:
            row["intent"] = row["intent"] and row["intent"].upper()
        return rows

    spelled = manifest_copy(toy_corpus["train"], tmp_path / "data", respell)
    line = refused(train(group_norm_encoder, toy_corpus, tmp_path / "run",
                         train_manifest=spelled))
    assert "intent labels" in line and "differ only in case, spacing or punctuation" in line


def test_a_refused_resume_leaves_the_run_as_it_was(group_norm_encoder, toy_corpus, tmp_path):
    """Another seed, or another head architecture: refused in one line naming the
    checkpoint, and the run's hyperparams.yaml still describes its checkpoints afterwards,
    so it still exports."""
    out = tmp_path / "run"
    proc = train(group_norm_encoder, toy_corpus, out)
    assert proc.returncode == 0
    assert "cannot save figures" not in proc.stderr  # SpeechBrain's false alarm, dropped
    before = digests(out)
    for change, named in (("--seed=99", "train_sampler.ckpt: checkpoint was written with "
                                        "sampler seed 7, this run uses 99"),
                          ("--head_pooling=mean", "this checkpoint does not fit this run: its "
                                                  "parameters are not this model's "
                                                  "(Unexpected key(s)"),
                          ("--freeze_feature_extractor=True", "this checkpoint does not fit "
                                                              "this run: its optimizer trained "
                                                              "other parameters")):
        line = refused(train(group_norm_encoder, toy_corpus, out, change))
        assert named in line and "CKPT+epoch-0001" in line, line
        assert digests(out) == before, change


def test_a_resume_with_fewer_epochs_than_trained_is_refused(group_norm_encoder, toy_corpus,
                                                            trained_run, tmp_path):
    """It would train nothing and write the smaller number into the run's card."""
    out = tmp_path / "run"
    shutil.copytree(trained_run, out, symlinks=True)
    before = digests(out)
    line = refused(train(group_norm_encoder, toy_corpus, out, "--number_of_epochs=2"))
    assert line.endswith("CKPT+epoch-0004: this run has trained 4 epochs, more than "
                         "number_of_epochs=2; give 4 or more to resume it, or use a new "
                         "output folder"), line
    assert digests(out) == before


def test_a_first_run_that_failed_leaves_no_label_files_behind(group_norm_encoder, toy_corpus,
                                                              tmp_path):
    """The first try has a third intent and a validation manifest with a missing file; the
    corrected rerun must learn two intents, not three with one never seen."""
    def add_buzz(rows):
        return rows + [dict(rows[0], id="buzz_0", intent="buzz")]

    def lose_a_file(rows):
        return rows + [dict(rows[0], id="gone", wav=str(tmp_path / "gone.wav"))]

    first = {"train": manifest_copy(toy_corpus["train"], tmp_path / "first", add_buzz),
             "valid": manifest_copy(toy_corpus["valid"], tmp_path / "first", lose_a_file)}
    out = tmp_path / "run"
    assert "gone.wav" in refused(train(group_norm_encoder, first, out))
    assert not (out / "save" / "label_encoder_intent.txt").exists()
    assert train(group_norm_encoder, toy_corpus, out).returncode == 0
    labels = (out / "save" / "label_encoder_intent.txt").read_text()
    assert "'buzz'" not in labels and "'low'" in labels


def test_an_empty_source_is_not_taken_for_the_current_folder():
    from multitask.source import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="the model source is empty"):
        MultitaskClassifier.from_hparams(source="")


def test_a_savedir_that_is_the_model_folder_itself_is_left_as_it_was(exported_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(exported_model, model)
    before = digests(model)
    classifier = MultitaskClassifier.from_hparams(source=str(model), savedir=str(model))
    assert set(classifier.labels) == {"intent", "emotion"}
    assert digests(model) == before  # no .ckpt links beside the model's files


def test_a_savedir_holding_other_files_is_refused(exported_model, trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, symlinks=True)
    before = digests(run)
    with pytest.raises(ValueError, match=rf"savedir {run} holds files that loading did not put "
                                         r"there \(\.multitask-run, confusion_toy_emotion.png"):
        MultitaskClassifier.from_hparams(source=str(exported_model), savedir=str(run))
    assert digests(run) == before


@pytest.fixture(scope="module")
def classifier(exported_model, tmp_path_factory):
    return MultitaskClassifier.from_hparams(source=str(exported_model),
                                            savedir=str(tmp_path_factory.mktemp("savedir")))


def test_classify_batch_takes_arrays_and_refuses_what_is_not_a_batch(classifier):
    wave = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32)
    from_array = classifier.classify_batch(wave)
    assert from_array == classifier.classify_batch(torch.from_numpy(wave))
    for wavs, lens, message in [
        (torch.zeros(0, 16000), None, r"with a row or more, not of shape \(0, 16000\)"),
        (torch.tensor(1.0), None, r"not of shape \(\)"),
        (torch.ones(2, 16000, dtype=torch.bool), None, "real sample values, not torch.bool"),
        (torch.from_numpy(wave), torch.tensor([1.0, 5.0]), r"relative lengths in \(0, 1\]"),
        (torch.from_numpy(wave), torch.tensor([1.0, float("nan")]), r"relative lengths in"),
    ]:
        with pytest.raises(ValueError, match=message):
            classifier.classify_batch(wavs, lens)
    with pytest.raises(TypeError, match="wavs must be a tensor or array of numbers"):
        classifier.classify_batch([[0.1, 0.2], [0.3]])


def test_counts_and_options_that_are_not_one_are_named(classifier, toy_wavs, exported_model):
    for top_k in (0, -1, 1.5, None):
        with pytest.raises(ValueError, match=rf"top_k must be a whole number of at least 1, not "
                                             rf"{top_k!r}"):
            classifier.classify_file(toy_wavs[0], top_k=top_k)
    with pytest.raises(ValueError, match="batch_size must be a whole number of at least 1, not None"):
        classifier.classify_files(toy_wavs, batch_size=None)
    for optimize in (True, "fp16", "FP32"):  # refused before loading, on any device
        with pytest.raises(ValueError, match=rf"optimize must be 'fp32', 'int8', 'none' or "
                                             rf"None, not {optimize!r}"):
            MultitaskClassifier.from_hparams(source="/nowhere", optimize=optimize)


def test_the_fine_tuning_recipe_says_to_run_the_demo_first(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "recipes", "finetune_demo.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "results/demo lacks model/hyperparams.yaml" in proc.stderr
    assert "run `make demo` first" in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing generated before the refusal
    helped = subprocess.run([sys.executable, os.path.join(REPO, "recipes", "finetune_demo.py"),
                             "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "Needs ``make demo`` first" in helped.stdout


def test_a_manifest_that_is_a_folder_or_has_no_rows_is_named(group_norm_encoder, toy_corpus,
                                                             tmp_path):
    folder = os.path.dirname(toy_corpus["train"])
    line = refused(train(group_norm_encoder, toy_corpus, tmp_path / "a", train_manifest=folder))
    assert line == f"error: {folder}: a folder, not a manifest (give its train.csv, ...)"
    empty = tmp_path / "empty.csv"
    empty.write_text("id,wav,duration,task,intent,emotion,speaker,split\n")
    line = refused(train(group_norm_encoder, toy_corpus, tmp_path / "b", train_manifest=empty))
    assert line == f"error: {empty}: no rows to train on"



def test_a_downloaded_encoder_cache_does_not_make_a_folder_a_run(group_norm_encoder, toy_corpus,
                                                                 tmp_path):
    """A Hub encoder_source is downloaded into save/encoder_cache while the hparams load,
    before the folder is checked: that alone must not pass the user's files as a run's."""
    out = tmp_path / "project"
    (out / "save" / "encoder_cache").mkdir(parents=True)
    (out / "train.py").write_text("# the user's own script\n")
    line = refused(train(group_norm_encoder, toy_corpus, out))
    assert f"output_folder {out} holds files that are not a training run's (train.py)" in line
    assert (out / "train.py").read_text() == "# the user's own script\n"


def test_intents_whose_words_differ_in_order_are_two_classes(tmp_path):
    from multitask.data import build_label_encoders

    rows = [{"intent": "transfer_checking_to_savings", "emotion": "calm"},
            {"intent": "transfer_savings_to_checking", "emotion": "calm"}]
    encoders = build_label_encoders(rows, tmp_path)
    assert len(encoders["intent"]) == 2


def test_restoring_touches_nothing_when_the_backup_fails(tmp_path, monkeypatch):
    from multitask import recipe

    for name in ("data", "parent"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_text(name)
    real_copytree = recipe.shutil.copytree

    def copytree(source, target, **kwargs):
        if source.name == "parent":
            raise OSError("no space left on device")
        return real_copytree(source, target, **kwargs)

    monkeypatch.setattr(recipe.shutil, "copytree", copytree)
    with pytest.raises(OSError, match="no space left"):
        with recipe.restored_on_failure(tmp_path, ["data", "parent"]):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "parent"]
    assert (tmp_path / "parent" / "f.txt").read_text() == "parent"


def test_restoring_a_path_outside_the_folder_and_dropping_the_backup_once_kept(tmp_path):
    from multitask.recipe import restored_on_failure

    run, elsewhere = tmp_path / "run", tmp_path / "ckpt"
    run.mkdir()
    elsewhere.mkdir()
    (elsewhere / "label.txt").write_text("old")
    with pytest.raises(ValueError):
        with restored_on_failure(run, ["../ckpt/label.txt"]):
            (elsewhere / "label.txt").write_text("new")
            raise ValueError("refused")
    assert (elsewhere / "label.txt").read_text() == "old" and list(run.iterdir()) == []
    with restored_on_failure(run, ["../ckpt/label.txt"]) as keep:
        keep()
        assert not [p for p in run.iterdir() if p.name.startswith(".rerun-")]
