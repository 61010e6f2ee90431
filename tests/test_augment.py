"""Telephone augmentation: what the line does to a batch, and what it leaves alone."""

import pytest
import torch

from multitask.augment import TelephoneBand, TelephoneChannel


def band_share(wav: torch.Tensor, low: float, high: float, rate: int = 16000) -> float:
    power = torch.fft.rfft(wav).abs() ** 2
    freqs = torch.fft.rfftfreq(wav.numel(), 1 / rate)
    return float(power[(freqs >= low) & (freqs < high)].sum() / power.sum())


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.randn(3, 16000, generator=gen)
    wavs[2, 8000:] = 0.0
    return wavs, torch.tensor([1.0, 1.0, 0.5])


def test_the_line_keeps_the_band_and_the_input_convention():
    wavs, lens = batch()
    torch.manual_seed(0)
    out = TelephoneChannel()(wavs, lens)
    assert out.shape == wavs.shape and torch.isfinite(out).all()
    assert out[2, 8000:].abs().max() == 0                    # padding stays zero
    for row, n in zip(out, (16000, 16000, 8000), strict=True):
        assert abs(float(row[:n].mean())) < 1e-3 and abs(float(row[:n].std()) - 1) < 1e-2
    # White noise in, about 38% of its power in 300-3400 Hz; after the line, nearly all.
    assert band_share(wavs[0], 300, 3400) < 0.45
    assert band_share(out[0], 300, 3400) > 0.9
    assert band_share(out[0], 4000, 8000) < 0.01 and band_share(out[0], 0, 200) < 0.02


def test_the_line_adds_what_bandwidth_alone_does_not():
    wavs, lens = batch()
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(16000) / 16000)
    wavs[0] = tone                                             # clean, entirely in band
    torch.manual_seed(0)
    line = TelephoneChannel()(wavs, lens)[0]
    band = TelephoneBand()(wavs, lens)[0]
    quiet = TelephoneChannel(snr_db=None, mu_law=False)(wavs, lens)[0]
    inner = slice(2000, 14000)                                 # away from filter onsets
    assert (quiet[inner] - band[inner]).abs().max() < 0.1     # no noise, no codec: the band
    assert (line[inner] - band[inner]).abs().max() > 0.05     # noise and quantisation


def test_draws_differ_per_utterance_and_follow_the_seed():
    wavs, lens = batch()
    same = torch.stack([wavs[0], wavs[0]])
    torch.manual_seed(3)
    first = TelephoneChannel()(same, torch.ones(2))
    torch.manual_seed(3)
    again = TelephoneChannel()(same, torch.ones(2))
    assert torch.equal(first, again)
    assert not torch.allclose(first[0], first[1])


def test_only_rows_of_the_named_tasks_are_augmented():
    from multitask.losses import IGNORE_INDEX
    from multitask.train import augment_rows

    wavs, lens = batch()
    labels = {"intent": torch.tensor([4, IGNORE_INDEX, IGNORE_INDEX]),
              "emotion": torch.tensor([IGNORE_INDEX, 1, 3])}
    torch.manual_seed(0)
    out, out_lens = augment_rows(TelephoneChannel(), wavs, lens, labels, ["emotion"])
    assert torch.equal(out[0], wavs[0]) and torch.equal(out_lens, lens)
    assert not torch.allclose(out[1], wavs[1]) and out[2, 8000:].abs().max() == 0
    torch.manual_seed(0)
    everything, _ = augment_rows(TelephoneChannel(), wavs, lens, labels, None)
    assert not torch.allclose(everything[0], wavs[0])


def test_task_augmentation_refuses_unknown_tasks():
    import pytest

    from multitask.train import augment_rows

    wavs, lens = batch()
    labels = {"emotion": torch.tensor([1, 2, 3])}
    with pytest.raises(ValueError, match=r"lacks: \['emotions'\]"):
        augment_rows(TelephoneChannel(), wavs, lens, labels, ["emotions"])


def test_a_length_change_on_some_rows_re_pads_the_batch():
    from speechbrain.augment.augmenter import Augmenter
    from speechbrain.augment.time_domain import SpeedPerturb

    from multitask.losses import IGNORE_INDEX
    from multitask.train import augment_rows

    wavs, lens = batch()                          # rows of 16000, 16000 and 8000 samples
    labels = {"intent": torch.tensor([4, IGNORE_INDEX, 7]),
              "emotion": torch.tensor([IGNORE_INDEX, 1, IGNORE_INDEX])}
    def speed(percent):
        return Augmenter(augmentations=[SpeedPerturb(16000, speeds=[percent])],
                         min_augmentations=1, max_augmentations=1)

    slower = speed(80)                            # 1.25 times as many samples
    out, out_lens = augment_rows(slower, wavs, lens, labels, ["intent"])
    assert out.shape == (3, 20000)
    samples = torch.round(out_lens * out.shape[1]).long().tolist()
    assert samples == [20000, 16000, 10000]
    assert torch.equal(out[1, :16000], wavs[1]) and out[1, 16000:].abs().max() == 0
    assert out[2, 10000:].abs().max() == 0        # zeros after the slowed row's end
    for row, n in ((0, 20000), (2, 10000)):       # the model's input convention
        assert abs(float(out[row, :n].mean())) < 1e-3
        assert abs(float(out[row, :n].std()) - 1) < 1e-2
    faster = speed(125)    # 0.8 times as many samples
    out, out_lens = augment_rows(faster, wavs, lens, labels, ["intent"])
    assert out.shape == (3, 16000) and torch.equal(out[1], wavs[1])
    assert torch.round(out_lens * 16000).long().tolist() == [12800, 16000, 6400]


def test_pauses_go_between_words_and_keep_every_sample():
    from multitask.augment import PauseInsertion

    rate, gen = 16000, torch.Generator().manual_seed(0)
    word = torch.sin(2 * torch.pi * 300 * torch.arange(3200) / rate)           # 0.2 s
    gap = 0.001 * torch.randn(1600, generator=gen)                              # 0.1 s, -60 dB
    lead = torch.zeros(4000)
    speech = torch.cat([lead, word, gap, word, gap, word, torch.zeros(2000)])
    wavs = torch.stack([speech, torch.nn.functional.pad(speech[:8000], (0, speech.numel() - 8000))])
    lens = torch.tensor([1.0, 8000 / speech.numel()])
    torch.manual_seed(0)
    out, out_lens = PauseInsertion(pauses=(2, 2), pause_ms=(50, 50))(wavs, lens)
    samples = torch.round(out_lens * out.shape[1]).long().tolist()
    assert samples == [speech.numel() + 1600, 8000 + 1600] and out.shape[1] == samples[0]
    row = out[0]
    assert torch.equal(row[:4000 + 3200], speech[:4000 + 3200])   # nothing before the first word
    # The words are kept whole and in order; what was added is quiet noise.
    loud = row[:samples[0]].abs() > 0.01
    assert torch.equal(row[:samples[0]][loud], speech[speech.abs() > 0.01])
    added = ~torch.isin(row[:samples[0]], speech)
    assert int(added.sum()) >= 1590 and row[:samples[0]][added].abs().max() < 0.01
    assert out[1, samples[1]:].abs().max() == 0                   # re-padded with zeros


def vowel(pitch_hz, formants=((700, 80), (1200, 100), (2500, 150)), rate=16000):
    """A pulse train through resonators: a vowel with known pitch and formants. (A pitch
    whose period divides the STFT size would leave empty bins between the harmonics.)"""
    import math

    import torchaudio.functional as AF

    phase = (torch.arange(rate) * pitch_hz / rate) % 1.0
    wav = torch.zeros(rate)
    wav[torch.nonzero(phase[1:] < phase[:-1]).flatten() + 1] = 1.0
    for centre, bandwidth in formants:
        r, theta = math.exp(-math.pi * bandwidth / rate), 2 * math.pi * centre / rate
        wav = AF.lfilter(wav[None], torch.tensor([1.0, -2 * r * math.cos(theta), r * r]),
                         torch.tensor([1.0, 0.0, 0.0]), clamp=False)[0]
    return wav / wav.std()


def strongest_harmonic_hz(wav, low, high, pitch, rate=16000):
    """The loudest harmonic of ``pitch`` between ``low`` and ``high``: where the formant is."""
    magnitude = torch.fft.rfft(wav[1000:-1000] * torch.hann_window(rate - 2000)).abs()
    hz_per_bin = rate / (rate - 2000)
    harmonics = [k * pitch for k in range(1, rate // (2 * pitch)) if low < k * pitch < high]
    level = [float(magnitude[round(h / hz_per_bin) - 2 : round(h / hz_per_bin) + 3].max())
             for h in harmonics]
    return harmonics[max(range(len(level)), key=level.__getitem__)]


def pitch_hz(wav, rate=16000):
    inner = wav[2000:12000]
    lags = range(30, 200)
    scores = [float((inner[:-lag] * inner[lag:]).sum()) for lag in lags]
    return rate / lags[max(range(len(scores)), key=scores.__getitem__)]


@pytest.mark.parametrize("pitch", [130, 210])
def test_formant_shift_moves_the_formant_not_the_pitch(pitch):
    from multitask.augment import FormantShift

    wav = vowel(pitch)
    base = strongest_harmonic_hz(wav, 1800, 3300, pitch)     # the harmonic nearest 2500 Hz
    assert abs(base - 2500) <= pitch / 2
    for factor in (0.9, 1.1):
        out = FormantShift(factors=(factor, factor))(wav[None], torch.ones(1))[0]
        moved = strongest_harmonic_hz(out, 1800, 3300, pitch)
        assert abs(moved - factor * base) <= pitch / 2 + 1, (factor, base, moved)  # nearest harmonic
        assert abs(pitch_hz(out) - pitch_hz(wav)) < 2


@pytest.mark.parametrize("pitch", [130, 210])
def test_the_true_envelope_runs_over_the_harmonic_peaks(pitch):
    """The plain cepstral envelope runs 10-15 dB below the harmonics (a smooth gain then
    moves a formant only part of the way); the true envelope touches them."""
    from multitask.augment import FormantShift

    spec = torch.stft(vowel(pitch)[None], 512, 128, window=torch.hann_window(512), return_complex=True)
    harmonics = [round(k * pitch / (16000 / 512)) for k in range(1, 3400 // pitch)]
    peaks = torch.log(spec.abs())[0, harmonics, 10:-10]
    below = {n: float((peaks - FormantShift(envelope_iterations=n).log_envelope(spec)[0, harmonics, 10:-10]).mean())
             for n in (0, 10)}
    assert below[0] > 1.0 and abs(below[10]) < 0.2, below        # natural-log units


def test_formant_shift_leaves_factor_one_and_the_band_above_upper_hz_alone():
    from multitask.augment import FormantShift

    wav = vowel(130)
    same = FormantShift(factors=(1.0, 1.0))(wav[None], torch.ones(1))[0]
    assert torch.allclose(same, (wav - wav.mean()) / wav.std(), atol=1e-3)
    wide = vowel(130, formants=((700, 80), (2500, 150), (5500, 200)))
    peak = strongest_harmonic_hz(wide, 4500, 7000, 130)
    assert abs(peak - 5500) <= 65
    for factor in (0.88, 1.12):
        out = FormantShift(factors=(factor, factor), upper_hz=4000)(wide[None], torch.ones(1))[0]
        assert strongest_harmonic_hz(out, 4500, 7000, 130) == peak
        assert strongest_harmonic_hz(out, 1800, 3300, 130) != strongest_harmonic_hz(wide, 1800, 3300, 130)


def test_formant_shift_draws_per_row_keeps_padding_and_refuses_bad_settings():
    from multitask.augment import FormantShift

    twins = torch.stack([vowel(130), vowel(130)])
    torch.manual_seed(0)
    out = FormantShift()(twins, torch.ones(2))
    assert not torch.allclose(out[0], out[1], atol=1e-2)                # two draws
    padded = twins.clone()
    padded[1, 8000:] = 0.0
    out = FormantShift()(padded, torch.tensor([1.0, 0.5]))
    assert out[1, 8000:].abs().max() == 0 and torch.isfinite(out).all()
    for bad in ({"factors": (1.1, 0.9)}, {"factors": (0.0, 1.0)}, {"upper_hz": 9000}, {"lifter": 0}):
        with pytest.raises(ValueError, match="FormantShift"):
            FormantShift(**bad)
