"""Self-supervised pretraining of a small wav2vec2 encoder: masked prediction of MFCC clusters.

A wav2vec2 encoder trained from random weights on a few hours of labelled speech
learns its convolutional front end (in effect a filter bank) and its phonetic
features from the labels alone, slowly. This module gives it a head start from
unlabelled audio, with the first iteration of HuBERT's recipe:

1. every 20 ms frame of the training audio gets a discrete target, its cluster
   among ``num_clusters`` k-means centroids of MFCC + delta + delta-delta features;
2. the encoder reads the waveform with about half of its frames masked (spans of
   ``mask_length`` frames replaced by a learned embedding) and learns to predict
   the targets of the masked frames from their context.

HuBERT's second iteration is the same with other targets: clusters of a hidden
layer of the first iteration's encoder (``target_encoder`` / ``target_layer``), whose
frames are meant to say more about the sounds and less about the channel than MFCCs.

The result is an ordinary Transformers ``Wav2Vec2Model`` folder (``config.json`` +
``model.safetensors``) that any recipe takes as ``encoder_source``. Only training
audio is read: no labels, and nothing from validation or test splits.

    python recipes/pretrain.py hparams/pretrain.yaml
"""

from __future__ import annotations

import json
import os
import time

import torch
import torch.nn.functional as F
from speechbrain.lobes.features import MFCC
from tqdm import tqdm
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

from .checkpoints import ResumeError, check_epoch_budget
from .prepare.common import file_digest
from .sampling import check_epoch_complete, seed_epoch, steps_per_epoch
from .settings import SettingError

HOP_MS = 20  # the encoder's frame rate (conv strides multiply to 320 samples at 16 kHz)


def mfcc_features(wavs: torch.Tensor) -> torch.Tensor:
    """``[batch, frames, 39]`` MFCC + deltas at 20 ms hops, 25 ms windows (16 kHz input).

    Example
    -------
    >>> mfcc_features(torch.randn(2, 16000)).shape
    torch.Size([2, 51, 39])
    """
    extractor = MFCC(deltas=True, context=False, n_mfcc=13, hop_length=HOP_MS,
                     win_length=25, sample_rate=16000).to(wavs.device)
    with torch.no_grad():
        return extractor(wavs)


def fit_kmeans(features: torch.Tensor, k: int, iterations: int = 25, seed: int = 0) -> torch.Tensor:
    """``[k, dim]`` centroids by Lloyd's algorithm from a k-means++ start.

    Example
    -------
    >>> points = torch.cat([torch.randn(50, 2) - 5, torch.randn(50, 2) + 5])
    >>> centroids = fit_kmeans(points, k=2, seed=0)
    >>> sorted(round(c) for c in centroids[:, 0].tolist())
    [-5, 5]
    """
    generator = torch.Generator().manual_seed(seed)
    n = features.shape[0]
    if n < k:
        raise SettingError(f"k-means needs at least k={k} frames, got {n}: lower "
                           "num_clusters, or give more training audio")
    centroids = features[torch.randint(n, (1,), generator=generator)]
    for _ in range(1, k):  # k-means++: new centroids far from the chosen ones
        distance = torch.cdist(features, centroids).min(dim=1).values ** 2
        pick = torch.multinomial(distance / distance.sum(), 1, generator=generator)
        centroids = torch.cat([centroids, features[pick]])
    for _ in range(iterations):
        assignment = torch.cdist(features, centroids).argmin(dim=1)
        counts = torch.bincount(assignment, minlength=k).clamp(min=1).unsqueeze(1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, features)
        centroids = torch.where(counts > 1, sums / counts, centroids)
    return centroids


class EncoderLayerFeatures:
    """``[batch, frames, hidden]`` features: one hidden layer of a fixed, pretrained encoder.

    The targets of HuBERT's later iterations. ``layer`` 0 is the encoder's input to its
    first transformer layer, ``num_hidden_layers`` its output. The encoder is named by
    its weights' digest (:meth:`describe`), so a resumed run clusters the same encoder
    wherever its folder is.

    Example
    -------
    >>> import tempfile
    >>> from transformers import Wav2Vec2Model
    >>> from multitask.model import tiny_config
    >>> folder = tempfile.mkdtemp()
    >>> Wav2Vec2Model(tiny_config()).save_pretrained(folder)
    >>> features = EncoderLayerFeatures(folder, layer=1)
    >>> features(torch.randn(2, 16000)).shape[0], features.describe()["layer"]
    (2, 1)
    """

    def __init__(self, folder, layer: int):
        self.folder, self.layer = os.fspath(folder), int(layer)
        weights = [os.path.join(self.folder, name) for name in WEIGHT_FILES
                   if os.path.isfile(os.path.join(self.folder, name))]
        if not os.path.isfile(os.path.join(self.folder, "config.json")) or not weights:
            raise SettingError(f"target_encoder {self.folder}: not an encoder folder "
                               "(needs config.json and model.safetensors)")
        self.weights_sha256 = file_digest(weights[0])[:16]
        self.encoder = Wav2Vec2Model.from_pretrained(self.folder).eval()
        self.encoder.requires_grad_(False)
        layers = self.encoder.config.num_hidden_layers
        if not 0 <= self.layer <= layers:
            raise SettingError(f"target_layer {self.layer}: {self.folder} has hidden layers "
                               f"0..{layers}")

    def __call__(self, wavs: torch.Tensor, samples: torch.Tensor | None = None) -> torch.Tensor:
        """``samples``: each row's length; an encoder with a layer-norm front end is given
        the attention mask (one with group norm, like wav2vec2-base, is run without one,
        as it was trained)."""
        self.encoder.to(wavs.device)
        mask = None
        if samples is not None and self.encoder.config.feat_extract_norm == "layer":
            positions = torch.arange(wavs.shape[1], device=wavs.device)
            mask = (positions[None, :] < samples.to(wavs.device)[:, None]).long()
        with torch.no_grad():
            output = self.encoder(wavs, attention_mask=mask, output_hidden_states=True)
        return output.hidden_states[self.layer]

    def describe(self) -> dict:
        return {"features": "encoder layer", "weights_sha256": self.weights_sha256,
                "layer": self.layer}


class MFCCFeatures:
    """MFCC + deltas (:func:`mfcc_features`): the targets of HuBERT's first iteration."""

    def __call__(self, wavs: torch.Tensor, samples: torch.Tensor | None = None) -> torch.Tensor:
        return mfcc_features(wavs)  # frame-local: padding does not change a frame

    def describe(self) -> dict:
        return {"features": "mfcc+deltas"}


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def target_features(hparams, encoder_config: Wav2Vec2Config):
    """The frame features that ``hparams`` clusters: MFCCs, or ``target_encoder``'s
    ``target_layer`` (HuBERT's next iteration).

    The previous encoder is refused when it was pretrained on another seed's corpus,
    when its frames are not the new encoder's (another convolution stack), and when
    ``encoder_out`` would overwrite it (a resumed run would then cluster another encoder).
    """
    folder = hparams.get("target_encoder")
    if not folder:
        return MFCCFeatures()
    check_corpus_seed(folder, hparams.get("corpus_seed"))
    out = hparams.get("encoder_out")
    if out and os.path.realpath(folder) == os.path.realpath(out):
        raise SettingError(f"target_encoder {folder} is also encoder_out: the run would "
                           "overwrite the encoder whose layer it predicts; write elsewhere")
    features = EncoderLayerFeatures(folder, hparams.get("target_layer", 1))
    teacher = features.encoder.config
    for key in ("conv_kernel", "conv_stride"):
        if list(getattr(teacher, key)) != list(getattr(encoder_config, key)):
            raise SettingError(f"target_encoder {folder}: its {key} {list(getattr(teacher, key))} "
                               f"differs from encoder_config's {list(getattr(encoder_config, key))}, "
                               "so its frames are not the new encoder's")
    return features


class FrameTargets:
    """Frame-level cluster targets: standardised frame features -> nearest centroid."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, centroids: torch.Tensor,
                 features=None):
        self.mean, self.std, self.centroids = mean, std, centroids
        self.features = features or MFCCFeatures()

    @classmethod
    def fit(cls, wav_batches, k: int, seed: int, max_frames: int = 200_000,
            features=None) -> FrameTargets:
        """Centroids from the valid frames of ``(wavs, samples, frame_lens)`` batches."""
        features = features or MFCCFeatures()
        frames, total = [], 0
        for wavs, samples, frame_lens in wav_batches:
            feats = features(wavs, samples).cpu()
            for row, length in enumerate(frame_lens.tolist()):
                frames.append(feats[row, :length])
                total += length
            if total >= max_frames:
                break
        frames = torch.cat(frames)[:max_frames]
        mean, std = frames.mean(0), frames.std(0).clamp(min=1e-5)
        return cls(mean, std, fit_kmeans((frames - mean) / std, k, seed=seed), features)

    def __call__(self, wavs: torch.Tensor, num_frames: int,
                 samples: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, num_frames]`` target ids aligned with the encoder's frames."""
        feats = self.features(wavs, samples)
        if feats.shape[1] < num_frames:  # never expected: MFCC frames outnumber conv frames
            feats = F.pad(feats, (0, 0, 0, num_frames - feats.shape[1]), mode="replicate")
        mean, std, centroids = (t.to(feats.device) for t in (self.mean, self.std, self.centroids))
        feats = (feats[:, :num_frames] - mean) / std
        return torch.cdist(feats, centroids.expand(feats.shape[0], -1, -1)).argmin(-1)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "centroids": self.centroids,
                "features": self.features.describe()}

    @classmethod
    def from_state_dict(cls, state: dict, features=None, path: str = "") -> FrameTargets:
        """Targets saved by :meth:`state_dict`; ``features`` must be what they were fit on."""
        features = features or MFCCFeatures()
        saved = state.get("features", MFCCFeatures().describe())
        if saved != features.describe():
            raise ResumeError(
                f"{path or 'frame targets'}: the clusters were fit on {saved}, but this run's "
                f"targets are {features.describe()}; use another save_folder (or remove it) "
                "to start this run afresh")
        return cls(state["mean"], state["std"], state["centroids"], features)

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]


class MaskedPredictionModel(torch.nn.Module):
    """A ``Wav2Vec2Model`` and a linear layer predicting each frame's cluster.

    Example
    -------
    >>> from multitask.model import tiny_config
    >>> model = MaskedPredictionModel(tiny_config(), num_clusters=10)
    >>> wavs = torch.randn(2, 8000)
    >>> logits, frame_lens, mask = model(wavs, torch.tensor([1.0, 0.6]), mask_prob=0.5)
    >>> logits.shape[-1], bool(mask[1, frame_lens[1]:].any())
    (10, False)
    """

    def __init__(self, config: Wav2Vec2Config, num_clusters: int, mask_length: int = 10):
        super().__init__()
        config = Wav2Vec2Config.from_dict(config.to_dict())
        # Transformers creates the mask embedding only when masking is configured.
        config.mask_time_prob = max(config.mask_time_prob, 0.05)
        config.apply_spec_augment = True
        config.layerdrop = 0.0
        self.encoder = Wav2Vec2Model(config)
        self.mask_length = mask_length
        self.predict = torch.nn.Linear(config.hidden_size, num_clusters)

    def forward(self, wavs, wav_lens, mask_prob: float):
        samples = torch.round(wav_lens * wavs.shape[1]).long()
        frame_lens = self.encoder._get_feat_extract_output_lengths(samples).long()
        num_frames = int(self.encoder._get_feat_extract_output_lengths(torch.tensor(wavs.shape[1])))
        valid = torch.arange(num_frames)[None, :] < frame_lens[:, None]
        mask = torch.from_numpy(_compute_mask_indices(
            (wavs.shape[0], num_frames), mask_prob, self.mask_length,
            attention_mask=valid.long(), min_masks=1,
        )) & valid
        hidden = self.encoder(wavs, mask_time_indices=mask.to(wavs.device)).last_hidden_state
        return self.predict(hidden), frame_lens, mask

    def save_encoder(self, folder) -> None:
        """Write the encoder as a Transformers folder, without the pretraining-only parts.

        The mask embedding is dropped and masking switched off in the saved config:
        a fine-tuning run that does not mask would otherwise hold a parameter that
        never gets a gradient (which stops distributed training).
        """
        config = Wav2Vec2Config.from_dict(self.encoder.config.to_dict())
        config.mask_time_prob = 0.0
        config.architectures = ["Wav2Vec2Model"]
        clean = Wav2Vec2Model(config)
        state = {k: v for k, v in self.encoder.state_dict().items() if k != "masked_spec_embed"}
        problem = load_all_but_mask(clean, state)
        if problem:
            raise RuntimeError(f"encoder state does not fit its config: {problem}")
        clean.save_pretrained(os.fspath(folder), safe_serialization=True)
        # What a wav2vec2 folder carries for its loaders: 16 kHz input, normalised.
        Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(
            os.fspath(folder))


def masked_prediction_loss(logits, targets, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy over the masked frames only."""
    picked_logits, picked_targets = logits[mask], targets[mask]
    loss = F.cross_entropy(picked_logits, picked_targets)
    accuracy = (picked_logits.argmax(-1) == picked_targets).float().mean()
    return loss, accuracy


def batches_with_frames(loader, frame_lengths, device="cpu"):
    """``(wavs, samples, frame_lens)`` per batch of a SpeechBrain ``PaddedBatch`` loader."""
    for batch in loader:
        wavs, wav_lens = batch.sig
        samples = torch.round(wav_lens * wavs.shape[1]).long()
        yield wavs.to(device), samples.to(device), frame_lengths(samples).long()


def check_corpus_seed(encoder_folder, corpus_seed: int) -> None:
    """Refuse an encoder pretrained on another seed's corpus (``pretraining.json``).

    The synthetic corpus's seed decides which voices are training, validation and test
    voices; an encoder pretrained on another seed's training audio has heard some of
    this corpus's test voices. Encoders without a record (not ours) pass.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> write_summary(folder, {"corpus_seed": 1234})
    >>> check_corpus_seed(folder, 1234)
    >>> check_corpus_seed(folder, 7)
    Traceback (most recent call last):
    ...
    multitask.settings.SettingError: ...pretrained on the corpus of seed 1234, not 7, ...
    """
    path = os.path.join(os.fspath(encoder_folder), "pretraining.json")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as fin:
        recorded = json.load(fin).get("corpus_seed")
    if recorded is not None and corpus_seed is not None and int(recorded) != int(corpus_seed):
        raise SettingError(
            f"{path}: the encoder was pretrained on the corpus of seed {recorded}, not "
            f"{corpus_seed}, so it has heard some of this corpus's test voices. Keep "
            f"corpus_seed={recorded} "
            "(change `seed` for another training run) or pretrain for this corpus "
            "(recipes/pretrain.py with the same corpus_seed).")


def init_summary(folder) -> dict | None:
    """What a continued run started from: the folder, and its own ``pretraining.json``
    (read when the run starts, before ``encoder_out`` may overwrite it)."""
    if not folder:
        return None
    path = os.path.join(os.fspath(folder), "pretraining.json")
    record = {"folder": os.path.relpath(folder)}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fin:
            record["pretraining"] = json.load(fin)
    return record


def write_summary(folder, summary: dict) -> None:
    with open(os.path.join(folder, "pretraining.json"), "w", encoding="utf-8") as fout:
        json.dump(summary, fout, indent=2)


def run_epoch(model, targets, loader, optimizer, scheduler, hparams, epoch, accelerator) -> dict:
    """One pass of masked prediction; returns mean loss and masked-frame accuracy."""
    model.train()
    totals, batches, start = {"loss": 0.0, "accuracy": 0.0}, 0, time.time()
    bar = tqdm(loader, desc=f"pretrain {epoch}", disable=not accelerator.is_local_main_process,
               dynamic_ncols=True)
    core = accelerator.unwrap_model(model)
    for batch in bar:
        wavs, wav_lens = batch.sig
        logits, _, mask = model(wavs, wav_lens, hparams["mask_prob"])
        samples = torch.round(wav_lens * wavs.shape[1]).long()
        loss, accuracy = masked_prediction_loss(
            logits, targets(wavs, logits.shape[1], samples), mask)
        optimizer.zero_grad()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(core.parameters(), hparams.get("max_grad_norm", 5.0))
        optimizer.step()
        scheduler.step()
        # Every process's share, averaged: the figures do not depend on the process count.
        totals["loss"] += accelerator.reduce(loss.detach(), "mean").item()
        totals["accuracy"] += accelerator.reduce(accuracy.detach(), "mean").item()
        batches += 1
        bar.set_postfix(loss=f"{totals['loss'] / batches:.3f}",
                        acc=f"{totals['accuracy'] / batches:.3f}")
    check_epoch_complete(batches, loader, epoch)
    return {key: value / max(1, batches) for key, value in totals.items()} | {
        "seconds": time.time() - start}


def load_all_but_mask(module: torch.nn.Module, state: dict) -> str:
    """Load ``state`` into ``module``, the mask embedding (which only pretraining has)
    allowed to be absent on either side; returns what did not fit ("" when all did)."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ
        return str(err)
    missing = [m for m in missing if m != "masked_spec_embed"]
    return f"missing {missing}, unexpected {unexpected}" if missing or unexpected else ""


def load_encoder_weights(model: MaskedPredictionModel, folder) -> None:
    """Start ``model``'s encoder from a saved encoder folder (continued pretraining).

    Only the mask embedding, which a saved encoder does not carry, keeps its fresh
    initialisation; any other difference is an error naming the folder.
    """
    source = Wav2Vec2Model.from_pretrained(os.fspath(folder))
    problem = load_all_but_mask(model.encoder, source.state_dict())
    if problem:
        raise SettingError(f"{folder}: its weights do not fit encoder_config: {problem}")


def objective(features) -> str:
    """One line for ``pretraining.json``: what the encoder learnt to predict."""
    if isinstance(features, MFCCFeatures):
        return "masked prediction of k-means clusters of MFCC+deltas (HuBERT iteration 1)"
    return (f"masked prediction of k-means clusters of layer {features.layer} of "
            f"{os.path.relpath(features.folder)} (HuBERT's next iteration)")


def pretrain(hparams, accelerator, unlabelled=(), on_start=None) -> dict:
    """Pretrain as ``hparams`` says (resuming from its checkpoints); save the encoder.

    Reads the audio of ``hparams["train_manifests"]`` and of the ``unlabelled``
    manifests, starting from random weights or from ``hparams["init_encoder"]``.
    Writes ``hparams["encoder_out"]`` (a Transformers folder) and a
    ``pretraining.json`` beside it with the per-epoch loss and masked-frame accuracy.
    ``on_start``, if given, is called once the run's own checkpoint (if any) is
    recovered: from then on, the run is this one (see ``multitask.recipe.training_run``).
    A folder whose targets or checkpoint another run's settings wrote is refused
    (:class:`multitask.checkpoints.ResumeError`).
    """
    from accelerate.utils import set_seed

    from .checkpoints import AtomicCheckpointer
    from .data import make_dataset, make_loader
    from .manifest import manifest_paths, read_manifests
    from .optim import warmup_linear_decay

    seed = hparams["seed"]
    set_seed(seed)
    train_manifests = manifest_paths(hparams.get("train_manifests"))
    if not train_manifests:
        raise SettingError("train_manifests: no manifest given, so there is no audio to pretrain on")
    rows = read_manifests(train_manifests + list(unlabelled))
    loader = make_loader(make_dataset(rows, {}), rows, hparams["train_batching"], True, seed,
                         hparams.get("num_workers", 0))
    sampler = loader.batch_sampler
    config = Wav2Vec2Config.from_pretrained(hparams["encoder_config"])
    model = MaskedPredictionModel(config, hparams["num_clusters"], hparams["mask_length"])
    init_encoder = hparams.get("init_encoder")
    started_from = init_summary(init_encoder)
    if init_encoder:
        # An encoder pretrained on another seed's corpus has heard this one's test voices.
        check_corpus_seed(init_encoder, hparams.get("corpus_seed"))
        load_encoder_weights(model, init_encoder)

    save_folder = hparams["save_folder"]
    features = target_features(hparams, config)
    targets_file = os.path.join(save_folder, "frame_targets.pt")
    if accelerator.is_main_process and not os.path.isfile(targets_file):
        os.makedirs(save_folder, exist_ok=True)
        sampler.set_epoch(0)
        targets = FrameTargets.fit(
            batches_with_frames(loader, model.encoder._get_feat_extract_output_lengths,
                                accelerator.device),
            k=hparams["num_clusters"], seed=seed, max_frames=hparams["kmeans_frames"],
            features=features)
        torch.save(targets.state_dict(), targets_file + ".tmp")
        os.replace(targets_file + ".tmp", targets_file)
    accelerator.wait_for_everyone()
    targets = FrameTargets.from_state_dict(torch.load(targets_file, weights_only=True),
                                           features, targets_file)
    if targets.num_clusters != hparams["num_clusters"]:
        raise ResumeError(f"{targets_file}: {targets.num_clusters} clusters were fit there, "
                          f"this run has num_clusters={hparams['num_clusters']}; resume with "
                          "the settings it was saved with, or use a new output folder")

    optimizer = torch.optim.AdamW(model.parameters(), lr=hparams["lr"],
                                  weight_decay=hparams.get("weight_decay", 0.01))
    epoch_counter = hparams["epoch_counter"]
    schedule = hparams.get("lr_schedule", warmup_linear_decay)
    steps = steps_per_epoch(len(sampler), accelerator.num_processes, 1)  # each process's
    scheduler = schedule(optimizer, total_steps=epoch_counter.limit * steps,
                         warmup_steps=hparams.get("warmup_steps", 0))
    checkpointer = AtomicCheckpointer(save_folder, recoverables={
        "model": model, "optimizer": optimizer, "scheduler": scheduler,
        "epoch_counter": epoch_counter, "train_sampler": sampler})
    checkpointer.discard_interrupted_save()
    checkpointer.check_resumable()
    resumed = checkpointer.recover_if_possible()
    if resumed is not None:
        check_epoch_budget(epoch_counter, resumed.path)
        accelerator.print(f"Resuming after epoch {epoch_counter.current}")
    if on_start is not None:
        on_start()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    # Kept beside the checkpoints, so a resumed run still reports every epoch.
    history_file = os.path.join(save_folder, "history.json")
    history = []
    if os.path.isfile(history_file):
        with open(history_file, encoding="utf-8") as fin:
            history = [h for h in json.load(fin) if h["epoch"] <= epoch_counter.current]
    for epoch in epoch_counter:
        seed_epoch(seed, epoch, accelerator.process_index)
        loader.set_epoch(epoch)
        sampler.set_epoch(epoch)
        stats = run_epoch(model, targets, loader, optimizer, scheduler, hparams, epoch, accelerator)
        accelerator.print(f"epoch {epoch}: masked-frame loss {stats['loss']:.3f}, "
                          f"accuracy {stats['accuracy']:.3f} ({stats['seconds']:.0f} s)")
        history.append({"epoch": epoch, **stats})
        if accelerator.is_main_process:
            with open(history_file, "w", encoding="utf-8") as fout:
                json.dump(history, fout, indent=1)
        checkpointer.save_and_keep_only(meta={**stats, "epoch": epoch}, name=f"epoch-{epoch:04d}",
                                        num_to_keep=1)
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        out = hparams["encoder_out"]
        accelerator.unwrap_model(model).save_encoder(out)
        write_summary(out, {
            "objective": objective(features),
            "targets": {**features.describe(), **(
                {"folder": os.path.relpath(features.folder)}
                if isinstance(features, EncoderLayerFeatures) else {})},
            "num_clusters": hparams["num_clusters"], "mask_prob": hparams["mask_prob"],
            "mask_length": hparams["mask_length"], "epochs": epoch_counter.limit,
            "train_manifests": [os.path.relpath(p) for p in train_manifests],
            "unlabelled_manifests": [os.path.relpath(p) for p in unlabelled],
            "init_encoder": started_from,
            "corpus_seed": hparams.get("corpus_seed"),
            "audio_hours": round(sum(float(r["duration"]) for r in rows) / 3600, 2),
            "history": history,
        })
    return {"history": history}
