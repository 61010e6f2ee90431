"""One tiny trained and exported model per test session, shared by the inference and hub tests.

``trained_run`` runs the real recipe (``recipes/train.py hparams/tiny.yaml``) in a
subprocess on the toy corpus with the group-norm tiny encoder (like wav2vec2-base);
``exported_model`` exports its best checkpoint with :func:`multitask.export.export_model`.

Test modules load this file as a plugin (``pytest_plugins = ["trained_tiny"]``):
registered once, its session fixtures run once however many modules use them
(importing the fixtures into each module instead would train once per module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _run_python(args, env=None, cwd=REPO, timeout=600, check=True, flags=()):
    """Run ``python [flags] args`` and return the completed process (text mode)."""
    proc = subprocess.run([sys.executable, *flags, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[:3]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def _run_client(code: str, *args, env=None, cwd=REPO, flags=()) -> dict:
    """Run ``code`` with ``args`` in a fresh interpreter; return the JSON it printed last."""
    proc = _run_python(["-c", code, *map(str, args)], env=env, cwd=cwd, flags=flags)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def run_python():
    """``run_python(args, env=, cwd=, check=, flags=)`` -> CompletedProcess."""
    return _run_python


@pytest.fixture(scope="session")
def run_client():
    """``run_client(code, *args, env=, cwd=, flags=)`` -> the JSON the code printed last."""
    return _run_client


# Runs where `multitask` cannot be imported: the editable install's finder is
# outvoted by a finder that refuses the package, and -I keeps the repo off sys.path.
FOREIGN_CLASS_SCRIPT = """
import importlib.abc, json, sys

class RefuseMultitask(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "multitask" or name.startswith("multitask."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, RefuseMultitask())
try:
    import multitask  # noqa: F401
    importable = True
except ImportError:
    importable = False

from speechbrain.inference.interfaces import foreign_class
model = foreign_class(source=sys.argv[1], pymodule_file="custom_interface.py",
                      classname="MultitaskClassifier")
print(json.dumps({"multitask_importable": importable, "class_module": type(model).__module__,
                  "probs": {p: {t: model.classify_file(p)[t]["probs"] for t in model.tasks}
                            for p in sys.argv[2:]}}))
"""


@pytest.fixture(scope="session")
def run_foreign_class():
    """``run_foreign_class(folder, *wavs, cwd=)`` -> the folder loaded with ``foreign_class``
    in a process where ``multitask`` cannot be imported: ``{"multitask_importable",
    "class_module", "probs": {wav: {task: {label: p}}}}``."""
    def run(folder, *wavs, cwd):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(Path(cwd) / "hf_home")}
        env.pop("PYTHONPATH", None)
        return _run_client(FOREIGN_CLASS_SCRIPT, folder, *wavs, env=env, cwd=cwd, flags=["-I"])
    return run


@pytest.fixture(scope="session")
def trained_run(group_norm_encoder, toy_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained_tiny") / "run"
    _run_python([
        "recipes/train.py", "hparams/tiny.yaml",
        f"--encoder_source={group_norm_encoder}", f"--output_folder={out}",
        f"--train_manifests=[{toy_corpus['train']}]",
        f"--valid_manifests=[{toy_corpus['valid']}]",
        f"--test_manifests={{toy: {toy_corpus['test']}}}",
    ], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return out


@pytest.fixture(scope="session")
def exported_model(trained_run, tmp_path_factory) -> Path:
    from multitask.export import export_model

    return export_model(trained_run, tmp_path_factory.mktemp("exported") / "model",
                        repo_id="org/name")


@pytest.fixture(scope="session")
def toy_wavs(toy_corpus) -> list[str]:
    """A few toy test utterances of both tasks, several durations."""
    folder = Path(toy_corpus["test"]).parent / "wav"
    return sorted(str(p) for p in folder.glob("test_*.wav"))[::2]
