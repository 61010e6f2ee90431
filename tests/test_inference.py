"""The exported model as users load it: from_hparams, foreign_class, classify_*, predict.

One tiny model is trained with the real recipe and exported once per session
(``trained_tiny``); each test loads the export the way one kind of user would.
"""

import ast
import csv
import inspect
import io
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO
from speechbrain.utils.fetching import FetchFrom, guess_source
from toy_data import rewrite_label_file

from multitask.audio import AudioInputError, load_audio
from multitask.cli import main
from multitask.head_labels import read_metadata
from multitask.inference import MultitaskClassifier
from multitask.source import source_kind

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]

# Same weights, same forward: only float summation order may differ.
SAME_MODEL_TOLERANCE = 1e-5
# Padding bound for the group-norm tiny encoder (like wav2vec2-base): its conv front
# end normalises over the whole padded row and its attention sees the padded frames,
# so a batched file's probabilities move. Length-sorted batches of 8 toy utterances
# (0.4-1.0 s), measured max: 0.003 with mean pooling, 0.058 with attention pooling
# (tiny.yaml's), which lets a few frames decide.
SORTED_BATCH_PADDING_BOUND = 0.1

EXPORT_FILES = {"hyperparams.yaml", "encoder.safetensors", "heads.safetensors",
                "label_encoder_intent.txt", "label_encoder_emotion.txt",
                "custom_interface.py", "README.md"}

CLASSIFY_FILES_SCRIPT = """
import json, sys
from multitask.inference import MultitaskClassifier
model = MultitaskClassifier.from_hparams(source=sys.argv[1])
print(json.dumps({p: {t: model.classify_file(p)[t]["probs"] for t in model.tasks}
                  for p in sys.argv[2:]}))
"""

@pytest.fixture(scope="module")
def classifier(exported_model):
    return MultitaskClassifier.from_hparams(source=exported_model, run_opts={"device": "cpu"})


@pytest.fixture
def bad_files(tmp_path):
    """A missing, an empty, a corrupt and a silent file: each fails for its own reason."""
    files = {"missing": tmp_path / "missing.wav", "empty": tmp_path / "empty.wav",
             "corrupt": tmp_path / "corrupt.wav", "silent": tmp_path / "silent.wav"}
    files["empty"].write_bytes(b"")
    files["corrupt"].write_bytes(b"RIFF\x00\x01\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    sf.write(files["silent"], np.zeros(16000, dtype=np.float32), 16000)
    return {name: str(path) for name, path in files.items()}


REASONS = {"missing": "file not found", "empty": "empty", "corrupt": "not a readable audio file",
           "silent": "silent"}


def training_time_probabilities(run, paths) -> dict:
    """``{path: {task: {label: prob}}}`` from the training code: build_model + best checkpoint."""
    from hyperpyyaml import load_hyperpyyaml

    from multitask.checkpoints import AtomicCheckpointer
    from multitask.data import load_label_encoders
    from multitask.train import build_model

    with open(run / "hyperparams.yaml", encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin)
    encoders = load_label_encoders(hparams["save_folder"], hparams["tasks"])
    model = build_model(hparams, encoders)
    checkpointer = AtomicCheckpointer(hparams["save_folder"],
                                      recoverables={"encoder": model.encoder, "heads": model.heads})
    assert checkpointer.recover_if_possible(max_key=hparams["best_metric"]) is not None
    model.eval()
    names = {t: enc.decode_ndim(list(range(len(enc)))) for t, enc in encoders.items()}
    out = {}
    with torch.inference_mode():
        for path in paths:
            logits = model(load_audio(path).unsqueeze(0), torch.ones(1))
            out[path] = {t: dict(zip(names[t], torch.softmax(logits[t], -1)[0].tolist(), strict=True))
                         for t in encoders}
    return out


def max_difference(a: dict, b: dict) -> float:
    """Largest probability difference between two ``{path: {task: {label: prob}}}``."""
    assert a.keys() == b.keys()
    return max(abs(a[p][t][label] - b[p][t][label])
               for p in a for t in a[p] for label in a[p][t])


def test_exported_folder_loads_offline_and_matches_the_training_time_model(
        trained_run, exported_model, toy_wavs, run_client, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_hf_home")}
    loaded = run_client(CLASSIFY_FILES_SCRIPT, exported_model, *toy_wavs, env=env, cwd=tmp_path)
    assert max_difference(loaded, training_time_probabilities(trained_run, toy_wavs)) \
        < SAME_MODEL_TOLERANCE
    # Loading a local folder reads it and writes nothing into it.
    assert {p.name for p in exported_model.iterdir()} == EXPORT_FILES


def test_export_holds_its_files_only_and_no_path_of_the_exporting_machine(
        exported_model, trained_run, tmp_path_factory):
    assert {p.name for p in exported_model.iterdir()} == EXPORT_FILES
    machine_paths = {str(trained_run), str(trained_run.parent), str(exported_model.parent),
                     str(tmp_path_factory.getbasetemp()), REPO, os.path.expanduser("~")}
    for path in exported_model.iterdir():
        content = path.read_bytes()
        for machine_path in machine_paths:
            assert machine_path.encode() not in content, (path.name, machine_path)


def test_custom_interface_is_generated_from_the_package_source(exported_model):
    from multitask import audio, inference, model

    text = (exported_model / "custom_interface.py").read_text()
    for obj in (inference.MultitaskClassifier, inference.ModelFolderPretrainer,
                inference.encoder_from_config, model.TaskHead, model.ExtendedHead, model.Wav2Vec2Encoder,
                model.MultitaskModel, audio.load_audio, audio.AudioInputError):
        assert inspect.getsource(obj) in text, obj.__name__
    # Self-contained: nothing is imported from the package, anywhere in the file.
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("multitask"), node.module
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("multitask") for a in node.names)


def test_foreign_class_loads_the_folder_where_multitask_cannot_be_imported(
        exported_model, classifier, toy_wavs, run_foreign_class, tmp_path):
    result = run_foreign_class(exported_model, *toy_wavs, cwd=tmp_path)
    assert result["multitask_importable"] is False
    assert result["class_module"] == "custom_interface"
    expected = {p: {t: classifier.classify_file(p)[t]["probs"] for t in classifier.tasks}
                for p in toy_wavs}
    assert max_difference(result["probs"], expected) < 1e-6


def test_classify_file_gives_label_probability_top_k_and_full_distribution(classifier, toy_wavs):
    result = classifier.classify_file(toy_wavs[0], top_k=1)
    assert set(result) == set(classifier.tasks) == {"intent", "emotion"}
    for task, task_result in result.items():
        probs = task_result["probs"]
        assert list(probs) == classifier.labels[task]
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert task_result["label"] == max(probs, key=probs.get)
        assert task_result["prob"] == probs[task_result["label"]]
        assert task_result["top_k"] == [[task_result["label"], task_result["prob"]]]


def test_classify_file_reads_any_sample_rate_and_channel_count(classifier, toy_wavs, tmp_path):
    samples, rate = sf.read(toy_wavs[0], dtype="float32")
    stereo_8k = tmp_path / "stereo_8k.wav"
    sf.write(stereo_8k, np.stack([samples[::2], samples[::2]], axis=1), rate // 2)
    result = classifier.classify_file(stereo_8k)
    expected = classifier.classify_batch(load_audio(stereo_8k).unsqueeze(0))[0]
    assert result == expected


def test_classify_files_keeps_input_order_and_reports_bad_files_in_place(
        classifier, toy_wavs, bad_files):
    paths = [toy_wavs[3], bad_files["missing"], toy_wavs[0], bad_files["empty"], toy_wavs[5],
             bad_files["corrupt"], toy_wavs[1], bad_files["silent"]]
    results = classifier.classify_files(paths)  # the default: each file alone
    assert [r["file"] for r in results] == paths
    for name, path in bad_files.items():
        [entry] = [r for r in results if r["file"] == path]
        assert set(entry) == {"file", "error"}
        assert entry["error"].startswith(path) and REASONS[name] in entry["error"]
    # The default, batch_size=1, is exactly classify_file, per file.
    for path, result in zip(paths, results, strict=True):
        if "error" not in result:
            single = classifier.classify_file(path)
            for task in classifier.tasks:
                assert result[task]["probs"] == pytest.approx(single[task]["probs"], abs=1e-6)


def test_a_batch_the_model_refuses_costs_only_the_file_at_fault(classifier, toy_wavs,
                                                                 monkeypatch):
    paths = toy_wavs[:4]
    alone = [classifier.classify_file(path) for path in paths]
    refused = load_audio(paths[2]).numel()
    real = classifier.classify_batch

    def refusing(wavs, wav_lens=None, top_k=3):  # as the model's own checks refuse a row
        if any(round(float(n) * wavs.shape[1]) == refused for n in wav_lens):
            raise ValueError("row 0 of the batch holds NaN or infinite samples")
        return real(wavs, wav_lens, top_k)

    monkeypatch.setattr(classifier, "classify_batch", refusing)
    results = classifier.classify_files(paths, batch_size=4)
    assert results[2] == {"file": paths[2], "error": f"{paths[2]}: row 0 of the batch holds "
                                                      "NaN or infinite samples"}
    for index in (0, 1, 3):
        assert results[index]["intent"]["probs"] == pytest.approx(alone[index]["intent"]["probs"],
                                                                 abs=1e-6)


def test_classify_files_refuses_one_path_for_a_list_and_skips_an_item_that_is_no_path(
        classifier, toy_wavs):
    with pytest.raises(TypeError, match="takes a list of paths"):
        classifier.classify_files(toy_wavs[0])  # would otherwise be one "file" per character
    results = classifier.classify_files([None, toy_wavs[0]])
    assert results[0] == {"file": "None", "error": "None: not a file path"}
    assert results[1]["intent"]["label"] == classifier.classify_file(toy_wavs[0])["intent"]["label"]


@pytest.mark.parametrize("wavs, wav_lens, message", [
    (torch.full((1, 16000), float("nan")), None, "row 0 of the batch holds NaN"),
    (torch.zeros(1, 2, 16000), None, "must be [batch, samples]"),
    (torch.zeros(2, 16000), torch.tensor([1.0, 0.0005]), "row 1 of the batch is 8 samples long"),
    (torch.zeros(1, 16000), None, "row 0 of the batch holds no sound (standard deviation 0)"),
    (torch.randn(2, 16000) * torch.tensor([[1.0], [1000.0]]), None,
     "row 1 of the batch is not normalised"),
])
def test_forward_refuses_input_that_would_give_a_meaningless_label(classifier, wavs, wav_lens,
                                                                   message):
    with pytest.raises(ValueError, match=re.escape(message)):
        classifier.classify_batch(wavs, wav_lens)


@pytest.mark.parametrize("damage, error, named", [
    ("truncate encoder.safetensors", "BrokenModelError", "encoder.safetensors: cannot be read"),
    ("remove heads.safetensors", "ModelNotFoundError", "heads.safetensors is missing"),
    ("truncate label_encoder_emotion.txt", "BrokenModelError",
     "label_encoder_emotion.txt: cannot be read"),
    ("empty hyperparams.yaml", "BrokenModelError", "hyperparams.yaml: not an exported model's"),
    ("swap encoder.safetensors", "BrokenModelError",
     "encoder.safetensors: does not fit the model hyperparams.yaml builds (Missing key(s)"),
])
def test_a_broken_model_folder_is_named_by_its_file(exported_model, tmp_path, damage, error,
                                                    named, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    action, name = damage.split(" ", 1)
    path = folder / name
    if action == "remove":
        path.unlink()
    elif action == "empty":
        path.write_text("")
    elif action == "swap":  # the weights files of an export exchanged
        heads = folder / "heads.safetensors"
        path.rename(tmp_path / "held")
        heads.rename(path)
        (tmp_path / "held").rename(heads)
    else:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        MultitaskClassifier.from_hparams(source=folder, savedir=tmp_path / "savedir")
    assert type(caught.value).__name__ == error
    assert named in str(caught.value) and str(folder) in str(caught.value)
    assert main(["predict", "--model", str(folder), str(path)]) == 2
    assert named in capsys.readouterr().err


def test_an_empty_savedir_is_refused_not_read_as_the_current_folder(exported_model, tmp_path,
                                                                    monkeypatch):
    from multitask.source import SavedirError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SavedirError, match="savedir is an empty path"):
        MultitaskClassifier.from_hparams(source=exported_model, savedir="")
    assert list(tmp_path.iterdir()) == []


def test_a_web_address_without_a_savedir_is_refused_in_one_line(capsys):
    from multitask.source import SavedirError

    with pytest.raises(SavedirError, match="a model at a web address is downloaded into a "
                                           "savedir"):
        MultitaskClassifier.from_hparams(source="https://example.org/model")
    assert main(["predict", "--model", "https://example.org/model", "x.wav"]) == 2
    assert capsys.readouterr().err.startswith("error: https://example.org/model: a model at")


@pytest.mark.parametrize("tasks", ["[]", "[intent, emotion, age]"])
def test_a_hand_edited_task_list_is_refused_on_loading(exported_model, tmp_path, tasks):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    yaml = folder / "hyperparams.yaml"
    text = yaml.read_text()
    edited = re.sub(r"(?m)^tasks: .*$", f"tasks: {tasks}", text)
    assert edited.count("\ntasks: ") == 1 and edited != text
    yaml.write_text(edited)
    with pytest.raises(ValueError, match=r"hyperparams\.yaml: tasks .* must name one or more "
                                         r"of the tasks with both a head and a label encoder"):
        MultitaskClassifier.from_hparams(source=folder, savedir=tmp_path / "savedir")


@pytest.mark.parametrize("change, named", [
    ("reorder", "label_encoder_intent.txt does not match heads.safetensors: class 0 is 'low' "
                "in the label file but 'high' for the intent head as trained (2 classes)"),
    ("extra", "label_encoder_intent.txt: 3 labels, but the intent head has 2 outputs"),
])
def test_a_label_file_that_does_not_match_its_head_is_refused(exported_model, tmp_path, change,
                                                              named, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    rewrite_label_file(folder / "label_encoder_intent.txt", change)
    with pytest.raises(ValueError) as caught:
        MultitaskClassifier.from_hparams(source=folder, savedir=tmp_path / "savedir")
    assert type(caught.value).__name__ == "BrokenModelError"
    assert str(caught.value).startswith(os.path.join(str(folder), named))
    assert main(["predict", "--model", str(folder), str(folder / "README.md")]) == 2
    assert named in capsys.readouterr().err


def test_an_export_that_records_no_label_order_still_loads(exported_model, tmp_path):
    """Exports made before the heads file recorded its labels: the count is all there is
    to check."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    heads = load_file(folder / "heads.safetensors")
    save_file(heads, str(folder / "heads.safetensors"), metadata={"format": "pt"})
    rewrite_label_file(folder / "label_encoder_intent.txt", "reorder")
    model = MultitaskClassifier.from_hparams(source=folder, savedir=tmp_path / "savedir")
    assert model.labels["intent"] == _label_order(exported_model)[::-1]


def test_foreign_class_refuses_a_reordered_label_file_too(exported_model, tmp_path, run_python):
    """The check is inlined into custom_interface.py: loading without the package refuses
    the same mismatch."""
    import shutil

    from trained_tiny import FOREIGN_CLASS_SCRIPT

    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    rewrite_label_file(folder / "label_encoder_intent.txt", "reorder")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("PYTHONPATH", None)
    proc = run_python(["-c", FOREIGN_CLASS_SCRIPT, str(folder)], env=env, cwd=tmp_path,
                      check=False, flags=["-I"])
    assert proc.returncode != 0
    assert "BrokenModelError" in proc.stderr
    assert "label_encoder_intent.txt does not match heads.safetensors" in proc.stderr


def test_an_unreadable_label_record_is_named(exported_model, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    heads = load_file(folder / "heads.safetensors")
    save_file(heads, str(folder / "heads.safetensors"),
              metadata={"format": "pt", "labels.intent": "[high, low"})
    with pytest.raises(ValueError) as caught:
        MultitaskClassifier.from_hparams(source=folder, savedir=tmp_path / "savedir")
    assert type(caught.value).__name__ == "BrokenModelError"
    assert str(caught.value).startswith(
        os.path.join(str(folder), "heads.safetensors: its record of the labels cannot be read"))


def _label_order(folder):
    return json.loads(read_metadata(folder / "heads.safetensors")["labels.intent"])


def test_the_heads_file_records_the_label_files_order(exported_model, classifier):
    assert _label_order(exported_model) == classifier.labels["intent"]


def test_a_failure_that_is_not_the_folders_is_raised_as_it_was(exported_model, tmp_path,
                                                                 monkeypatch):
    from speechbrain.inference.interfaces import Pretrained

    def no_device(cls, *args, **kwargs):
        raise RuntimeError("CUDA error: no such device")

    monkeypatch.setattr(Pretrained, "from_hparams", classmethod(no_device))
    with pytest.raises(RuntimeError, match="no such device"):  # not blamed on a good file
        MultitaskClassifier.from_hparams(source=exported_model, savedir=tmp_path / "savedir")


def test_a_package_error_that_is_a_bug_keeps_its_traceback(monkeypatch):
    from multitask import data_report
    from multitask.interface_source import InlineError

    def broken(args):
        raise InlineError("a bug of the package")

    monkeypatch.setattr(data_report, "_run", broken)
    with pytest.raises(InlineError):
        main(["data-report", "x.csv", "--out", "r"])


def test_sorted_batches_stay_within_the_padding_bound_of_single_files(classifier, toy_corpus,
                                                                      monkeypatch):
    folder = os.path.join(os.path.dirname(toy_corpus["test"]), "wav")
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("test_"))
    lengths, real = [], classifier.classify_batch

    def recording(wavs, wav_lens=None, top_k=3):
        lengths.append([round(float(n) * wavs.shape[1]) for n in wav_lens])
        return real(wavs, wav_lens, top_k)

    monkeypatch.setattr(classifier, "classify_batch", recording)
    batched = classifier.classify_files(paths, batch_size=8)
    monkeypatch.undo()
    # Length-sorted: the batches, in the order they ran, hold the files shortest first.
    assert len(lengths) > 1 and sum(lengths, []) == sorted(sum(lengths, []))
    # (which the files given, in name order, are not)
    assert sorted(sum(lengths, [])) != [load_audio(p).numel() for p in paths]
    worst = max(abs(result[task]["probs"][label] - classifier.classify_file(path)[task]["probs"][label])
                for path, result in zip(paths, batched, strict=True)
                for task in classifier.tasks for label in classifier.labels[task])
    assert worst < SORTED_BATCH_PADDING_BOUND


def predict(argv, capsys) -> tuple[int, list[str], str]:
    code = main(["predict", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_predict_prints_a_json_line_per_file_and_an_error_line_for_each_bad_one(
        exported_model, toy_wavs, bad_files, capsys):
    paths = [toy_wavs[0], bad_files["missing"], toy_wavs[4], bad_files["empty"],
             bad_files["corrupt"]]
    code, lines, err = predict(["--model", str(exported_model), "--json", "--top-k", "2", *paths],
                               capsys)
    assert code == 0
    rows = [json.loads(line) for line in lines]
    assert [row["file"] for row in rows] == paths
    for row in (rows[0], rows[2]):
        assert {"intent", "intent_prob", "intent_top_k", "emotion", "emotion_prob",
                "emotion_top_k"} <= set(row)
        assert row["intent_top_k"][0] == [row["intent"], row["intent_prob"]]
        assert len(row["emotion_top_k"]) == 2 and 0.0 <= row["emotion_prob"] <= 1.0
    for row, name in zip(rows[1::2] + [rows[4]], ["missing", "empty", "corrupt"], strict=True):
        assert row["file"] in row["error"] and REASONS[name] in row["error"]
    assert "3 of 5" in err


def test_predict_exits_non_zero_only_when_every_file_fails(exported_model, bad_files, capsys):
    code, lines, _ = predict(["--model", str(exported_model), bad_files["missing"],
                              bad_files["corrupt"]], capsys)
    assert code == 1  # the input's fault (2 is the model's or the command's)
    assert [json.loads(line)["file"] for line in lines] == [bad_files["missing"], bad_files["corrupt"]]


def test_predict_csv_has_one_row_per_file(exported_model, toy_wavs, bad_files, capsys):
    code, lines, _ = predict(["--model", str(exported_model), "--csv", toy_wavs[0],
                              bad_files["missing"]], capsys)
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert code == 0 and [r["file"] for r in rows] == [toy_wavs[0], bad_files["missing"]]
    assert rows[0]["intent"] and float(rows[0]["emotion_prob"]) > 0 and not rows[0]["error"]
    assert "file not found" in rows[1]["error"] and not rows[1]["intent"]


def test_a_savedir_filled_from_another_model_is_refreshed_not_reused(exported_model, toy_wavs,
                                                                       tmp_path):
    # SpeechBrain's fetch reuses files found in savedir; loading model B into the savedir
    # model A was loaded into must still give B.
    import shutil

    from safetensors.torch import load_file, save_file

    other = tmp_path / "other_model"
    shutil.copytree(exported_model, other)
    heads = load_file(other / "heads.safetensors")
    save_file({k: v + 0.5 * torch.randn_like(v) for k, v in heads.items()},
              other / "heads.safetensors")

    def intent_probs(source, savedir):
        model = MultitaskClassifier.from_hparams(source=str(source), savedir=savedir)
        return model.classify_file(toy_wavs[0])["intent"]["probs"]

    shared = tmp_path / "shared_savedir"
    first = intent_probs(exported_model, shared)
    assert intent_probs(other, shared) == intent_probs(other, tmp_path / "fresh")
    assert intent_probs(other, shared) != first
    assert intent_probs(exported_model, shared) == first
    # Loading a folder into itself writes nothing into it (it may be pushed as it is).
    intent_probs(other, other)
    assert not (other / ".multitask-source").exists()


def test_a_source_is_classified_as_speechbrains_fetch_will_fetch_it(tmp_path, monkeypatch):
    # Loading, the trust check and fine-tuning all ask source_kind; it must agree with
    # the fetch that then runs, or a check would pass on one thing and load another.
    for source, kind in ((str(tmp_path), "folder"), ("org/name", "hub"), ("name", "hub"),
                         ("https://example.org/models/x", "url")):
        assert source_kind(source) == kind
        assert guess_source(source)[0] == {"folder": FetchFrom.LOCAL, "hub": FetchFrom.HUGGING_FACE,
                                           "url": FetchFrom.URI}[kind]
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a folder here shadows the repo id, for the fetch as for us
    assert source_kind("org/name") == "folder" and guess_source("org/name")[0] == FetchFrom.LOCAL


@pytest.mark.parametrize("case, expected", [
    ("typo", "no model folder at {path}, and it is not a Hub repo id"),
    ("empty folder", "{path} is a folder without hyperparams.yaml: not a model folder"),
    ("a file", "{path} is a file: a model is a folder"),
])
def test_a_local_source_without_a_model_is_named_before_anything_loads(case, expected, tmp_path, capsys):
    path = {"typo": tmp_path / "results" / "no-such-run" / "model", "empty folder": tmp_path,
            "a file": tmp_path / "call.wav"}[case]
    if case == "a file":
        path.write_bytes(b"RIFF")
    with pytest.raises(FileNotFoundError) as caught:  # ModelNotFoundError is one
        MultitaskClassifier.from_hparams(source=path)
    assert str(caught.value).startswith(expected.format(path=path))
    assert main(["predict", "--model", str(path), str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {expected.format(path=path)}")


def test_the_recipes_test_figures_are_what_classify_file_gives_each_clip(
        trained_run, exported_model, toy_corpus):
    """tiny.yaml's test_batching scores each clip alone: the run's predictions are the
    exported model's classify_file results, clip for clip (group-norm encoder: batches
    would shift them)."""
    model = MultitaskClassifier.from_hparams(source=str(exported_model), run_opts={"device": "cpu"})
    wav_of = {row["id"]: os.path.join(os.path.dirname(toy_corpus["test"]), row["wav"])
              for row in csv.DictReader(open(toy_corpus["test"]))}
    predicted = list(csv.DictReader(open(trained_run / "predictions_toy.csv")))
    assert json.loads((trained_run / "test_metrics.json").read_text())["batching"] == {"batch_size": 1}
    assert len(predicted) == len(wav_of)
    for row in predicted:
        result = model.classify_file(wav_of[row["id"]])
        for task in ("intent", "emotion"):
            if row[f"{task}_ref"]:
                assert result[task]["label"] == row[f"{task}_pred"], row["id"]
                assert result[task]["prob"] == pytest.approx(float(row[f"{task}_prob"]), abs=1e-3)


def test_a_long_file_with_no_window_of_sound_is_refused_naming_it(classifier, toy_wavs, tmp_path):
    # 30 s of silence, then 30 s of a held line: not silent as a whole, but windowed
    # (over 45 s) each window is refused, and no window is left to classify.
    path = str(tmp_path / "held_line.wav")
    sf.write(path, np.concatenate([np.zeros(30 * 8000), np.full(30 * 8000, 0.3)]), 8000)
    with pytest.raises(AudioInputError, match=r"held_line\.wav: holds no sound in any of its 2 "):
        classifier.classify_file(path)
    results = classifier.classify_files([path, toy_wavs[0]])
    assert "holds no sound" in results[0]["error"] and "intent" in results[1]
