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
  lacks, no voice of a ``--test`` manifest (whose rows must name their speakers).
  Unreadable clips are reported and left out, and so are clips longer than
  ``LONG_FILE_SECONDS`` (45 s): the model averages such a file's windows, which a bias
  fitted on whole clips does not describe (cut long calls into utterances first);
* the fit is cross-validated by voice (fitted on some callers, scored on the others):
  is the bias a property of the line and the wording, or of these few voices? A bias
  that lowers the held-out voices' or a ``--test`` manifest's unweighted accuracy is
  written with a warning, in the log and on the card;
* every ``--test`` manifest is scored without and with the bias;
* the output holds the parent's export files with the head's last bias moved
  (``heads.safetensors``), ``calibration.json`` (the record; it names the callers'
  voices, so ``multitask push`` leaves it local) and a model card naming the parent as
  ``base_model`` (when its Hub id is known) and saying what was fitted and measured;
  the task's figures on the parent's card predate the bias, and the model-index gives
  the ``--test`` figures instead. The other heads' outputs are unchanged, bit for bit.

Everything that can be checked is checked before any clip is scored. The folder is
built beside ``--out`` (:func:`multitask.export.staged_folder`) and renamed into place
once reloaded and checked against the parent's scores plus the bias, so a failed or
killed run leaves nothing; ``--out`` must not exist. An extended intent head (from
``multitask finetune --mode extend``) is refused: its kept classes are the parent's.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from .audio import LONG_FILE_SECONDS
from .calibration import PROBABILITY_FLOOR, class_bias_cross_validation, fit_class_bias
from .card import (
    METRICS,
    PLACEHOLDER_CALIBRATED_REPO_ID,
    TASK_TITLES,
    display_path,
    parent_name,
    score_text,
)
from .class_bias import ClassBiasError, check_call_rows, scores
from .evaluate_export import classify_with_progress
from .export import CARD_FILE, EXPORT_FILES, ExportError, export_file_names, staged_folder
from .manifest import ManifestError, rows_digest, single_task_rows
from .settings import check_count

RECORD = "calibration.json"
HEADS_FILE = "heads.safetensors"
CHECKED_CLIPS = 8  # calls re-scored through the written folder before it is renamed into place
MIN_PER_CLASS_OPTION = "--min-per-class"


def class_log_probs(classify, paths: list[str], task: str, names: list[str]):
    """Each usable clip's log-probability of every class of ``task``, the indices of
    those clips, and one line per clip left out, naming it: unreadable, or longer than
    ``LONG_FILE_SECONDS`` (scored in windows, whose mean a bias cannot be fitted to).

    ``classify(paths)`` returns :meth:`MultitaskClassifier.classify_files`'s results:
    ``{task: {"probs": {name: p}}}`` (with ``"windows"`` for a long file) or
    ``{"error": message}`` per path.

    >>> fake = lambda paths: [{"error": "b.wav: empty"} if p == "b.wav" else
    ...                       {"emotion": {"probs": {"x": 0.75, "y": 0.25}}} for p in paths]
    >>> log_probs, kept, skipped = class_log_probs(fake, ["a.wav", "b.wav"], "emotion", ["x", "y"])
    >>> np.exp(log_probs).tolist(), kept, skipped
    ([[0.75, 0.25]], [0], ['b.wav: empty'])
    """
    log_probs, kept, skipped = [], [], []
    for index, result in enumerate(classify(paths)):
        if "error" in result:
            error = result["error"]  # the package's audio errors name the file already
            skipped.append(error if paths[index] in error else f"{paths[index]}: {error}")
            continue
        if "windows" in result:
            skipped.append(f"{paths[index]}: longer than {LONG_FILE_SECONDS:.0f} s (the model "
                           "averages its windows); cut long calls into utterances")
            continue
        probs = result[task]["probs"]
        log_probs.append([np.log(max(probs[name], PROBABILITY_FLOOR)) for name in names])
        kept.append(index)
    return np.array(log_probs, dtype=np.float64).reshape(-1, len(names)), kept, skipped


def bias_scores(log_probs, labels, names: list[str]) -> dict:
    """:func:`multitask.class_bias.scores` with each class's recall, to 4 decimals."""
    figures = scores(torch.as_tensor(np.asarray(log_probs)), torch.as_tensor(np.asarray(labels)),
                     names, "calibration", recall=True)
    recall = figures.pop("recall")
    return {**{key: round(value, 4) for key, value in figures.items()},
            "recall": {name: None if r is None else round(r, 4) for name, r in recall.items()}}


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
    from .finetune.parent import check_parent_folder, load_parent, parent_identity
    from .model import ExtendedHead

    log = log or functools.partial(print, file=sys.stderr)
    out = Path(out)
    folder = parent_files(source, revision)
    _check_out(out, folder)
    check_parent_folder(folder)
    card = _load_card(folder)
    files = _export_files(folder)
    parent = load_parent(folder)
    if task not in parent.tasks:
        raise ClassBiasError(f"{source}: the model has no {task} head (tasks {list(parent.tasks)})")
    if isinstance(parent.mods.heads[task], ExtendedHead):
        raise ClassBiasError(f"{source}: the {task} head is an extended head (`multitask finetune "
                             "--mode extend`): its kept classes are its parent's, whole, and take "
                             "no bias; calibrate the parent, or another head")
    names = list(parent.labels[task])
    calls = os.fspath(calls)
    call_rows = single_task_rows(calls, task)
    test_rows = _test_rows(tests, task, names)
    check_call_rows(call_rows, calls, {task: names}, min_per_class,
                    {path: path for path in test_rows}, min_name=MIN_PER_CLASS_OPTION)
    identity = parent_identity(source, revision, parent_repo_id)

    def classify(paths, desc):
        return classify_with_progress(parent, paths, batch_size=batch_size, desc=desc,
                                      progress=progress)

    log_probs, kept, skipped = class_log_probs(
        functools.partial(classify, desc=f"scoring calls with {source}"),
        [row["wav"] for row in call_rows], task, names)
    _report_skipped(skipped, calls, log)
    kept_rows = [call_rows[i] for i in kept]
    try:
        check_call_rows(kept_rows, calls, {task: names}, min_per_class, {},
                        min_name=MIN_PER_CLASS_OPTION)
    except ClassBiasError as err:
        raise ClassBiasError(f"{err} (after leaving out the {len(skipped)} clip(s) above)"
                             if skipped else str(err)) from None
    index = {name: k for k, name in enumerate(names)}
    targets = torch.tensor([index[row[task]] for row in kept_rows])
    log_probs = torch.from_numpy(log_probs).float()
    bias = [round(float(b), 4) for b in fit_class_bias(log_probs, targets)]
    voices = [row["speaker"] for row in kept_rows]
    record = {
        "parent": identity,
        "task": task,
        "classes": names,
        "bias": bias,
        "calls": display_path(calls),
        "calls_digest": rows_digest(kept_rows),
        "calls_per_class": dict(zip(names, torch.bincount(targets, minlength=len(names)).tolist(),
                                    strict=True)),
        "calls_voices": sorted(set(voices)),
        "calls_skipped": skipped,
        "min_per_class": min_per_class,
        "cross_validation": class_bias_cross_validation(log_probs, targets, voices),
        "tests": {},
    }
    for (path, rows), shown in zip(test_rows.items(), _unique_names(test_rows), strict=True):
        test_lp, test_kept, test_skipped = class_log_probs(
            functools.partial(classify, desc=f"scoring {shown}"), [r["wav"] for r in rows],
            task, names)
        _report_skipped(test_skipped, path, log)
        if not test_kept:
            raise ClassBiasError(f"{path}: none of its {len(rows)} clips could be scored")
        labels = [index[rows[i][task]] for i in test_kept]
        record["tests"][shown] = {
            "clips": len(test_kept), "skipped": test_skipped,
            "without": bias_scores(test_lp, labels, names),
            "with": bias_scores(test_lp + np.array(bias), labels, names)}
    record["warnings"] = _warnings(record)
    for line in record["warnings"]:
        log(f"WARNING: {line}")
    if (folder / RECORD).is_file():  # the parent was calibrated too: keep its record
        record["parent_calibration"] = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    repo_id = repo_id or PLACEHOLDER_CALIBRATED_REPO_ID
    if not identity.get("repo_id"):
        log(f"note: the card names no base_model (pass --parent-repo-id with {source}'s Hub id)")
    with staged_folder(out) as staging:
        for name in files:
            shutil.copyfile(folder / name, staging / name)  # follows a Hub snapshot's links
        _write_heads(parent, task, bias, staging / HEADS_FILE)
        _write_card(card, staging / CARD_FILE, record, repo_id)
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _check_calibrated(staging, out, parent, task, {
            row["wav"]: (log_probs[i] + torch.tensor(bias)).tolist()
            for i, row in enumerate(kept_rows[:CHECKED_CLIPS])})
    cv = record["cross_validation"]
    log(f"{task} biases " + ", ".join(f"{n} {b:+.2f}" for n, b in zip(names, bias, strict=True))
        + f"; callers held out of the fit: unweighted accuracy {score_text(cv['without'])} -> "
        f"{score_text(cv['with'])}; written to {out}")
    return record


def parent_files(source, revision=None) -> Path:
    """The folder holding the parent's export files: ``source`` itself, or the snapshot
    of a Hub repo (downloaded into the Hugging Face cache, or found there offline)."""
    from .source import FOLDER, HUB, ModelNotFoundError, check_model_source, hub_miss_message

    try:
        kind = check_model_source(os.fspath(source), revision=revision)
    except ModelNotFoundError as err:
        raise ClassBiasError(str(err)) from None
    if kind == FOLDER:
        return Path(source)
    if kind != HUB:
        raise ClassBiasError(f"{source}: give an exported model folder or a Hub repo id "
                             "(org/name), not a web address")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=source, revision=revision,
                                      allow_patterns=[*EXPORT_FILES, "label_encoder_*.txt"]))
    except Exception as err:  # offline without a cached copy, no such repo or revision
        raise ClassBiasError(hub_miss_message(source, revision, err)) from err


def _check_out(out: Path, folder: Path) -> None:
    if out.exists():
        raise ClassBiasError(f"{out}: already exists; give a new --out (a calibrated model is "
                             "written whole or not at all)")
    if out.resolve().is_relative_to(folder.resolve()):
        raise ClassBiasError(f"{out}: inside the model folder {folder}; write the calibrated "
                             "model beside it")
    existing = next(p for p in (out.resolve(), *out.resolve().parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise ClassBiasError(f"{out}: cannot be written ({existing} is not writable)")


def _load_card(folder: Path):
    """The parent's card, parsed now, so that a missing or broken card fails before any
    clip is scored."""
    from huggingface_hub import ModelCard

    path = folder / CARD_FILE
    if not path.is_file():
        raise ClassBiasError(f"{folder}: no {CARD_FILE} (the model card `multitask export` "
                             "writes); a Hub model read offline may be only partly cached")
    try:
        return ModelCard.load(path)
    except ValueError as err:
        raise ClassBiasError(f"{path}: the model card cannot be read: {err}") from None


def _test_rows(tests, task: str, names: list[str]) -> dict:
    """``{path: rows with task's label}``; each test must name its rows' speakers (the
    held-out check) and hold only the model's labels."""
    test_rows = {}
    for path in map(os.fspath, tests):
        if path in test_rows:
            raise ClassBiasError(f"{path}: given twice as --test")
        rows = single_task_rows(path, task)
        nameless = [row["id"] for row in rows if not row.get("speaker")]
        if nameless:
            raise ClassBiasError(f"{path}: {len(nameless)} row(s) name no speaker (e.g. "
                                 f"{nameless[0]}); a test must show its voices are not the calls'")
        unknown = sorted({row[task] for row in rows} - set(names))
        if unknown:
            raise ClassBiasError(f"{path}: {task} label(s) {unknown} are not among the model's "
                                 f"{names}")
        test_rows[path] = rows
    return test_rows


def _unique_names(paths) -> list[str]:
    """Each path by its last two components, or whole where two would read alike.

    >>> _unique_names(["a/data/test.csv", "b/data/test.csv", "b/valid.csv"])
    ['a/data/test.csv', 'b/data/test.csv', 'b/valid.csv']
    """
    shown = [display_path(p) for p in paths]
    return [s if shown.count(s) == 1 else os.fspath(p) for s, p in zip(shown, paths, strict=True)]


def _warnings(record: dict) -> list[str]:
    """A line for each figure the bias lowers: held-out voices, a ``--test`` manifest."""
    task, cv = record["task"], record["cross_validation"]
    lines = []
    if cv["with"] is not None and cv["with"] < cv["without"]:
        lines.append(f"the biases lower the calls' held-out voices' unweighted {task} accuracy "
                     f"({score_text(cv['without'])} -> {score_text(cv['with'])})")
    for name, test in record["tests"].items():
        before, after = test["without"]["unweighted_accuracy"], test["with"]["unweighted_accuracy"]
        if after < before:
            lines.append(f"the biases lower {name}'s unweighted {task} accuracy "
                         f"({score_text(before)} -> {score_text(after)})")
    return lines


def _export_files(folder: Path) -> list[str]:
    """The export's own files in ``folder`` (:func:`multitask.export.export_file_names`)
    but the card, which is written anew."""
    try:
        return [name for name in export_file_names(folder) if name != CARD_FILE]
    except ExportError as err:
        raise ClassBiasError(str(err)) from None


def _write_heads(parent, task: str, bias: list[float], path: Path) -> None:
    """``path`` (a copy of the parent's heads file) with ``bias`` added to ``task``'s
    logits, and the parent's metadata (its labels); the parent's loaded heads stay as
    they are."""
    from safetensors.torch import load_file, save

    from .head_labels import read_metadata

    before = load_file(path)
    metadata = read_metadata(path)
    heads = copy.deepcopy(parent.mods.heads)
    state = heads.state_dict()
    if set(state) != set(before) or any(not torch.equal(state[k], before[k]) for k in before):
        raise ClassBiasError(f"{path}: the loaded heads do not match the file's weights")
    head = heads[task]
    for position, value in enumerate(bias):
        head.offset_logits(torch.arange(head.num_classes) == position, value)
    state = {key: value.detach().contiguous() for key, value in heads.state_dict().items()}
    path.write_bytes(save(state, metadata=metadata))


def _check_calibrated(folder: Path, out: Path, parent, task: str, expected: dict) -> None:
    """Reload the calibrated folder as users will: each clip of ``expected`` (path ->
    the parent's log-probabilities plus the bias) must score so, and the other heads as
    the parent's."""
    from .inference import MultitaskClassifier

    calibrated = MultitaskClassifier.from_hparams(source=os.fspath(folder),
                                                  run_opts={"device": "cpu"}, optimize=None)
    for path, log_probs in expected.items():
        got, other = calibrated.classify_file(path), parent.classify_file(path)
        for name in calibrated.tasks:
            reference = (torch.softmax(torch.as_tensor(log_probs), 0).tolist() if name == task
                         else list(other[name]["probs"].values()))
            if not np.allclose(list(got[name]["probs"].values()), reference, atol=1e-4):
                raise ClassBiasError(f"{out}: not written: reloaded, its {name} scores for {path} "
                                     "are not the parent's"
                                     + (" plus the biases" if name == task else ""))


def _write_card(card, path: Path, record: dict, repo_id: str) -> None:
    """The parent's card, made this model's: name, ``base_model``, the task's figures
    replaced by the calibrated ones, a section on the calibration before the parent's text."""
    import re

    from huggingface_hub import EvalResult

    task = record["task"]
    old_repo = re.search(r'from_hparams\(source="([^"]+)"', card.text)
    name = repo_id.split("/")[-1]
    known_parent = record["parent"].get("repo_id")
    card.data.model_name = name
    card.data.base_model = known_parent
    card.data.base_model_relation = "finetune" if known_parent else None
    kept = [r for r in (card.data.eval_results or []) if r.dataset_config != task]
    added = [EvalResult(task_type="audio-classification", task_name=TASK_TITLES.get(task, task),
                        dataset_type="test", dataset_name=f"{manifest} (calibrated)",
                        dataset_config=task, dataset_split="test", metric_type=metric_type,
                        metric_name=f"{task} {label}", metric_value=figures["with"][key],
                        metric_args=args)
             for manifest, figures in record["tests"].items()
             for key, (metric_type, label, args) in METRICS.items()]
    card.data.eval_results = kept + added or None
    text = card.text
    if old_repo:
        text = text.replace(f'"{old_repo.group(1)}"', f'"{repo_id}"').replace(
            f"--model {old_repo.group(1)} ", f"--model {repo_id} ")
    title = re.search(r"^# .*$", text, flags=re.M)
    section = _calibration_section(record)
    start, end = (title.start(), title.end()) if title else (0, 0)
    card.text = f"{text[:start]}# {name}\n\n{section}{text[end:]}"
    card.save(path)


def _calibration_section(record: dict) -> str:
    """Markdown: what was fitted, on what, and what it measured.

    >>> print(_calibration_section({"task": "emotion", "parent": {"source": "demo/model"},
    ...     "classes": ["x", "y"], "bias": [0.0, 1.25], "calls": "calls/calls.csv",
    ...     "calls_per_class": {"x": 10, "y": 10}, "calls_voices": ["a", "b"],
    ...     "cross_validation": {"folds": [{}, {}], "without": 0.5, "with": 0.625},
    ...     "tests": {}, "warnings": []}))
    `demo/model` calibrated to its callers: its emotion logits carry one bias per class (x +0.00, y +1.25), fitted by class-balanced cross-entropy on 20 labelled calls (`calls/calls.csv`, 2 voices), with `multitask calibrate`. No weight but the emotion head's last bias moved; the other heads give the parent's outputs exactly.
    <BLANKLINE>
    - Fitted on some of the calls' voices and scored on the others (cross-validated by voice, 2 folds): unweighted emotion accuracy 0.500 → 0.625.
    - No held-out test was scored with the biases (`--test`).
    <BLANKLINE>
    The rest of this card is the parent's: its emotion figures were measured before the biases (the model-index gives the calibrated ones, when measured).
    <BLANKLINE>
    <BLANKLINE>
    """
    task, cv = record["task"], record["cross_validation"]
    biases = ", ".join(f"{n} {b:+.2f}" for n, b in zip(record["classes"], record["bias"], strict=True))
    lines = [
        f"`{parent_name(record['parent'])}` calibrated to its callers: its {task} logits carry "
        f"one bias per class ({biases}), fitted by class-balanced cross-entropy on "
        f"{sum(record['calls_per_class'].values())} labelled calls (`{record['calls']}`, "
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
    lines += [f"- **Warning**: {line}." for line in record["warnings"]]
    if record.get("parent_calibration"):
        lines.append("- The parent was itself calibrated (its record: `parent_calibration` in "
                     "`calibration.json`); these biases add to its own.")
    lines += ["", f"The rest of this card is the parent's: its {task} figures were measured "
              "before the biases (the model-index gives the calibrated ones, when measured).", ""]
    return "\n".join(lines) + "\n"


def _report_skipped(skipped: list[str], manifest, log) -> None:
    for line in skipped:
        log(f"skipped {line}")
    if skipped:
        log(f"{manifest}: {len(skipped)} clip(s) left out")


def add_parser(subparsers) -> None:
    """Register ``calibrate`` on an argparse subparsers object."""
    from .cli import repo_id

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
    parser.add_argument("--task", default="emotion", help="the head to calibrate (default: emotion)")
    parser.add_argument("--test", action="append", default=[], metavar="MANIFEST",
                        help="held-out manifest scored without and with (repeatable)")
    parser.add_argument(MIN_PER_CLASS_OPTION, type=int, default=10,
                        help="fewest calls of each class (default 10)")
    parser.add_argument("--repo-id", type=repo_id, help="Hub id of the calibrated model, for its card")
    parser.add_argument("--parent-repo-id", type=repo_id, help="Hub id of a local SOURCE, for the card")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from .finetune.parent import FinetuneError

    try:
        check_count(args.min_per_class, MIN_PER_CLASS_OPTION, ClassBiasError)
        for option, value in (("--repo-id", args.repo_id), ("--parent-repo-id", args.parent_repo_id)):
            if value is not None:
                try:
                    validate_repo_id(value)
                except HFValidationError as err:
                    raise ClassBiasError(f"{option} {value!r}: not a Hub repo id: {err}") from None
        record = calibrate_export(
            args.source, args.calls, args.out, task=args.task, tests=args.test,
            revision=args.revision, min_per_class=args.min_per_class, repo_id=args.repo_id,
            parent_repo_id=args.parent_repo_id)
    except (ClassBiasError, FinetuneError, ManifestError, ExportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"bias": dict(zip(record["classes"], record["bias"], strict=True)),
                      "cross_validation": {k: record["cross_validation"][k]
                                           for k in ("without", "with")},
                      "tests": record["tests"], "warnings": record["warnings"]}, indent=2))
    return 0
