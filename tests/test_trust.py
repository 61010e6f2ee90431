"""What loading a model runs, and what pushing one sends: the trust boundary.

``hyperparams.yaml`` is code (HyperPyYAML imports and calls what its tags name),
so ``MultitaskClassifier.from_hparams`` checks it against an allow-list before
anything is built (:mod:`multitask.trust`). Each payload here is harmless but
detectable: if it ran, it would create a marker file.
"""

import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from conftest import REPO
from hub_server import running_hub

from multitask.hub import push_model
from multitask.inference import MultitaskClassifier
from multitask.trust import ALLOWED_TARGETS, UntrustedHparamsError, check_hparams, untrusted_targets

pytest_plugins = ["trained_tiny"]

TOKEN = "hf_test_token"
EXPORT_FILES = {"hyperparams.yaml", "encoder.safetensors", "heads.safetensors",
                "label_encoder_intent.txt", "label_encoder_emotion.txt",
                "custom_interface.py", "README.md"}


class Payload:
    """Unpickling this creates ``marker``: what a pickle-based weights file can do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def pickle_payload(path: Path, marker: Path) -> Path:
    torch.save({"weight": Payload(marker)}, path)
    return path


def malicious_interface(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()\nclass MultitaskClassifier: pass\n"


def copy_export(exported_model, folder: Path) -> Path:
    shutil.copytree(exported_model, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def add_to_hparams(folder: Path, text: str, first=True) -> None:
    """Put ``text`` before (so it would run first) or after the exported hyperparams."""
    path = folder / "hyperparams.yaml"
    original = path.read_text()
    path.write_text(text + original if first else original + text)


@pytest.fixture
def nothing_built(monkeypatch):
    """Records every HyperPyYAML load SpeechBrain starts (none must start for a refused file)."""
    import speechbrain.inference.interfaces as interfaces

    calls = []
    real = interfaces.load_hyperpyyaml
    monkeypatch.setattr(interfaces, "load_hyperpyyaml",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


# ---------------------------------------------------------------------------
# The allow-list
# ---------------------------------------------------------------------------


# Each is live: HyperPyYAML itself runs it (see the test below) unless it is refused.
LIVE_PAYLOADS = {
    "apply": ('x: !apply:os.mkdir ["{m}"]\n', "!apply:os.mkdir"),
    "new": ('x: !new:pathlib.Path ["{m}"]\ny: !apply:os.mkdir [!ref <x>]\n', "!new:pathlib.Path"),
    "applyref": ('x: !applyref:os.mkdir ["{m}"]\n', "!applyref:os.mkdir"),
    "lookalike_prefix": ('x: !apply:multitask.inference.os.mkdir ["{m}"]\n',
                         "!apply:multitask.inference.os.mkdir"),
    "pyyaml_python_tag": ('x: !!python/object/apply:os.mkdir ["{m}"]\n',
                          "!!python/object/apply:os.mkdir"),
    "tag_hidden_in_a_tuple": ('x: (!!python/object/apply:os.mkdir ["{m}"], 1)\n',
                              "!!python/object/apply:os.mkdir"),
    "tag_directive": ('%TAG !py! tag:yaml.org,2002:python/\n---\nx: !py!object/apply:os.mkdir ["{m}"]\n',
                      "!!python/object/apply:os.mkdir"),
}


@pytest.mark.parametrize("name", sorted(LIVE_PAYLOADS))
def test_every_tag_hyperpyyaml_would_run_is_refused(name, tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    template, target = LIVE_PAYLOADS[name]
    marker = tmp_path / "ran"
    text = template.replace("{m}", str(marker))
    refused = untrusted_targets(text)
    assert refused and refused[0].startswith(target + " ("), refused
    # The payload is real: HyperPyYAML, unchecked, runs it.
    try:
        load_hyperpyyaml(text)
    except Exception:
        pass
    assert marker.exists()


@pytest.mark.parametrize("text, target", [
    ("x: !module:os\n", "!module:os"),
    ("x: !include:other.yaml\n", "!include:other.yaml"),
    ("a: 1\nb: !ref <a.__class__>\n", "!apply:getattr"),
    ("x: !name:torch.nn.ModuleDict.__init__\n", "!name:torch.nn.ModuleDict.__init__"),
    ("? !apply:os.system [id]\n: 1\n", "!apply:os.system"),  # a tagged key
])
def test_imports_includes_and_attribute_references_are_refused(text, target):
    assert untrusted_targets(text)[0].startswith(target + " (")


@pytest.mark.slow  # the session's trained export
def test_the_allow_list_is_what_an_export_writes(exported_model):
    text = (exported_model / "hyperparams.yaml").read_text()
    check_hparams(exported_model / "hyperparams.yaml")
    written = set(re.findall(r"!(?:new|name|apply):(\S+)", text))
    # The extended intent head is written by extend-mode fine-tuning's exports, which
    # tests/test_finetune.py loads through the same check.
    assert written == ALLOWED_TARGETS - {"multitask.inference.ExtendedHead"}


def test_the_security_doc_lists_the_allow_list_exactly():
    text = (Path(REPO) / "docs" / "security.md").read_text(encoding="utf-8")
    listed = text.split("names one of these callables", 1)[1].split("```")[1]
    assert set(listed.split()) == ALLOWED_TARGETS


# ---------------------------------------------------------------------------
# from_hparams
# ---------------------------------------------------------------------------


@pytest.mark.slow  # the session's trained export
def test_hparams_calling_os_system_are_refused_before_anything_is_built(
        exported_model, tmp_path, nothing_built):
    folder = copy_export(exported_model, tmp_path / "model")
    marker = tmp_path / "pwned"
    add_to_hparams(folder, f'pwned: !apply:os.system ["touch {marker}"]\n')
    with pytest.raises(UntrustedHparamsError) as refused:
        MultitaskClassifier.from_hparams(source=folder, savedir=tmp_path / "savedir")
    message = str(refused.value)
    assert f"{folder}/hyperparams.yaml" in message
    assert "!apply:os.system (line 1)" in message and "trust_remote_code=True" in message
    assert not marker.exists()
    assert nothing_built == []


@pytest.mark.slow  # the session's trained export
def test_the_trust_flag_builds_targets_off_the_list(exported_model, tmp_path):
    folder = copy_export(exported_model, tmp_path / "model")
    add_to_hparams(folder, "counter: !new:collections.Counter\n    reviewed: 1\n", first=False)
    with pytest.raises(UntrustedHparamsError, match="!new:collections.Counter"):
        MultitaskClassifier.from_hparams(source=folder)
    model = MultitaskClassifier.from_hparams(source=folder, trust_remote_code=True,
                                             run_opts={"device": "cpu"})
    assert model.hparams.counter == {"reviewed": 1}


@pytest.mark.slow  # the session's trained export
def test_loading_runs_neither_the_repos_python_nor_its_pickles(exported_model, tmp_path):
    folder = copy_export(exported_model, tmp_path / "model")
    markers = {name: tmp_path / name for name in ("interface_ran", "ckpt_unpickled", "bin_unpickled")}
    (folder / "custom_interface.py").write_text(malicious_interface(markers["interface_ran"]))
    pickle_payload(folder / "encoder.ckpt", markers["ckpt_unpickled"])
    pickle_payload(folder / "pytorch_model.bin", markers["bin_unpickled"])
    model = MultitaskClassifier.from_hparams(source=folder, savedir=tmp_path / "savedir",
                                             run_opts={"device": "cpu"})
    assert model.labels and not any(m.exists() for m in markers.values())
    assert "custom_interface" not in sys.modules


@pytest.mark.slow  # the session's trained export
def test_pickled_weights_are_refused_even_where_torch_is_told_to_unpickle(
        exported_model, tmp_path, monkeypatch):
    """A file naming a pickle as the encoder's weights, with SpeechBrain's default hook
    (``torch.load`` without ``weights_only``), in an environment that turns torch's
    safe default off."""
    from speechbrain.utils.checkpoints import torch_patched_state_dict_load

    folder = copy_export(exported_model, tmp_path / "model")
    marker = tmp_path / "unpickled"
    pickle_payload(folder / "encoder.ckpt", marker)
    hparams = folder / "hyperparams.yaml"
    text = hparams.read_text()
    assert text.count("encoder: encoder.safetensors") == 1
    text = text.replace("encoder: encoder.safetensors", "encoder: encoder.ckpt")
    text = text.replace("        encoder: !name:safetensors.torch.load_model\n", "")
    hparams.write_text(text)
    check_hparams(hparams)  # only allowed targets: the weights format is the attack
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        MultitaskClassifier.from_hparams(source=folder, savedir=tmp_path / "savedir")
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # the caller's setting is back
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
    # The threat is real: that hook, outside from_hparams, unpickles the payload.
    with pytest.warns(UserWarning, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        torch_patched_state_dict_load(folder / "encoder.ckpt")
    assert marker.exists()


@pytest.fixture
def hub_here(monkeypatch, tmp_path):
    """The Hub stand-in, reachable from this process, with an empty cache."""
    constants = huggingface_hub.constants
    with running_hub(token=TOKEN) as hub:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield hub


@pytest.mark.slow  # the session's trained export
def test_a_hub_repo_is_refused_having_fetched_its_hyperparams_only(
        exported_model, tmp_path, hub_here, nothing_built):
    marker = tmp_path / "pwned"
    files = {p.name: p.read_bytes() for p in exported_model.iterdir() if p.is_file()}
    files["hyperparams.yaml"] = (f'pwned: !apply:os.system ["touch {marker}"]\n'.encode()
                                 + files["hyperparams.yaml"])
    files["custom_interface.py"] = malicious_interface(tmp_path / "interface_ran").encode()
    hub_here.add_repo("org/evil", files)
    with pytest.raises(UntrustedHparamsError, match=r"org/evil/hyperparams\.yaml .*\n  !apply:os\.system"):
        MultitaskClassifier.from_hparams(source="org/evil")
    assert not marker.exists() and not (tmp_path / "interface_ran").exists()
    assert nothing_built == []
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub_here.requests_to("resolve")}
    assert fetched == {"hyperparams.yaml"}


@pytest.mark.slow  # the session's trained export
def test_the_model_loads_from_the_commit_whose_hyperparams_were_checked(
        exported_model, tmp_path, hub_here, monkeypatch):
    """A push between the check and SpeechBrain's own fetch changes nothing."""
    import multitask.trust

    files = {p.name: p.read_bytes() for p in exported_model.iterdir() if p.is_file()}
    checked_sha = hub_here.add_repo("org/name", files).branches["main"]
    marker = tmp_path / "pwned"
    real_check = multitask.trust.check_hparams

    def check_then_push_a_payload(*args, **kwargs):
        real_check(*args, **kwargs)
        hub_here.commit("org/name", {"hyperparams.yaml": f'pwned: !apply:os.mkdir ["{marker}"]\n'
                                     .encode() + files["hyperparams.yaml"]})

    monkeypatch.setattr(multitask.trust, "check_hparams", check_then_push_a_payload)
    model = MultitaskClassifier.from_hparams(source="org/name", run_opts={"device": "cpu"})
    assert model.labels and not marker.exists()
    assert hub_here.repos["org/name"].branches["main"] != checked_sha  # the push happened
    weights = [r.path for r in hub_here.requests_to("resolve") if "safetensors" in r.path]
    assert weights and all(f"/resolve/{checked_sha}/" in path for path in weights)


# ---------------------------------------------------------------------------
# push and export
# ---------------------------------------------------------------------------


@pytest.mark.slow  # the session's trained export
def test_push_sends_the_export_files_and_no_near_miss(exported_model, tmp_path, monkeypatch):
    """Beyond tests/test_hub.py's stray files: logs with absolute paths, names one
    character or one folder away from an export file, pickles, env files."""
    folder = copy_export(exported_model, tmp_path / "model")
    secret_path = str(tmp_path / "corpus" / "train.csv")
    strays = {
        "train.log": f"reading {secret_path}\n", "events.out.tfevents.1": secret_path,
        ".env": f"HF_TOKEN={TOKEN}\n", ".git/config": "[remote]\n", "hyperparams.yaml.orig": "x",
        "backup/hyperparams.yaml": "x", "backup/encoder.safetensors": "x", "README.md~": "x",
        "label_encoder_intent.txt.bak": "x", "sub/label_encoder_x.txt": "x", "encoder.ckpt": "x",
        "data/manifest.csv": f"id,wav\n1,{secret_path}\n", "results/test_metrics.json": "{}",
    }
    for name, content in strays.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    with running_hub(token=TOKEN) as hub:
        push_model(folder, "org/name", token=TOKEN, endpoint=hub.endpoint)
        uploaded = hub.repos["org/name"].files("main")
    assert set(uploaded) == EXPORT_FILES | {".gitattributes"}
    for name, content in uploaded.items():
        assert secret_path.encode() not in content and str(tmp_path).encode() not in content, name


ABSOLUTE_PATH = re.compile(r"""(?:^|(?<=[\s"'(\[{=,]))(/[A-Za-z0-9_.~+-]+(?:/[A-Za-z0-9_.~+-]+)+)""")


@pytest.mark.slow  # the session's trained export
def test_an_export_names_no_absolute_path_at_all(exported_model):
    """The existing test looks for the paths the test knows (run, repo, home); this one
    looks for any absolute path under a folder of this machine (venv, corpus, encoder
    source, cache...), in every file, safetensors headers included."""
    roots = {entry.name for entry in os.scandir("/") if entry.is_dir()}
    found = {}
    # Not __pycache__/: a test that imported custom_interface.py from the folder leaves it.
    files = [path for path in exported_model.iterdir() if path.is_file()]
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".safetensors":
            data = data[8:8 + int.from_bytes(data[:8], "little")]  # the JSON header
        for match in ABSOLUTE_PATH.findall(data.decode("utf-8")):
            if match.split("/")[1] in roots:
                found.setdefault(path.name, []).append(match)
    assert found == {}
    for needle in (sys.prefix, REPO, os.path.realpath(REPO)):
        assert all(needle.encode() not in p.read_bytes() for p in files)
    config = json.dumps(check_config_keys(exported_model / "hyperparams.yaml"))
    assert "_name_or_path" not in config


def check_config_keys(path: Path) -> dict:
    import yaml

    text = path.read_text()
    block = text.split("encoder_config:\n", 1)[1].split("\nuse_attention_mask:", 1)[0]
    return yaml.safe_load("encoder_config:\n" + block)


@pytest.mark.slow  # the session's trained export
def test_push_refuses_an_export_file_that_is_a_symbolic_link(exported_model, tmp_path):
    from multitask.hub import HubError, upload_allow_list

    folder = copy_export(exported_model, tmp_path / "model")
    secret = tmp_path / "netrc"
    secret.write_text("machine huggingface.co password hf_secret\n")
    label_file = folder / "label_encoder_intent.txt"
    label_file.unlink()
    label_file.symlink_to(secret)
    with pytest.raises(HubError, match="symbolic links.*label_encoder_intent.txt"):
        upload_allow_list(folder)


@pytest.mark.slow  # the session's trained run
def test_an_export_naming_a_path_of_this_machine_is_refused_without_verify_too(trained_run,
                                                                               tmp_path):
    from multitask.export import ExportError, export_model

    with pytest.raises(ExportError, match="README.md contains a path of this machine"):
        export_model(trained_run, tmp_path / "model", model_name=f"run {trained_run}",
                     verify=False)
    assert not (tmp_path / "model").exists()
