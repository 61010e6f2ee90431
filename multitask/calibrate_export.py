"""Calibrating a published model to your callers, without training it.

    multitask calibrate --from org/model --calls calls.csv --out calibrated/ \
        [--task emotion] [--test held_out.csv ...] [--repo-id org/model-calibrated]

A bank or contact centre with an exported model (a folder or a Hub repo id) and a few
hundred labelled calls of its own fits one additive bias per class of one head
(:func:`multitask.calibration.fit_class_bias`, class-balanced cross-entropy on the
model's log-probabilities for the calls), as training's ``class_bias_tasks`` option
does (:mod:`multitask.class_bias`), and gets a new export folder whose head carries it:

* the calls are checked as training checks them
  (:func:`multitask.class_bias.check_call_rows`): a ``speaker`` column with 2 voices or
  more, every class of the head with ``--min-per-class`` clips, no label the model
  lacks, no voice of a ``--test`` manifest. Unreadable clips are reported and left out;
* the fit is cross-validated by voice (fitted on some callers, scored on the others):
  is the bias a property of the line and the wording, or of these few voices?
* every ``--test`` manifest is scored without and with the bias;
* the output is the parent's folder with the head's last bias moved
  (``heads.safetensors``), ``calibration.json`` (the record) and a model card naming the
  parent as ``base_model``, saying what was fitted and measured; the task's figures
  that the parent's card gives predate the bias, and are replaced in the model-index by
  the ``--test`` figures. The other heads' outputs are unchanged, bit for bit.

The folder is built beside ``--out`` and renamed into place once reloaded and checked
(:meth:`~multitask.inference.MultitaskClassifier.from_hparams`, its scores equal to the
parent's plus the bias), so a killed run leaves no half-written model; ``--out`` must
not exist.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from .calibration import class_bias_cross_validation, fit_class_bias
from .card import METRICS, TASK_TITLES, display_path, score_text
from .class_bias import ClassBiasError, check_call_rows
from .export import CARD_FILE
from .manifest import ManifestError, read_manifest, rows_digest

RECORD = "calibration.json"
HEADS_FILE = "heads.safetensors"
PROBABILITY_FLOOR = 1e-12  # log(0) would make a bias unbounded
PLACEHOLDER_NEW = "your-org/your-calibrated-model"
SCORED_AT_ONCE = 32  # clips per classify_files call: the progress bar's step
CHECKED_CLIPS = 8  # calls re-scored through the written folder before it is renamed into place


def labelled_rows(manifest, task: str) -> list[dict]:
    """The rows of a package manifest that carry ``task``'s label (others dropped).

    >>> labelled_rows("no/such.csv", "emotion")
    Traceback (most recent call last):
    ...
    multitask.manifest.ManifestError: no/such.csv: manifest not found
    """
    rows = [row for row in read_manifest(manifest) if row.get(task)]
    if not rows:
        raise ManifestError(f"{manifest}: no row carries an {task} label")
    return rows


def class_log_probs(classify, paths: list[str], task: str, names: list[str]):
    """Each readable clip's log-probability of every class of ``task``, the indices of
    those clips, and one line per clip that could not be read (naming it).

    ``classify(paths)`` returns :meth:`MultitaskClassifier.classify_files`'s results:
    ``{task: {"probs": {name: p}}}`` or ``{"error": message}`` per path.

    >>> fake = lambda paths: [{"error": "b.wav: empty"} if p == "b.wav" else
    ...                       {"emotion": {"probs": {"x": 0.75, "y": 0.25}}} for p in paths]
    >>> log_probs, kept, errors = class_log_probs(fake, ["a.wav", "b.wav"], "emotion", ["x", "y"])
    >>> np.exp(log_probs).tolist(), kept, errors
    ([[0.75, 0.25]], [0], ['b.wav: empty'])
    """
    log_probs, kept, errors = [], [], []
    for index, result in enumerate(classify(paths)):
        if "error" in result:
            error = result["error"]  # the package's audio errors name the file already
            errors.append(error if paths[index] in error else f"{paths[index]}: {error}")
            continue
        probs = result[task]["probs"]
        log_probs.append([np.log(max(probs[name], PROBABILITY_FLOOR)) for name in names])
        kept.append(index)
    return np.array(log_probs, dtype=np.float64).reshape(-1, len(names)), kept, errors


def bias_scores(log_probs, labels, names: list[str]) -> dict:
    """Accuracy, unweighted accuracy, macro-F1 and each class's recall of the argmax
    decisions (:func:`multitask.metrics.classification_report`, as every evaluation of
    the package)."""
    from .metrics import classification_report

    report = classification_report(np.asarray(log_probs).argmax(1), np.asarray(labels), names,
                                   "calibration")
    return {"accuracy": round(report["accuracy"], 4),
            "unweighted_accuracy": round(report["unweighted_accuracy"], 4),
            "macro_f1": round(report["macro_f1"], 4),
            "recall": {name: round(c["recall"], 4) for name, c in report["per_class"].items()}}


def calibrate_export(source, calls, out, *, task="emotion", tests=(), revision=None,
                     min_per_class=10, repo_id=None, parent_repo_id=None, batch_size=1,
                     log=None, progress=True) -> dict:
    """Fit ``task``'s per-class biases on ``calls`` and write the calibrated copy of
    ``source`` to ``out`` (see the module's docstring); returns the record.

    ``batch_size`` 1 scores each clip alone, as :meth:`classify_file` does (group-norm
    encoders see padding in their statistics). ``log``: where messages go (default
    standard error, leaving standard output to the command's JSON); ``progress``: a
    progress bar while clips are scored.
    """
    from tqdm.auto import tqdm

    from .finetune import load_parent, parent_identity

    log = log or functools.partial(print, file=sys.stderr)

    out = Path(out)
    if out.exists():
        raise ClassBiasError(f"{out}: already exists; give a new --out (a calibrated model is "
                             "written whole or not at all)")
    folder = parent_files(source, revision)
    parent = load_parent(folder)
    if task not in parent.tasks:
        raise ClassBiasError(f"{source}: the model has no {task} head (tasks {list(parent.tasks)})")
    calls = os.fspath(calls)
    call_rows = labelled_rows(calls, task)
    test_rows = {os.fspath(path): labelled_rows(path, task) for path in tests}
    names = list(parent.labels[task])
    speakers = check_call_rows(call_rows, calls, {task: names}, min_per_class,
                               {os.path.basename(p): p for p in test_rows})
    index = {name: k for k, name in enumerate(names)}
    for path, rows in test_rows.items():
        unknown = sorted({row[task] for row in rows} - set(index))
        if unknown:
            raise ClassBiasError(f"{path}: {task} label(s) {unknown} are not among the model's "
                                 f"{names}")

    def classify(paths, desc):
        results = []
        with tqdm(total=len(paths), desc=desc, unit="clip", disable=not progress) as bar:
            for start in range(0, len(paths), SCORED_AT_ONCE):
                chunk = paths[start:start + SCORED_AT_ONCE]
                results += parent.classify_files(chunk, batch_size=batch_size, top_k=1)
                bar.update(len(chunk))
        return results

    log_probs, kept, errors = class_log_probs(
        functools.partial(classify, desc=f"scoring calls with {source}"),
        [r["wav"] for r in call_rows], task, names)
    _report_skipped(errors, calls, log)
    kept_rows = [call_rows[i] for i in kept]
    # Checked again without the unreadable clips: a class may now be short.
    check_call_rows(kept_rows, calls, {task: names}, min_per_class, {})
    targets = torch.tensor([index[row[task]] for row in kept_rows])
    log_probs = torch.from_numpy(log_probs).float()
    bias = [round(float(b), 4) for b in fit_class_bias(log_probs, targets)]
    record = {
        "parent": parent_identity(source, revision, parent_repo_id),
        "task": task,
        "classes": names,
        "bias": bias,
        "calls": display_path(calls),
        "calls_digest": rows_digest(kept_rows),
        "calls_clips": dict(zip(names, torch.bincount(targets, minlength=len(names)).tolist(),
                                strict=True)),
        "calls_voices": sorted({speakers[row["id"]] for row in kept_rows}),
        "calls_skipped": errors,
        "min_per_class": min_per_class,
        "cross_validation": class_bias_cross_validation(
            log_probs, targets, [speakers[row["id"]] for row in kept_rows]),
        "tests": {},
    }
    for path, rows in test_rows.items():
        test_lp, test_kept, test_errors = class_log_probs(
            functools.partial(classify, desc=f"scoring {display_path(path)}"),
            [r["wav"] for r in rows], task, names)
        _report_skipped(test_errors, path, log)
        labels = [index[rows[i][task]] for i in test_kept]
        record["tests"][display_path(path)] = {
            "clips": len(test_kept), "skipped": test_errors,
            "without": bias_scores(test_lp, labels, names),
            "with": bias_scores(test_lp + np.array(bias), labels, names)}
    staging = out.parent / f".{out.name}.partial"
    if staging.exists():  # left by a killed run: rebuilt from the parent
        shutil.rmtree(staging)
    shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(".*"))
    _write_heads(parent, task, bias, staging / HEADS_FILE)
    _write_card(staging, record, repo_id or PLACEHOLDER_NEW, _parent_name(record["parent"]))
    (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    _check_calibrated(staging, parent, task, {
        row["wav"]: (log_probs[i] + torch.tensor(bias)).tolist()
        for i, row in enumerate(kept_rows[:CHECKED_CLIPS])})
    os.replace(staging, out)
    cv = record["cross_validation"]
    log(f"{task} biases " + ", ".join(f"{n} {b:+.2f}" for n, b in zip(names, bias, strict=True))
        + f"; callers held out of the fit: unweighted accuracy {score_text(cv['without'])} -> "
        f"{score_text(cv['with'])}; written to {out}")
    return record


def parent_files(source, revision=None) -> Path:
    """The folder holding the parent's files: ``source`` itself, or the snapshot of a Hub
    repo (downloaded into the Hugging Face cache, or found there offline)."""
    from .source import FOLDER, ModelNotFoundError, hub_miss_message, source_kind

    try:
        kind = source_kind(os.fspath(source))
    except ModelNotFoundError as err:
        raise ClassBiasError(str(err)) from None
    if kind == FOLDER:
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=source, revision=revision))
    except Exception as err:  # offline without a cached copy, no such repo or revision
        raise ClassBiasError(hub_miss_message(source, revision, err)) from err


def _write_heads(parent, task: str, bias: list[float], path: Path) -> None:
    """The parent's heads with ``bias`` added to ``task``'s logits, as safetensors with
    the parent file's keys."""
    from safetensors.torch import load_file, save

    heads = parent.mods.heads
    before = load_file(path)
    state = {key: value.detach().clone() for key, value in heads.state_dict().items()}
    if set(state) != set(before) or any(not torch.equal(state[k], before[k]) for k in before):
        raise ClassBiasError(f"{path}: the loaded heads do not match the file's weights")
    head = heads[task]
    try:
        for position, value in enumerate(bias):
            head.offset_logits(torch.arange(head.num_classes) == position, value)
    except ValueError as err:  # an extended head's kept classes: the parent's, whole
        raise ClassBiasError(f"cannot calibrate the {task} head: {err}") from None
    state = {key: value.detach().contiguous() for key, value in heads.state_dict().items()}
    path.write_bytes(save(state, metadata={"format": "pt"}))


def _check_calibrated(folder: Path, parent, task: str, expected: dict) -> None:
    """Reload the calibrated folder as users will: each clip of ``expected`` (path ->
    the parent's log-probabilities plus the bias) must score so, and the other heads as
    the parent's."""
    from .inference import MultitaskClassifier

    calibrated = MultitaskClassifier.from_hparams(source=os.fspath(folder),
                                                  run_opts={"device": "cpu"}, optimize=None)
    for path, log_probs in expected.items():
        got = calibrated.classify_file(path)
        want = {task: torch.softmax(torch.as_tensor(log_probs), 0).tolist()}
        other = parent.classify_file(path)
        for name in calibrated.tasks:
            reference = want.get(name) or list(other[name]["probs"].values())
            if not np.allclose(list(got[name]["probs"].values()), reference, atol=1e-4):
                raise ClassBiasError(f"{folder}: the calibrated model's {name} scores for "
                                     f"{path} are not the parent's"
                                     + (" plus the biases" if name == task else ""))


def _parent_name(identity: dict) -> str:
    return identity.get("repo_id") or identity["source"]


def _write_card(folder: Path, record: dict, repo_id: str, parent_name: str) -> None:
    """The parent's card, made this model's: name, ``base_model``, the task's figures
    replaced by the calibrated ones, a section on the calibration before the parent's text."""
    from huggingface_hub import EvalResult, ModelCard

    path = folder / CARD_FILE
    card = ModelCard.load(path)
    task = record["task"]
    old_repo = re.search(r'from_hparams\(source="([^"]+)"', card.text)
    name = repo_id.split("/")[-1]
    card.data.model_name = name
    card.data.base_model = parent_name
    card.data.base_model_relation = "finetune"
    kept = [r for r in (card.data.eval_results or []) if r.dataset_config != task]
    added = []
    for manifest, figures in record["tests"].items():
        for key, (metric_type, label, args) in METRICS.items():
            added.append(EvalResult(
                task_type="audio-classification", task_name=TASK_TITLES.get(task, task),
                dataset_type="test", dataset_name=f"{manifest} (calibrated)",
                dataset_config=task, dataset_split="test", metric_type=metric_type,
                metric_name=f"{task} {label}", metric_value=figures["with"][key],
                metric_args=args))
    card.data.eval_results = kept + added or None
    text = card.text
    if old_repo:
        text = text.replace(f'"{old_repo.group(1)}"', f'"{repo_id}"').replace(
            f"--model {old_repo.group(1)} ", f"--model {repo_id} ")
    title = re.search(r"^# .*$", text, flags=re.M)
    section = _calibration_section(record, parent_name)
    if title:
        text = f"{text[:title.start()]}# {name}\n\n{section}{text[title.end():]}"
    else:
        text = f"# {name}\n\n{section}{text}"
    card.text = text
    card.save(path)


def _calibration_section(record: dict, parent_name: str) -> str:
    """Markdown: what was fitted, on what, and what it measured."""
    task, cv = record["task"], record["cross_validation"]
    biases = ", ".join(f"{n} {b:+.2f}" for n, b in zip(record["classes"], record["bias"], strict=True))
    lines = [
        f"`{parent_name}` calibrated to its callers: its {task} logits carry one bias per "
        f"class ({biases}), fitted by class-balanced cross-entropy on "
        f"{sum(record['calls_clips'].values())} labelled calls (`{record['calls']}`, "
        f"{len(record['calls_voices'])} voices), with `multitask calibrate`. No weight "
        f"but the {task} head's last bias moved; the other heads give the parent's "
        "outputs exactly.",
        "",
        f"- Fitted on some of the calls' voices and scored on the others (cross-validated "
        f"by voice, {len(cv['folds'])} folds): unweighted {task} accuracy "
        f"{score_text(cv['without'])} → {score_text(cv['with'])}.",
    ]
    for manifest, figures in record["tests"].items():
        before, after = figures["without"], figures["with"]
        lines.append(
            f"- `{manifest}` ({figures['clips']} clips, voices none of the calls'): accuracy "
            f"{score_text(before['accuracy'])} → {score_text(after['accuracy'])}, unweighted "
            f"{score_text(before['unweighted_accuracy'])} → "
            f"{score_text(after['unweighted_accuracy'])}, macro-F1 "
            f"{score_text(before['macro_f1'])} → {score_text(after['macro_f1'])}.")
    if not record["tests"]:
        lines.append("- No held-out test was scored with the biases (`--test`).")
    lines += ["", f"The rest of this card is the parent's: its {task} figures were measured "
              "before the biases (the model-index gives the calibrated ones, when measured).", ""]
    return "\n".join(lines) + "\n"


def _report_skipped(errors: list[str], manifest, log) -> None:
    for line in errors:
        log(f"skipped {line}")
    if errors:
        log(f"{manifest}: {len(errors)} clip(s) could not be read and were left out")


def add_parser(subparsers) -> None:
    """Register ``calibrate`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "calibrate", help="Fit per-class biases of one head on your labelled calls",
        description="Copy an exported model (folder or Hub repo id) with one head's logits "
                    "calibrated to your callers: one bias per class, fitted on labelled, "
                    "held-out calls (a manifest with a speaker column), cross-validated by "
                    "voice, scored on --test manifests without and with.")
    parser.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                        help="exported model folder or Hub repo id")
    parser.add_argument("--revision", help="Hub branch, tag or commit of SOURCE")
    parser.add_argument("--calls", required=True, metavar="MANIFEST",
                        help="labelled calls to fit on (package manifest with a speaker column)")
    parser.add_argument("--out", required=True, help="new model folder (must not exist)")
    parser.add_argument("--task", default="emotion", help="the head to calibrate")
    parser.add_argument("--test", action="append", default=[], metavar="MANIFEST",
                        help="held-out manifest scored without and with (repeatable)")
    parser.add_argument("--min-per-class", type=int, default=10,
                        help="fewest calls of each class (default 10)")
    parser.add_argument("--repo-id", help="Hub id of the calibrated model, for its card")
    parser.add_argument("--parent-repo-id", help="Hub id of a local SOURCE, for the card")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from .finetune import FinetuneError

    if args.min_per_class < 1:
        print("error: --min-per-class must be 1 or more", file=sys.stderr)
        return 1
    try:
        record = calibrate_export(
            args.source, args.calls, args.out, task=args.task, tests=args.test,
            revision=args.revision, min_per_class=args.min_per_class, repo_id=args.repo_id,
            parent_repo_id=args.parent_repo_id)
    except (ClassBiasError, FinetuneError, ManifestError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"bias": dict(zip(record["classes"], record["bias"], strict=True)),
                      "cross_validation": {k: record["cross_validation"][k]
                                           for k in ("without", "with")},
                      "tests": record["tests"]}, indent=2))
    return 0

