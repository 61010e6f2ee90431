"""The network: masking decisions, padding behaviour, head sizes, one encoder pass."""

import pytest
import torch
from torch import nn

from multitask.audio import normalise
from multitask.model import ExtendedHead, MultitaskModel, TaskHead, Wav2Vec2Encoder, build_heads


def make_model(encoder_dir, tmp_path, classes=None):
    torch.manual_seed(0)
    encoder = Wav2Vec2Encoder(encoder_dir, save_path=str(tmp_path))
    heads = build_heads(encoder, classes or {"intent": 5, "emotion": 3}, proj_size=16, hidden_size=16,
                        dropout=0.0)
    return MultitaskModel(encoder, heads).eval()


def alone_and_padded(model, lengths=(16000, 9000, 5200)):
    """Probabilities of each utterance alone, and inside one right-padded batch."""
    gen = torch.Generator().manual_seed(1)
    wavs = [normalise(torch.randn(n, generator=gen)) for n in lengths]
    longest = max(lengths)
    batch = torch.zeros(len(wavs), longest)
    for i, wav in enumerate(wavs):
        batch[i, : wav.numel()] = wav
    lens = torch.tensor([n / longest for n in lengths])
    with torch.no_grad():
        together = model(batch, lens)
        alone = [model(w[None], torch.ones(1)) for w in wavs]
    diffs = {}
    for task in together:
        p_batch = torch.softmax(together[task], -1)
        p_alone = torch.cat([torch.softmax(a[task], -1) for a in alone])
        diffs[task] = (p_batch - p_alone).abs().max().item()
    return diffs


def test_mask_decision_follows_the_encoder_config(group_norm_encoder, layer_norm_encoder, tmp_path):
    assert not Wav2Vec2Encoder(group_norm_encoder, save_path=str(tmp_path)).use_attention_mask
    assert Wav2Vec2Encoder(layer_norm_encoder, save_path=str(tmp_path)).use_attention_mask


def test_padding_does_not_change_prediction_for_a_layer_norm_encoder(layer_norm_encoder, tmp_path):
    diffs = alone_and_padded(make_model(layer_norm_encoder, tmp_path))
    assert max(diffs.values()) < 1e-4, diffs


def test_group_norm_encoder_padding_shift_is_bounded_and_smaller_when_lengths_match(
    group_norm_encoder, tmp_path
):
    """Group norm pools statistics over padded samples too (wav2vec2-base is trained
    without an attention mask), so padding shifts the output. The shift is measured,
    bounded, and much smaller when batch-mates have similar lengths, which is why
    inference sorts by length before batching."""
    model = make_model(group_norm_encoder, tmp_path)
    mixed = alone_and_padded(model, lengths=(16000, 9000, 5200))
    similar = alone_and_padded(model, lengths=(16000, 15600, 15200))
    assert max(mixed.values()) < 0.25, mixed
    assert max(similar.values()) < 0.05, similar
    assert max(similar.values()) < max(mixed.values())


def test_heads_are_sized_by_their_label_encoders(group_norm_encoder, tmp_path):
    model = make_model(group_norm_encoder, tmp_path, classes={"intent": 14, "emotion": 6})
    assert model.heads["intent"].num_classes == 14
    assert model.heads["emotion"].num_classes == 6


def test_one_encoder_pass_serves_both_heads(group_norm_encoder, tmp_path):
    model = make_model(group_norm_encoder, tmp_path)
    calls = []
    model.encoder.model.register_forward_hook(lambda *_: calls.append(1))
    out = model(torch.randn(2, 8000), torch.tensor([1.0, 0.8]))
    assert set(out) == {"intent", "emotion"} and len(calls) == 1


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_layer_weights_start_uniform_and_pooling_ignores_padded_frames(pooling):
    head = TaskHead(num_layers=3, input_size=4, num_classes=2, proj_size=4, hidden_size=4, dropout=0.0,
                    pooling=pooling)
    assert torch.allclose(torch.softmax(head.layer_weights, 0), torch.full((3,), 1 / 3))
    hidden = torch.randn(3, 1, 6, 4)
    garbage = hidden.clone()
    garbage[:, :, 4:] = 1e6  # frames past the valid length must not matter
    assert torch.allclose(head(hidden, torch.tensor([4])), head(garbage, torch.tensor([4])))


def test_stats_pooling_keeps_layers_apart_and_ignores_padded_frames():
    torch.manual_seed(0)
    head = TaskHead(num_layers=3, input_size=4, num_classes=2, hidden_size=4, dropout=0.0,
                    pooling="stats")
    assert not hasattr(head, "layer_weights") and not hasattr(head, "projector")
    assert head.classifier[1].in_features == 2 * 3 * 4  # mean and std of every layer
    head.train()
    head(torch.randn(3, 8, 6, 4), torch.full((8,), 6))  # running statistics move off 0 / 1
    head.eval()
    hidden = torch.randn(3, 1, 6, 4)
    garbage = hidden.clone()
    garbage[:, :, 4:] = 1e6
    assert torch.allclose(head(hidden, torch.tensor([4])), head(garbage, torch.tensor([4])))
    # The statistics are per layer: changing one layer's frames changes the output.
    other = hidden.clone()
    other[2] += 3.0
    assert not torch.allclose(head(hidden, torch.tensor([4])), head(other, torch.tensor([4])))


def test_stats_pooling_standardises_with_running_statistics_at_inference():
    torch.manual_seed(0)
    head = TaskHead(num_layers=2, input_size=3, num_classes=2, hidden_size=4, pooling="stats").eval()
    rows = torch.randn(2, 5, 7, 3)
    together = head(rows, torch.full((5,), 7))
    alone = torch.cat([head(rows[:, i:i + 1], torch.tensor([7])) for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-6)  # batch-mates do not matter
    head.train()
    assert torch.isfinite(head(rows[:, :1], torch.tensor([7]))).all()  # a batch of one trains


def test_config_only_folder_gives_a_random_encoder_without_weights(tmp_path):
    from multitask.model import tiny_config

    tiny_config().save_pretrained(tmp_path / "cfg")
    encoder = Wav2Vec2Encoder(str(tmp_path / "cfg"), save_path=str(tmp_path))
    assert encoder.num_layers == 3 and encoder.output_size == 32


def test_attention_pooling_lets_one_frame_decide():
    head = TaskHead(num_layers=1, input_size=2, num_classes=2, proj_size=2, hidden_size=2, dropout=0.0,
                    pooling="attention")
    with torch.no_grad():
        head.projector.weight.copy_(torch.eye(2))
        head.projector.bias.zero_()
        # The scorer gives a large score to frames whose first feature is high.
        head.frame_scorer[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.frame_scorer[0].bias.zero_()
        head.frame_scorer[2].weight.fill_(50.0)
        head.frame_scorer[2].bias.zero_()
    hidden = torch.zeros(1, 1, 20, 2)
    hidden[0, 0, 7] = torch.tensor([1.0, 5.0])  # the one "keyword" frame
    weights = torch.softmax(head.frame_scorer(head.projector(hidden[0])).squeeze(-1), dim=1)
    assert weights[0, 7] > 0.99                 # mean pooling would give it 1/20
    expected = head.classifier(head.projector(hidden[0, 0, 7:8]))
    assert torch.allclose(head(hidden, torch.tensor([20])), expected, atol=1e-3)


def test_unknown_pooling_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="mean.*attention.*stats.*'max'"):
        TaskHead(num_layers=1, input_size=2, num_classes=2, pooling="max")


def test_encoder_dropout_override_reaches_every_dropout_module(tmp_path):
    from multitask.model import tiny_config

    tiny_config(hidden_dropout=0.1, attention_dropout=0.1, feat_proj_dropout=0.1,
                activation_dropout=0.1).save_pretrained(tmp_path / "cfg")

    def dropout_rates(**kwargs):
        encoder = Wav2Vec2Encoder(str(tmp_path / "cfg"), save_path=str(tmp_path), **kwargs)
        probs = {m.p for m in encoder.model.modules() if isinstance(m, nn.Dropout)}
        attention = {m.dropout for m in encoder.model.modules() if hasattr(m, "is_causal")}
        return probs | attention

    assert dropout_rates() == {0.1}             # None keeps the config's values
    assert dropout_rates(dropout=0.0) == {0.0}


def test_an_offset_moves_only_the_added_classes_of_an_extended_head():
    head = ExtendedHead(2, 8, num_classes=5, kept={"num_classes": 3, "pooling": "mean"},
                        added={"pooling": "stats", "hidden_size": 0}, proj_size=8,
                        hidden_size=8).eval()
    hidden, lens = torch.randn(2, 2, 7, 8), torch.tensor([7, 4])  # layers, batch, frames, width
    before = head(hidden, lens)
    head.offset_logits(torch.tensor([False, False, False, False, True]), -1.5)
    after = head(hidden, lens)
    assert torch.equal(after[:, :4], before[:, :4])
    assert torch.allclose(after[:, 4], before[:, 4] - 1.5)
    with pytest.raises(ValueError, match=r"kept classes cannot be offset.*\[1\]"):
        head.offset_logits(torch.tensor([False, True, False, False, True]), -1.0)
    with pytest.raises(ValueError, match=r"5 booleans.*shape \(4,\)"):
        head.offset_logits(torch.tensor([False, False, False, True]), -1.0)


@pytest.mark.parametrize("frozen_front_end", [False, True])
def test_training_asks_no_gradient_of_the_audio_and_gets_the_same_weight_gradients(
        frozen_front_end, tmp_path):
    """With the front end frozen, SpeechBrain stops its weights' gradients but Transformers
    would still run its whole backward pass for the audio's gradient: skipped now."""
    from multitask.model import tiny_config

    tiny_config().save_pretrained(tmp_path / "cfg")
    encoder = Wav2Vec2Encoder(str(tmp_path / "cfg"), save_path=str(tmp_path),
                              freeze_feature_extractor=frozen_front_end).train()
    extractor = encoder.model.feature_extractor
    audio_needs_grad = []
    extractor.conv_layers[0].register_forward_pre_hook(
        lambda module, args: audio_needs_grad.append(args[0].requires_grad))
    wavs, lens = normalise(torch.randn(2, 8000)), torch.tensor([1.0, 0.6])

    def gradients():
        torch.manual_seed(0)
        encoder.zero_grad()
        encoder(wavs, lens).pow(2).mean().backward()
        return {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}

    ours = gradients()
    extractor._requires_grad = True  # what Transformers builds
    transformers_default = gradients()
    assert audio_needs_grad == [False, True]
    conv_weights = [n for n, _ in encoder.named_parameters() if "conv_layers" in n and n.endswith("conv.weight")]
    assert len(conv_weights) == len(extractor.conv_layers)
    if frozen_front_end:
        assert not set(conv_weights) & set(ours)
    else:
        assert all(ours[n].abs().sum() > 0 for n in conv_weights)  # the front end still learns
    assert ours.keys() == transformers_default.keys() and len(ours) > 10
    assert all(torch.equal(ours[n], transformers_default[n]) for n in ours)


def test_time_masking_override_masks_frames_only_while_training(tmp_path):
    from multitask.finetune import load_parent_encoder
    from multitask.model import tiny_config

    tiny_config().save_pretrained(tmp_path / "cfg")         # mask_time_prob 0 in the config
    wav = normalise(torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)))
    plain = Wav2Vec2Encoder(str(tmp_path / "cfg"), save_path=str(tmp_path), apply_spec_augment=True)
    assert plain.model.config.mask_time_prob == 0.0

    def outputs(**kwargs):
        """Layers of a copy of ``plain`` built with ``kwargs``, training and evaluating."""
        encoder = Wav2Vec2Encoder(str(tmp_path / "cfg"), save_path=str(tmp_path), **kwargs)
        load_parent_encoder(encoder, plain.state_dict(), "plain")   # all but the mask vector
        torch.manual_seed(0)
        trained = encoder.train()(wav, torch.ones(1)).detach()
        with torch.no_grad():
            return encoder, trained, encoder.eval()(wav, torch.ones(1))

    _, plain_train, plain_eval = outputs(apply_spec_augment=True)
    masked, masked_train, masked_eval = outputs(apply_spec_augment=True, mask_time_prob=0.3)
    assert masked.model.config.mask_time_prob == 0.3
    assert torch.allclose(plain_train, plain_eval, atol=1e-6)   # nothing to mask at 0
    assert torch.allclose(masked_eval, plain_eval, atol=1e-6)   # never while evaluating
    assert not torch.allclose(masked_train[-1], plain_train[-1], atol=1e-3)
    assert torch.allclose(outputs(apply_spec_augment=False, mask_time_prob=0.3)[1], plain_train,
                          atol=1e-6)                        # the switch turns it off
