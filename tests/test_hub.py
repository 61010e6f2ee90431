"""Export, model card and Hub round trip, against the offline Hub stand-in.

The tiny model trained and exported once per session (``trained_tiny``) is pushed
with ``multitask push`` to ``tests/hub_server.py`` and loaded back in fresh
interpreters, online, offline from the cache, and pinned to a revision.
"""

import json
import os
import shutil
import socket

import huggingface_hub
import pytest
import torch
import yaml
from hub_server import running_hub
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from toy_data import rewrite_label_file

from multitask.cli import main
from multitask.export import export_model
from multitask.hub import HubError, push_model, upload_allow_list
from multitask.inference import MultitaskClassifier

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]

TOKEN = "hf_test_token"
REPO_ID = "org/name"
SAME_MODEL_TOLERANCE = 1e-5
EXPORT_FILES = {"hyperparams.yaml", "encoder.safetensors", "heads.safetensors",
                "label_encoder_intent.txt", "label_encoder_emotion.txt",
                "custom_interface.py", "README.md"}
# Files that must never leave the machine even when they sit in the model folder.
STRAY_FILES = {"token": "hf_secret_token", "train_log.txt": "epoch: 1",
               ".cache/huggingface/token": "hf_secret_token", "data/train.csv": "id,wav",
               "__pycache__/custom_interface.cpython-311.pyc": "bytecode"}

PUSH_ALL = """
import sys
from multitask.cli import main
first, second, reordered = sys.argv[1], sys.argv[2], sys.argv[3]
code = main(["push", "--model", first, "--repo-id", "org/name", "--commit-message", "first"])
code = code or main(["push", "--model", second, "--repo-id", "org/name", "--revision", "v2",
                     "--commit-message", "second"])
code = code or main(["push", "--model", reordered, "--repo-id", "org/name", "--revision",
                     "reordered", "--commit-message", "label file reordered by hand"])
sys.exit(code)
"""

LOAD_REORDERED = """
import json
import os
from multitask.inference import MultitaskClassifier
try:
    MultitaskClassifier.from_hparams(source="org/name", revision="reordered")
    print(json.dumps({"loaded": True}))
except ValueError as err:
    print(json.dumps({"loaded": False, "error": type(err).__name__, "message": str(err)}))
"""

LOAD_REVISIONS = """
import json, sys
from multitask.inference import MultitaskClassifier
first_sha, paths = sys.argv[1], sys.argv[2:]
out = {}
for name, revision in (("main", None), ("v2", "v2"), ("first", first_sha)):
    model = MultitaskClassifier.from_hparams(source="org/name", revision=revision)
    out[name] = {p: {t: model.classify_file(p)[t]["probs"] for t in model.tasks} for p in paths}
print(json.dumps(out))
"""

# Each source that holds no model, and the one-line reason from_hparams gives.
LOAD_MISSES = """
import json
import os
from multitask.inference import MultitaskClassifier, ModelNotFoundError
out = {}
for name, source, revision in (("repo", "org/missing", None), ("revision", "org/name", "no-such-branch"),
                               ("uncached", "org/name", None)):
    try:
        MultitaskClassifier.from_hparams(source=source, revision=revision)
        out[name] = "loaded"
    except ModelNotFoundError as err:
        out[name] = str(err)
print(json.dumps(out))
"""


def probabilities(folder, paths) -> dict:
    model = MultitaskClassifier.from_hparams(source=folder, run_opts={"device": "cpu"})
    return {p: {t: model.classify_file(p)[t]["probs"] for t in model.tasks} for p in paths}


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[p][t][label] - b[p][t][label]) for p in a for t in a[p] for label in a[p][t])


def with_shifted_intent_bias(folder, out):
    """A copy of an export whose intent head favours its first class: a second version
    that loads like the first but predicts observably differently."""
    shutil.copytree(folder, out)
    heads = load_file(out / "heads.safetensors")
    heads["intent.classifier.4.bias"] = heads["intent.classifier.4.bias"] + torch.tensor([2.0, -2.0])
    with safe_open(out / "heads.safetensors", framework="pt") as tensors:
        metadata = tensors.metadata()  # the label order the export recorded
    save_file(heads, str(out / "heads.safetensors"), metadata=metadata)
    return out


def with_intent_labels_reversed(folder, out):
    """A copy of an export whose intent label file lists its classes in another order."""
    shutil.copytree(folder, out)
    rewrite_label_file(out / "label_encoder_intent.txt", "reorder")
    return out


@pytest.fixture(scope="module")
def round_trip(exported_model, toy_wavs, run_python, run_client, tmp_path_factory):
    """Push twice (main with stray files around the export, then a changed copy to
    branch v2), then load in a fresh HF_HOME online, and again offline."""
    root = tmp_path_factory.mktemp("hub_round_trip")
    cluttered = root / "cluttered"
    shutil.copytree(exported_model, cluttered)
    for name, content in STRAY_FILES.items():
        (cluttered / name).parent.mkdir(parents=True, exist_ok=True)
        (cluttered / name).write_text(content)
    second = with_shifted_intent_bias(exported_model, root / "second")
    reordered = with_intent_labels_reversed(exported_model, root / "reordered")
    with running_hub(token=TOKEN) as hub:
        run_python(["-c", PUSH_ALL, str(cluttered), str(second), str(reordered)],
                   env=hub.client_env(hf_home=root / "pusher_home", token=TOKEN))
        repo = hub.repos[REPO_ID]
        first_sha = repo.branches["main"]
        online = run_client(LOAD_REVISIONS, first_sha, *toy_wavs,
                            env=hub.client_env(hf_home=root / "user_home"), cwd=root)
        requests_before_offline = len(hub.request_log)
        offline = run_client(LOAD_REVISIONS, first_sha, *toy_wavs,
                             env=hub.client_env(hf_home=root / "user_home", offline=True), cwd=root)
        offline_requests = len(hub.request_log) - requests_before_offline
        online_misses = run_client(LOAD_MISSES, env=hub.client_env(hf_home=root / "user_home"), cwd=root)
        offline_misses = run_client(
            LOAD_MISSES, env=hub.client_env(hf_home=root / "empty_home", offline=True), cwd=root)
        reordered_load = run_client(LOAD_REORDERED, env=hub.client_env(hf_home=root / "user_home"),
                                    cwd=root)
        yield {
            "reordered_load": reordered_load,
            "online_misses": online_misses, "offline_misses": offline_misses,
            "main_files": repo.files("main"), "v2_files": repo.files("v2"),
            "titles": [c.title for c in repo.history("v2")],
            "online": online, "offline": offline, "offline_requests": offline_requests,
            "expected_main": probabilities(exported_model, toy_wavs),
            "expected_v2": probabilities(second, toy_wavs),
        }


def test_a_hub_repo_whose_label_file_was_reordered_is_refused_by_name(round_trip):
    load = round_trip["reordered_load"]
    assert load["loaded"] is False and load["error"] == "BrokenModelError"
    assert load["message"].startswith(
        "org/name: label_encoder_intent.txt does not match heads.safetensors: class 0")


def test_push_uploads_the_export_files_only(round_trip, exported_model):
    assert set(round_trip["main_files"]) == EXPORT_FILES | {".gitattributes"}
    for name in EXPORT_FILES:
        assert round_trip["main_files"][name] == (exported_model / name).read_bytes()
    assert round_trip["titles"] == ["second", "first", "initial commit"]


def test_a_fresh_cache_downloads_the_repo_and_predicts_like_the_folder(round_trip):
    assert max_difference(round_trip["online"]["main"], round_trip["expected_main"]) \
        < SAME_MODEL_TOLERANCE


def test_a_downloaded_model_loads_offline_from_the_cache(round_trip):
    assert round_trip["offline_requests"] == 0
    for name in ("main", "v2", "first"):
        assert max_difference(round_trip["offline"][name], round_trip["online"][name]) == 0


def test_a_pinned_revision_loads_that_revision(round_trip):
    online = round_trip["online"]
    # v2 is a different model; main and the pinned first commit are the original one.
    assert max_difference(online["v2"], round_trip["expected_v2"]) < SAME_MODEL_TOLERANCE
    assert max_difference(online["v2"], online["main"]) > 0.05
    assert max_difference(online["first"], online["main"]) == 0
    assert round_trip["v2_files"]["heads.safetensors"] != round_trip["main_files"]["heads.safetensors"]


def test_a_source_without_a_model_says_which_and_why(round_trip):
    online, offline = round_trip["online_misses"], round_trip["offline_misses"]
    assert online["repo"].startswith("no model at org/missing: no such repo on the Hub")
    assert online["revision"].startswith("no model at org/name at revision no-such-branch: "
                                         "the repo has no such branch")
    assert online["uncached"] == "loaded"
    # offline, with an empty cache, nothing can load, and the reason is the cache
    assert all(offline[name].startswith("no model at org/") and "not in the local Hub cache" in offline[name]
               for name in ("repo", "revision", "uncached")), offline


def test_model_card_front_matter_parses_and_reports_the_checkpoint_figures(
        exported_model, trained_run):
    text = (exported_model / "README.md").read_text()
    assert text.startswith("---\n")
    front = front_matter(exported_model / "README.md")
    assert front["library_name"] == "speechbrain"
    assert front["pipeline_tag"] == "audio-classification"
    assert front["license"] and front["tags"] and front["datasets"] and front["metrics"]
    measured = json.loads((trained_run / "test_metrics.json").read_text())
    meta = measured["checkpoint_meta"]
    reported = {}
    for result in front["model-index"][0]["results"]:
        dataset = result["dataset"]
        for metric in result["metrics"]:
            reported[(dataset["split"], dataset["type"], metric["name"])] = metric["value"]
    expected = {}
    for task in ("intent", "emotion"):
        for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"),
                           ("unweighted_accuracy", "unweighted accuracy (macro recall)")):
            name = f"{task} {label}"
            expected[("validation", "validation", name)] = meta[f"{task}_{key}"]
            expected[("test", "toy", name)] = measured["toy"][task][key]
    assert reported == expected
    assert f"from_hparams(source=\"{REPO_ID}\"" in text and "foreign_class(" in text
    assert "revision=" in text and measured["checkpoint"] in text


def front_matter(readme) -> dict:
    return yaml.safe_load(readme.read_text().split("---\n")[1])


def test_a_checkpoint_chosen_by_name_reports_only_its_own_figures(trained_run, tmp_path):
    # Whether the run kept a second checkpoint depends on its training curve (none when
    # its best is its last), so a copy of the run gets one: the measured checkpoint
    # under another name, which test_metrics.json did not measure.
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, symlinks=True)
    measured = json.loads((run / "test_metrics.json").read_text())
    other = "CKPT+chosen-by-name"
    shutil.copytree(run / "save" / measured["checkpoint"], run / "save" / other)
    # Figures and weights of its own, so that the best checkpoint's would show.
    chosen = run / "save" / other
    meta = yaml.safe_load((chosen / "CKPT.yaml").read_text())
    meta.update(intent_accuracy=0.123, emotion_macro_f1=0.456)
    (chosen / "CKPT.yaml").write_text(yaml.safe_dump(meta))
    heads = torch.load(chosen / "heads.ckpt", map_location="cpu")
    name = next(key for key, value in heads.items() if value.is_floating_point())
    heads[name] = heads[name] + 1.0
    torch.save(heads, chosen / "heads.ckpt")
    out = export_model(run, tmp_path / "other", checkpoint=other)
    assert torch.equal(load_file(out / "heads.safetensors")[name], heads[name])
    results = front_matter(out / "README.md")["model-index"][0]["results"]
    # test_metrics.json was measured on another checkpoint: only validation figures.
    assert {r["dataset"]["split"] for r in results} == {"validation"}
    reported = {m["name"]: m["value"] for r in results for m in r["metrics"]}
    assert reported["intent accuracy"] == 0.123
    assert reported["emotion macro-F1"] == 0.456
    assert "chosen by name" in (out / "README.md").read_text()


@pytest.fixture
def hub_in_process(monkeypatch):
    """A stand-in Hub reachable from this process (conftest sets HF_HUB_OFFLINE=1 before
    huggingface_hub is imported; telemetry would reach for the real Hub)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    with running_hub(token=TOKEN) as hub:
        yield hub


def test_push_without_a_token_says_so_in_one_line(exported_model, monkeypatch, tmp_path, capsys):
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    code = main(["push", "--model", str(exported_model), "--repo-id", REPO_ID])
    err = capsys.readouterr().err
    assert code != 0
    assert err.strip().splitlines() == [err.strip()] and "Traceback" not in err
    assert err.startswith("error: no Hugging Face token") and "HF_TOKEN" in err


def test_push_with_a_refused_token_is_a_clear_error(exported_model, hub_in_process):
    with pytest.raises(HubError, match=r"refused the token \(401"):
        push_model(exported_model, REPO_ID, token="hf_wrong", endpoint=hub_in_process.endpoint)
    assert REPO_ID not in hub_in_process.repos


def test_an_export_made_without_a_repo_id_is_pushed_with_a_card_naming_the_repo(
        trained_run, hub_in_process, tmp_path):
    """Its card names the placeholder repo (usage examples, model-index name); the pushed
    card names the repo it went to, and the export folder is left as it was."""
    from multitask.export import export_model

    model = export_model(trained_run, tmp_path / "model")
    card = (model / "README.md").read_text()
    assert "your-org/your-model" in card
    # A repo id holding the placeholder's name: replaced once, not again inside itself.
    push_model(model, "bank/your-model-2", token=TOKEN, endpoint=hub_in_process.endpoint)
    files = hub_in_process.repos["bank/your-model-2"].files("main")
    pushed = files["README.md"].decode()
    assert "your-org" not in pushed and "your-model-2-2" not in pushed
    assert 'from_hparams(source="bank/your-model-2")' in pushed
    assert yaml.safe_load(pushed.split("---\n")[1])["model-index"][0]["name"] == "your-model-2"
    assert (model / "README.md").read_text() == card
    assert files["heads.safetensors"] == (model / "heads.safetensors").read_bytes()
    # Pushed again unchanged: no new commit (the card is sent as bytes, compared the same).
    commits = len(hub_in_process.repos["bank/your-model-2"].history())
    push_model(model, "bank/your-model-2", token=TOKEN, endpoint=hub_in_process.endpoint)
    assert len(hub_in_process.repos["bank/your-model-2"].history()) == commits
    # A repo named like a YAML boolean still has a name, not True, in its model-index.
    push_model(model, "bank/true", token=TOKEN, endpoint=hub_in_process.endpoint)
    pushed = hub_in_process.repos["bank/true"].files("main")["README.md"].decode()
    assert yaml.safe_load(pushed.split("---\n")[1])["model-index"][0]["name"] == "true"
    assert pushed.count("# true\n") == 1


def test_push_without_network_is_a_clear_error(exported_model, hub_in_process):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(HubError, match="cannot reach the Hub"):
        push_model(exported_model, REPO_ID, token=TOKEN, endpoint=closed)


def test_push_refuses_a_folder_that_is_not_a_complete_export(exported_model, tmp_path):
    partial = shutil.copytree(exported_model, tmp_path / "partial")
    (partial / "encoder.safetensors").unlink()
    with pytest.raises(HubError, match="missing encoder.safetensors"):
        upload_allow_list(partial)


def test_a_run_named_by_a_bare_relative_word_exports(trained_run, tmp_path, monkeypatch):
    """The no-machine-path check looked for the run's name as given: a run folder called
    "trained" matched "Pretrained" in the exported files, and a good export was refused."""
    shutil.copytree(trained_run, tmp_path / "trained")
    monkeypatch.chdir(tmp_path)
    out = export_model("trained", "model")
    assert (out / "heads.safetensors").is_file()


def test_exporting_a_checkpoint_again_gives_the_same_bytes(trained_run, tmp_path, run_python):
    """In two processes, with other hash seeds: custom_interface.py's imports followed set
    order, and safetensors writes its metadata in an order that changes per process (the
    sorting itself is sorted_header's doctest). A re-push of an unchanged export then makes
    no new Hub commit."""
    code = ("import sys; from multitask.export import export_model; "
            "export_model(sys.argv[1], sys.argv[2], repo_id='org/name', verify=False)")
    for seed in ("1", "2"):
        run_python(["-c", code, str(trained_run), str(tmp_path / seed)],
                   env={**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"})
    first, second = ({p.name: p.read_bytes() for p in (tmp_path / seed).iterdir()}
                     for seed in ("1", "2"))
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
