"""The parent and the run's best checkpoint scored on manifests: the retention
figures before and after, ``extend``'s kept temperature and its new intents' offset
(which :func:`calibrate_new_intents` writes into the best checkpoint)."""

from __future__ import annotations

import os
import warnings

from ..card import display_path
from ..head_labels import encoder_labels
from .parent import FinetuneError


def resolve_kept_temperature(hparams, intent_head: dict, parent, accelerator,
                             rehearsed=None, old_valid=None, recorded=None) -> dict:
    """``kept_temperature`` for the record: ``{"setting", "temperature"}``, the temperature
    as given, or (``auto``) measured on the parent, rehearsed clips against
    ``old_valid``'s, with the two NLLs (:func:`multitask.calibration.kept_temperature`);
    a resumed ``auto`` run reuses its ``recorded`` measurement. Refused without an
    extended intent head to temper."""
    from ..calibration import kept_temperature

    temperature = hparams.get("kept_temperature", 1.0)
    if str(temperature) != "auto":
        try:
            temperature = float(temperature)
        except (TypeError, ValueError):
            raise FinetuneError(f"kept_temperature must be a number or auto, not "
                                f"{temperature!r}") from None
        if temperature != 1.0 and "kept" not in intent_head:
            raise FinetuneError(f"kept_temperature {temperature}: only an extended intent head "
                                "(--mode extend with a new_intent_head design) has kept logits")
        return {"setting": temperature, "temperature": temperature}
    if "kept" not in intent_head or not (rehearsed and old_valid):
        raise FinetuneError("kept_temperature auto tempers an extended intent head by "
                            "comparing the parent on the rehearsed clips with --old-valid: "
                            "use --mode extend with --replay and --old-valid, or a number")
    if (recorded or {}).get("setting") == "auto":
        measured = recorded  # the same run, resumed: the temperature it trained with
    else:
        measured = {"setting": "auto", **kept_temperature(
            _parent_log_probs(parent, rehearsed, hparams, accelerator, "rehearsed"),
            _parent_log_probs(parent, old_valid, hparams, accelerator, "old valid"))}
    accelerator.print(f"kept logits divided by {measured['temperature']:.2f} while the new "
                      "intents' head trains")
    return measured


def calibrate_new_intents(hparams, accelerator, old_valid, valid_manifests, parent_labels,
                          done=None, shown=None) -> dict:
    """``extend``: offset the new intents' logits in the best checkpoint; the record.

    The offset is ``new_intent_offset`` when set, else chosen on ``old_valid`` by
    :func:`multitask.calibration.choose_offset` with ``retention_tolerance``. It is
    added to the bias of the checkpoint's new rows (so test and export carry it);
    ``done``, the record of an earlier call on the same checkpoint (a resumed run),
    makes this a no-op.
    """
    import torch

    from ..calibration import (
        accuracy_with_offset,
        choose_offset,
        log_probs_of,
        trade_off,
    )
    from ..checkpoints import rewrite_recoverable
    from ..train import evaluate_manifest, load_best

    model, encoders, best = load_best(hparams, accelerator)
    name = os.path.basename(best.path)
    tolerance = float(hparams.get("retention_tolerance", 0.01))
    fixed = hparams.get("new_intent_offset")
    # How the offset is to be chosen; a resumed run whose offset is already in the weights
    # cannot choose it again another way.
    settings = {"old_valid": display_path(shown) if old_valid else None,
                "retention_tolerance": tolerance if old_valid else None,
                "new_intent_offset": None if fixed is None else float(fixed)}
    if done and done.get("checkpoint") == name:
        before = done.get("settings") or _offset_settings_of(done)
        if before != settings:
            raise FinetuneError(
                f"{best.path}: its new intents' offset {done['offset']:+.2f} was chosen with "
                f"{before}, not {settings}; use a new --out to choose it again")
        accelerator.print(f"new intents' offset {done['offset']:+.2f} already in {name}")
        return done
    new = torch.tensor([label not in parent_labels for label in encoder_labels(encoders["intent"])])

    def scored(manifests, desc):
        stats = evaluate_manifest(accelerator, model, manifests, encoders, hparams, desc=desc)
        return log_probs_of(stats["rows"])

    new_valid = scored(valid_manifests, "calibrate: new intents")
    record = {"checkpoint": name, "settings": settings}
    if old_valid:
        old = scored(old_valid, "calibrate: old intents")
        choice = choose_offset(*old, new, tolerance)
        if fixed is not None:
            choice = {"offset": float(fixed), "chosen_on_validation": choice["offset"]}
        record.update({"old_valid": display_path(shown), "tolerance": tolerance, **choice,
                       "trade_off": trade_off(old, new_valid, new)})
        if not choice.get("within_tolerance", True):
            warnings.warn(f"no offset keeps the old intents within {tolerance:.1%} on "
                          f"{display_path(shown)}; the smallest ({choice['offset']}) is used",
                          stacklevel=2)
    else:
        record["offset"] = float(fixed)
    record["new_valid_accuracy"] = accuracy_with_offset(*new_valid, new, record["offset"])
    model.heads["intent"].offset_logits(new, record["offset"])
    if accelerator.is_main_process:
        rewrite_recoverable(best, "heads", model.heads)
    accelerator.wait_for_everyone()
    accelerator.print(f"new intents' logit offset {record['offset']:+.2f} written into {name}")
    return record


def _offset_settings_of(record: dict) -> dict:
    """The settings a calibration record written before they were recorded was made with."""
    fixed = "chosen_on_validation" in record or not record.get("old_valid")
    return {"old_valid": record.get("old_valid"),
            "retention_tolerance": record.get("tolerance"),
            "new_intent_offset": float(record["offset"]) if fixed else None}


def score_parent(parent, manifest, task, hparams, accelerator, shown) -> dict:
    """The parent's figures for ``task`` on ``manifest`` (the same loop, and the same
    batches, as the test after: ``test_batching``)."""
    stats = _parent_stats(parent, manifest, hparams, accelerator, f"parent {task}",
                          batching=hparams.get("test_batching"))
    return figures_of(stats[task], shown)


def _parent_log_probs(parent, manifest, hparams, accelerator, desc):
    """The parent's intent ``(log_probs, targets)`` on ``manifest``."""
    from ..calibration import log_probs_of

    return log_probs_of(_parent_stats(parent, manifest, hparams, accelerator,
                                      f"parent: {desc}")["rows"])


def _parent_stats(parent, manifest, hparams, accelerator, desc, batching=None) -> dict:
    """:func:`multitask.train.evaluate_manifest` of the parent model on ``manifest``
    (batched by ``batching``, default ``eval_batching``)."""
    from ..model import MultitaskModel
    from ..train import evaluate_manifest

    encoders = {t: parent.hparams.label_encoders[t] for t in parent.tasks}
    model = MultitaskModel(parent.mods.encoder, {t: parent.mods.heads[t] for t in parent.tasks})
    model.to(accelerator.device)
    return evaluate_manifest(accelerator, model, manifest, encoders, hparams, desc=desc,
                             batching=batching)


def figures_of(report: dict, manifest) -> dict:
    """Accuracy and macro-F1 of one test, the F1 over the labels the test holds (in
    extend, each test holds only part of the run's labels), and the accuracy in each
    voice when the test names its speakers."""
    from ..metrics import macro_f1_over_references

    figures = {"manifest": display_path(manifest), "accuracy": report["accuracy"],
               "macro_f1": macro_f1_over_references(report)}
    if "by_speaker" in report:
        figures["by_speaker"] = report["by_speaker"]
    return figures


RETENTION_TESTS = (("emotion", "emotion"), ("old_intent", "intent"))  # (test name, task)


def score_before(before: dict, parent, data, hparams, accelerator) -> dict:
    """Retention, before: the parent's figures on the run's retention tests (``emotion``,
    ``old_intent``), the manifests the fine-tuned model is scored on after. ``before``
    is the record's; a test it already holds for the same manifest (a resumed run) is
    not scored again."""
    for name, task in RETENTION_TESTS:
        shown = display_path(data.given[name]) if name in data.tests else None
        if shown and (before.get(name) or {}).get("manifest") != shown:
            before[name] = score_parent(parent, data.tests[name], task, hparams, accelerator,
                                        data.given[name])
    return before


def results_of(results: dict, data, before: dict) -> dict:
    """The record's ``results``: the new intents' figures and each retention test's, with
    its figure before and the change.

    >>> from types import SimpleNamespace
    >>> from multitask.metrics import classification_report
    >>> data = SimpleNamespace(tests={"emotion": "e.csv"}, given={"emotion": "e.csv"})
    >>> report = classification_report([0, 1, 0, 1], [0, 1, 0, 0], ["sad", "angry"], "emotion")
    >>> figures = results_of({"emotion": {"emotion": report}}, data,
    ...                      {"emotion": {"accuracy": 0.70}})["emotion"]
    >>> figures["accuracy"], figures["before"], round(figures["change"], 2)
    (0.75, 0.7, 0.05)
    """
    figures = {}
    if "new" in data.tests:
        figures["new_intent"] = figures_of(results["new"]["intent"], data.given["new"])
    for name, task in RETENTION_TESTS:
        if name in data.tests:
            now = figures_of(results[name][task], data.given[name])
            now["before"] = before[name]["accuracy"]
            now["change"] = now["accuracy"] - now["before"]
            figures[name] = now
    return figures


def warn_on_emotion_drop(emotion: dict | None, hparams, accelerator, class_bias=None) -> None:
    """Set ``warning`` in ``emotion`` (the record's emotion result): whether its accuracy
    fell by more than ``emotion_drop_warning``; if so, warn, saying what to change (or,
    with emotion class biases fitted, where the figures without them are)."""
    if not emotion:
        return
    threshold = float(hparams.get("emotion_drop_warning", 0.01))
    emotion["warning"] = -emotion["change"] > threshold
    if not emotion["warning"]:
        return
    if "emotion" in (class_bias or {}).get("tasks", {}):
        advice = (f"it includes the emotion class biases fitted on {class_bias['calls']} "
                  "(without them: 'without_class_bias' in test_metrics.json)")
    else:
        advice = "freeze more of the encoder (--freeze_encoder=all) or lower encoder_lr"
    message = (f"emotion accuracy dropped from {emotion['before']:.4f} to "
               f"{emotion['accuracy']:.4f} on {emotion['manifest']} "
               f"(more than {threshold:.2%}); {advice}")
    warnings.warn(message, stacklevel=3)
    accelerator.print(f"WARNING: {message}")
