"""The shipped ``evaluate`` metric scripts and the report built on them.

Values are checked against scikit-learn on random data where classes are missing
from the references, the predictions or both; the scripts themselves use numpy only.
Loading is checked offline in a fresh interpreter with an empty ``HF_HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from multitask.metrics import (
    METRIC_NAMES,
    classification_report,
    load_metric,
    metric_path,
    plot_confusion_matrix,
)

REPO = Path(__file__).resolve().parent.parent
METRICS_DIR = REPO / "multitask" / "metrics"
INTENTS = [
    "unauthorised_transaction", "card_arrival", "exchange_rate", "balance_not_updated",
    "lost_or_stolen_card", "top_up_failed", "pin_blocked", "transfer_timing",
    "cash_withdrawal_charge", "direct_debit_payment", "change_personal_details",
    "refund_not_showing_up", "activate_my_card", "declined_card_payment",
]  # fmt: skip
EMOTIONS = ["neutral", "happy", "sad", "angry", "fearful", "disgusted"]


def random_case(seed: int, k: int):
    """Predictions/references over ``k`` classes where some classes are missing."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    ref_classes = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    pred_classes = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    ref = rng.choice(ref_classes, size=n)
    pred = np.where(rng.random(n) < 0.5, ref, rng.choice(pred_classes, size=n))
    return pred, ref


CASES = [(seed, k) for k in (len(EMOTIONS), len(INTENTS)) for seed in range(20)]


def test_random_cases_cover_every_kind_of_missing_class():
    kinds = set()
    for seed, k in CASES:
        pred, ref = random_case(seed, k)
        for c in range(k):
            kinds.add((c in ref, c in pred))
    assert kinds == {(True, True), (True, False), (False, True), (False, False)}


@pytest.mark.parametrize("seed,k", CASES)
def test_report_matches_sklearn(seed, k):
    pred, ref = random_case(seed, k)
    names = (EMOTIONS if k == len(EMOTIONS) else INTENTS)[:k]
    report = classification_report(pred, ref, names, "emotion")
    present = sorted(set(ref.tolist()) | set(pred.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes missing from y_true
        assert report["accuracy"] == pytest.approx(accuracy_score(ref, pred))
        assert report["macro_f1"] == pytest.approx(
            f1_score(ref, pred, average="macro", labels=present, zero_division=0)
        )
        assert report["macro_f1"] == pytest.approx(f1_score(ref, pred, average="macro"))
        assert report["unweighted_accuracy"] == pytest.approx(balanced_accuracy_score(ref, pred))
        p, r, f, s = precision_recall_fscore_support(
            ref, pred, labels=list(range(k)), zero_division=0
        )
    assert report["confusion_matrix"] == confusion_matrix(ref, pred, labels=list(range(k))).tolist()
    for i, name in enumerate(names):
        got = report["per_class"][name]
        assert got["precision"] == pytest.approx(p[i])
        assert got["recall"] == pytest.approx(r[i])
        assert got["f1"] == pytest.approx(f[i])
        assert got["support"] == s[i]
    assert report["num_examples"] == len(ref)


@pytest.mark.parametrize("seed", range(5))
def test_scripts_with_explicit_label_ids_match_sklearn(seed):
    """``labels`` may be any ids in any order; results follow that order."""
    label_ids = [7, 3, 11, 5]
    pred, ref = random_case(seed, len(label_ids))
    pred, ref = np.take(label_ids, pred), np.take(label_ids, ref)
    kwargs = {"predictions": pred, "references": ref, "labels": label_ids}
    cm = load_metric("confusion_matrix").compute(**kwargs)["confusion_matrix"]
    np.testing.assert_array_equal(cm, confusion_matrix(ref, pred, labels=label_ids))
    f1 = load_metric("macro_f1").compute(**kwargs, return_per_class=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert f1["macro_f1"] == pytest.approx(f1_score(ref, pred, average="macro"))
        assert load_metric("unweighted_accuracy").compute(**kwargs)[
            "unweighted_accuracy"
        ] == pytest.approx(balanced_accuracy_score(ref, pred))
    _, _, f, s = precision_recall_fscore_support(ref, pred, labels=label_ids, zero_division=0)
    assert f1["labels"] == label_ids
    np.testing.assert_allclose(f1["f1"], f)
    assert f1["support"] == s.tolist()


def test_absent_class_convention():
    """A class with neither references nor predictions is not averaged; others are."""
    pred, ref = [0, 1, 1, 1], [0, 1, 1, 0]  # class 2 absent, class 3 only predicted below
    f1 = load_metric("macro_f1").compute(predictions=pred, references=ref, num_classes=3)
    both = (2 / 3 + 4 / 5) / 2
    assert f1["macro_f1"] == pytest.approx(both)
    # sklearn with the full label set would count the absent class as F1 = 0:
    full = f1_score(ref, pred, average="macro", labels=[0, 1, 2], zero_division=0)
    assert full == pytest.approx(both * 2 / 3)
    # A class that is predicted but never referenced counts, with F1 = 0, for macro-F1 ...
    pred2, ref2 = [0, 1, 2, 1], [0, 1, 1, 1]
    out = load_metric("macro_f1").compute(predictions=pred2, references=ref2, num_classes=4)
    assert out["macro_f1"] == pytest.approx((1 + 0.8 + 0) / 3)
    # ... but not for UA, whose per-class recall needs references (it still costs class 1).
    ua = load_metric("unweighted_accuracy").compute(
        predictions=pred2, references=ref2, num_classes=4
    )
    assert ua["unweighted_accuracy"] == pytest.approx((1 + 2 / 3) / 2)


def test_report_is_plain_json_and_covers_every_class():
    report = classification_report([0, 1], [0, 0], INTENTS, "intent")
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert set(report) >= {
        "accuracy", "macro_f1", "unweighted_accuracy", "confusion_matrix", "per_class",
        "num_examples",
    }  # fmt: skip
    assert list(report["per_class"]) == INTENTS
    assert np.array(report["confusion_matrix"]).shape == (14, 14)
    assert report["per_class"]["exchange_rate"] == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0
    }  # fmt: skip


def test_report_accepts_tensors_and_arrays():
    torch = pytest.importorskip("torch")
    pred, ref = [0, 2, 1, 1, 5], [0, 2, 2, 1, 5]
    expected = classification_report(pred, ref, EMOTIONS, "emotion")
    assert classification_report(torch.tensor(pred), torch.tensor(ref), EMOTIONS, "emotion") == (
        expected
    )
    assert (
        classification_report(
            np.array(pred, dtype=np.int32), np.array(ref, dtype=np.int16), EMOTIONS, "emotion"
        )
        == expected
    )


@pytest.mark.parametrize(
    "pred,ref,match",
    [
        ([], [], "empty"),
        ([0, 6], [0, 1], r"out of range \[6\].*0\.\.5"),
        ([0, 1], [-1, 1], r"out of range \[-1\]"),
        ([0, 1, 2], [0, 1], "differ in length"),
        ([0.0, 1.0], [0, 1], "integer class ids"),
        ([[0, 1]], [[0, 1]], "1-D"),
    ],
)
def test_report_rejects_bad_input(pred, ref, match):
    with pytest.raises(ValueError, match=match):
        classification_report(pred, ref, EMOTIONS, "emotion")


def test_report_rejects_bad_label_names():
    with pytest.raises(ValueError, match="empty"):
        classification_report([0], [0], [], "intent")
    with pytest.raises(ValueError, match="duplicates"):
        classification_report([0], [0], ["a", "a"], "intent")


@pytest.mark.parametrize(
    "name", ["macro_f1", "unweighted_accuracy", "confusion_matrix", "accuracy"]
)
def test_scripts_reject_bad_input_and_recover(name):
    metric = load_metric(name)
    with pytest.raises(ValueError, match="empty"):
        metric.compute(predictions=[], references=[])
    with pytest.raises(ValueError, match=r"out of range: \[3\]; allowed: 0\.\.2 \(3 classes\)"):
        metric.compute(predictions=[0, 3], references=[0, 1], num_classes=3)
    with pytest.raises(ValueError, match=r"out of range: \[4\]; allowed: \[1, 2\]"):
        metric.compute(predictions=[1, 2], references=[1, 4], labels=[1, 2])
    with pytest.raises(ValueError, match="not both"):
        metric.compute(predictions=[0], references=[0], labels=[0], num_classes=1)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        metric.compute(predictions=[0], references=[0], num_classes=0)
    # The cached module carries no state over from a failed call.
    out = metric.compute(predictions=[0, 1], references=[0, 1], num_classes=2)
    value = next(iter(out.values()))
    if name == "confusion_matrix":
        assert [list(map(int, row)) for row in value] == [[1, 0], [0, 1]]
    else:
        assert value == 1.0


def test_confusion_matrix_normalize():
    cm = load_metric("confusion_matrix")
    kwargs = {"predictions": [0, 1, 1, 1], "references": [0, 1, 1, 0], "num_classes": 3}
    np.testing.assert_allclose(
        cm.compute(**kwargs, normalize="true")["confusion_matrix"],
        [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]],
    )
    np.testing.assert_allclose(
        cm.compute(**kwargs, normalize="pred")["confusion_matrix"],
        [[1, 1 / 3, 0], [0, 2 / 3, 0], [0, 0, 0]],
    )
    np.testing.assert_allclose(cm.compute(**kwargs, normalize="all")["confusion_matrix"].sum(), 1.0)
    with pytest.raises(ValueError, match="normalize"):
        cm.compute(**kwargs, normalize="rows")


def test_load_metric_caches_and_names():
    assert load_metric("macro_f1") is load_metric("macro_f1")
    with pytest.raises(ValueError, match="shipped metrics"):
        load_metric("f1")
    for name in METRIC_NAMES:
        info = load_metric(name).info
        assert info.description and info.citation and info.inputs_description
        assert {k: v.dtype for k, v in info.features.items()} == {
            "predictions": "int32",
            "references": "int32",
        }


def test_package_data_glob_covers_the_scripts():
    shipped = sorted(
        p.relative_to(REPO / "multitask").as_posix() for p in METRICS_DIR.glob("*/*.py")
    )
    assert shipped == sorted(f"metrics/{n}/{n}.py" for n in METRIC_NAMES)
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "metrics/*/*.py" in pyproject["tool"]["setuptools"]["package-data"]["multitask"]


OFFLINE_PROBE = textwrap.dedent(
    """
    import json, sys

    attempts = []
    NETWORK = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
               "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.sendto",
               "socket.sendmsg", "http.client.connect", "urllib.Request"}

    def audit(event, args):
        if event in NETWORK:
            attempts.append([event, repr(args)[:200]])
            raise ConnectionRefusedError(f"test forbids network: {event} {args!r}")

    sys.addaudithook(audit)

    from multitask.metrics import METRIC_NAMES, classification_report, load_metric

    modules = {}
    for name in METRIC_NAMES:
        module = load_metric(name)
        source = sys.modules[type(module).__module__].__file__
        modules[name] = source
    report = classification_report([0, 1, 1, 2], [0, 1, 2, 2], ["a", "b", "c"], "emotion")
    print(json.dumps({"attempts": attempts, "modules": modules, "report": report}))
    """
)


@pytest.mark.slow
def test_offline_load_with_fresh_hf_home(tmp_path):
    """A fresh interpreter, offline flags, empty HF_HOME: loads, copies, never networks."""
    hf_home = tmp_path / "hf_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert result["report"]["unweighted_accuracy"] == pytest.approx(2.5 / 3)
    cache = hf_home / "modules" / "evaluate_modules" / "metrics"
    for name, source in result["modules"].items():
        copied = Path(source)
        # evaluate imported its own copy of the script, under the fresh HF_HOME ...
        assert copied.parent.parent == cache / name, copied
        # ... byte for byte the script shipped in the package.
        assert copied.read_bytes() == (metric_path(name) / f"{name}.py").read_bytes()


def test_plot_confusion_matrix_png(tmp_path):
    from PIL import Image

    pred, ref = random_case(3, len(INTENTS))
    report = classification_report(pred, ref, INTENTS, "intent")
    path = plot_confusion_matrix(
        report["confusion_matrix"], INTENTS, tmp_path / "sub" / "intent.png", "intent — test"
    )
    assert path == tmp_path / "sub" / "intent.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert width >= 900 and height >= 900  # room for 14 long names
    assert pixels.std() > 20  # not a blank canvas
    assert path.stat().st_size > 30_000

    small = plot_confusion_matrix(
        [[3, 1], [0, 0]], ["neutral", "angry"], tmp_path / "small.png", normalise=False
    )
    with Image.open(small) as image:
        assert image.size[0] < width


def test_plot_confusion_matrix_rejects_mismatch(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix([[1, 2, 3]], ["a"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="label names"):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-negative"):
        plot_confusion_matrix([[1, -1], [0, 1]], ["a", "b"], tmp_path / "x.png")
