"""Training-time augmentation that SpeechBrain's ``speechbrain.augment`` lacks.

The two corpora differ in channel: Skit-S2I is 8 kHz telephone speech, CREMA-D
16 kHz studio speech, and callers arrive over the telephone.

* :class:`TelephoneBand` keeps only a telephone channel's bandwidth (resampled to
  8 kHz and back), so the emotion head cannot learn cues above 4 kHz that no call
  carries.
* :class:`TelephoneChannel` is the whole line: line noise at a random SNR, the
  300-3400 Hz band, a random level and G.711 mu-law companding. Bandwidth alone is
  not enough: the demo's emotion head, trained with :class:`TelephoneBand`, scored
  0.62 on the emotion validation clips, 0.56 on them band-limited, and 0.46 on
  them passed through the synthetic corpus's telephone line (noise, band-pass,
  mu-law). Training with the whole line did not pay on the demo within 5 epochs,
  though: see ``hparams/demo.yaml``.
* :class:`PauseInsertion` lengthens the gaps between words, as sad, hesitant or
  disgusted callers do; the intent corpus is read speech.

All follow SpeechBrain's augmentation interface, ``forward(waveforms, lengths) ->
waveforms`` (``-> (waveforms, lengths)`` when lengths change), so
``speechbrain.augment.augmenter.Augmenter`` can apply them with a probability,
alongside SpeechBrain's own augmentations.

Example
-------
>>> import torch
>>> wav = torch.randn(2, 16000)
>>> out = TelephoneBand()(wav, torch.tensor([1.0, 0.5]))
>>> out.shape, bool(out[1, 8000:].abs().max() == 0)
(torch.Size([2, 16000]), True)
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF

from .audio import TARGET_SAMPLE_RATE, normalise_padded
from .model import frame_mask


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
        return normalise_padded(wide, _valid_mask(wide, lengths))


class TelephoneChannel(torch.nn.Module):
    """A narrow-band telephone line, with random draws per utterance.

    In order: white line noise at an SNR drawn from ``snr_db`` (relative to the
    utterance's own power, padding excluded), the ``band_hz`` band-pass (the
    ``channel_rate`` resampling, then biquad high- and low-pass), a speech level drawn
    from ``level_dbfs``, and mu-law companding with 256 levels (G.711), whose
    quantisation noise grows with the level. The output is renormalised per
    utterance like :class:`TelephoneBand`'s, with zeros after each utterance's end.

    Parameters
    ----------
    snr_db : tuple of float or None
        Range of the line noise's SNR; ``None`` adds no noise.
    band_hz : tuple of float
        The pass band.
    level_dbfs : tuple of float
        Range of the speech RMS level before companding.
    mu_law : bool
        Apply the companding.
    channel_rate, sample_rate : int
        The line's sample rate and the batch's.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> wav = torch.randn(2, 16000)
    >>> out = TelephoneChannel()(wav, torch.tensor([1.0, 0.5]))
    >>> out.shape, bool(out[1, 8000:].abs().max() == 0), round(float(out[0].std()), 2)
    (torch.Size([2, 16000]), True, 1.0)
    """

    def __init__(self, snr_db=(10.0, 40.0), band_hz=(300.0, 3400.0), level_dbfs=(-32.0, -16.0),
                 mu_law=True, channel_rate: int = 8000, sample_rate: int = TARGET_SAMPLE_RATE):
        super().__init__()
        self.snr_db = tuple(snr_db) if snr_db is not None else None
        self.band_hz = tuple(band_hz)
        self.level_dbfs = tuple(level_dbfs)
        self.mu_law = mu_law
        self.channel_rate = channel_rate
        self.sample_rate = sample_rate

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = _valid_mask(waveforms, lengths)
        x = waveforms * valid
        if self.snr_db is not None:
            snr = _uniform(self.snr_db, x)
            noise = torch.randn_like(x) * _rms(x, valid) * 10 ** (-snr / 20)
            x = x + noise * valid
        x = telephone_band(x, self.sample_rate, self.channel_rate)
        x = AF.highpass_biquad(x, self.sample_rate, self.band_hz[0])
        x = AF.lowpass_biquad(x, self.sample_rate, self.band_hz[1])
        if self.mu_law:
            level = 10 ** (_uniform(self.level_dbfs, x) / 20)
            x = (x * valid * level / _rms(x, valid)).clamp(-1.0, 1.0)
            x = AF.mu_law_decoding(AF.mu_law_encoding(x, 256), 256)
        return normalise_padded(x, valid)


def _valid_mask(waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    samples = torch.round(lengths * waveforms.shape[1]).long()
    return frame_mask(samples, waveforms.shape[1])


def _rms(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.sqrt(((x * valid) ** 2).sum(dim=1, keepdim=True) / count + 1e-12)


def _uniform(bounds, like: torch.Tensor) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(like.shape[0], 1, device=like.device)


class PauseInsertion(torch.nn.Module):
    """Longer pauses between words: line-level noise inserted at quiet frames.

    Sad, hesitant or disgusted callers leave gaps between words that read speech does
    not. Each row gets between ``pauses[0]`` and ``pauses[1]`` pauses, each
    ``pause_ms`` long (drawn per pause), at 10 ms frames ``quiet_db`` below the row's
    loudest, between its first and last loud frames: word boundaries and closures,
    not the silence before and after the speech (random frames of the speech when
    none is that quiet). A pause is noise at the level of the frame where it goes,
    not digital silence, which a telephone line never carries. Rows get longer by
    different amounts: the batch is re-padded and the relative lengths are returned,
    as SpeechBrain's ``Augmenter`` expects of a length-changing augmentation.

    Parameters
    ----------
    pauses : tuple of int
        Fewest and most pauses per row.
    pause_ms : tuple of float
        Shortest and longest pause.
    quiet_db : float
        How far below the loudest 10 ms frame a frame must be to take a pause.
    sample_rate : int

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> wav = torch.randn(2, 16000)
    >>> out, lens = PauseInsertion(pauses=(2, 2), pause_ms=(100, 100))(wav, torch.tensor([1.0, 0.5]))
    >>> out.shape, torch.round(lens * out.shape[1]).long().tolist()
    (torch.Size([2, 19200]), [19200, 11200])
    """

    FRAME_MS = 10

    def __init__(self, pauses=(1, 5), pause_ms=(40.0, 200.0), quiet_db: float = 25.0,
                 sample_rate: int = TARGET_SAMPLE_RATE):
        super().__init__()
        self.pauses = tuple(pauses)
        self.pause_ms = tuple(pause_ms)
        self.quiet_db = quiet_db
        self.sample_rate = sample_rate

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor):
        total = waveforms.shape[1]
        rows = [self._with_pauses(wav[: int(round(float(n) * total))])
                for wav, n in zip(waveforms, lengths, strict=True)]
        width = max(row.numel() for row in rows)
        out = waveforms.new_zeros(len(rows), width)
        for i, row in enumerate(rows):
            out[i, : row.numel()] = row
        return out, torch.tensor([row.numel() / width for row in rows], device=lengths.device)

    def _with_pauses(self, wav: torch.Tensor) -> torch.Tensor:
        hop = self.sample_rate * self.FRAME_MS // 1000
        frames = wav.numel() // hop
        if frames < 3:
            return wav
        power = wav[: frames * hop].reshape(frames, hop).pow(2).mean(dim=1) + 1e-10
        level_db = 10 * torch.log10(power)
        loud = torch.nonzero(level_db >= level_db.max() - self.quiet_db).flatten()
        first, last = int(loud[0]), int(loud[-1])      # the speech, not the silence around it
        inner = torch.arange(first + 1, last)
        candidates = inner[level_db[first + 1 : last] < level_db.max() - self.quiet_db]
        if candidates.numel() == 0:
            candidates = inner if inner.numel() else torch.arange(1, frames - 1)
        count = int(torch.randint(self.pauses[0], self.pauses[1] + 1, ()))
        chosen = candidates[torch.randperm(candidates.numel())[:count]].sort().values
        pieces, start = [], 0
        for frame in chosen.tolist():
            cut = frame * hop
            ms = self.pause_ms[0] + (self.pause_ms[1] - self.pause_ms[0]) * float(torch.rand(()))
            noise = torch.randn(int(ms * self.sample_rate / 1000), device=wav.device)
            pieces += [wav[start:cut], noise * power[frame].sqrt()]
            start = cut
        pieces.append(wav[start:])
        return torch.cat(pieces)


class FormantShift(torch.nn.Module):
    """Move the formants (the spectral envelope) by a random factor per row, keeping
    the pitch, the timing and the phase: another vocal-tract length, the same speech.

    Each frame's spectrum is split into a smooth envelope and the harmonics riding on
    it. The envelope is the *true envelope* (cepstral smoothing to ``lifter``
    coefficients, repeated on the maximum of the spectrum and the last envelope, so it
    runs over the harmonic peaks rather than between them). The envelope is stretched
    along frequency by ``factor`` (drawn per row from ``factors``), smoothed the same
    way, and each frame is multiplied by the ratio of the stretched envelope to its own,
    at most ``max_gain_db`` either way. The stretch is piecewise linear, as in
    vocal-tract length perturbation: ``factor * f`` up to ``0.85 * upper_hz`` (scaled
    down for factors above 1), then a line back to ``upper_hz``; from ``upper_hz`` up
    nothing moves. The default ``upper_hz`` is a telephone line's upper band edge, which
    so stays put; its lower edge (300 Hz) moves with the factor, as lines differ there.
    Speed perturbation moves the formants with the pitch and the rate; this moves them
    alone.

    Parameters
    ----------
    factors : tuple of float
        Range of the formant stretch (1: unchanged).
    upper_hz : float
        Frequencies from here up are left alone.
    lifter : int
        Cepstral coefficients kept for the envelope. At 16 kHz, 40 is 2.5 ms: finer
        would follow the harmonics of voices above 400 Hz, coarser merges formants.
    envelope_iterations : int
        Smoothing passes of the true envelope (0: the plain cepstral envelope, which
        runs below the harmonic peaks and moves a formant only part of the way).
    n_fft, hop : int
        The STFT (a Hann window of ``n_fft`` samples; half-overlapping frames cost half
        of quarter-overlapping ones and moved the formants as well).
    max_gain_db : float
        Largest boost or cut applied to any bin.
    sample_rate : int

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> wav = torch.randn(2, 16000)
    >>> out = FormantShift(factors=(1.1, 1.1))(wav, torch.tensor([1.0, 0.5]))
    >>> out.shape, bool(out[1, 8000:].abs().max() == 0), round(float(out[0].std()), 2)
    (torch.Size([2, 16000]), True, 1.0)
    """

    FLOOR_DB = 80.0     # each frame's spectrum is floored this far below its peak

    def __init__(self, factors=(0.88, 1.12), upper_hz: float = 3400.0, lifter: int = 40,
                 envelope_iterations: int = 10, n_fft: int = 512, hop: int = 256,
                 max_gain_db: float = 20.0, sample_rate: int = TARGET_SAMPLE_RATE):
        super().__init__()
        if not 0 < factors[0] <= factors[1]:
            raise ValueError(f"FormantShift factors must be positive and ordered, got {factors}")
        if not 0 < upper_hz <= sample_rate / 2:
            raise ValueError(f"FormantShift upper_hz must be in (0, {sample_rate / 2}], got {upper_hz}")
        if not 0 < lifter < n_fft // 2:
            raise ValueError(f"FormantShift lifter must be in (0, {n_fft // 2}), got {lifter}")
        self.factors = tuple(factors)
        self.upper_hz = upper_hz
        self.lifter = lifter
        self.envelope_iterations = envelope_iterations
        self.n_fft = n_fft
        self.hop = hop
        self.max_gain = max_gain_db * math.log(10) / 20
        self.sample_rate = sample_rate

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = _valid_mask(waveforms, lengths)
        x = (waveforms * valid).float()      # the FFTs want float32 whatever the batch is in
        window = torch.hann_window(self.n_fft, device=x.device)
        spec = torch.stft(x, self.n_fft, self.hop, window=window, return_complex=True)
        envelope = self.log_envelope(spec)                            # (batch, bins, frames)
        source = self._source_bins(_uniform(self.factors, x), spec.shape[1])
        index = source.unsqueeze(-1).expand(-1, -1, envelope.shape[-1])
        low = index.floor().long().clamp(max=spec.shape[1] - 1)
        high = (low + 1).clamp(max=spec.shape[1] - 1)
        weight = index - low
        stretched = (1 - weight) * envelope.gather(1, low) + weight * envelope.gather(1, high)
        gain = (self._smooth(stretched) - envelope).clamp(-self.max_gain, self.max_gain)
        out = torch.istft(spec * torch.exp(gain), self.n_fft, self.hop, window=window,
                          length=x.shape[1])
        return normalise_padded(out, valid).to(waveforms.dtype)

    def log_envelope(self, spec: torch.Tensor) -> torch.Tensor:
        """The true log-magnitude envelope of a ``(batch, bins, frames)`` STFT."""
        magnitude = spec.abs()
        floor = magnitude.amax(dim=1, keepdim=True) * 10 ** (-self.FLOOR_DB / 20) + 1e-12
        log_mag = torch.log(torch.maximum(magnitude, floor))
        envelope = self._smooth(log_mag)
        for _ in range(self.envelope_iterations):
            envelope = self._smooth(torch.maximum(log_mag, envelope))
        return envelope

    def _smooth(self, log_mag: torch.Tensor) -> torch.Tensor:
        """Keep the first ``lifter`` cepstral coefficients of each frame."""
        cepstrum = torch.fft.irfft(log_mag, n=self.n_fft, dim=1)
        keep = torch.zeros(self.n_fft, device=log_mag.device)
        keep[: self.lifter] = 1.0
        keep[self.n_fft - self.lifter + 1 :] = 1.0
        return torch.fft.rfft(cepstrum * keep[None, :, None], dim=1).real

    def _source_bins(self, factor: torch.Tensor, bins: int) -> torch.Tensor:
        """For each output bin, the (fractional) input bin whose envelope moves there:
        the inverse of the piecewise-linear stretch."""
        hz_per_bin = self.sample_rate / self.n_fft
        target = torch.arange(bins, device=factor.device, dtype=factor.dtype) * hz_per_bin
        upper = self.upper_hz
        knee_out = 0.85 * upper * factor.clamp(max=1.0)               # where the line starts, out
        knee_in = knee_out / factor                                   # ... and in
        below = target / factor
        between = knee_in + (target - knee_out) * (upper - knee_in) / (upper - knee_out)
        source = torch.where(target <= knee_out, below, torch.where(target <= upper, between, target))
        return source / hz_per_bin
