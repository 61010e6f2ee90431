"""Training-time augmentation that SpeechBrain's ``speechbrain.augment`` lacks.

:class:`TelephoneBand` passes a batch through a telephone channel's bandwidth
(resampled to 8 kHz and back). The two corpora differ here: Skit-S2I is 8 kHz
telephone speech, CREMA-D 16 kHz studio speech, and callers arrive over the
telephone. Without it the emotion head can learn cues above 4 kHz that no call
carries. It follows SpeechBrain's augmentation interface, ``forward(waveforms,
lengths) -> waveforms``, so ``speechbrain.augment.augmenter.Augmenter`` can apply it
with a probability, alongside SpeechBrain's own augmentations.

Example
-------
>>> import torch
>>> wav = torch.randn(2, 16000)
>>> out = TelephoneBand()(wav, torch.tensor([1.0, 0.5]))
>>> out.shape, bool(out[1, 8000:].abs().max() == 0)
(torch.Size([2, 16000]), True)
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF

from .audio import TARGET_SAMPLE_RATE


def telephone_band(wav: torch.Tensor, sample_rate: int = TARGET_SAMPLE_RATE,
                   channel_rate: int = 8000) -> torch.Tensor:
    """Keep only what a ``channel_rate`` channel carries, at the same sample rate and length."""
    narrow = AF.resample(wav, sample_rate, channel_rate)
    wide = AF.resample(narrow, channel_rate, sample_rate)[..., : wav.shape[-1]]
    return torch.nn.functional.pad(wide, (0, wav.shape[-1] - wide.shape[-1]))


class TelephoneBand(torch.nn.Module):
    """Band-limit to ``channel_rate / 2`` and renormalise each utterance over its length.

    Parameters
    ----------
    channel_rate : int
        The channel's sample rate (8000 for narrow-band telephony).
    sample_rate : int
        The batch's sample rate.
    """

    def __init__(self, channel_rate: int = 8000, sample_rate: int = TARGET_SAMPLE_RATE):
        super().__init__()
        self.channel_rate = channel_rate
        self.sample_rate = sample_rate

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        wide = telephone_band(waveforms, self.sample_rate, self.channel_rate)
        # Keep the model's input convention (zero mean, unit variance per utterance,
        # zeros after the end) so augmented and clean rows look alike but for the band.
        valid = torch.arange(wide.shape[1], device=wide.device)[None, :] < (
            torch.round(lengths * wide.shape[1])[:, None]
        )
        count = valid.sum(dim=1, keepdim=True).clamp(min=1)
        mean = (wide * valid).sum(dim=1, keepdim=True) / count
        var = (((wide - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
        return torch.where(valid, (wide - mean) / torch.sqrt(var + 1e-7), torch.zeros_like(wide))
