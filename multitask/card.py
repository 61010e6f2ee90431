"""The model card (``README.md``) of an exported model.

:func:`render_card` fills the top-level ``hub_card.md`` template: front matter with a
model-index built by ``huggingface_hub.ModelCardData`` (one ``EvalResult`` per task,
split and metric measured on the exported checkpoint), the label lists, a results
table, how the model was trained and, for a fine-tuned model, its parent and what the
fine-tuning kept. :mod:`multitask.export` calls it; nothing here reads checkpoints.

Paths are shown by their last two components (:func:`display_path`), so a card names
its data without the layout of the machine that trained it.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path

from .head_labels import encoder_labels
from .manifest import manifest_paths

PACKAGE_DIR = Path(__file__).resolve().parent
# multitask/hub_card.md links to the top-level hub_card.md, so a wheel carries the card.
DEFAULT_CARD_TEMPLATE = PACKAGE_DIR / "hub_card.md"
# The repo ids a card names when exported (or calibrated) without --repo-id; a push
# replaces them with the repo it goes to (multitask.hub.card_for_repo).
PLACEHOLDER_REPO_ID = "your-org/your-model"
PLACEHOLDER_CALIBRATED_REPO_ID = "your-org/your-calibrated-model"
TASK_TITLES = {"intent": "Intent classification", "emotion": "Emotion recognition"}
TASK_TAGS = {"intent": "intent-classification", "emotion": "speech-emotion-recognition"}
DEFAULT_LICENSE = "apache-2.0"  # the package's; a card states its model's own


def render_card(hparams: dict, encoders: dict, ckpt, test_metrics: dict | None, *,
                repo_id=None, model_name=None, datasets=None, license=DEFAULT_LICENSE,
                language="en", template=None, chosen_by_name=False, lineage=None,
                class_bias=None) -> str:
    """``README.md`` for an export: front matter with a model-index, usage, results.

    The model-index holds the figures measured with ``ckpt``: its validation metrics
    (checkpoint meta) and, when ``test_metrics.json`` was computed on the same
    checkpoint, every test set's. ``chosen_by_name``: ``ckpt`` is not the run's best.
    ``lineage``: a fine-tuning run's record (``finetune.json``); the card then names the
    parent as ``base_model`` and shows the new labels and the measured retention.
    ``class_bias``: the checkpoint's record of per-class biases (:mod:`multitask.class_bias`).
    """
    from huggingface_hub import ModelCardData

    tasks = list(encoders)
    repo_id = repo_id or PLACEHOLDER_REPO_ID
    model_name = model_name or repo_id.split("/")[-1]
    encoder_source = str(hparams.get("encoder_source", ""))
    datasets = list(datasets) if datasets else _default_datasets(hparams)
    card_data = ModelCardData(
        model_name=model_name,
        language=language,
        license=license,
        library_name="speechbrain",
        pipeline_tag="audio-classification",
        tags=["speechbrain", "audio-classification", "wav2vec2", "multitask",
              *[TASK_TAGS.get(task, f"{task}-classification") for task in tasks]],
        datasets=datasets,
        metrics=["accuracy", "f1", "recall"],
        base_model=(_parent_name(lineage) if lineage
                    else encoder_source if is_hub_id(encoder_source) else None),
        base_model_relation="finetune" if lineage else None,
        eval_results=_eval_results(tasks, ckpt.meta, test_metrics, hparams),
    )
    template_path = Path(template) if template else DEFAULT_CARD_TEMPLATE
    best_metric = hparams.get("best_metric", "mean_accuracy")
    selection = ("a checkpoint chosen by name" if chosen_by_name
                 else f"the checkpoint with the best `{best_metric}` on validation")
    return string.Template(template_path.read_text(encoding="utf-8")).substitute(
        front_matter=card_data.to_yaml() + "\n",
        model_name=model_name,
        repo_id=repo_id,
        first_task=tasks[0],
        task_summary="; ".join(f"{task}: {len(encoders[task].lab2ind)} classes" for task in tasks),
        selection=selection,
        checkpoint=f"{ckpt.path.name}, epoch {ckpt.meta.get('epoch', '?')}",
        labels=_labels_block(encoders),
        results=_results_block(tasks, ckpt.meta, test_metrics, hparams),
        training=_training_block(hparams, tasks, ckpt, lineage) + _class_bias_block(class_bias),
        data_limitations=_data_limitations(hparams, datasets, lineage),
        lineage=_lineage_block(lineage),
    )


# checkpoint meta / test_metrics key -> (model-index metric type, label, args)
METRICS = {
    "accuracy": ("accuracy", "accuracy", None),
    "macro_f1": ("f1", "macro-F1", {"average": "macro"}),
    "unweighted_accuracy": ("recall", "unweighted accuracy (macro recall)", {"average": "macro"}),
}


def _eval_results(tasks, meta: dict, test_metrics: dict | None, hparams: dict) -> list:
    from huggingface_hub import EvalResult

    results = []
    for split, dataset_type, dataset_name, task, figures in _measurements(
            tasks, meta, test_metrics, hparams):
        for key, (metric_type, label, args) in METRICS.items():
            if figures.get(key) is None:
                continue
            results.append(EvalResult(
                task_type="audio-classification",
                task_name=TASK_TITLES.get(task, f"{task} classification"),
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                # The rows labelled for this task: a subset ("config") of the data. It
                # also keeps one task's figures from being grouped under the other's.
                dataset_config=task,
                dataset_split=split,
                metric_type=metric_type,
                metric_name=f"{task} {label}",
                metric_value=figures[key],
                metric_args=args,
            ))
    return results


def _measurements(tasks, meta: dict, test_metrics: dict | None, hparams: dict):
    """``(split, dataset type, dataset name, task, {metric: value})`` for every figure."""
    valid = ", ".join(display_path(p) for p in manifest_paths(hparams.get("valid_manifests")))
    for task in tasks:
        figures = {key: meta.get(f"{task}_{key}") for key in METRICS}
        if any(v is not None for v in figures.values()):
            yield "validation", "validation", f"validation set ({valid})", task, figures
    for name, result in (test_metrics or {}).items():
        if not isinstance(result, dict) or "manifest" not in result:
            continue
        for task in tasks:
            if isinstance(result.get(task), dict):
                yield "test", name, f"{name} test set ({result['manifest']})", task, result[task]


def describe_test_batching(batching: dict) -> str:
    """How the test clips were batched, for a card or a report.

    >>> describe_test_batching({"batch_size": 1})
    'Test clips were scored one at a time, as `classify_file` does.'
    """
    if batching.get("batch_size") == 1:
        return "Test clips were scored one at a time, as `classify_file` does."
    return ("Test clips were scored in length-sorted batches (" + ", ".join(
        f"{key} {value}" for key, value in batching.items() if value is not None)
        + "); an encoder without an attention mask sees its batch-mates' padding, so one clip "
        "alone may score slightly differently.")


def _labels_block(encoders: dict) -> str:
    lines = []
    for task, encoder in encoders.items():
        names = encoder_labels(encoder)
        lines.append(f"- **{task}** ({len(names)}, in class-index order): "
                     + ", ".join(f"`{n}`" for n in names))
    return "\n".join(lines)


def _results_block(tasks, meta, test_metrics, hparams) -> str:
    rows = ["| data | task | examples | accuracy | macro-F1 | unweighted accuracy |",
            "| --- | --- | --- | --- | --- | --- |"]
    for _, _, dataset_name, task, figures in _measurements(tasks, meta, test_metrics, hparams):
        cells = [f"{figures[k]:.4f}" if figures.get(k) is not None else "–" for k in METRICS]
        examples = figures.get("num_examples", "–")
        rows.append(f"| {dataset_name} | {task} | {examples} | " + " | ".join(cells) + " |")
    rows.append("\nEach task is scored on the rows that carry its label (examples: how many; "
                "not recorded for validation).")
    if test_metrics and test_metrics.get("batching"):
        rows.append(describe_test_batching(test_metrics["batching"]))
    if test_metrics is None:
        rows.append("No test-set figures were measured on this checkpoint.")
    return "\n".join(rows)


def parent_name(identity: dict) -> str:
    """A parent's Hub id when known, else its folder as given (last two components);
    ``identity`` as :func:`multitask.finetune.parent.parent_identity` records it."""
    return identity.get("repo_id") or identity["source"]


def _parent_name(lineage: dict) -> str:
    return parent_name(lineage["parent"])


def _lineage_block(lineage: dict | None) -> str:
    """The card's "Fine-tuned from" section (empty for a model trained from scratch)."""
    if not lineage:
        return ""
    parent = lineage["parent"]
    version = parent.get("commit") or parent.get("revision")
    if parent.get("weights_sha256"):
        version = f"local folder, weights sha256 {parent['weights_sha256']}"
    new = ", ".join(f"`{label}`" for label in lineage.get("new_intents", []))
    kept = lineage.get("kept_intents", [])
    lines = [
        "## Fine-tuned from\n",
        f"- Parent: `{_parent_name(lineage)}` ({version or 'revision not recorded'}).",
        f"- Mode: `{lineage['mode']}`; new intents: {new or 'none'}"
        + (f"; kept from the parent: {len(kept)} intents." if kept else "."),
        f"- Training examples per intent: {lineage.get('shots')}"
        + (f"; plus {lineage['replayed']} clips of the parent's intents, rehearsed."
           if lineage.get("replayed") else ".")
        + (f" {lineage['emotion_replayed']} emotion clips rehearsed through the encoder "
           "(emotion replay)." if lineage.get("emotion_replayed") else "")
        + (f" Each epoch drew {lineage['rows_per_class']} clips of every class."
           if lineage.get("rows_per_class") else ""),
        f"- Frozen: encoder `{lineage.get('freeze_encoder')}` "
        "(all, none, or the conv front end and that many lower layers); heads "
        + (", ".join(f"`{h}`" for h in lineage.get("frozen_heads", [])) or "none") + ".",
    ]
    calibration = lineage.get("calibration")
    if calibration:
        lines.append(
            f"- The new intents' logits carry an offset of {calibration['offset']:+.2f}"
            + (f", chosen on `{calibration['old_valid']}` so that they cost the parent's "
               f"intents at most {calibration['tolerance']:.1%} of accuracy there."
               if calibration.get("old_valid") and "tolerance" in calibration
               and "chosen_on_validation" not in calibration else " (set by hand)."))
    results = lineage.get("results") or {}
    if results:
        lines += ["", "| measured | data | parent | fine-tuned | change |",
                  "| --- | --- | --- | --- | --- |"]
        names = {"new_intent": "new-intent accuracy", "old_intent": "parent-intent accuracy",
                 "emotion": "emotion accuracy"}
        for key, result in results.items():
            before, change = result.get("before"), result.get("change")
            lines.append(f"| {names.get(key, key)} | {result['manifest']} | "
                         f"{_fmt(before) if before is not None else '–'} | "
                         f"{_fmt(result['accuracy'])} | "
                         f"{f'{change:+.4f}' if change is not None else '–'} |")
        if (results.get("emotion") or {}).get("warning"):
            lines.append("\n**Emotion accuracy dropped during fine-tuning** (see the table).")
    return "\n".join(lines) + "\n"


def _augmentation_lines(hparams: dict) -> list[str]:
    """The run's data augmentation (``augmentation`` on every row, ``task_augmentation``
    on one task's rows), for the card: it shapes what the model is robust to."""
    named = [("every row", hparams.get("augmentation"))]
    named += [(f"the {task} rows", augmentation)
              for task, augmentation in (hparams.get("task_augmentation") or {}).items()]
    return [f"- Augmentation (training only), on {rows}: {_describe_augmentation(augmentation)}."
            for rows, augmentation in named if augmentation is not None]


def _masking_lines(encoder) -> list[str]:
    """Transformers' time masking of the encoder's frames, when the run trained with it.

    >>> from types import SimpleNamespace as NS
    >>> config = NS(apply_spec_augment=True, mask_time_prob=0.05, mask_time_length=10,
    ...             mask_time_min_masks=2)
    >>> print(*_masking_lines(NS(model=NS(config=config))))
    - Time masking (training only): Transformers' mask_time_prob 0.05, spans of 10 frames, at least 2 spans per clip.
    >>> _masking_lines(NS(model=NS(config=NS(apply_spec_augment=True, mask_time_prob=0.0))))
    []
    """
    config = getattr(getattr(encoder, "model", None), "config", None)
    prob = float(getattr(config, "mask_time_prob", 0) or 0)
    if not (getattr(config, "apply_spec_augment", False) and prob > 0):
        return []
    # The setting, not a share of frames: with the minimum number of spans, short clips
    # lose several times mask_time_prob of their frames.
    return [f"- Time masking (training only): Transformers' mask_time_prob {prob:g}, spans of "
            f"{config.mask_time_length} frames, at least {config.mask_time_min_masks} spans "
            "per clip."]


def _describe_augmentation(augmentation) -> str:
    """One line for SpeechBrain's ``Augmenter`` or a single augmentation module.

    >>> from speechbrain.augment.augmenter import Augmenter
    >>> from speechbrain.augment.time_domain import SpeedPerturb
    >>> from multitask.augment import PauseInsertion
    >>> speed = SpeedPerturb(orig_freq=16000, speeds=[90, 110])
    >>> _describe_augmentation(Augmenter(augmentations=[speed, PauseInsertion()],
    ...     augment_prob=0.5, max_augmentations=1, shuffle_augmentations=True))
    'in 50% of the batches, 1 of: SpeedPerturb (speeds 0.90-1.10), PauseInsertion'
    >>> _describe_augmentation(Augmenter(augmentations=[PauseInsertion()], augment_prob=0.3))
    'in 30% of the batches, PauseInsertion'
    >>> _describe_augmentation(PauseInsertion())
    'in every batch, PauseInsertion'
    """
    from speechbrain.augment.augmenter import Augmenter

    def name(module) -> str:
        speeds = getattr(module, "speeds", None)
        return type(module).__name__ + (
            f" (speeds {min(speeds) / 100:.2f}-{max(speeds) / 100:.2f})" if speeds else "")

    if not isinstance(augmentation, Augmenter):
        return f"in every batch, {name(augmentation)}"
    prob = augmentation.augment_prob
    share = "every batch" if prob >= 1 else f"{prob:.0%} of the batches"
    names = [name(module) for module in augmentation.augmentations.values()]
    low, high = augmentation.min_augmentations, augmentation.max_augmentations
    if len(names) == 1:
        return f"in {share}, {names[0]}"
    return f"in {share}, {low if low == high else f'{low}-{high}'} of: " + ", ".join(names)


def _mix(batching: dict) -> str:
    """How an epoch was composed, for the card.

    >>> _mix({"rows_per_class": 40}), _mix({"task_ratio": {"intent": 0.5}}), _mix({})
    ('40 rows of every class per epoch', "{'intent': 0.5}", 'as in the data')
    """
    if batching.get("rows_per_class"):
        return f"{batching['rows_per_class']} rows of every class per epoch"
    return str(batching.get("task_ratio") or "as in the data")


def _training_block(hparams: dict, tasks, ckpt, lineage: dict | None = None) -> str:
    encoder = hparams["encoder"]
    config = encoder.config
    source = str(hparams.get("encoder_source", ""))
    best_metric = hparams.get("best_metric", "mean_accuracy")
    origin = (f"initialised from the parent model `{_parent_name(lineage)}`" if lineage
              else _describe_encoder_source(source))
    lines = [
        f"- Encoder: {origin}; {config.num_hidden_layers} transformer "
        f"layers, width {config.hidden_size}, {config.feat_extract_norm}-norm feature extractor"
        + (" (padding masked)" if encoder.use_attention_mask else " (no padding mask)") + ".",
        *_heads_lines(hparams, tasks),
        "- Training data: " + ", ".join(display_path(p) for p in manifest_paths(
            hparams.get("train_manifests"))) + "; each utterance carries one task's label "
        "and the loss of each head counts only the rows labelled for it.",
        f"- Task loss weights: {hparams.get('task_weights', {})}; task mix per batch: "
        f"{_mix(hparams.get('train_batching') or {})}.",
        *_augmentation_lines(hparams),
        *_masking_lines(encoder),
        *([f"- Auxiliary loss (training only, not part of this model): CTC spelling the "
           f"`{hparams.get('ctc_transcripts')}` transcripts from the encoder's last layer, "
           f"weight {hparams['ctc_weight']}."] if float(hparams.get("ctc_weight") or 0) > 0
          else []),
        f"- Optimisation: {_callable_name(hparams.get('optimizer'))}, encoder lr "
        f"{hparams.get('encoder_lr')}, heads lr "
        f"{hparams.get('head_lr')}, weight decay {hparams.get('weight_decay', 0)}, warm-up "
        f"{hparams.get('warmup_steps', 0)} steps, encoder frozen for the first "
        f"{hparams.get('encoder_freeze_steps', 0)} steps, "
        f"{getattr(hparams.get('epoch_counter'), 'limit', '?')} epochs.",
        f"- Checkpoint: {ckpt.path.name} (epoch {ckpt.meta.get('epoch', '?')}); validation "
        f"`{best_metric}` {_fmt(ckpt.meta.get(best_metric))} (the run keeps the best by it).",
    ]
    return "\n".join(lines)


def score_text(value) -> str:
    """Three decimals, or n/a for a figure that could not be measured (None)."""
    return "n/a" if value is None else f"{value:.3f}"


def _class_bias_block(record: dict | None) -> str:
    """A line per head whose logits carry per-class biases fitted after training.

    >>> print(_class_bias_block({"calls": "calls/calls.csv", "calls_voices": ["a", "b"],
    ...     "tasks": {"emotion": {"classes": ["x", "y"], "bias": [0.0, 0.5],
    ...     "calls_clips": {"x": 9, "y": 9}, "cross_validation": {"without": 0.5, "with": 0.6}}}}))
    <BLANKLINE>
    - Calibration: the emotion logits carry per-class biases (x +0.00, y +0.50), fitted after training by class-balanced cross-entropy on 18 held-out calls (`calls/calls.csv`, 2 voices); fitted on some of the voices, they took the others' unweighted accuracy from 0.500 to 0.600. The validation figures are the checkpoint's, before the biases; the test figures are with them.
    """
    lines = []
    for task, entry in ((record or {}).get("tasks") or {}).items():
        cv = entry["cross_validation"]
        lines.append(
            f"- Calibration: the {task} logits carry per-class biases ("
            + ", ".join(f"{name} {value:+.2f}" for name, value in zip(entry["classes"], entry["bias"], strict=True))
            + f"), fitted after training by class-balanced cross-entropy on "
            f"{sum(entry['calls_clips'].values())} held-out calls (`{record['calls']}`, "
            f"{len(record['calls_voices'])} voices); fitted on some of the voices, they took "
            f"the others' unweighted accuracy from {score_text(cv['without'])} to {score_text(cv['with'])}. "
            "The validation figures are the checkpoint's, before the biases; the test figures "
            "are with them.")
    return "".join("\n" + line for line in lines)


def _heads_lines(hparams: dict, tasks) -> list[str]:
    """One line for all heads when they are alike, else one per task."""
    from .train import head_options

    by_task = {task: describe_head(options)
               for task, options in head_options(hparams, tasks).items()}
    if len(set(by_task.values())) == 1:
        return [f"- Heads: {next(iter(by_task.values()))}."]
    return [f"- {task} head: {text}." for task, text in by_task.items()]


def describe_head(options: dict) -> str:
    """A head's architecture in words, from its ``TaskHead`` (or ``ExtendedHead``) options.

    >>> describe_head({"proj_size": 64, "hidden_size": 32, "dropout": 0.1, "pooling": "mean"})
    "softmax-weighted sum over the encoder's layers, projection to 64, mean pooling over non-padded frames, MLP (32 hidden, dropout 0.1)"
    >>> describe_head({"hidden_size": 0, "dropout": 0.1, "pooling": "stats"})
    "mean and standard deviation of each of the encoder's layers over non-padded frames, standardised, linear classifier (dropout 0.1)"
    >>> describe_head({"kept": {"num_classes": 14, "pooling": "mean", "proj_size": 8, "hidden_size": 0},
    ...                "added": {"pooling": "stats", "hidden_size": 0}, "dropout": 0.1})
    "the parent's head for its 14 classes, kept fixed (softmax-weighted sum over the encoder's layers, projection to 8, mean pooling over non-padded frames, linear classifier), beside a head for the classes added after them (mean and standard deviation of each of the encoder's layers over non-padded frames, standardised, linear classifier (dropout 0.1))"
    """
    if "kept" in options:
        kept, added = options["kept"], options["added"]
        return (f"the parent's head for its {kept.get('num_classes', '?')} classes, kept fixed "
                f"({describe_head(kept)}), beside a head for the classes added after them "
                f"({describe_head({'dropout': options.get('dropout', '?'), **added})})")
    dropout = f", dropout {options['dropout']}" if "dropout" in options else ""
    mlp = (f"MLP ({options.get('hidden_size', '?')} hidden{dropout})" if options.get("hidden_size", 1)
           else f"linear classifier{f' ({dropout[2:]})' if dropout else ''}")
    if options.get("pooling") == "stats":
        return ("mean and standard deviation of each of the encoder's layers over non-padded "
                f"frames, standardised, {mlp}")
    return (f"softmax-weighted sum over the encoder's layers, projection to "
            f"{options.get('proj_size', '?')}, {options.get('pooling', 'mean')} pooling over "
            f"non-padded frames, {mlp}")


def _data_limitations(hparams: dict, datasets: list, lineage: dict | None = None) -> str:
    source = str(hparams.get("encoder_source", ""))
    lines = [f"- Trained on {', '.join(datasets) or 'the data listed above'} only; "
             "accuracy on other domains, channels, accents or languages is unknown."]
    if lineage:
        lines.append(f"- Fine-tuned from `{_parent_name(lineage)}` on a few examples per new "
                     "intent: see that model's card for the data its encoder and emotion head "
                     "learnt from.")
    elif not is_hub_id(source) and _is_config_only(source):
        lines.append("- The encoder was trained from scratch (no self-supervised pre-training): "
                     "expect it to work only on audio close to its training data.")
    return "\n".join(lines)


def _default_datasets(hparams: dict) -> list[str]:
    prepared = list((hparams.get("prepare") or {}).keys())
    if prepared:
        return prepared
    return sorted({Path(str(p)).parent.name or Path(str(p)).stem
                   for p in manifest_paths(hparams.get("train_manifests"))})


def _describe_encoder_source(source: str) -> str:
    if is_hub_id(source):
        return f"fine-tuned from [`{source}`](https://huggingface.co/{source})"
    if _is_config_only(source):
        return f"trained from scratch (the `{Path(source).name}` wav2vec2 configuration)"
    return f"fine-tuned from a local wav2vec2 checkpoint (`{Path(source).name}`)"


def is_hub_id(source: str) -> bool:
    """``org/name`` that is not a path on this machine.

    Example
    -------
    >>> is_hub_id("facebook/wav2vec2-base"), is_hub_id("/data/encoder"), is_hub_id("demo")
    (True, False, False)
    """
    return (bool(re.fullmatch(r"[\w.-]+/[\w.-]+", source))
            and not os.path.exists(source) and not os.path.isabs(source))


def _is_config_only(source: str) -> bool:
    from .model import WEIGHTS_FILES as HF_WEIGHTS

    folder = Path(source)
    return (folder / "config.json").is_file() and not any((folder / f).is_file() for f in HF_WEIGHTS)


def display_path(path) -> str:
    """The last two components of a path: names the data without this machine's layout.

    Example
    -------
    >>> display_path("/home/me/data/skit_s2i/train.csv")
    'skit_s2i/train.csv'
    """
    parts = Path(str(path)).parts
    return "/".join(parts[-2:]) if parts else ""


def _callable_name(factory) -> str:
    """``AdamW`` for ``functools.partial(torch.optim.AdamW, ...)`` or the class itself."""
    target = getattr(factory, "func", factory)
    return getattr(target, "__name__", "?")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)
