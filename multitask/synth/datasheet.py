"""DATASHEET.md: what was generated, how, and from which seed.

The datasheet records counts per split and class, the voices in each pool, the
emotion profiles' parameter values together with their *measured* effect (median F0,
active level and duration of the same sentences spoken by the same voices in every
emotion), the channel settings and the template hold-out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, fields

import numpy as np

from . import channel
from .espeak import get_engine
from .prosody import EMOTION_CODES, EMOTIONS, PROFILES, REFERENCE_DBFS, make_speaker, measure
from .render import speak
from .text import EMOTION_SENTENCES, HELD_OUT_PER_INTENT, INTENTS, TEMPLATES, split_templates
from .voices import ACCENTS, CORPORA, TIMBRE_FAMILIES, corpus_of_variants, split_variants


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def measure_emotions(voices: list[str], texts: list[str], seed: int) -> dict[str, dict]:
    """Mean F0 shift (semitones), level (dB) and duration ratio of each emotion vs neutral.

    Every emotion speaks the same ``texts`` with the same ``voices`` at full strength
    (``HI``), with the per-utterance wobble switched off, before any channel.
    """
    feats: dict[str, list[dict]] = {e: [] for e in EMOTIONS}
    for v_index, voice in enumerate(voices):
        speaker = make_speaker(voice, seed)
        for t_index, text in enumerate(texts):
            for emotion in EMOTIONS:
                wav, sr = speak(
                    text, speaker, emotion, 1.0, seed=v_index * 100 + t_index, variation=0.0
                )
                feats[emotion].append(measure(wav, sr))
    base = feats["neutral"]
    out = {}
    for emotion in EMOTIONS:
        pairs = list(zip(feats[emotion], base, strict=True))
        out[emotion] = {
            "f0_hz": float(np.mean([f["f0_hz"] for f, _ in pairs])),
            "f0_semitones": float(
                np.mean([12 * np.log2(f["f0_hz"] / b["f0_hz"]) for f, b in pairs])
            ),
            "level_db": float(np.mean([f["rms_db"] - b["rms_db"] for f, b in pairs])),
            "duration_ratio": float(np.mean([f["seconds"] / b["seconds"] for f, b in pairs])),
        }
    return out


def _emotion_section(pools: dict, seed: int, n_voices: int) -> list[str]:
    lines = ["## How emotions are rendered", ""]
    lines += [
        "Each emotion is a profile applied on top of the speaker's own settings: espeak-ng "
        "parameters (pitch shift and range shift on espeak's 0-100 scales, rate factor on "
        "words per minute, word gap in 10 ms units) and signal effects after synthesis "
        f"(level relative to neutral, whose active speech is set to {REFERENCE_DBFS} dBFS; "
        "spectral tilt; soft saturation; envelope-following breath noise; tremolo; "
        "irregular pitch jitter). Level `HI` applies the whole profile, `LO` half of it "
        "(rate factor geometrically, breath noise 6 dB lower). Every utterance also gets a "
        "random wobble of +/-3 pitch units, +/-5 range units, +/-4 % rate, +/-0.5 dB.",
        "",
    ]
    names = [f.name for f in fields(type(PROFILES["neutral"]))]
    rows = [[e] + [_fmt(asdict(PROFILES[e])[n]) for n in names] for e in EMOTIONS]
    lines += _table(["emotion"] + names, rows)
    voices = pools["train"][:: max(1, len(pools["train"]) // n_voices)][:n_voices]
    texts = list(EMOTION_SENTENCES.values())[:2]
    measured = measure_emotions(voices, texts, seed)
    lines += [
        f"Measured on {len(voices)} training voices x {len(texts)} sentences at level HI, "
        "before the channel (F0: median over voiced frames by autocorrelation; level: RMS "
        "of frames within 35 dB of the loudest; duration: first to last such frame):",
        "",
    ]
    rows = [
        [
            e,
            f"{m['f0_hz']:.0f}",
            f"{m['f0_semitones']:+.1f}",
            f"{m['level_db']:+.1f}",
            f"{m['duration_ratio']:.2f}",
        ]
        for e, m in measured.items()
    ]
    lines += _table(
        [
            "emotion",
            "mean F0 (Hz)",
            "F0 vs neutral (semitones)",
            "level vs neutral (dB)",
            "duration / neutral",
        ],
        rows,
    )
    return lines


def _fmt(value) -> str:
    if isinstance(value, float):
        return "-" if not np.isfinite(value) else f"{value:g}"
    return str(value)


def _channel_section() -> list[str]:
    lo, hi = channel.TELEPHONE_BAND
    return [
        "## Channels",
        "",
        f"* **telephone** (Skit-S2I, joint test, new domain, call audio): espeak output "
        f"({get_engine().sample_rate} Hz) resampled to {channel.TELEPHONE_RATE} Hz "
        f"(polyphase), white or brown noise at an SNR drawn uniformly from "
        f"{channel.SNR_RANGE_DB[0]:g}-{channel.SNR_RANGE_DB[1]:g} dB, "
        f"{lo:g}-{hi:g} Hz 4th-order Butterworth band-pass, gain drawn from "
        f"{channel.GAIN_RANGE_DB[0]:g} to {channel.GAIN_RANGE_DB[1]:+g} dB, G.711 mu-law "
        "companding, 16-bit PCM WAV.",
        f"* **wideband** (CREMA-D): resampled to {channel.WIDEBAND_RATE} Hz, faint noise at "
        f"{channel.WIDEBAND_SNR_DB:g} dB SNR, 16-bit PCM WAV.",
        "* Every file has 50-350 ms of leading and 50-300 ms of trailing silence (noise).",
        "",
    ]


def _voices_section(pools: dict, seed: int) -> list[str]:
    variants = split_variants(seed)
    pool_of = {v: pool for pool, names in variants.items() for v in names}
    lines = [
        "## Voices",
        "",
        "A voice is an espeak-ng English accent plus a voice variant (`en-us+f2`), with "
        "mild per-voice offsets (base pitch +/-8, range +/-8, rate 165 wpm x 0.92-1.08). "
        "A speaker is a variant, a timbre that talks in every accent: Skit-S2I's "
        "`speaker_id` and CREMA-D's actor name the variant, so the preparers' "
        "speaker-disjoint splits are variant-disjoint (timbre-disjoint but for the "
        "families below). "
        "Pools are split **by variant** too, so a variant never crosses pools in any "
        "accent. Within the train, valid and test pools each variant speaks in one corpus "
        "only, "
        "as the real corpora share no speakers. The pools decide the corpora's own files "
        "(Skit-S2I's `test.csv`); the preparers' speaker-disjoint splits (the demo's) "
        "deal the variants of the train, valid and test pools out again, so a prepared "
        "test split's voices are not this table's test pool (the demo's `report.md` names "
        "them, test by test). The joint pool stays out of both corpora.",
        "",
        "Some variants share one timbre (the same formants, voicing and consonants; only "
        "pitch and tone differ): "
        + "; ".join(", ".join(f"{v} ({pool_of.get(v, 'no pool')})" for v in sorted(family))
                    for family in TIMBRE_FAMILIES)
        + ". A joint variant whose family speaks in another pool is left out of every "
        "pool, so the joint test sounds like no corpus voice; the new domain's validation "
        "leaves out valid variants whose family is in training. The preparers split by "
        "variant and know nothing of families: a family in the corpora may span their "
        "splits.",
        "",
        f"Accents ({len(ACCENTS)}): " + ", ".join(f"`{a}`" for a in ACCENTS),
        "",
    ]
    rows = [
        [pool, len(variants[pool]), len(pools[pool]), ", ".join(variants[pool])]
        for pool in ("train", "valid", "test", "joint")
    ]
    lines += _table(["pool", "variants (speakers)", "voices", "variant names"], rows)
    corpus_of = corpus_of_variants(seed)
    rows = [[corpus, ", ".join(v for v in sorted(corpus_of) if corpus_of[v] == corpus)]
            for corpus in CORPORA]
    lines += _table(["corpus", "its variants (any pool)"], rows)
    return lines


def _header(title: str, size: str, seed: int, command: str) -> list[str]:
    return [
        f"# {title}",
        "",
        "Synthetic speech generated by `multitask.synth` with espeak-ng "
        f"{get_engine().version}. Regenerate byte-identically with:",
        "",
        f"    {command}",
        "",
        f"size `{size}`, seed `{seed}`. Same seed, same bytes, whatever the number of jobs.",
        "",
    ]


def write_banking_datasheet(path, size, seed, pools, actors, plans, results) -> str:
    """The datasheet for the Skit-S2I-layout, CREMA-D-layout and joint-test corpora."""
    lines = _header(
        "Synthetic banking IVR corpus",
        size,
        seed,
        f"multitask synth --out DIR --size {size} --seed {seed}",
    )
    skit = plans["skit_s2i"].rows
    counts = Counter((r["split"], r["intent_class"]) for r in skit)
    affect = Counter(r["affect"] for r in skit)
    lines += ["## Intent corpus (`skit_s2i/`, Skit-S2I layout)", ""]
    lines += [
        "`train.csv` holds the train and valid pools' voices, `test.csv` the test pool's "
        "(Skit-S2I itself has no validation split, and its test speakers also speak in "
        "train: here they do not; `speakers.json` says which voice is "
        f"in which pool). The last {HELD_OUT_PER_INTENT} templates of "
        "every intent are held out of this corpus and used only by the joint test.",
        "",
    ]
    if affect["neutral"] == len(skit):
        lines += ["Neutral prosody (no `--caller-affect`).", ""]
    else:
        strengths = [r["affect_strength"] for r in skit if r["affect"] != "neutral"]
        lines += [
            f"Caller affect (`--caller-affect`): {affect['neutral']} clips are neutral; "
            f"{len(skit) - affect['neutral']} carry a mild emotion (one of the other five, at "
            f"strengths from {min(strengths):.2f} to {max(strengths):.2f}, where the emotion "
            "corpus's LO level is 0.5 and HI 1.0), so that intent training meets emotional "
            "prosody. It is not a label (the Skit-S2I layout has no emotion column): "
            + ", ".join(f"{e} {affect[e]}" for e in EMOTIONS if e != "neutral") + ".",
            "",
        ]
    rows = [
        [
            i,
            name,
            counts[("train", i)],
            counts[("test", i)],
            len(split_templates(TEMPLATES[name])[0]),
        ]
        for i, (name, _) in enumerate(INTENTS)
    ]
    rows.append(["", "total", sum(r[2] for r in rows), sum(r[3] for r in rows), ""])
    lines += _table(["class", "intent", "train.csv", "test.csv", "templates used"], rows)
    lines += ["Held-out templates (joint test only):", ""]
    for name, _ in INTENTS:
        held = split_templates(TEMPLATES[name])[1]
        lines.append(f"* `{name}`: " + "; ".join(f'"{t}"' for t in held))
    lines.append("")

    crema = plans["crema_d"].rows
    counts = Counter((r["emotion"], r["level"]) for r in crema)
    lines += ["## Emotion corpus (`crema_d/`, CREMA-D layout)", ""]
    lines += [
        f"`AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav`, {len(actors)} actors "
        f"({min(actors)}-{max(actors)}: one per variant of the train, valid and test pools, "
        f"never the joint pool; each clip in an accent drawn at random), "
        f"{len(EMOTION_SENTENCES)} sentences, levels LO and HI. 16 kHz.",
        "",
    ]
    rows = [[code, e, counts[(e, "LO")], counts[(e, "HI")]] for code, e in EMOTION_CODES.items()]
    rows.append(["", "total", sum(r[2] for r in rows), sum(r[3] for r in rows)])
    lines += _table(["code", "emotion", "LO", "HI"], rows)
    lines += _table(["code", "sentence"], [[c, t] for c, t in sorted(EMOTION_SENTENCES.items())])

    joint = plans["joint_test"].rows
    lines += ["## Joint IVR test (`joint_test/joint_test.csv`)", ""]
    lines += [
        "A package manifest (task `both`, split `test`): banking queries spoken with "
        "emotion by the joint pool's voices, which appear in neither corpus, through the "
        "telephone channel. Half of each intent's clips use held-out templates "
        f"(`template_seen=no`: {sum(r['template_seen'] == 'no' for r in joint)} of "
        f"{len(joint)} clips).",
        "",
    ]
    counts = Counter((r["intent"], r["emotion"]) for r in joint)
    rows = [[name] + [counts[(name, e)] for e in EMOTIONS] for name, _ in INTENTS]
    lines += _table(["intent"] + EMOTIONS, rows)

    lines += _voices_section(pools, seed)
    lines += _emotion_section(pools, seed, n_voices=2 if size == "tiny" else 4)
    lines += _channel_section()
    seconds = sum(r["frames"] / r["sample_rate"] for res in results.values() for r in res)
    lines += [
        f"Total audio: {seconds / 3600:.2f} hours in {sum(map(len, results.values()))} files.",
        "",
    ]
    return _write(path, lines)


def write_new_domain_datasheet(path, size, seed, shots, pools, plan, results) -> str:
    """The datasheet for the new-intents corpus."""
    lines = _header(
        "Synthetic new banking domain",
        size,
        seed,
        f"multitask synth --out DIR --domain new --size {size} --seed {seed} --shots {shots}",
    )
    lines += [
        "Eight intents outside the Skit-S2I label set, in the generic CSV layout "
        "(`path,intent,emotion,speaker`, paths relative to this folder). `train.csv`: "
        f"{shots} clips per intent from the train pool's voices; `valid.csv`: the valid "
        "pool's, but for variants sharing a timbre with a train variant; `test.csv`: the "
        "joint pool (voices in no banking corpus). Emotion: half "
        "neutral, the rest spread over the other five at level LO or HI; the label used is "
        "in the `emotion` column. Telephone channel, 8 kHz.",
        "",
    ]
    counts = Counter((r["split"], r["intent"]) for r in plan.rows)
    intents = list(dict.fromkeys(r["intent"] for r in plan.rows))
    rows = [[i, counts[("train", i)], counts[("valid", i)], counts[("test", i)]] for i in intents]
    lines += _table(["intent", "train", "valid", "test"], rows)
    counts = Counter((r["split"], r["emotion"]) for r in plan.rows)
    rows = [[e] + [counts[(s, e)] for s in ("train", "valid", "test")] for e in EMOTIONS]
    lines += _table(["emotion", "train", "valid", "test"], rows)
    lines += _voices_section(pools, seed)
    lines += _channel_section()
    seconds = sum(r["frames"] / r["sample_rate"] for r in results)
    lines += [f"Total audio: {seconds / 3600:.2f} hours in {len(results)} files.", ""]
    return _write(path, lines)


def write_calls_datasheet(path, size, seed, variants, plan, results) -> str:
    """The datasheet for call audio (unlabelled audio for pretraining, or labelled held-out calls)."""
    lines = _header(
        "Synthetic call audio (banking queries, callers with emotion)",
        size,
        seed,
        f"multitask synth --out DIR --domain calls --size {size} --seed {seed} "
        f"--variants {','.join(variants)}",
    )
    lines += [
        "Banking queries in the phrasings of the intent corpus's training split (none of "
        "the joint test's held-out phrasings), spoken by the timbres below in every accent: "
        "half neutral, the rest one of the other five emotions at level LO or HI (the "
        "joint test's emotions and levels); telephone channel, 8 kHz. `calls.csv` is a package manifest "
        "whose `intent` and `emotion` columns record what was rendered. Pretraining reads "
        "the audio only (of training timbres); by validation timbres the labels make it a "
        "held-out set of calls.",
        "",
        f"Timbres ({len(variants)}): {', '.join(variants)}.",
        "",
    ]
    counts = Counter((r["intent"], r["emotion"]) for r in plan.rows)
    intents = list(dict.fromkeys(r["intent"] for r in plan.rows))
    lines += _table(["intent"] + list(EMOTIONS),
                    [[i] + [counts[(i, e)] for e in EMOTIONS] for i in intents])
    lines += _channel_section()
    seconds = sum(r["frames"] / r["sample_rate"] for r in results)
    lines += [f"Total audio: {seconds / 3600:.2f} hours in {len(results)} files.", ""]
    return _write(path, lines)


def _write(path: str, lines: list[str]) -> str:
    with open(path, "w", encoding="utf-8") as fout:
        fout.write("\n".join(lines))
    return str(path)
