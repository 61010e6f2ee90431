"""The network: one wav2vec2 encoder, one head per task.

``Wav2Vec2Encoder`` is SpeechBrain's HF wav2vec2 wrapper with three decisions made
explicit: it returns every hidden state, it passes an attention mask only when the
encoder's config says padding must be masked (layer-norm feature extractors, as in
wav2vec2-large-lv60 / XLS-R; group-norm ones such as wav2vec2-base were trained
without one), and it can be built from a folder holding only ``config.json``
(random initialisation, used for from-scratch training and for exported models
whose weights arrive later through the ``Pretrainer``).

``TaskHead`` follows Transformers' ``Wav2Vec2ForSequenceClassification``: a
softmax-normalised weighted sum over layers (initialised uniform), a projection,
mean or attention pooling over the non-padded frames only, then a small MLP. Its
``stats`` pooling keeps the layers apart instead: the mean and standard deviation of
every layer over the non-padded frames, standardised, then the classifier (``proj_size``
unused; ``hidden_size`` 0 makes the classifier linear).

``ExtendedHead`` keeps a trained head whole beside a new one for classes added later
(fine-tuning's ``extend`` mode). ``MultitaskModel`` runs the encoder once and every
head on its output.
"""

from __future__ import annotations

import os

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
from torch import nn
from transformers import AutoModel

WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
DROPOUT_KEYS = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout")


class Wav2Vec2Encoder(Wav2Vec2):
    """SpeechBrain's wav2vec2 wrapper returning all layers, with config-driven masking.

    Parameters
    ----------
    source : str
        Hub id (``facebook/wav2vec2-base``) or a local folder. A local folder with a
        ``config.json`` and no weights gives a randomly initialised encoder.
    save_path : str
        Cache folder for downloads.
    freeze_feature_extractor : bool
        Keep the convolutional front end fixed (the usual choice when fine-tuning).
    layerdrop : float
        Overrides the config's layerdrop. Defaults to 0: under DDP a skipped layer
        has parameters without gradients, which stops the all-reduce.
    dropout : float or None
        Overrides the config's hidden, attention, activation and projection dropout;
        ``None`` keeps the config's. Small encoders fine-tuned for a few epochs are
        underfit rather than overfit, and on a CPU the dropout masks cost about a
        seventh of a training step.
    apply_spec_augment : bool
        Let Transformers mask time steps during training (``mask_time_prob``).
    mask_time_prob : float or None
        Overrides the config's ``mask_time_prob``: Transformers masks about
        ``mask_time_prob * frames / mask_time_length`` spans of ``mask_time_length``
        frames, and at least ``mask_time_min_masks`` (so a 2-3 s clip at 0.05 loses 13-19%
        of its frames). ``None`` keeps the config's. Masks only with
        ``apply_spec_augment``, only in training.
    use_attention_mask : bool or None
        ``None`` follows the config (mask for ``feat_extract_norm == "layer"``).

    Example
    -------
    >>> import tempfile
    >>> from transformers import Wav2Vec2Config
    >>> folder = tempfile.mkdtemp()
    >>> tiny_config(num_hidden_layers=2).save_pretrained(folder)
    >>> enc = Wav2Vec2Encoder(folder, save_path=tempfile.mkdtemp())
    >>> out = enc(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> out.shape[0], enc.num_layers, enc.output_size
    (3, 3, 32)
    """

    def __init__(
        self,
        source,
        save_path="pretrained_models",
        freeze=False,
        freeze_feature_extractor=True,
        layerdrop=0.0,
        dropout=None,
        apply_spec_augment=False,
        mask_time_prob=None,
        use_attention_mask=None,
        **kwargs,
    ):
        check_encoder_source(source)
        self._layerdrop = layerdrop
        self._dropout = dropout
        self._mask_time_prob = mask_time_prob
        super().__init__(
            source=os.fspath(source),
            save_path=os.fspath(save_path),
            freeze=freeze,
            freeze_feature_extractor=freeze_feature_extractor,
            apply_spec_augment=apply_spec_augment,
            output_all_hiddens=True,
            **kwargs,
        )
        # Inputs are normalised per utterance in multitask.audio, before padding;
        # the wrapper's whole-batch layer norm would let padding change the statistics.
        self.normalize_wav = False
        # Transformers marks the waveform as needing a gradient while training (for
        # gradient checkpointing), so backpropagation also computes a gradient for the
        # audio, which nothing reads: through the first convolution, and with a frozen
        # front end (SpeechBrain freezes its weights, not this flag) through all of it.
        # Trainable convolutions get their gradients through their weights either way:
        # the parameter gradients are bit-identical without it, and a step is faster
        # (docs/demo-experiments.md). Transformers 4.x also checkpoints the convolutions
        # only under this flag.
        extractor = getattr(self.model, "feature_extractor", None)
        if extractor is not None and hasattr(extractor, "_requires_grad"):
            extractor._requires_grad = False
        if use_attention_mask is None:
            use_attention_mask = self.config.feat_extract_norm == "layer"
        self.use_attention_mask = bool(use_attention_mask)

    def override_config(self, config):
        if self._layerdrop is not None:
            config.layerdrop = self._layerdrop
        if self._dropout is not None:
            for key in DROPOUT_KEYS:
                setattr(config, key, float(self._dropout))
        if self._mask_time_prob is not None:
            config.mask_time_prob = float(self._mask_time_prob)
        return config

    def _from_pretrained(self, source, save_path, cache_dir, device=None, **kwargs):
        if _is_config_only_folder(source):
            self.model = AutoModel.from_config(self.config)
            if device is not None:
                self.model.to(device)
            return
        super()._from_pretrained(source, save_path, cache_dir, device=device, **kwargs)

    def load_feature_extractor(self, source, cache_dir, **kwarg):
        if _is_config_only_folder(source) and not os.path.isfile(
            os.path.join(source, "preprocessor_config.json")
        ):
            from transformers import Wav2Vec2FeatureExtractor

            self.feature_extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
            return
        super().load_feature_extractor(source, cache_dir, **kwarg)

    @property
    def num_layers(self) -> int:
        """Hidden states returned: the projected CNN output plus every transformer layer."""
        return self.config.num_hidden_layers + 1

    @property
    def output_size(self) -> int:
        return self.config.hidden_size

    def frame_lengths(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        """Number of valid encoder frames per row, from the conv stack's arithmetic."""
        samples = torch.round(wav_lens * wav.shape[1]).long()
        return self.model._get_feat_extract_output_lengths(samples).long()

    def extract_features(self, wav, wav_lens=None):
        if wav_lens is None:
            wav_lens = torch.ones(wav.shape[0], device=wav.device)
        attention_mask = None
        if self.use_attention_mask:
            samples = torch.round(wav_lens * wav.shape[1]).long()
            attention_mask = frame_mask(samples, wav.shape[1]).long()
        out = self.model(wav, attention_mask=attention_mask, output_hidden_states=True)
        hidden = list(out.hidden_states)
        # Pre-norm (stable layer norm) encoders apply a final layer norm that only the
        # last hidden state carries; without it that norm would get no gradient.
        hidden[-1] = out.last_hidden_state
        return torch.stack(hidden, dim=0)


class EncoderSourceError(ValueError):
    """An encoder source that is neither a wav2vec2 folder nor a Hub repo id; names it."""


def check_encoder_source(source, key: str = "encoder_source") -> None:
    """Refuse (naming ``key``) an encoder source that cannot be one: a file, a missing
    folder (a relative path is read from the current folder), or a folder without a
    wav2vec2 ``config.json``. A Hub repo id is left to the Hub.

    >>> check_encoder_source("facebook/wav2vec2-base")
    >>> check_encoder_source("hparams/encoders/no_such_encoder")
    Traceback (most recent call last):
    ...
    multitask.model.EncoderSourceError: encoder_source hparams/encoders/no_such_encoder: no such folder here (a relative path is read from the current folder), and not a Hub repo id ('org/name')
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise EncoderSourceError(f"{key} {source}: a folder without config.json, so not a "
                                     "wav2vec2 model or config folder")
        return
    if os.path.exists(source):
        raise EncoderSourceError(f"{key} {source}: a file, not a folder")
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise EncoderSourceError(
            f"{key} {source}: no such folder here (a relative path is read from the current "
            "folder), and not a Hub repo id ('org/name')") from None


def _is_config_only_folder(source) -> bool:
    source = os.fspath(source)
    return (
        os.path.isdir(source)
        and os.path.isfile(os.path.join(source, "config.json"))
        and not any(os.path.isfile(os.path.join(source, f)) for f in WEIGHTS_FILES)
    )


def tiny_config(**overrides):
    """A very small ``Wav2Vec2Config`` for tests and doctests (random weights).

    Group-norm front end and post-norm transformer, as wav2vec2-base; pass
    ``feat_extract_norm="layer", do_stable_layer_norm=True`` for the large-lv60 kind.
    """
    from transformers import Wav2Vec2Config

    settings = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
        vocab_size=8,
    )
    settings.update(overrides)
    return Wav2Vec2Config(**settings)


def frame_mask(frame_lens: torch.Tensor, max_frames: int) -> torch.Tensor:
    """``[batch, frames]`` boolean mask, True on valid (non-padded) frames."""
    positions = torch.arange(max_frames, device=frame_lens.device)
    return positions[None, :] < frame_lens[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of ``x [batch, frames, dim]`` counting only frames where mask is True."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def attention_pool(x: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over time of ``x [batch, frames, dim]`` weighted by ``softmax(scores)`` over valid frames.

    >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> attention_pool(x, torch.zeros(1, 3), torch.tensor([[True, True, False]]))
    tensor([[2.]])
    """
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=1) * mask.to(x.dtype)
    return torch.einsum("bt,btd->bd", weights, x)


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over time of ``x [batch, frames, dim]``, valid frames only.

    >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> masked_mean_std(x, torch.tensor([[True, True, False]]))
    (tensor([[2.]]), tensor([[1.]]))
    """
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean.unsqueeze(1)) ** 2, mask)
    # The floor keeps the square root's gradient finite on a one-frame utterance.
    return mean, variance.clamp(min=1e-6).sqrt()


POOLINGS = ("mean", "attention", "stats")
CTC_OUTPUT = "ctc"  # MultitaskModel's output key for the training-only CTC logits


class TaskHead(nn.Module):
    """Layer weighting → projection → masked mean or attention pooling → MLP classifier
    (``stats``: per-layer mean and standard deviation → standardisation → classifier).

    Parameters
    ----------
    num_layers : int
        Hidden states the encoder returns (the weighted sum runs over these).
    input_size : int
        Encoder width.
    num_classes : int
        Output classes; comes from the task's label encoder.
    proj_size : int
        Width after projection.
    hidden_size : int
        Width of the MLP's hidden layer; 0: no hidden layer (a linear classifier).
    dropout : float
        Dropout before each linear layer of the MLP.
    pooling : str
        ``"mean"``: every non-padded frame counts the same. ``"attention"``: a learned
        score per frame, softmax over the non-padded frames, a weighted sum; a few
        frames (a keyword) can then decide the utterance. ``"stats"``: no layer mix
        and no projection; the mean and standard deviation over the non-padded frames
        of each layer's every feature (``2 * num_layers * input_size`` values), each
        standardised by a batch norm without scale or shift (running statistics at
        inference), then the classifier. With few examples per class it learns from
        more of the encoder than one mixed layer shows (see ``hparams/finetune.yaml``).

    Example
    -------
    >>> head = TaskHead(num_layers=3, input_size=8, num_classes=4, proj_size=16, hidden_size=16)
    >>> hidden = torch.randn(3, 2, 10, 8)                      # [layers, batch, frames, dim]
    >>> head(hidden, torch.tensor([10, 6])).shape
    torch.Size([2, 4])
    >>> stats = TaskHead(num_layers=3, input_size=8, num_classes=4, hidden_size=0, pooling="stats")
    >>> stats(hidden, torch.tensor([10, 6])).shape, stats.classifier[-1].in_features
    (torch.Size([2, 4]), 48)
    """

    def __init__(self, num_layers, input_size, num_classes, proj_size=256, hidden_size=256,
                 dropout=0.1, pooling="mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.pooling = pooling
        self.options = {"proj_size": proj_size, "hidden_size": hidden_size,
                        "dropout": dropout, "pooling": pooling}
        if pooling == "stats":
            pooled_size = 2 * num_layers * input_size
            self.normaliser = nn.BatchNorm1d(pooled_size, affine=False)
        else:
            pooled_size = proj_size
            self.layer_weights = nn.Parameter(torch.zeros(num_layers))
            self.projector = nn.Linear(input_size, proj_size)
        if pooling == "attention":
            self.frame_scorer = nn.Sequential(
                nn.Linear(proj_size, proj_size // 2), nn.Tanh(), nn.Linear(proj_size // 2, 1))
        if hidden_size:
            self.classifier = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(pooled_size, hidden_size),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_size, num_classes),
            )
        else:
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled_size, num_classes))

    def forward(self, hidden_states: torch.Tensor, frame_lens: torch.Tensor) -> torch.Tensor:
        if self.pooling == "stats":
            return self.classifier(self._standardised_stats(hidden_states, frame_lens))
        weights = torch.softmax(self.layer_weights, dim=0)
        mixed = torch.einsum("l,lbtd->btd", weights, hidden_states)
        projected = self.projector(mixed)
        mask = frame_mask(frame_lens, projected.shape[1])
        if self.pooling == "attention":
            pooled = attention_pool(projected, self.frame_scorer(projected).squeeze(-1), mask)
        else:
            pooled = masked_mean(projected, mask)
        return self.classifier(pooled)

    def _standardised_stats(self, hidden_states, frame_lens):
        layers, batch, frames, dim = hidden_states.shape
        per_frame = hidden_states.permute(1, 2, 0, 3).reshape(batch, frames, layers * dim)
        mean, std = masked_mean_std(per_frame, frame_mask(frame_lens, frames))
        pooled = torch.cat([mean, std], dim=-1)
        if self.training and batch == 1:
            # Batch statistics of one row are undefined: use the running ones.
            norm = self.normaliser
            return nn.functional.batch_norm(pooled, norm.running_mean, norm.running_var,
                                            training=False, eps=norm.eps)
        return self.normaliser(pooled)

    @property
    def num_classes(self) -> int:
        return self.classifier[-1].out_features

    def offset_logits(self, classes: torch.Tensor, offset: float) -> None:
        """Add ``offset`` to the logits of ``classes`` (a boolean mask over this head's
        classes), through the last layer's bias, so an export carries it.

        >>> head = TaskHead(num_layers=1, input_size=4, num_classes=3, proj_size=4, hidden_size=4)
        >>> before = head.classifier[-1].bias.detach().clone()
        >>> head.offset_logits(torch.tensor([False, False, True]), -2.0)
        >>> (head.classifier[-1].bias.detach() - before).tolist()
        [0.0, 0.0, -2.0]
        """
        _check_class_mask(classes, self.num_classes)
        with torch.no_grad():
            self.classifier[-1].bias[classes] += offset


class ExtendedHead(nn.Module):
    """A trained head kept whole, beside a new head for classes added after it.

    Extend-mode fine-tuning learns new intents without touching the parent's: the
    parent's head (``kept``) is fixed (no gradient, always in eval mode, so neither
    dropout nor batch statistics move it) and, with the encoder frozen too, its logits
    for its classes stay exactly the parent's; ``added`` learns the new classes, from
    the new clips and from the rehearsed old ones, whose logits it must keep below the
    parent's. The logits are the two heads' side by side: the kept classes first, at
    their indices.

    Parameters
    ----------
    num_layers, input_size, num_classes
        As for :class:`TaskHead`; ``num_classes`` counts kept and added classes.
    kept : dict
        The kept head's options, including its ``num_classes`` (a :class:`TaskHead`'s,
        or an ``ExtendedHead``'s for a model extended twice).
    added : dict
        The added head's :class:`TaskHead` options.
    dropout : float
        Dropout of the added head (the kept head runs in eval mode).
    shared
        Options either head takes where its own do not say (a recipe's ``head``
        factory settings).

    Example
    -------
    >>> head = ExtendedHead(3, 8, num_classes=6, kept={"num_classes": 4, "pooling": "mean"},
    ...                     added={"pooling": "stats", "hidden_size": 0}, proj_size=16, hidden_size=16)
    >>> hidden = torch.randn(3, 2, 10, 8)
    >>> logits = head.train()(hidden, torch.tensor([10, 6]))
    >>> logits.shape, torch.equal(logits[:, :4], head.kept(hidden, torch.tensor([10, 6])))
    (torch.Size([2, 6]), True)
    >>> head.kept.training, [name for name, p in head.named_parameters() if p.requires_grad]
    (False, ['added.classifier.1.weight', 'added.classifier.1.bias'])
    """

    def __init__(self, num_layers, input_size, num_classes, kept, added, dropout=0.1, **shared):
        super().__init__()
        kept, added = dict(kept), dict(added)
        kept_classes = int(kept.pop("num_classes"))
        if not 0 < kept_classes < num_classes:
            raise ValueError(f"an extended head needs more classes ({num_classes}) than it "
                             f"keeps ({kept_classes})")
        self.kept = make_head(num_layers, input_size, kept_classes, **{**shared, **kept})
        self.added = TaskHead(num_layers, input_size, num_classes - kept_classes,
                              **{**shared, "dropout": dropout, **added})
        for param in self.kept.parameters():
            param.requires_grad = False
        self.kept.eval()
        self.options = {"kept": {**head_architecture(self.kept), "num_classes": kept_classes},
                        "added": head_architecture(self.added), "dropout": dropout}
        # Training only, not part of the design: the kept logits are divided by this
        # while the added head learns (multitask.calibration.kept_temperature).
        self.kept_temperature = 1.0

    def train(self, mode: bool = True):
        super().train(mode)
        self.kept.eval()
        return self

    def forward(self, hidden_states: torch.Tensor, frame_lens: torch.Tensor) -> torch.Tensor:
        kept = self.kept(hidden_states, frame_lens)
        if self.training and self.kept_temperature != 1.0:
            kept = kept / self.kept_temperature
        return torch.cat([kept, self.added(hidden_states, frame_lens)], dim=-1)

    @property
    def num_classes(self) -> int:
        return self.kept.num_classes + self.added.num_classes

    def offset_logits(self, classes: torch.Tensor, offset: float) -> None:
        """Add ``offset`` to the logits of ``classes``, which must all be added ones: the
        kept head's logits are the parent's and stay so."""
        _check_class_mask(classes, self.num_classes)
        kept = self.kept.num_classes
        if bool(classes[:kept].any()):
            raise ValueError("an extended head's kept classes cannot be offset: they are the "
                             f"parent's, whole (classes {classes[:kept].nonzero().flatten().tolist()})")
        self.added.offset_logits(classes[kept:], offset)


def _check_class_mask(classes: torch.Tensor, num_classes: int) -> None:
    if classes.dtype != torch.bool or classes.shape != (num_classes,):
        raise ValueError(f"a class mask must be {num_classes} booleans, one per class of the "
                         f"head, not a {classes.dtype} tensor of shape {tuple(classes.shape)}")


def head_architecture(head) -> dict:
    """A head's options that shape its weights (all but dropout): a :class:`TaskHead`'s,
    or an :class:`ExtendedHead`'s with its two heads' inside."""
    return {key: value for key, value in head.options.items() if key != "dropout"}


def make_head(num_layers, input_size, num_classes, **options):
    """A :class:`TaskHead`, or an :class:`ExtendedHead` when ``options`` name a ``kept`` head.

    >>> type(make_head(2, 4, 3, pooling="mean", proj_size=4, hidden_size=4)).__name__
    'TaskHead'
    """
    if "kept" in options:
        return ExtendedHead(num_layers, input_size, num_classes, **options)
    return TaskHead(num_layers, input_size, num_classes, **options)


class MultitaskModel(nn.Module):
    """One encoder pass, one logits tensor per task.

    Parameters
    ----------
    encoder : Wav2Vec2Encoder
    heads : dict[str, TaskHead]
        Task name → head, e.g. ``{"intent": ..., "emotion": ...}``.
    ctc_head : torch.nn.Module, optional
        Training only (:class:`multitask.ctc.CTCHead`): in training mode the output also
        holds ``"ctc"``, its per-frame logits and the frame counts; never exported.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp(); tiny_config().save_pretrained(folder)
    >>> enc = Wav2Vec2Encoder(folder, save_path=folder)
    >>> heads = {t: TaskHead(enc.num_layers, enc.output_size, n, 16, 16)
    ...          for t, n in {"intent": 14, "emotion": 6}.items()}
    >>> logits = MultitaskModel(enc, heads)(torch.randn(2, 8000), torch.tensor([1.0, 0.7]))
    >>> {task: tuple(x.shape) for task, x in logits.items()}
    {'intent': (2, 14), 'emotion': (2, 6)}
    """

    def __init__(self, encoder: Wav2Vec2Encoder, heads: dict, ctc_head: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.ctc_head = ctc_head
        self.encoder_frozen = False
        self.frozen_heads: set[str] = set()

    def freeze_head(self, task: str) -> None:
        """Fix ``task``'s head: no gradient, and eval mode even while the model trains
        (a stats head's batch statistics would otherwise move).

        >>> import tempfile
        >>> folder = tempfile.mkdtemp(); tiny_config().save_pretrained(folder)
        >>> enc = Wav2Vec2Encoder(folder, save_path=folder)
        >>> model = MultitaskModel(enc, {"emotion": TaskHead(enc.num_layers, enc.output_size, 3,
        ...                                                  hidden_size=0, pooling="stats")})
        >>> model.freeze_head("emotion")
        >>> model.train().heads["emotion"].training, model.training
        (False, True)
        """
        for param in self.heads[task].parameters():
            param.requires_grad = False
        self.frozen_heads.add(task)
        self.heads[task].eval()

    def train(self, mode: bool = True):
        super().train(mode)
        for task in self.frozen_heads:
            self.heads[task].eval()
        return self

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.heads.keys())

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.encoder_frozen:
            with torch.no_grad():
                hidden = self.encoder(wavs, wav_lens)
        else:
            hidden = self.encoder(wavs, wav_lens)
        frame_lens = self.encoder.frame_lengths(wavs, wav_lens).clamp(max=hidden.shape[2])
        out = {task: head(hidden, frame_lens) for task, head in self.heads.items()}
        if self.ctc_head is not None and self.training:
            out[CTC_OUTPUT] = (self.ctc_head(hidden), frame_lens)
        return out


def build_heads(encoder: Wav2Vec2Encoder, num_classes: dict, task_options: dict | None = None,
                head=None, **head_options) -> dict:
    """One head per task, sized by that task's label encoder: the one place heads are built.

    ``head_options`` go to every head (``proj_size``, ``hidden_size``, ``dropout``,
    ``pooling``); ``task_options`` (task -> options) update them for one task. ``head``
    is the factory (default :class:`TaskHead`; a recipe passes its YAML's); a task whose
    options name a ``kept`` head gets an :class:`ExtendedHead`.

    >>> from types import SimpleNamespace
    >>> encoder = SimpleNamespace(num_layers=3, output_size=16)  # what heads read of it
    >>> heads = build_heads(encoder, {"intent": 5, "emotion": 3}, {"intent": {"pooling": "stats"}},
    ...                     proj_size=8, hidden_size=8)
    >>> heads["intent"].pooling, heads["emotion"].pooling
    ('stats', 'mean')
    """
    task_options = task_options or {}
    heads = {}
    for task, n in num_classes.items():
        options = {**head_options, **(task_options.get(task) or {})}
        # An extended head (fine-tuning's extend mode) is built from its two designs.
        factory = ExtendedHead if "kept" in options else (head or TaskHead)
        heads[task] = factory(num_layers=encoder.num_layers, input_size=encoder.output_size,
                              num_classes=n, **options)
    return heads
