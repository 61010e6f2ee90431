"""One fine-tuning run, start to export: :func:`finetune`."""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

from ..export import export_model, is_exported_model
from ..manifest import TASKS
from ..recipe import restored_on_failure
from ..settings import check_count
from .data import check_emotion_replay, prepare_run_data, row_count
from .labels import MODES, save_label_encoder
from .measure import (
    calibrate_new_intents,
    resolve_kept_temperature,
    results_of,
    score_before,
    warn_on_emotion_drop,
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


def read_hparams_file(hparams_file) -> dict:
    """``hparams_file`` as plain YAML (tags unresolved), with one-line errors for a file
    that cannot be read or is not a YAML mapping."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        with open(hparams_file, encoding="utf-8") as fin:
            loaded = YAML(typ="rt").load(fin)
    except (OSError, UnicodeDecodeError) as err:
        raise FinetuneError(f"--hparams {hparams_file}: cannot be read "
                            f"({getattr(err, 'strerror', None) or err})") from None
    except YAMLError as err:
        raise FinetuneError(f"--hparams {hparams_file}: not valid YAML "
                            f"({' '.join(str(err).split())})") from None
    if not isinstance(loaded, dict):
        raise FinetuneError(f"--hparams {hparams_file}: not a YAML mapping of settings")
    return loaded


def hparams_default(hparams_file, key: str):
    """``key``'s value as written in ``hparams_file`` (plain YAML data), read without
    building anything.

    The new intent head's design shapes the heads, which must be in the overrides the
    run saves with its ``hyperparams.yaml`` (the export rebuilds the model from them),
    so it is read before the file is loaded.
    """
    return json.loads(json.dumps(read_hparams_file(hparams_file).get(key)))  # -> dict / list


def check_numbers(values, hparams_file=None) -> None:
    """:func:`multitask.settings.check_numbers` as this command's error: the overrides
    (``--key=value``), or ``hparams_file`` as written.

    >>> check_numbers({"head_lr": -1})
    Traceback (most recent call last):
    ...
    multitask.finetune.parent.FinetuneError: --head_lr must be a number of at least 0.0, not -1
    """
    from ..settings import SettingError
    from ..settings import check_numbers as check

    try:
        check(values, hparams_file)
    except SettingError as err:
        raise FinetuneError(str(err)) from None


def check_out_folder(out: Path, source) -> None:
    """Refuse a run folder that is a file, an exported model, or (or holds) the parent's
    folder: the run writes its hyperparameters and its export there, over the model's."""
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out {out}: a file, not a folder")
    if os.path.isdir(source):
        parent = Path(source).resolve()
        if parent == out or out in parent.parents:
            raise FinetuneError(f"--out {out} holds the parent model ({source}); the run would "
                                "write over it: use another --out")
    if is_exported_model(out):
        raise FinetuneError(f"--out {out} is an exported model; the run would write over it: "
                            "use another --out")


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


def check_same_description(record: dict, described: dict, out) -> None:
    """Refuse to resume a run folder whose record describes another run (other training
    data, labels, frozen parts or rehearsal): the record, and the card an export of the
    folder writes from it, would describe the new settings beside the old run's weights.
    Checked before the record is rewritten.

    >>> check_same_description({}, {"shots": {"a": 20}}, "run")   # a new folder
    >>> check_same_description({"parent": {"source": "m"}, "shots": {"a": 20}},
    ...                        {"shots": {"a": 10}}, "run")
    Traceback (most recent call last):
    ...
    multitask.finetune.parent.FinetuneError: run: this run folder was fine-tuned with shots {'a': 20}, not {'a': 10}; resume it with the data and settings it started with, or use a new --out
    """
    if "parent" not in record:
        return
    now = json.loads(json.dumps(described))  # as the record stores it
    for key, value in now.items():
        if key not in ("parent", "kept_temperature") and key in record and record[key] != value:
            raise FinetuneError(f"{out}: this run folder was fine-tuned with {key} "
                                f"{record[key]!r}, not {value!r}; resume it with the data and "
                                "settings it started with, or use a new --out")


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

    from ..recipe import load_hparams
    from ..train import fit, make_accelerator
    from ..train import test as run_test

    if mode not in MODES:
        raise FinetuneError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "replace" and (replay or old_intent or old_valid):
        raise FinetuneError("--replay, --old-intent and --old-valid keep the parent's intents: "
                            "use --mode extend")
    if replay_per_class is not None:
        check_count(replay_per_class, "--replay-per-class", FinetuneError)
    user = dict(overrides or {})
    check_numbers(user)
    check_numbers(read_hparams_file(hparams_file), hparams_file)
    seed = int(user.get("seed", 1234))
    out = Path(out).resolve()
    check_out_folder(out, source)
    record_path = out / FINETUNE_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    # Until training starts (a rerun is known to resume the same run's checkpoint), what
    # it writes is put back if it is refused, or removed if it was not there (a first run).
    with restored_on_failure(out, RERUN_REWRITES) as training_started:
        data_dir = out / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        parent = load_parent(source, revision, out / "parent")
        parent_labels = parent.labels["intent"]
        data = prepare_run_data(
            parent_labels, parent.labels.get("emotion", []), train, data_dir, seed, mode=mode,
            valid=valid, test=test, emotion=emotion, old_intent=old_intent,
            old_valid=old_valid, replay=replay, replay_per_class=replay_per_class,
            emotion_replay=emotion_replay)
        overrides, intent_head = run_overrides(parent, hparams_file, user, source=source,
                                               revision=revision, mode=mode, out=out, data=data)
        try:
            hparams = load_hparams(str(hparams_file), overrides)
        except SystemExit as err:  # the recipes' one-line refusal, as this command's error
            raise FinetuneError(str(err)) from None
        check_run_settings(hparams, mode, emotion_replay=bool(emotion_replay),
                           offset_chosen=bool(old_valid))
        accelerator = make_accelerator(hparams)
        identity = parent_identity(source, revision, parent_repo_id)
        check_same_run(record, identity, mode, out, intent_head,
                       row_count(data.emotion_replayed) if data.emotion_replayed else 0,
                       hparams.get("kept_temperature", 1.0))
        temperature = resolve_kept_temperature(
            hparams, intent_head, parent, accelerator, data.replayed, data.old_valid,
            recorded=record.get("kept_temperature"))
        described = describe_run(identity, mode, hparams, intent_head, data, parent_labels,
                                 replay_per_class if replay else None, temperature)
        check_same_description(record, described, out)
        sb.create_experiment_directory(experiment_directory=str(out),
                                       hyperparams_to_save=str(hparams_file), overrides=overrides)
        save = Path(hparams["save_folder"])
        save.mkdir(parents=True, exist_ok=True)
        save_label_encoder(save / "label_encoder_intent.txt", data.labels)
        for task in parent.tasks:
            if task != "intent":
                save_label_encoder(save / f"label_encoder_{task}.txt", parent.labels[task])
        check_class_bias_calls(hparams)  # reads the label files just written
        if "parent_license" not in record:  # read once, at the revision the weights came from
            record["parent_license"] = read_parent_license(source, revision, hparams, accelerator)
        record.update(described)
        hparams["init_model"] = functools.partial(hparams["init_model"],
                                                  kept_temperature=temperature["temperature"])
        before = score_before(record.setdefault("before", {}), parent, data, hparams, accelerator)
        # Written before training, so a killed run's folder still names its parent.
        save_record(record_path, record, accelerator)
        fit(hparams, accelerator, on_start=training_started)
    if mode == "extend" and (data.old_valid or hparams.get("new_intent_offset") is not None):
        record["calibration"] = calibrate_new_intents(
            hparams, accelerator, data.old_valid, data.valid, parent_labels,
            record.get("calibration"), old_valid)
        save_record(record_path, record, accelerator)
    class_bias = fit_class_bias(hparams, accelerator)
    if class_bias:
        record["class_bias"] = class_bias
        save_record(record_path, record, accelerator)
    record["results"] = results_of(run_test(hparams, accelerator), data, before)
    warn_on_emotion_drop(record["results"].get("emotion"), hparams, accelerator, class_bias)
    save_record(record_path, record, accelerator)
    if accelerator.is_main_process and export and hparams.get("export_folder"):
        export_model(out, hparams["export_folder"], overwrite=True, repo_id=repo_id)
    return record


# What a run folder's rerun writes before training starts, when it can tell whether it
# resumes the same run (the label files: in the save_folder finetune.yaml sets, out/save).
RERUN_REWRITES = ("data", "parent", "parent_encoder", "hyperparams.yaml", FINETUNE_RECORD,
                  *(f"save/label_encoder_{task}.txt" for task in TASKS))


def run_overrides(parent, hparams_file, user: dict, *, source, revision, mode, out,
                  data) -> tuple[dict, dict]:
    """The overrides a run loads ``hparams_file`` with, and its intent head's design; writes
    the parent's encoder config to ``out/parent_encoder`` (the run builds its encoder from it).

    The parent's encoder config and head settings, the new intent head's design (a
    ``new_intent_head`` mapping given by the user updates the file's, as HyperPyYAML
    merges it), the run's manifests, then the user's own overrides, which win. With
    emotion replay, emotion's task weight is 1 unless the user gives it.
    """
    user = dict(user)
    heads = parent_settings(parent)
    design = hparams_default(hparams_file, "new_intent_head")
    if "new_intent_head" in user:
        override = user["new_intent_head"]
        if override is not None and not isinstance(override, dict):
            raise FinetuneError(f"--new_intent_head must be a mapping of head options (e.g. "
                                f"{{pooling: stats, hidden_size: 0}}) or null, not {override!r}")
        design = None if override is None else {**(design or {}), **override}
    heads["task_heads"] = new_intent_head(heads["task_heads"], mode, design,
                                          len(parent.labels["intent"]))
    settings = {
        "output_folder": str(out), "parent_source": os.fspath(source),
        "parent_revision": revision, "mode": mode,
        "encoder_source": write_encoder_config(parent, out / "parent_encoder"),
        **heads,
        "train_manifests": [str(p) for p in data.train],
        "valid_manifests": [str(p) for p in data.valid],
        "test_manifests": {k: str(v) for k, v in data.tests.items()},
    }
    if data.emotion_replayed:
        settings["task_weights"] = {"emotion": 1.0, **(user.pop("task_weights", None) or {})}
    return {**settings, **user}, heads["task_heads"]["intent"]


def check_run_settings(hparams, mode: str, *, emotion_replay: bool, offset_chosen: bool) -> None:
    """Refuse settings that cannot work together, before the run folder's hyperparameters
    are written or anything trains (and warn of extend without a way to offset its new
    intents)."""
    if emotion_replay:
        check_emotion_replay(hparams)
    if mode == "extend" and not offset_chosen and hparams.get("new_intent_offset") is None:
        warnings.warn("extend without --old-valid: the new intents' logits are not offset and "
                      "may take many old-intent clips; pass --old-valid with held-out clips of "
                      "the parent's intents", stacklevel=3)
    if mode == "extend" and "intent" in (hparams.get("class_bias_tasks") or []):
        raise FinetuneError("class_bias_tasks: extend keeps the parent's intent logits whole, "
                            "so its intent head takes no class biases; calibrate emotion only")


def check_class_bias_calls(hparams) -> None:
    """The calls the class biases will be fitted on (``class_bias_calls``), checked before
    training rather than after it, against the label files in ``save_folder``."""
    from ..class_bias import ClassBiasError, check_calls

    try:
        check_calls(hparams)
    except ClassBiasError as err:
        raise FinetuneError(str(err)) from None


def read_parent_license(source, revision, hparams, accelerator) -> str | None:
    """The parent card's license, warning when it cannot be read and the run states none
    (``model_license``): the export's card will then say ``license: unknown``."""
    license_ = parent_license(source, revision)
    if license_ is None and not hparams.get("model_license"):
        message = (f"{source}: the parent's model card cannot be read, so its license is "
                   "unknown; the export's card will say `license: unknown` (give "
                   "--model_license=... to state it)")
        warnings.warn(message, stacklevel=3)
        accelerator.print(f"WARNING: {message}")
    return license_


def describe_run(identity: dict, mode: str, hparams, intent_head: dict, data, parent_labels,
                 replay_per_class, temperature: dict) -> dict:
    """The record's description of the run: its parent, mode, frozen parts, labels,
    clips per new intent and what it rehearses."""
    return {
        "parent": identity,
        "mode": mode,
        "freeze_encoder": hparams.get("freeze_encoder"),
        "frozen_heads": list(hparams.get("frozen_heads") or []),
        "intent_head": intent_head,
        "intent_labels": data.labels,
        "new_intents": sorted(set(data.labels) - set(parent_labels)),
        "kept_intents": [label for label in data.labels if label in parent_labels],
        "shots": dict(sorted(data.counts.items())),
        "replay_per_class": replay_per_class,
        "replayed": row_count(data.replayed) if data.replayed else 0,
        "emotion_replayed": row_count(data.emotion_replayed) if data.emotion_replayed else 0,
        "rows_per_class": (hparams.get("train_batching") or {}).get("rows_per_class"),
        "kept_temperature": temperature,
    }


def fit_class_bias(hparams, accelerator) -> dict | None:
    """The record of the per-class biases fitted after training (``class_bias_tasks``), or
    None. Biases an earlier run of this folder wrote into its best checkpoint stay there
    and are returned (with a warning) even when none are asked for now."""
    from ..class_bias import ClassBiasError
    from ..class_bias import calibrate as calibrate_class_bias

    try:
        return calibrate_class_bias(hparams, accelerator)
    except ClassBiasError as err:
        raise FinetuneError(str(err)) from None


def save_record(path: Path, record: dict, accelerator) -> None:
    """Write the run's record (the main process only)."""
    if accelerator.is_main_process:
        path.write_text(json.dumps(record, indent=2), encoding="utf-8")
