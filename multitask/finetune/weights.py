"""Starting weights and frozen parts: the ``init_model`` step that
:func:`multitask.train.fit` runs before it builds the optimizer and before it
recovers the run's own checkpoint (a resumed run continues from that)."""

from __future__ import annotations

from ..head_labels import encoder_labels
from .parent import FinetuneError, load_parent


def freeze_encoder(encoder, spec) -> None:
    """Freeze ``all``, ``none``, or N: the conv front end plus the N lower transformer layers.

    Example
    -------
    >>> import tempfile
    >>> from multitask.model import Wav2Vec2Encoder, tiny_config
    >>> folder = tempfile.mkdtemp(); tiny_config().save_pretrained(folder)
    >>> enc = Wav2Vec2Encoder(folder, save_path=folder)
    >>> freeze_encoder(enc, 1)
    >>> [any(p.requires_grad for p in layer.parameters()) for layer in enc.model.encoder.layers]
    [False, True]
    >>> masking = Wav2Vec2Encoder(folder, save_path=folder, apply_spec_augment=True,
    ...                           mask_time_prob=0.1)
    >>> for spec in (1, "all"):
    ...     freeze_encoder(masking, spec)
    ...     print(spec, masking.model.masked_spec_embed.requires_grad)
    1 True
    all False
    """
    model = encoder.model
    layers = model.encoder.layers
    if spec == "all":
        frozen_layers = len(layers)
    elif spec == "none":
        frozen_layers = None
    elif isinstance(spec, int) and not isinstance(spec, bool) and 0 <= spec <= len(layers):
        frozen_layers = spec
    else:
        raise FinetuneError(f"freeze_encoder must be all, none or 0..{len(layers)}; got {spec!r}")
    for param in model.parameters():
        param.requires_grad = frozen_layers is None
    model.feature_extractor._requires_grad = frozen_layers is None
    if frozen_layers is None:
        return
    trainable = list(layers[frozen_layers:])
    # A pre-norm (stable layer norm) encoder's final norm belongs to the top.
    if getattr(model.config, "do_stable_layer_norm", False) and trainable:
        trainable.append(model.encoder.layer_norm)
    for module in trainable:
        for param in module.parameters():
            param.requires_grad = True
    # The vector that replaces masked frames (time masking on) feeds the transformer: it
    # learns whenever a transformer layer does (through the frozen ones below them).
    masked_frames = getattr(model, "masked_spec_embed", None)
    if masked_frames is not None and trainable:
        masked_frames.requires_grad = True


# Encoder parameters the parent may lack: Transformers creates the masked frames' vector
# only when its config masks (``mask_time_prob`` > 0), so a run that turns masking on
# over a parent trained without it starts that vector from its initialisation.
MASKING_KEYS = ("model.masked_spec_embed",)


def load_parent_encoder(encoder, state: dict, source) -> None:
    """Copy the parent's encoder weights; only :data:`MASKING_KEYS` may differ (missing,
    or left out when the run does not mask).

    Example
    -------
    >>> import tempfile, torch
    >>> from multitask.model import Wav2Vec2Encoder, tiny_config
    >>> folder = tempfile.mkdtemp()
    >>> tiny_config(num_hidden_layers=1).save_pretrained(folder)
    >>> parent = Wav2Vec2Encoder(folder, save_path=tempfile.mkdtemp())
    >>> child = Wav2Vec2Encoder(folder, save_path=tempfile.mkdtemp(),
    ...                         apply_spec_augment=True, mask_time_prob=0.05)
    >>> load_parent_encoder(child, parent.state_dict(), "parent")
    >>> load_parent_encoder(parent, child.state_dict(), "child")   # the mask vector left out
    >>> state = parent.state_dict()
    >>> del state["model.feature_projection.projection.weight"]
    >>> load_parent_encoder(child, state, "parent")
    Traceback (most recent call last):
    ...
    multitask.finetune.parent.FinetuneError: parent: the parent's encoder does not match ...
    """
    state = dict(state)
    unused = [key for key in MASKING_KEYS if key in state and key not in encoder.state_dict()]
    for key in unused:  # a parent that masked, fine-tuned without masking
        del state[key]
    result = encoder.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if key not in MASKING_KEYS]
    if missing or result.unexpected_keys:
        raise FinetuneError(
            f"{source}: the parent's encoder does not match the configuration built from "
            f"its config.json (missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]})")


def init_from_parent(model, encoders, source, revision=None, savedir=None, mode="replace",
                     freeze_encoder_spec="all", frozen_heads=("emotion",), seed=0,
                     preserve_old_intents=False, kept_temperature=1.0) -> None:
    """Load the parent's weights into ``model`` and freeze what stays fixed.

    Encoder and heads are copied; in the intent head, the last layer's rows are
    copied by label name (every parent class the run keeps), and rows of new
    classes start from the mean of the parent's rows plus small noise (``extend``)
    or from the layer's fresh initialisation (``replace``). A ``replace`` intent head
    built otherwise than the parent's (``new_intent_head``) starts fresh. An ``extend``
    run's extended intent head (the default) holds the parent's intent head, whole and
    fixed, beside a fresh head for the new intents. An ``extend`` run that retrains the
    parent's head (``new_intent_head`` null) with ``preserve_old_intents`` (and a frozen
    encoder) keeps the parent's intent logits too: see :func:`preserve_parent_rows`. Run by
    :func:`multitask.train.fit` before the optimizer is built and before the run's
    own checkpoint (if any) is recovered over these weights.
    """
    import torch

    from ..model import ExtendedHead, head_architecture

    parent = load_parent(source, revision, savedir)
    load_parent_encoder(model.encoder, parent.mods.encoder.state_dict(), source)
    generator = torch.Generator().manual_seed(seed)
    for task, head in model.heads.items():
        if task not in parent.tasks:
            raise FinetuneError(f"{source}: the parent has no {task} head")
        if (task, mode) == ("intent", "extend") and isinstance(head, ExtendedHead):
            # The parent's head, whole and fixed; the added head keeps its initialisation.
            head.kept.load_state_dict(parent.mods.heads[task].state_dict())
            head.kept_temperature = float(kept_temperature)
            continue
        if head_architecture(head) != head_architecture(parent.mods.heads[task]):
            if (task, mode) != ("intent", "replace"):
                raise FinetuneError(
                    f"the run's {task} head ({head_architecture(head)}) is not the parent's "
                    f"({head_architecture(parent.mods.heads[task])}); only replace mode's new "
                    "intent head may differ")
            continue  # a new head over new labels: its own initialisation
        source_state = parent.mods.heads[task].state_dict()
        target = head.state_dict()
        old = parent.labels[task]
        new = encoder_labels(encoders[task])
        last = f"classifier.{len(head.classifier) - 1}."
        for key, value in source_state.items():
            if not key.startswith(last):
                target[key] = value.clone()
                continue
            rows = target[key].clone()
            if mode == "extend":
                start = value.mean(dim=0)
                noise = torch.randn(rows.shape[1:], generator=generator) if rows.ndim > 1 else 0
                scale = 0.01 * value.std() if rows.ndim > 1 else 0
                for index, label in enumerate(new):
                    if label not in old:
                        rows[index] = start + scale * noise
            for index, label in enumerate(new):
                if label in old:
                    rows[index] = value[old.index(label)]
            target[key] = rows
        head.load_state_dict(target)
    freeze_encoder(model.encoder, freeze_encoder_spec)
    for task in frozen_heads or ():
        model.freeze_head(task)
    if mode == "extend" and preserve_old_intents and not isinstance(model.heads["intent"],
                                                                     ExtendedHead):
        intent = encoders["intent"]
        kept = [i for i, label in enumerate(encoder_labels(intent)) if label in parent.labels["intent"]]
        preserve_parent_rows(model.heads["intent"], kept)


def preserve_parent_rows(head, kept_rows) -> None:
    """Train only the new classes' rows of ``head``'s last layer.

    Every other part of the head is frozen, and the gradient of the ``kept_rows``
    is zeroed (with no weight decay on that layer, which would shrink them), so the
    parent's classes keep their exact logits; the new rows learn, from the
    rehearsed clips too, where the new classes differ from the old. On the demo it
    did not help: the old intents fell as far as with the whole head retrained
    (-12.3 points against -12.6), because the new classes win old clips, and the
    new intents reached 0.22 against 0.33. So the forgetting there is not drift of
    the old rows.

    Example
    -------
    >>> import torch
    >>> from multitask.model import TaskHead
    >>> head = TaskHead(num_layers=2, input_size=4, num_classes=3, proj_size=4, hidden_size=4)
    >>> preserve_parent_rows(head, [0, 1])
    >>> head(torch.randn(2, 1, 5, 4), torch.tensor([5])).sum().backward()
    >>> grad = head.classifier[-1].weight.grad
    >>> bool(grad[:2].abs().max() == 0), bool(grad[2].abs().max() > 0)
    (True, True)
    >>> [name for name, p in head.named_parameters() if p.requires_grad]
    ['classifier.4.weight', 'classifier.4.bias']
    """
    import torch

    last = head.classifier[-1]
    for param in head.parameters():
        param.requires_grad = False
    learns = torch.ones(last.out_features, dtype=torch.bool)
    learns[list(kept_rows)] = False
    for param in (last.weight, last.bias):
        param.requires_grad = True
        scale = learns.to(param.dtype).reshape(-1, *([1] * (param.ndim - 1)))
        param.register_hook(lambda grad, scale=scale: grad * scale.to(grad.device))
    last.weight.no_weight_decay = True
