"""One fine-tuning run, start to export: :func:`finetune`."""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

from ..card import display_path
from ..export import export_model
from .data import check_emotion_replay, prepare_run_data, row_count
from .labels import MODES, save_label_encoder
from .measure import (
    calibrate_new_intents,
    figures_of,
    resolve_kept_temperature,
    score_parent,
)
from .parent import (
    FinetuneError,
    load_parent,
    new_intent_head,
    parent_identity,
    parent_license,
    parent_settings,
    write_encoder_config,
)

FINETUNE_RECORD = "finetune.json"
# The repository's hparams/finetune.yaml (and the model.yaml it includes), shipped inside
# the package as links that a wheel turns into copies: `multitask finetune` works installed.
DEFAULT_HPARAMS = Path(__file__).resolve().parent.parent / "hparams" / "finetune.yaml"


def hparams_default(hparams_file, key: str):
    """``key``'s value as written in ``hparams_file`` (plain YAML data), read without
    building anything.

    The new intent head's design shapes the heads, which must be in the overrides the
    run saves with its ``hyperparams.yaml`` (the export rebuilds the model from them),
    so it is read before the file is loaded.
    """
    from ruamel.yaml import YAML

    with open(hparams_file, encoding="utf-8") as fin:
        value = YAML(typ="rt").load(fin).get(key)
    return json.loads(json.dumps(value))  # ruamel's containers -> dict / list


def check_same_run(record: dict, identity: dict, mode: str, out, intent_head=None,
                   emotion_replayed=None, kept_temperature=None) -> None:
    """Refuse to resume a run folder that fine-tuned another parent (or in another mode,
    with another intent head design, rehearsing another number of emotion clips, or
    tempering the kept logits by another temperature).

    Its checkpoints would otherwise be loaded over the new parent's weights and the
    run would carry on from them, silently.

    Example
    -------
    >>> check_same_run({}, {"weights_sha256": "ab"}, "replace", "run")   # a new folder
    >>> check_same_run({"parent": {"weights_sha256": "cd"}, "mode": "replace"},
    ...                {"weights_sha256": "ab"}, "replace", "run")
    Traceback (most recent call last):
    ...
    multitask.finetune.parent.FinetuneError: run: this run folder fine-tuned another parent (weights_sha256 cd, now ab); use a new --out, or delete the folder to start over
    """
    previous = record.get("parent")
    if not previous:
        return
    for key in ("weights_sha256", "commit", "source"):
        if previous.get(key) and identity.get(key) and previous[key] != identity[key]:
            raise FinetuneError(
                f"{out}: this run folder fine-tuned another parent ({key} {previous[key]}, "
                f"now {identity[key]}); use a new --out, or delete the folder to start over")
    if record.get("mode") not in (None, mode):
        raise FinetuneError(f"{out}: this run folder was fine-tuned in {record['mode']} mode, "
                            f"not {mode}; use a new --out")
    if intent_head is not None and record.get("intent_head") not in (None, intent_head):
        raise FinetuneError(f"{out}: this run folder's intent head is {record['intent_head']}, "
                            f"not {intent_head} (new_intent_head); use a new --out")
    if emotion_replayed is not None and record.get("emotion_replayed") not in (
            None, emotion_replayed):
        raise FinetuneError(f"{out}: this run folder rehearsed {record['emotion_replayed']} "
                            f"emotion clips (--emotion-replay), not {emotion_replayed}; use a "
                            "new --out")
    previous = (record.get("kept_temperature") or {}).get("setting")
    if (kept_temperature is not None and previous is not None
            and temperature_setting(previous) != temperature_setting(kept_temperature)):
        raise FinetuneError(f"{out}: this run folder tempered the kept logits with "
                            f"kept_temperature {previous}, not {kept_temperature}; use a new "
                            "--out")


def temperature_setting(value):
    """``kept_temperature`` as given, comparable: ``"auto"`` or a float (``2`` == ``2.0``).

    >>> temperature_setting("2"), temperature_setting(2), temperature_setting("auto")
    (2.0, 2.0, 'auto')
    """
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def finetune(source, train, out, *, valid=(), test=None, mode="replace", emotion=None,
             old_intent=None, old_valid=None, replay=(), replay_per_class=None, revision=None,
             emotion_replay=(), parent_repo_id=None, hparams_file=DEFAULT_HPARAMS, overrides=None,
             export=True, repo_id=None) -> dict:
    """Fine-tune ``source`` on new intents; returns the run's ``finetune.json`` record.

    Parameters
    ----------
    source : str
        Exported model folder or Hub repo id.
    train : str
        New-domain training data: a generic CSV (``path,intent[,emotion][,speaker]``)
        or a manifest.
    out : str
        The run folder (rerun the same command to resume).
    valid : list of str
        Validation data (CSV or manifests). Default: 20 % of ``train``, split off by
        speaker when a speaker column is filled in (a generic CSV only).
    test : str, optional
        New-domain test data, scored with the best checkpoint.
    mode : {"replace", "extend"}
    emotion : str, optional
        An emotion-labelled manifest: emotion accuracy of the parent and of the
        fine-tuned model is measured on it (retention).
    old_intent : str, optional
        ``extend``: a manifest of the parent's intents, scored before and after.
    old_valid : str, optional
        ``extend``: held-out clips of the parent's intents (not ``old_intent``'s), on
        which the new intents' logit offset is chosen (``retention_tolerance``).
    replay : list of str
        ``extend``: manifests with the parent's intents, rehearsed during training:
        every row, or at most ``replay_per_class`` of each intent.
    emotion_replay : list of str
        Emotion-labelled manifests rehearsed during training (with a trainable encoder):
        ``task_weights`` gives emotion weight 1 unless overridden.
    revision, parent_repo_id : str, optional
        Hub revision of ``source``; the Hub id a local parent folder was pushed as
        (for the card's ``base_model``).
    hparams_file, overrides
        ``hparams/finetune.yaml`` and ``{key: value}`` overrides (e.g. ``freeze_encoder``;
        ``class_bias_tasks`` and ``class_bias_calls`` fit per-class biases on labelled
        calls after training, :mod:`multitask.class_bias`).
    export : bool
        Export the best checkpoint to ``export_folder`` at the end.
    """
    import speechbrain as sb

    from ..class_bias import ClassBiasError, check_calls
    from ..class_bias import calibrate as calibrate_class_bias
    from ..recipe import load_hparams
    from ..train import fit, make_accelerator
    from ..train import test as run_test

    if mode not in MODES:
        raise FinetuneError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "replace" and (replay or old_intent or old_valid):
        raise FinetuneError("--replay, --old-intent and --old-valid keep the parent's intents: "
                            "use --mode extend")
    out = Path(out).resolve()
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    user = dict(overrides or {})
    seed = int(user.get("seed", 1234))

    parent = load_parent(source, revision, out / "parent")
    parent_labels = parent.labels["intent"]

    data = prepare_run_data(
        parent_labels, parent.labels.get("emotion", []), train, data_dir, seed, mode=mode,
        valid=valid, test=test, emotion=emotion, old_intent=old_intent, old_valid=old_valid,
        replay=replay, replay_per_class=replay_per_class, emotion_replay=emotion_replay)

    heads = parent_settings(parent)
    # A mapping given on the command line updates the file's, as HyperPyYAML merges it.
    design = hparams_default(hparams_file, "new_intent_head")
    if "new_intent_head" in user:
        override = user["new_intent_head"]
        design = None if override is None else {**(design or {}), **override}
    heads["task_heads"] = new_intent_head(heads["task_heads"], mode, design, len(parent_labels))
    settings = {
        "output_folder": str(out), "parent_source": os.fspath(source),
        "parent_revision": revision, "mode": mode,
        "encoder_source": write_encoder_config(parent, out / "parent_encoder"),
        **heads,
        "train_manifests": [str(p) for p in data.train],
        "valid_manifests": [str(p) for p in data.valid],
        "test_manifests": {k: str(v) for k, v in data.tests.items()},
    }
    if emotion_replay:  # emotion weight 1 unless given; merged into the file's mapping
        settings["task_weights"] = {"emotion": 1.0, **(user.pop("task_weights", None) or {})}
    overrides = {**settings, **user}
    hparams = load_hparams(str(hparams_file), overrides)
    if emotion_replay:
        check_emotion_replay(hparams)
    if mode == "extend" and not old_valid and hparams.get("new_intent_offset") is None:
        warnings.warn("extend without --old-valid: the new intents' logits are not offset and "
                      "may take many old-intent clips; pass --old-valid with held-out clips of "
                      "the parent's intents", stacklevel=2)
    accelerator = make_accelerator(hparams)
    sb.create_experiment_directory(experiment_directory=str(out),
                                   hyperparams_to_save=str(hparams_file), overrides=overrides)
    save = Path(hparams["save_folder"])
    save.mkdir(parents=True, exist_ok=True)
    save_label_encoder(save / "label_encoder_intent.txt", data.labels)
    for task in parent.tasks:
        if task != "intent":
            save_label_encoder(save / f"label_encoder_{task}.txt", parent.labels[task])
    if mode == "extend" and "intent" in (hparams.get("class_bias_tasks") or []):
        raise FinetuneError("class_bias_tasks: extend keeps the parent's intent logits whole, "
                            "so its intent head takes no class biases; calibrate emotion only")
    try:
        check_calls(hparams)  # class biases' calls, before training rather than after it
    except ClassBiasError as err:
        raise FinetuneError(str(err)) from None

    record_path = out / FINETUNE_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    identity = parent_identity(source, revision, parent_repo_id)
    check_same_run(record, identity, mode, out, heads["task_heads"]["intent"],
                   row_count(data.emotion_replayed) if emotion_replay else 0,
                   hparams.get("kept_temperature", 1.0))
    temperature = resolve_kept_temperature(
        hparams, heads["task_heads"]["intent"], parent, accelerator,
        data.replayed, data.old_valid,
        recorded=record.get("kept_temperature"))
    if "parent_license" not in record:  # read once, at the revision the weights came from
        record["parent_license"] = parent_license(source, revision)
        if record["parent_license"] is None and not hparams.get("model_license"):
            message = (f"{source}: the parent's model card cannot be read, so its license is "
                       "unknown; the export's card will say `license: unknown` (give "
                       "--model_license=... to state it)")
            warnings.warn(message, stacklevel=2)
            accelerator.print(f"WARNING: {message}")
    record.update({
        "parent": identity,
        "mode": mode,
        "freeze_encoder": hparams.get("freeze_encoder"),
        "frozen_heads": list(hparams.get("frozen_heads") or []),
        "intent_head": heads["task_heads"]["intent"],
        "intent_labels": data.labels,
        "new_intents": sorted(set(data.labels) - set(parent_labels)),
        "kept_intents": [label for label in data.labels if label in parent_labels],
        "shots": dict(sorted(data.counts.items())),
        "replay_per_class": replay_per_class if replay else None,
        "replayed": row_count(data.replayed) if replay else 0,
        "emotion_replayed": row_count(data.emotion_replayed) if emotion_replay else 0,
        "rows_per_class": (hparams.get("train_batching") or {}).get("rows_per_class"),
        "kept_temperature": temperature,
    })
    hparams["init_model"] = functools.partial(hparams["init_model"],
                                              kept_temperature=temperature["temperature"])

    # Retention, before: the parent itself, on the same manifests as after.
    before = record.setdefault("before", {})
    for name, task in (("emotion", "emotion"), ("old_intent", "intent")):
        shown = display_path(data.given[name]) if name in data.tests else None
        if shown and (before.get(name) or {}).get("manifest") != shown:
            before[name] = score_parent(parent, data.tests[name], task, hparams, accelerator,
                                        data.given[name])

    # Written before training, so a killed run's folder still names its parent.
    if accelerator.is_main_process:
        record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    fit(hparams, accelerator)
    if mode == "extend" and (data.old_valid or hparams.get("new_intent_offset") is not None):
        record["calibration"] = calibrate_new_intents(
            hparams, accelerator, data.old_valid, data.valid, parent_labels,
            record.get("calibration"), old_valid)
        if accelerator.is_main_process:
            record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    try:
        class_bias = calibrate_class_bias(hparams, accelerator)
    except ClassBiasError as err:
        raise FinetuneError(str(err)) from None
    if class_bias:
        record["class_bias"] = class_bias
        if accelerator.is_main_process:
            record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    results = run_test(hparams, accelerator)

    record["results"] = {}
    if "new" in data.tests:
        record["results"]["new_intent"] = figures_of(results["new"]["intent"], data.given["new"])
    for name, task in (("emotion", "emotion"), ("old_intent", "intent")):
        if name in data.tests:
            now = figures_of(results[name][task], data.given[name])
            now["before"] = before[name]["accuracy"]
            now["change"] = now["accuracy"] - now["before"]
            record["results"][name] = now
    threshold = float(hparams.get("emotion_drop_warning", 0.01))
    emotion_result = record["results"].get("emotion")
    if emotion_result:
        emotion_result["warning"] = -emotion_result["change"] > threshold
        if emotion_result["warning"]:
            message = (f"emotion accuracy dropped from {emotion_result['before']:.4f} to "
                       f"{emotion_result['accuracy']:.4f} on {emotion_result['manifest']} "
                       f"(more than {threshold:.2%}); "
                       + ("it includes the emotion class biases fitted on "
                          f"{class_bias['calls']} (without them: 'without_class_bias' in "
                          "test_metrics.json)" if "emotion" in (class_bias or {}).get("tasks", {})
                          else "freeze more of the encoder (--freeze_encoder=all) or lower "
                          "encoder_lr"))
            warnings.warn(message, stacklevel=2)
            accelerator.print(f"WARNING: {message}")
    if accelerator.is_main_process:
        record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
        if export and hparams.get("export_folder"):
            export_model(out, hparams["export_folder"], overwrite=True, repo_id=repo_id)
    return record
