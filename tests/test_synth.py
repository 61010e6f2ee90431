"""Tests for the synthetic corpus generator (``multitask.synth``).

The banking corpora are generated once per module at ``tiny`` size (twice: with one
and with two worker processes, for the determinism check); each test then checks one
property of the result.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
from itertools import combinations

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from multitask.manifest import read_manifest  # noqa: E402
from multitask.synth import add_parser, generate  # noqa: E402
from multitask.synth.corpus import SIZES, plan_new_domain, speaker_pools  # noqa: E402
from multitask.synth.prosody import EMOTIONS, f0_track, make_speaker, measure  # noqa: E402
from multitask.synth.render import speak  # noqa: E402
from multitask.synth.text import (  # noqa: E402
    INTENTS,
    NEW_INTENTS,
    TEMPLATES,
    split_templates,
)
from multitask.synth.voices import (  # noqa: E402
    FEMALE_VARIANTS,
    MALE_VARIANTS,
    TIMBRE_FAMILIES,
    _split_one,
    corpus_of_variants,
    family_of,
    left_out,
    split_variants,
    variant_of,
)

SEED = 7
SKIT_HEADER = ["id", "intent_class", "template", "audio_path", "speaker_id"]
CREMA_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|HI)\.wav$")
SKIT_ORDER = [
    "branch_address", "activate_card", "past_transactions", "dispatch_status",
    "outstanding_balance", "card_issue", "ifsc_code", "generate_pin",
    "unauthorised_transaction", "loan_query", "balance_enquiry", "change_limit", "block",
    "lost",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_a")
    return generate(out, size="tiny", seed=SEED, jobs=2, progress=False)


@pytest.fixture(scope="module")
def corpus_again(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_b")
    return generate(out, size="tiny", seed=SEED, jobs=1, progress=False)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        return reader.fieldnames, list(reader)


def _all_files(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = path
    return found


def test_skit_layout_has_exact_headers_and_8khz_pcm16_audio(corpus):
    root = corpus["skit_s2i"]
    for split in ("train", "test"):
        header, rows = _rows(os.path.join(root, f"{split}.csv"))
        assert header == SKIT_HEADER
        assert {int(r["intent_class"]) for r in rows} == set(range(14))
        for row in rows:
            info = sf.info(os.path.join(root, row["audio_path"]))
            assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    header, info_rows = _rows(os.path.join(root, "intent_info.csv"))
    assert header == ["intent_class", "intent_name", "description"]
    assert [r["intent_name"] for r in info_rows] == SKIT_ORDER
    assert [int(r["intent_class"]) for r in info_rows] == list(range(14))


def test_crema_file_names_follow_the_crema_d_pattern(corpus):
    names = os.listdir(os.path.join(corpus["crema_d"], "AudioWAV"))
    assert names
    matches = [CREMA_NAME.match(n) for n in names]
    assert all(matches), [n for n, m in zip(names, matches, strict=True) if not m]
    assert {m.group(3) for m in matches} == {"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"}
    assert all(int(m.group(1)) >= 1001 for m in matches)
    info = sf.info(os.path.join(corpus["crema_d"], "AudioWAV", names[0]))
    assert (info.samplerate, info.subtype) == (16000, "PCM_16")


def test_joint_test_is_a_manifest_with_both_labels(corpus):
    rows = read_manifest(corpus["joint_test"])
    assert rows
    for row in rows:
        assert row["task"] == "both" and row["split"] == "test"
        assert row["intent"] in SKIT_ORDER and row["emotion"] in EMOTIONS
        assert sf.info(row["wav"]).samplerate == 8000
        assert row["duration"] == pytest.approx(sf.info(row["wav"]).duration, abs=1e-3)
    assert {r["template_seen"] for r in rows} == {"yes", "no"}


def test_splits_are_voice_disjoint(corpus):
    with open(corpus["speakers"], encoding="utf-8") as fin:
        speakers = json.load(fin)
    _, train = _rows(os.path.join(corpus["skit_s2i"], "train.csv"))
    _, test = _rows(os.path.join(corpus["skit_s2i"], "test.csv"))
    joint = read_manifest(corpus["joint_test"])
    crema_v = {a["variant"] for a in speakers["crema_d_actors"].values()}
    train_v = {r["speaker_id"] for r in train}
    test_v = {r["speaker_id"] for r in test}
    joint_v = {r["speaker"] for r in joint}
    assert all(variant_of(r["voice"]) == r["speaker"] for r in joint)
    assert train_v.isdisjoint(test_v)
    assert joint_v.isdisjoint(train_v | test_v | crema_v)
    # Like the real corpora, the two share no speakers.
    assert crema_v.isdisjoint(train_v | test_v)
    # The pools in speakers.json agree with what the CSVs contain.
    variants = speakers["variants"]
    assert train_v <= set(variants["train"]) | set(variants["valid"])
    assert test_v <= set(variants["test"])
    for a, b in combinations(variants, 2):
        assert set(variants[a]).isdisjoint(variants[b])


def test_speaker_ids_name_variants_so_prepared_splits_are_variant_disjoint(corpus, tmp_path):
    # A variant talks in every accent; were a speaker id an accent + variant, the
    # preparers' speaker-disjoint splits would hear one variant on both sides. (A timbre
    # family's variants are several speakers to the preparers: see voices.TIMBRE_FAMILIES.)
    from multitask.prepare import prepare_crema_d, prepare_skit_s2i

    with open(corpus["speakers"], encoding="utf-8") as fin:
        speakers = json.load(fin)
    actor_variant = {a: v["variant"] for a, v in speakers["crema_d_actors"].items()}
    _, skit_rows = _rows(os.path.join(corpus["skit_s2i"], "train.csv"))
    assert {r["speaker_id"] for r in skit_rows} <= set(speakers["corpus_of_variant"])
    prepared = {
        "skit": (prepare_skit_s2i(corpus["skit_s2i"], tmp_path / "skit"), lambda s: s),
        "crema": (prepare_crema_d(corpus["crema_d"], tmp_path / "crema"), actor_variant.get),
    }
    for name, (paths, timbre) in prepared.items():
        timbres = {split: {timbre(r["speaker"]) for r in read_manifest(paths[split])}
                   for split in ("train", "valid", "test")}
        assert all(timbres.values()) and None not in set().union(*timbres.values()), name
        for a, b in combinations(timbres, 2):
            assert timbres[a].isdisjoint(timbres[b]), (name, a, b, timbres[a] & timbres[b])


def test_held_out_templates_never_reach_the_intent_corpus(corpus):
    _, train = _rows(os.path.join(corpus["skit_s2i"], "train.csv"))
    _, test = _rows(os.path.join(corpus["skit_s2i"], "test.csv"))
    for class_index, (name, _) in enumerate(INTENTS):
        # Within the intent: a slot pattern may match another intent's words
        # ("set a new {limit} on my {card}" vs "set a new four digit PIN on my ATM card").
        spoken = [r["template"].lower().rstrip(".?") for r in train + test
                  if r["intent_class"] == str(class_index)]
        assert spoken, name
        for template in split_templates(TEMPLATES[name])[1]:
            pattern = re.compile(
                "^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(template.lower())) + "$"
            )
            assert not any(pattern.match(s) for s in spoken), template


def test_same_seed_gives_identical_bytes_for_any_number_of_jobs(corpus, corpus_again):
    # The banking corpus's own files: another test writes call audio beside it.
    banking = ("skit_s2i", "crema_d", "joint_test", "DATASHEET.md", "speakers.json")
    first, second = ({rel: path for rel, path in _all_files(c["root"]).items()
                      if rel.split(os.sep)[0] in banking} for c in (corpus, corpus_again))
    assert first
    assert sorted(first) == sorted(second)
    differing = []
    for rel, path in first.items():
        with open(path, "rb") as a, open(second[rel], "rb") as b:
            if a.read() != b.read():
                differing.append(rel)
    assert not differing


def test_seed_changes_the_voice_split():
    assert split_variants(1) != split_variants(2)
    assert split_variants(1) == split_variants(1)


def _timbre_lines(variant):
    """A variant file's formant, voicing and consonant lines (what makes its timbre)."""
    import espeakng_loader

    path = os.path.join(espeakng_loader.get_data_path(), "voices", "!v", variant)
    with open(path, encoding="latin-1") as fin:
        words = [line.split() for line in fin]
    return tuple(sorted(" ".join(w) for w in words
                        if w and w[0] in ("formant", "voicing", "consonants")))


def test_timbre_families_are_the_variants_espeak_gives_one_timbre():
    by_timbre = {}
    for variant in FEMALE_VARIANTS + MALE_VARIANTS:
        lines = _timbre_lines(variant)
        if any(line.startswith("formant") for line in lines):  # klatt4 and others set none
            by_timbre.setdefault(lines, set()).add(variant)
    shared = sorted(sorted(group) for group in by_timbre.values() if len(group) > 1)
    assert shared == sorted(sorted(family) for family in TIMBRE_FAMILIES)


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 23, 1234, 2024])
def test_no_joint_voice_shares_a_timbre_with_a_corpus_voice(seed):
    pools = split_variants(seed)
    elsewhere = {v for pool in ("train", "valid", "test") for v in pools[pool]}
    assert pools["joint"]
    for variant in pools["joint"]:
        assert family_of(variant).isdisjoint(elsewhere), variant
    # A variant is left out only for its family, and the other pools are the draw's.
    for variant in left_out(seed):
        assert family_of(variant) & elsewhere
    assert len(elsewhere) + len(pools["joint"]) + len(left_out(seed)) == len(
        FEMALE_VARIANTS + MALE_VARIANTS)
    rng = np.random.default_rng([seed, 7001])  # the draw itself, replayed
    female, male = _split_one(FEMALE_VARIANTS, rng), _split_one(MALE_VARIANTS, rng)
    drawn = {pool: sorted(female[pool] + male[pool]) for pool in female}
    assert all(pools[pool] == drawn[pool] for pool in ("train", "valid", "test"))
    assert set(pools["joint"]) | set(left_out(seed)) == set(drawn["joint"])


def test_the_shipped_encoders_corpus_keeps_its_voices():
    # hparams/encoders/demo_ssl was pretrained on the training audio of seed 1234's corpus:
    # were these pools or corpora dealt again, it would have heard validation or test voices.
    pools, corpus_of = split_variants(1234), corpus_of_variants(1234)
    assert pools["train"] == [
        "Alex", "Andrea", "Andy", "Annie", "Diogo", "Jacky", "Lee", "Mario", "aunty", "belinda",
        "ed", "edward", "f1", "f3", "f4", "gustave", "john", "klatt4", "linda", "m2", "m3", "m4",
        "m5", "m8", "marcelo", "miguel", "paul", "quincy", "shelby", "travis", "victor"]
    assert pools["valid"] == ["Alicia", "f5", "m6", "m7", "max", "michel", "norbert"]
    assert pools["test"] == ["Gene", "Michael", "adam", "boris", "f2", "pablo", "rob", "steph"]
    assert sorted(v for v in corpus_of if corpus_of[v] == "crema_d") == [
        "Alex", "Andy", "Jacky", "adam", "belinda", "ed", "edward", "f2", "f3", "f4", "f5",
        "gustave", "john", "linda", "m2", "m4", "m7", "miguel", "norbert", "pablo", "rob",
        "victor"]


def test_new_domain_validation_has_no_timbre_of_its_training():
    # Seed 1234 deals michel to the valid pool and Diogo and miguel, its timbre, to train.
    pools = speaker_pools(1234)
    plan = plan_new_domain("/nowhere", SIZES["small"], pools, 1234, shots=20)
    speakers = {split: {r["speaker"] for r in plan.rows if r["split"] == split}
                for split in ("train", "valid", "test")}
    assert "michel" in split_variants(1234)["valid"] and "michel" not in speakers["valid"]
    for variant in speakers["valid"] | speakers["test"]:
        assert family_of(variant).isdisjoint(speakers["train"]), variant


def test_a_corpus_on_disk_is_refused_when_it_is_not_the_one_asked_for(tmp_path):
    from multitask.synth.corpus import check_current, recorded_seed, write_pools

    path = tmp_path / "speakers.json"
    with pytest.raises(ValueError, match=rf"{path}: missing.*delete {tmp_path} to have it"):
        check_current(path, 1234)
    write_pools(path, 1234, "small")
    check_current(path, 1234, "small")
    assert recorded_seed(path) == 1234
    with pytest.raises(ValueError, match="dealt for seed 1234, size small, not for seed 1234, "
                                         "size tiny"):
        check_current(path, 1234, "tiny")
    record = json.loads(path.read_text())
    record["timbre_families"] = []  # a generator that knew no families
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="timbre families of this version"):
        check_current(path, 1234)
    with pytest.raises(ValueError, match="not a speakers.json written by multitask synth"):
        check_current(tmp_path, 1234)  # a folder: refused by name, not a bare IsADirectoryError


def test_new_domain_refuses_a_validation_left_without_voices():
    pools = {"train": ["en+Diogo"], "valid": ["en+michel", "en-us+miguel"], "joint": ["en+m1"]}
    with pytest.raises(ValueError, match="new domain's validation no voice"):
        plan_new_domain("/nowhere", SIZES["tiny"], pools, 1234, shots=2)


def test_pitch_tracker_recovers_a_known_f0():
    sr = 16000
    t = np.arange(sr) / sr
    wave = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    assert np.median(f0_track(wave, sr)) == pytest.approx(140, rel=0.03)


@pytest.fixture(scope="module")
def emotion_features():
    """Mean features per emotion: same two sentences, one male and one female voice."""
    texts = ["The branch opens at ten in the morning.", "My cheque book is on the table."]
    voices = ["en-us+m3", "en-gb-x-rp+f4"]
    feats = {}
    for emotion in EMOTIONS:
        per = [
            measure(*speak(t, make_speaker(v, 0), emotion, 1.0, seed=11, variation=0.0))
            for v in voices
            for t in texts
        ]
        base = [
            measure(*speak(t, make_speaker(v, 0), "neutral", 1.0, seed=11, variation=0.0))
            for v in voices
            for t in texts
        ]
        feats[emotion] = {
            "semitones": np.mean(
                [12 * np.log2(p["f0_hz"] / b["f0_hz"]) for p, b in zip(per, base, strict=True)]
            ),
            "db": np.mean([p["rms_db"] - b["rms_db"] for p, b in zip(per, base, strict=True)]),
            "log_duration": np.mean(
                [np.log(p["seconds"] / b["seconds"]) for p, b in zip(per, base, strict=True)]
            ),
        }
    return feats


def test_emotion_profiles_move_pitch_energy_and_rate_the_expected_way(emotion_features):
    f = emotion_features
    assert f["angry"]["db"] - f["sad"]["db"] > 8  # angry much louder than sad
    assert f["angry"]["db"] > f["neutral"]["db"] + 4
    assert f["angry"]["semitones"] > f["sad"]["semitones"] + 3  # and higher
    assert f["happy"]["semitones"] > 3 and f["fear"]["semitones"] > 3
    assert f["sad"]["semitones"] < -2
    assert np.exp(f["sad"]["log_duration"]) > 1.3  # sad is slower
    assert np.exp(f["disgust"]["log_duration"]) > 1.3  # drawn out
    assert np.exp(f["fear"]["log_duration"]) < 0.92  # hurried


# Margins for "measurably different": a pair of emotions must differ by at least one.
MIN_SEMITONES, MIN_DB, MIN_DURATION_RATIO = 1.5, 2.0, 1.10


def test_every_pair_of_emotions_differs_in_pitch_energy_or_rate(emotion_features):
    f = emotion_features
    for a, b in combinations(EMOTIONS, 2):
        pitch = abs(f[a]["semitones"] - f[b]["semitones"])
        energy = abs(f[a]["db"] - f[b]["db"])
        rate = np.exp(abs(f[a]["log_duration"] - f[b]["log_duration"]))
        assert pitch >= MIN_SEMITONES or energy >= MIN_DB or rate >= MIN_DURATION_RATIO, (
            f"{a} vs {b}: {pitch:.2f} st, {energy:.2f} dB, duration x{rate:.2f}"
        )


def test_new_domain_has_csv_layout_and_the_requested_shots(tmp_path):
    paths = generate(
        tmp_path, size="tiny", seed=SEED, jobs=2, domain="new", shots=3, progress=False
    )
    pools = split_variants(SEED)
    expected = {"train": (3, "train"), "valid": (2, "valid"), "test": (2, "joint")}
    for split, (per_intent, pool) in expected.items():
        header, rows = _rows(paths[split])
        assert header == ["path", "intent", "emotion", "speaker"]
        assert {r["intent"] for r in rows} == set(NEW_INTENTS)
        assert all(sum(r["intent"] == i for r in rows) == per_intent for i in NEW_INTENTS)
        assert {r["speaker"] for r in rows} <= set(pools[pool])
        assert {r["emotion"] for r in rows} <= set(EMOTIONS)
        for row in rows:
            assert not os.path.isabs(row["path"])
            assert sf.info(os.path.join(paths["new_domain"], row["path"])).samplerate == 8000
    assert os.path.isfile(paths["datasheet"])
    assert set(NEW_INTENTS).isdisjoint(SKIT_ORDER)


def test_cli_registers_the_synth_subcommand():
    parser = argparse.ArgumentParser(prog="multitask")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "synth",
            "--out",
            "x",
            "--size",
            "tiny",
            "--seed",
            "3",
            "--jobs",
            "2",
            "--domain",
            "new",
            "--shots",
            "5",
        ]
    )
    assert (args.out, args.size, args.seed, args.jobs, args.domain, args.shots) == (
        "x",
        "tiny",
        3,
        2,
        "new",
        5,
    )
    assert callable(args.func)


def test_multitask_synth_exits_zero_and_refuses_bad_values_without_a_traceback(tmp_path):
    from multitask.cli import main

    out = tmp_path / "corpus"
    assert main(["synth", "--out", str(out), "--size", "tiny", "--jobs", "1",
                 "--no-progress"]) == 0
    assert (out / "DATASHEET.md").is_file()
    with pytest.raises(SystemExit, match="multitask synth: caller_affect must be between"):
        main(["synth", "--out", str(tmp_path / "bad"), "--caller-affect", "2"])
    assert not (tmp_path / "bad").exists()


def test_datasheet_reports_counts_voices_emotions_channel_and_seed(corpus):
    with open(corpus["datasheet"], encoding="utf-8") as fin:
        text = fin.read()
    for needle in (
        "seed `7`",
        "Held-out templates",
        "## Voices",
        "## How emotions are rendered",
        "Measured on",
        "## Channels",
        "300-3400 Hz",
        "train.csv",
        "AudioWAV",
    ):
        assert needle in text, needle


def test_workers_forked_after_this_process_synthesised_give_the_same_bytes(tmp_path):
    # A worker forked while this process has libespeak-ng loaded would inherit its
    # state; render_all unloads it first.
    from multitask.synth.corpus import BATCH, render_all
    from multitask.synth.render import Utterance

    speak("Something first, in this process.", make_speaker("en-us+m3", 0), "angry", 1.0, seed=1)

    def utterances(folder):
        return [Utterance(str(tmp_path / folder / f"{i}.wav"), f"Block card number {i}.",
                          make_speaker("en-gb-x-rp+f4", 0), "sad", 1.0, "telephone", i)
                for i in range(2 * BATCH)]

    render_all(utterances("pool"), 2, False)
    render_all(utterances("here"), 1, False)
    for i in range(2 * BATCH):
        assert (tmp_path / "pool" / f"{i}.wav").read_bytes() == \
               (tmp_path / "here" / f"{i}.wav").read_bytes(), i


def test_caller_affect_is_mild_unlabelled_and_on_its_own_stream():
    from multitask.synth import corpus as corpus_module
    from multitask.synth.voices import corpus_pools

    spec = corpus_module.SIZES["small"]
    pools = corpus_pools(0, "skit_s2i")
    plan = corpus_module.plan_intent_corpus("x", spec, pools, seed=0, affect_share=0.5)
    affects = [u.emotion for u in plan.utterances]
    share = 1 - affects.count("neutral") / len(affects)
    assert abs(share - 0.5) < 0.05
    assert set(affects) == set(EMOTIONS)
    mild = [u.strength for u in plan.utterances if u.emotion != "neutral"]
    assert 0 < min(mild) and max(mild) <= corpus_module.CALLER_AFFECT_MAX
    # Texts, voices and file names do not depend on the affect draws; the default is neutral.
    calm = corpus_module.plan_intent_corpus("x", spec, pools, seed=0)
    assert {(u.emotion, u.strength) for u in calm.utterances} == {("neutral", 0.0)}
    assert [(u.text, u.speaker, u.path) for u in calm.utterances] == [
        (u.text, u.speaker, u.path) for u in plan.utterances]
    with pytest.raises(ValueError, match="between 0 and 1"):
        generate(missing := "never-written", caller_affect=1.5)
    with pytest.raises(ValueError, match="'new' domain draws its own emotions"):
        generate(missing, domain="new", caller_affect=0.5)
    assert not os.path.exists(missing)


def test_call_audio_speaks_only_training_timbres_in_training_phrasings(corpus, tmp_path):
    from multitask.cli import main
    from multitask.prepare import prepare_crema_d, prepare_skit_s2i

    with open(corpus["speakers"], encoding="utf-8") as fin:
        actor_variant = {a: v["variant"] for a, v in json.load(fin)["crema_d_actors"].items()}
    prepared = {"skit": prepare_skit_s2i(corpus["skit_s2i"], tmp_path / "skit"),
                "crema": prepare_crema_d(corpus["crema_d"], tmp_path / "crema")}
    elsewhere = set(split_variants(SEED)["joint"])  # timbres of every non-training split
    for paths in prepared.values():
        for split in ("valid", "test"):
            elsewhere |= {actor_variant.get(r["speaker"], r["speaker"])
                          for r in read_manifest(paths[split])}
    # Written next to the banking corpus, as the pretraining recipe does.
    code = main(["synth", "--out", corpus["root"], "--domain", "calls", "--size", "tiny",
                 "--seed", str(SEED), "--jobs", "2", "--no-progress", "--voices-of",
                 prepared["skit"]["train"], prepared["crema"]["train"]])
    assert code == 0
    rows = read_manifest(os.path.join(corpus["root"], "calls", "calls.csv"))
    assert len(rows) == 2 * len(INTENTS)  # tiny: 2 clips per intent
    assert {r["speaker"] for r in rows}.isdisjoint(elsewhere)
    assert {r["emotion"] for r in rows} <= set(EMOTIONS)
    for row in rows:
        assert sf.info(row["wav"]).samplerate == 8000
        for template in split_templates(TEMPLATES[row["intent"]])[1]:  # held out
            pattern = "^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(template.lower())) + "$"
            assert not re.match(pattern, row["text"].lower().rstrip(".?")), row["text"]

    # Held-out calls elsewhere, by the validation timbres (a labelled set for extend's offset).
    valid = [prepared["skit"]["valid"], prepared["crema"]["valid"]]
    assert main(["synth", "--out", str(tmp_path / "held_out"), "--domain", "calls", "--size",
                 "tiny", "--seed", str(SEED), "--jobs", "2", "--no-progress", "--voices-of",
                 *valid, "--speakers", corpus["speakers"]]) == 0
    rows = read_manifest(tmp_path / "held_out" / "calls" / "calls.csv")
    expected = {actor_variant.get(r["speaker"], r["speaker"]) for v in valid
                for r in read_manifest(v)}
    assert {r["speaker"] for r in rows} == expected and all(r["intent"] for r in rows)
    for extra, message in ((["--speakers", corpus["speakers"]], "--speakers is read with "
                                                                  "--voices-of only"),
                           (["--voices-of", *valid, "--speakers", corpus["speakers"], "--seed",
                             str(SEED + 1)], f"the corpus of seed {SEED}, not --seed {SEED + 1}")):
        with pytest.raises(SystemExit, match=message):
            main(["synth", "--out", str(tmp_path / "refused"), "--domain", "calls", *extra])


def test_call_audio_is_deterministic_whatever_the_order_of_its_voices(corpus, tmp_path):
    variants = sorted(split_variants(SEED)["train"])[:3]
    paths = generate(tmp_path / "a", size="tiny", seed=SEED, jobs=2, domain="calls",
                     variants=variants, progress=False)
    again = generate(tmp_path / "b", size="tiny", seed=SEED, jobs=1, domain="calls",
                     variants=variants[::-1] + variants[:1], progress=False)
    first, second = (_all_files(os.path.dirname(p["calls"])) for p in (paths, again))
    assert sorted(first) == sorted(second)
    for rel, path in first.items():
        with open(path, "rb") as a, open(second[rel], "rb") as b:
            assert a.read() == b.read(), rel
    datasheet = open(paths["datasheet"], encoding="utf-8").read()
    assert f"--variants {','.join(variants)}" in datasheet


def test_call_audio_refuses_missing_unknown_and_joint_voices(corpus, tmp_path):
    from multitask.synth.corpus import check_speakers, manifest_timbres

    out = tmp_path / "out"
    for variants, message in ((None, "needs variants"), ([], "needs variants"),
                              (["nobody"], r"\['nobody'\] are in no pool of seed 7"),
                              (split_variants(SEED)["joint"][:1], "speak the joint test")):
        with pytest.raises(ValueError, match=message):
            generate(out, size="tiny", seed=SEED, domain="calls", variants=variants,
                     progress=False)
    assert not out.exists()  # refused before anything was written
    with pytest.raises(ValueError, match=r"\['Henrique'\] are in no pool .*left out: \['Henrique'\]"):
        generate(out, size="tiny", seed=1234, domain="calls", variants=["Henrique"],
                 progress=False)
    assert not out.exists()
    manifest = tmp_path / "train.csv"
    manifest.write_text("id,wav,duration,intent,speaker\na,a.wav,1.0,block,nobody\n")
    with pytest.raises(ValueError, match="train.csv: row 'a' has speaker 'nobody'"):
        manifest_timbres([manifest], corpus["speakers"])
    calls = tmp_path / "calls.csv"
    calls.write_text("id,wav,duration,intent,speaker\na,a.wav,1.0,block,m1\n")
    with pytest.raises(ValueError, match=r"calls.csv: speaker\(s\) \['m1'\] are not training"):
        check_speakers(calls, ["f1"])


def test_generating_over_folders_synth_did_not_write_is_refused(tmp_path):
    """Generated folders are replaced whole: a user's folder of the same name is kept."""
    mine = tmp_path / "out" / "skit_s2i" / "my_manifest.csv"
    mine.parent.mkdir(parents=True)
    mine.write_text("id,wav\n")
    with pytest.raises(ValueError, match=r"skit_s2i: exists and was not generated by "
                                         r"multitask synth"):
        generate(tmp_path / "out", size="tiny", seed=SEED, jobs=1, progress=False)
    assert mine.read_text() == "id,wav\n"
    notes = tmp_path / "notes" / "DATASHEET.md"
    notes.parent.mkdir()
    notes.write_text("# My notes\n")
    with pytest.raises(ValueError, match=r"DATASHEET.md: not written by multitask synth"):
        generate(tmp_path / "notes", size="tiny", seed=SEED, jobs=1, progress=False)
    assert notes.read_text() == "# My notes\n"


@pytest.mark.parametrize("text", ["[1, 2]", "{\"seed\": \"abc\"}", "not json"])
def test_a_speakers_file_that_is_not_synths_is_named(tmp_path, text):
    from multitask.synth.cli import check_speakers_seed

    speakers = tmp_path / "speakers.json"
    speakers.write_text(text)
    with pytest.raises(ValueError, match=rf"{speakers}: not a speakers.json written by "
                                         r"multitask synth"):
        check_speakers_seed(str(speakers), SEED)
