"""Fine-tuning an exported model on a new banking domain: new intents from few examples,
emotion kept (and measured).

    multitask finetune --from results/demo/model --out results/finetune/run \
        --train new_domain/train.csv --valid new_domain/valid.csv --test new_domain/test.csv \
        --emotion data/crema_d/test.csv [--mode replace|extend] [--freeze_encoder=1]

``--from`` is a folder written by ``multitask export`` or a Hub repo id (``--revision``
pins a branch, tag or commit). A fine-tuning run is an ordinary run folder
(``hyperparams.yaml``, ``save/`` with checkpoints and label encoders,
``test_metrics.json``) trained by :func:`multitask.train.fit` with
``hparams/finetune.yaml``; rerunning the command resumes it, and it exports like
any run, its card naming the parent (``base_model``). What this package adds:

* the parent, loaded with :meth:`MultitaskClassifier.from_hparams`: its encoder
  architecture and head sizes become the run's model settings, its weights the
  run's starting point (:func:`init_from_parent`, the ``init_model`` step that
  :func:`~multitask.train.fit` runs before recovering the run's own checkpoint);
* the intent label set: ``replace`` takes the new labels only; ``extend`` keeps the
  parent's intents at their indices and appends the new ones, by default with the
  parent's intent head kept whole beside a head for the new intents
  (:class:`~multitask.model.ExtendedHead`). A new label spelled like an old one but not
  identically (``Block`` vs ``block``, ``card_lost`` vs ``lost card``) is refused,
  naming both;
* what stays fixed: heads in ``frozen_heads`` (emotion, by default) take no
  gradient, are not in the optimizer (weight decay would move them) and stay in
  eval mode (a stats head's batch statistics would move), and the
  encoder is frozen fully, up to its N lower transformer layers, or not at all;
* ``extend``: the parent's intents rehearsed from ``--replay`` (every clip by
  default; ``rows_per_class`` in ``finetune.yaml`` balances each epoch over the
  classes, emotions rehearsed with ``--emotion-replay`` included), then an offset on
  the new intents' logits chosen on held-out clips of the old ones (``--old-valid``;
  :mod:`multitask.calibration`);
* ``--emotion-replay``: emotion-labelled manifests (the parent's emotion corpus)
  rehearsed while a trainable encoder adapts, their loss flowing through the frozen
  emotion head into the encoder, so that what the emotion head reads stays readable;
* retention, measured: emotion accuracy (and, in ``extend`` mode, old-intent
  accuracy) of the parent and of the fine-tuned model on the same manifests, in
  ``finetune.json``, with a warning when emotion drops by more than
  ``emotion_drop_warning``.

Only intent labels are learnt: emotion labels in the new CSV are ignored (the
emotion head is the parent's).

Modules: :mod:`.parent` (loading and describing the parent), :mod:`.labels`,
:mod:`.data`, :mod:`.weights` (the ``init_model`` step), :mod:`.measure` (retention,
kept temperature, offset), :mod:`.run` (:func:`finetune`) and :mod:`.cli`.
"""

from .cli import add_parser, parse_overrides
from .labels import MODES, intent_label_set
from .parent import (
    FinetuneError,
    check_parent_folder,
    load_parent,
    parent_identity,
    parent_license,
)
from .run import DEFAULT_HPARAMS, FINETUNE_RECORD, finetune
from .weights import init_from_parent, load_parent_encoder

__all__ = [
    "DEFAULT_HPARAMS", "FINETUNE_RECORD", "MODES", "FinetuneError", "add_parser",
    "check_parent_folder", "finetune", "init_from_parent", "intent_label_set",
    "load_parent", "load_parent_encoder", "parent_identity", "parent_license",
    "parse_overrides",
]
