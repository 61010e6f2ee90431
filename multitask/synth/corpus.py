"""Plan, render and write the synthetic corpora in their real on-disk layouts.

``generate(out_dir, domain="banking")`` writes::

    <out>/skit_s2i/train.csv, test.csv, intent_info.csv, wav_audios/*.wav   (8 kHz telephone)
    <out>/crema_d/AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav       (16 kHz wideband)
    <out>/crema_d/sentences.csv                                       (code -> words)
    <out>/joint_test/joint_test.csv, wavs/*.wav                       (manifest, 8 kHz)
    <out>/speakers.json, <out>/DATASHEET.md

``generate(out_dir, domain="new", shots=N)`` writes::

    <out>/new_domain/train.csv, valid.csv, test.csv, wavs/*.wav, DATASHEET.md

``generate(out_dir, domain="calls", variants=[...])`` writes::

    <out>/calls/calls.csv, wavs/*.wav, DATASHEET.md     (package manifest, 8 kHz)

Planning (which text, voice and emotion each file gets) happens in the parent
process from seeded generators; rendering is farmed out to a process pool. Each
utterance carries its own seed, derived from the corpus seed, a stream number and its
index, so the output does not depend on ``jobs`` or on scheduling.

Example
-------
>>> import tempfile
>>> paths = generate(tempfile.mkdtemp(), size="tiny", jobs=1, progress=False)
>>> sorted(paths)
['crema_d', 'datasheet', 'joint_test', 'root', 'skit_s2i', 'speakers']
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ..manifest import manifest_paths, read_manifests, write_manifest
from .datasheet import (
    write_banking_datasheet,
    write_calls_datasheet,
    write_new_domain_datasheet,
)
from .espeak import release_engine
from .prosody import EMOTION_CODES, EMOTIONS, LEVELS, make_speaker
from .render import Utterance, render_batch
from .text import (
    EMOTION_SENTENCES,
    INTENTS,
    NEW_INTENTS,
    NEW_TEMPLATES,
    TEMPLATES,
    fill,
    sentence,
    split_templates,
)
from .voices import (
    ACCENTS,
    TIMBRE_FAMILIES,
    corpus_of_variants,
    corpus_pools,
    left_out,
    speaker_pools,
    split_variants,
    unheard,
    variant_of,
    voices_of,
)

DEFAULT_SEED = 1234
SKIT_COLUMNS = ("id", "intent_class", "template", "audio_path", "speaker_id")
NEW_DOMAIN_COLUMNS = ("path", "intent", "emotion", "speaker")
FIRST_ACTOR_ID = 1001
# Utterances rendered after one synthesiser reset; part of what fixes the output bytes.
BATCH = 16
# Random-number streams: one per corpus, so resizing one corpus leaves the others alone.
STREAMS = {"intent": 1, "emotion": 2, "joint": 3, "new": 4, "calls": 5}
# With --caller-affect SHARE, that share of the intent corpus's clips carries a mild affect:
# one of the five non-neutral emotions at a strength drawn up to CALLER_AFFECT_MAX (0.5 is
# the LO level; the joint test also speaks at HI, 1.0). The Skit-S2I layout has no emotion
# column, so the affect is not a label; the datasheet counts it.
CALLER_AFFECT_MAX = 0.5


@dataclass(frozen=True)
class SizeSpec:
    """Clip counts per class for one ``--size``.

    Attributes
    ----------
    intent_train : int
        Skit-S2I ``train.csv`` clips per intent (train + valid voices).
    intent_test : int
        Skit-S2I ``test.csv`` clips per intent (test voices).
    emotion : int
        CREMA-D clips per emotion (all corpus actors); at most actors x sentences x
        levels (22 x 12 x 2 = 528), as every file name is distinct.
    joint : int
        Joint-test clips per intent (joint voices).
    new_valid, new_test : int
        New-domain validation / test clips per intent.
    calls : int
        Call-audio clips per intent (``domain="calls"``).
    """

    intent_train: int
    intent_test: int
    emotion: int
    joint: int
    new_valid: int
    new_test: int
    calls: int


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(
        intent_train=3, intent_test=2, emotion=4, joint=2, new_valid=2, new_test=2, calls=2
    ),
    "small": SizeSpec(
        intent_train=230, intent_test=40, emotion=320, joint=30, new_valid=15, new_test=30,
        calls=150,
    ),
    "full": SizeSpec(
        intent_train=900, intent_test=150, emotion=520, joint=110, new_valid=40, new_test=100,
        calls=500,
    ),
}


def utterance_seed(seed: int, stream: str, index: int) -> int:
    """A 32-bit seed for one utterance, independent of every other utterance's."""
    return int(np.random.SeedSequence([seed, STREAMS[stream], index]).generate_state(1)[0])


def cycle_evenly(items: list, n: int, rng: np.random.Generator) -> list:
    """``n`` items covering ``items`` as evenly as possible, in random order."""
    reps = -(-n // len(items)) if n else 0
    out = [items[i] for _ in range(reps) for i in rng.permutation(len(items))]
    return out[:n]


@dataclass
class Plan:
    """Utterances to render plus the rows to write once they exist."""

    utterances: list[Utterance] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def add(self, utt: Utterance, row: dict) -> None:
        self.utterances.append(utt)
        self.rows.append(row)


# ------------------------------------------------------------------------- planning


def draw_caller_affect(rng: np.random.Generator, share: float) -> tuple[str, float]:
    """(emotion, strength) of one intent-corpus clip: neutral, or (with probability
    ``share``) a mild affect.

    >>> rng = np.random.default_rng(0)
    >>> draws = [draw_caller_affect(rng, 0.5) for _ in range(400)]
    >>> max(s for _, s in draws) <= CALLER_AFFECT_MAX, {e for e, s in draws if s == 0}
    (True, {'neutral'})
    >>> {draw_caller_affect(rng, 0.0) for _ in range(10)}
    {('neutral', 0.0)}
    """
    if rng.random() >= share:
        return "neutral", 0.0
    others = [e for e in EMOTIONS if e != "neutral"]
    return others[rng.integers(len(others))], float(rng.uniform(0.1, CALLER_AFFECT_MAX))


def plan_intent_corpus(root: str, size: SizeSpec, pools: dict, seed: int,
                       affect_share: float = 0.0) -> Plan:
    """Skit-S2I: train+valid voices -> ``train.csv``, test voices -> ``test.csv``
    (``pools``: :func:`~.voices.corpus_pools` for ``skit_s2i``); ``affect_share`` of the
    clips with a mild caller affect (:func:`draw_caller_affect`), the rest neutral."""
    rng = np.random.default_rng([seed, STREAMS["intent"], 0])
    # Its own stream, so the texts and voices do not depend on the affect.
    affect_rng = np.random.default_rng([seed, STREAMS["intent"], 1])
    entries = []
    for split, voices, n in (
        ("train", pools["train"] + pools["valid"], size.intent_train),
        ("test", pools["test"], size.intent_test),
    ):
        chunk = []
        for class_index, (intent, _) in enumerate(INTENTS):
            seen, _ = split_templates(TEMPLATES[intent])
            for template, voice in zip(cycle_evenly(seen, n, rng), cycle_evenly(voices, n, rng), strict=True):
                chunk.append((split, class_index, template, voice))
        entries += [chunk[i] for i in rng.permutation(len(chunk))]
    plan = Plan()
    for index, (split, class_index, template, voice) in enumerate(entries):
        text = sentence(fill(template, rng))
        emotion, strength = draw_caller_affect(affect_rng, affect_share)
        rel = f"wav_audios/{index:06d}.wav"  # as the real zip names it
        utt = Utterance(
            path=os.path.join(root, rel),
            text=text,
            speaker=make_speaker(voice, seed),
            emotion=emotion,
            strength=strength,
            channel="telephone",
            seed=utterance_seed(seed, "intent", index),
        )
        row = {
            "split": split,
            "id": index,
            "intent_class": class_index,
            "template": text,
            "audio_path": rel,
            "speaker_id": variant_of(voice),
            "affect": emotion,
            "affect_strength": strength,
        }
        plan.add(utt, row)
    return plan


def crema_actors(pools: dict, seed: int) -> dict[str, str]:
    """Four-digit actor ids for every variant (timbre) in ``pools`` (:func:`~.voices.corpus_pools`
    for ``crema_d``), shuffled so an id says nothing about the variant's pool. An actor
    speaks in every accent."""
    variants = sorted({variant_of(v) for pool in ("train", "valid", "test") for v in pools[pool]})
    order = np.random.default_rng([seed, STREAMS["emotion"], 1]).permutation(len(variants))
    return {str(FIRST_ACTOR_ID + rank): variants[i] for rank, i in enumerate(order)}


def plan_emotion_corpus(root: str, size: SizeSpec, actors: dict, seed: int) -> Plan:
    """CREMA-D: each emotion gets ``size.emotion`` distinct (actor, sentence, level) files,
    each in an accent drawn at random (``actors`` maps actor ids to variants)."""
    rng = np.random.default_rng([seed, STREAMS["emotion"], 0])
    actor_ids = sorted(actors)
    codes = sorted(EMOTION_SENTENCES)
    levels = list(LEVELS)
    combos = len(actor_ids) * len(codes) * len(levels)
    if size.emotion > combos:
        raise ValueError(f"{size.emotion} clips per emotion exceed the {combos} distinct names")
    plan = Plan()
    for emo_code, emotion in EMOTION_CODES.items():
        for flat in sorted(rng.choice(combos, size=size.emotion, replace=False)):
            actor = actor_ids[flat // (len(codes) * len(levels))]
            code = codes[(flat // len(levels)) % len(codes)]
            level = levels[flat % len(levels)]
            voice = f"{ACCENTS[rng.integers(len(ACCENTS))]}+{actors[actor]}"
            index = len(plan.rows)
            name = f"{actor}_{code}_{emo_code}_{level}.wav"
            utt = Utterance(
                path=os.path.join(root, "AudioWAV", name),
                text=EMOTION_SENTENCES[code],
                speaker=make_speaker(voice, seed),
                emotion=emotion,
                strength=LEVELS[level],
                channel="wideband",
                seed=utterance_seed(seed, "emotion", index),
            )
            plan.add(utt, {"name": name, "emotion": emotion, "level": level, "actor": actor,
                           "voice": voice})
    return plan


def telephone_query(root: str, uid: str, text: str, voice: str, emotion: str, level: str,
                    seed: int, stream: str, index: int) -> Utterance:
    """One banking query spoken with an emotion at ``level`` through the telephone line,
    to ``<root>/wavs/<uid>.wav`` (the joint test's and the call audio's clips)."""
    return Utterance(
        path=os.path.join(root, "wavs", f"{uid}.wav"),
        text=text,
        speaker=make_speaker(voice, seed),
        emotion=emotion,
        strength=LEVELS[level],
        channel="telephone",
        seed=utterance_seed(seed, stream, index),
    )


def plan_joint_test(root: str, size: SizeSpec, pools: dict, seed: int) -> Plan:
    """Banking queries with emotion, by joint voices: half the clips use held-out templates."""
    rng = np.random.default_rng([seed, STREAMS["joint"], 0])
    plan = Plan()
    for class_index, (intent, _) in enumerate(INTENTS):
        seen, held = split_templates(TEMPLATES[intent])
        n_held = (size.joint + 1) // 2
        templates = [(t, False) for t in cycle_evenly(held, n_held, rng)]
        templates += [(t, True) for t in cycle_evenly(seen, size.joint - n_held, rng)]
        voices = cycle_evenly(pools["joint"], size.joint, rng)
        for k, ((template, was_seen), voice) in enumerate(zip(templates, voices, strict=True)):
            # Rotating the emotion with the intent index balances intent x emotion.
            emotion = EMOTIONS[(k + class_index) % len(EMOTIONS)]
            level = list(LEVELS)[rng.integers(len(LEVELS))]
            index = len(plan.rows)
            uid = f"joint_{index:05d}"
            text = sentence(fill(template, rng))
            utt = telephone_query(root, uid, text, voice, emotion, level, seed, "joint", index)
            row = {
                "id": uid,
                "wav": f"wavs/{uid}.wav",
                "task": "both",
                "intent": intent,
                "emotion": emotion,
                "speaker": variant_of(voice),
                "voice": voice,
                "split": "test",
                "level": level,
                "template_seen": "yes" if was_seen else "no",
                "text": text,
            }
            plan.add(utt, row)
    return plan


def draw_caller_emotion(rng: np.random.Generator) -> tuple[str, str]:
    """(emotion, level) of a caller (new domain, call audio): callers to a bank are mostly
    calm, so half neutral (LO), the rest spread over the other five at LO or HI."""
    if rng.random() < 0.5:
        return "neutral", "LO"
    others = [e for e in EMOTIONS if e != "neutral"]
    return others[rng.integers(len(others))], list(LEVELS)[rng.integers(len(LEVELS))]


def plan_new_domain(root: str, size: SizeSpec, pools: dict, seed: int, shots: int) -> Plan:
    """New intents: ``shots`` training clips each (train voices); validation from valid
    voices whose timbre no training voice shares; test from the joint voices, which no
    banking corpus contains."""
    rng = np.random.default_rng([seed, STREAMS["new"], 0])
    plan = Plan()
    trained = {variant_of(v) for v in pools["train"]}
    valid = [v for v in pools["valid"] if unheard([variant_of(v)], trained)]
    if not valid:
        raise ValueError(f"seed {seed} leaves the new domain's validation no voice: every "
                         "valid variant shares a timbre with a train variant (TIMBRE_FAMILIES)")
    for split, voices, n in (
        ("train", pools["train"], shots),
        ("valid", valid, size.new_valid),
        ("test", pools["joint"], size.new_test),
    ):
        for intent in NEW_INTENTS:
            templates = cycle_evenly(NEW_TEMPLATES[intent], n, rng)
            for template, voice in zip(templates, cycle_evenly(voices, n, rng), strict=True):
                emotion, level = draw_caller_emotion(rng)
                index = len(plan.rows)
                rel = f"wavs/{split}_{index:05d}.wav"
                utt = Utterance(
                    path=os.path.join(root, rel),
                    text=sentence(fill(template, rng)),
                    speaker=make_speaker(voice, seed),
                    emotion=emotion,
                    strength=LEVELS[level],
                    channel="telephone",
                    seed=utterance_seed(seed, "new", index),
                )
                row = {
                    "split": split,
                    "path": rel,
                    "intent": intent,
                    "emotion": emotion,
                    "speaker": variant_of(voice),
                }
                plan.add(utt, row)
    return plan


def manifest_timbres(manifests, speakers_file) -> list[str]:
    """The timbres (voice variants) that speak in prepared manifests.

    The preparers choose their own validation and test speakers, so the timbres of a
    split (the training timbres, for call audio to pretrain on; the validation
    timbres, for held-out calls) are read off its manifests: a Skit-S2I speaker id is
    a timbre, a CREMA-D actor id is mapped to its timbre by ``speakers.json``.
    """
    try:
        speakers = read_speakers(speakers_file)
    except FileNotFoundError:
        raise ValueError(f"{speakers_file}: not found (the banking corpus's speakers.json)") from None
    actors = {actor: info["variant"] for actor, info in speakers["crema_d_actors"].items()}
    known = set(speakers["corpus_of_variant"])
    timbres = set()
    for manifest in manifest_paths(manifests):
        for row in read_manifests(manifest):
            speaker = actors.get(row["speaker"], row["speaker"])
            if speaker not in known:
                raise ValueError(f"{manifest}: row {row['id']!r} has speaker {row['speaker']!r}, "
                                 f"which is no timbre or actor of {speakers_file}")
            timbres.add(speaker)
    return sorted(timbres)


def check_speakers(manifest, timbres) -> None:
    """Refuse ``manifest`` (call audio found on disk) when a speaker is not one of ``timbres``.

    Call audio made for another seed, or by hand with other voices, may hold voices a
    validation or test split contains.
    """
    others = sorted({row["speaker"] for row in read_manifests(manifest)} - set(timbres))
    if others:
        raise ValueError(f"{manifest}: speaker(s) {others} are not training timbres of this "
                         "corpus; delete its folder to have it generated again")


def check_call_variants(variants, seed: int) -> list[str]:
    """The call audio's voice variants, sorted and unique; refuses none, unknown ones and
    the joint test's (which no training material may contain).

    >>> check_call_variants(["m3", "f1", "m3"], seed=1234)
    ['f1', 'm3']
    """
    if not variants:
        raise ValueError("domain='calls' needs variants: the timbres that speak, e.g. those of "
                         "the prepared training manifests (multitask.synth.corpus."
                         "manifest_timbres)")
    pools = split_variants(seed)
    unknown = sorted(set(variants) - {v for pool in pools.values() for v in pool})
    if unknown:
        dropped = left_out(seed)
        raise ValueError(f"voice variant(s) {unknown} are in no pool of seed {seed}"
                         + (f" (unknown, or left out: {dropped})" if dropped else ""))
    joint = sorted(set(variants) & set(pools["joint"]))
    if joint:
        raise ValueError(f"variant(s) {joint} speak the joint test (seed {seed}), which no "
                         "other material may contain")
    return sorted(set(variants))


def plan_calls(root: str, size: SizeSpec, variants: list[str], seed: int) -> Plan:
    """Call audio: banking queries in the phrasings of the intent corpus's training
    split, spoken by ``variants`` in every accent with a caller's emotion
    (:func:`draw_caller_emotion`), through the telephone line.

    By the training timbres, pretraining reads it as unlabelled audio (the rendered
    intent and emotion are kept in the manifest as a record of what was synthesised).
    By the validation timbres, it is a labelled set of held-out calls: a bank's own
    recordings of the intents a model already knows (e.g. ``--old-valid`` of ``multitask
    finetune --mode extend``).
    """
    rng = np.random.default_rng([seed, STREAMS["calls"], 0])
    voices = voices_of(variants)
    plan = Plan()
    for intent, _ in INTENTS:
        seen, _ = split_templates(TEMPLATES[intent])
        for template, voice in zip(cycle_evenly(seen, size.calls, rng),
                                   cycle_evenly(voices, size.calls, rng), strict=True):
            emotion, level = draw_caller_emotion(rng)
            index = len(plan.rows)
            uid = f"call_{index:06d}"
            text = sentence(fill(template, rng))
            utt = telephone_query(root, uid, text, voice, emotion, level, seed, "calls", index)
            row = {"id": uid, "wav": f"wavs/{uid}.wav", "intent": intent, "emotion": emotion,
                   "speaker": variant_of(voice), "voice": voice, "split": "train",
                   "level": level, "text": text}
            plan.add(utt, row)
    return plan


# ------------------------------------------------------------------------ rendering


def render_all(utterances: list[Utterance], jobs: int | None, progress: bool) -> list[dict]:
    """Render in a process pool (each worker loads its own libespeak-ng); results in order.

    Utterances go to workers in fixed batches of :data:`BATCH` consecutive items, and
    each batch starts from a reset synthesiser, so the bytes do not depend on ``jobs``.
    """
    batches = [utterances[i : i + BATCH] for i in range(0, len(utterances), BATCH)]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(batches) or 1))
    bar = tqdm(total=len(utterances), desc="synth", unit="clip", disable=not progress)
    results: list[dict] = []
    if jobs == 1:
        done = map(render_batch, batches)
        for batch in done:
            results += batch
            bar.update(len(batch))
    else:
        # fork keeps start-up cheap; each batch resets the synthesiser in any case,
        # provided this process has no library loaded for the workers to inherit.
        release_engine()
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with context.Pool(jobs) as pool:
            for batch in pool.imap(render_batch, batches):
                results += batch
                bar.update(len(batch))
    bar.close()
    return results


# -------------------------------------------------------------------------- writing


def _write_csv(path: str, columns: Iterable[str], rows: Iterable[dict]) -> None:
    columns = list(columns)
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.DictWriter(fout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_skit(root: str, rows: list[dict]) -> None:
    """``train.csv``, ``test.csv`` and ``intent_info.csv`` in Skit-S2I's columns."""
    for split in ("train", "test"):
        _write_csv(
            os.path.join(root, f"{split}.csv"),
            SKIT_COLUMNS,
            (r for r in rows if r["split"] == split),
        )
    info = [
        {"intent_class": i, "intent_name": name, "description": desc}
        for i, (name, desc) in enumerate(INTENTS)
    ]
    _write_csv(
        os.path.join(root, "intent_info.csv"), ("intent_class", "intent_name", "description"), info
    )


def write_joint(root: str, rows: list[dict], results: list[dict]) -> str:
    """The joint test as a package manifest (task ``both``)."""
    return _write_rendered_manifest(os.path.join(root, "joint_test.csv"), rows, results)


def write_calls(root: str, rows: list[dict], results: list[dict]) -> str:
    """Call audio as a package manifest (``calls.csv``)."""
    return _write_rendered_manifest(os.path.join(root, "calls.csv"), rows, results)


def _write_rendered_manifest(path: str, rows: list[dict], results: list[dict]) -> str:
    for row, res in zip(rows, results, strict=True):
        row["duration"] = round(res["frames"] / res["sample_rate"], 3)
        row["snr_db"] = round(res["snr_db"], 1)
    write_manifest(path, rows)
    return path


def write_speakers(path: str, seed: int, pools: dict, actors: dict, size: str) -> None:
    """Which variants, voices and CREMA-D actors belong to which pool, for checking splits."""
    pool_of = {variant_of(voice): pool for pool, voices in pools.items() for voice in voices}
    data = {
        "seed": seed,
        "size": size,
        "split_by": "voice variant (timbre); every variant is spoken in every accent",
        "speaker_ids": "Skit-S2I speaker_id and CREMA-D actor name a variant (timbre), "
                       "not a voice: a speaker-disjoint split is then variant-disjoint "
                       "(timbre-disjoint but for the variants of a timbre family)",
        "corpus_of_variant": corpus_of_variants(seed),
        "variants": split_variants(seed),
        "timbre_families": [sorted(family) for family in TIMBRE_FAMILIES],
        "left_out": left_out(seed),
        "voices": pools,
        "skit_s2i": {"train.csv": ["train", "valid"], "test.csv": ["test"]},
        "crema_d_actors": {
            actor: {"variant": variant, "pool": pool_of[variant]}
            for actor, variant in actors.items()
        },
        "joint_test": ["joint"],
    }
    with open(path, "w", encoding="utf-8") as fout:
        json.dump(data, fout, indent=1)


def write_pools(path: str, seed: int, size: str) -> None:
    """The voice pools a corpus was dealt from (``speakers.json`` of the new domain)."""
    with open(path, "w", encoding="utf-8") as fout:
        json.dump({"seed": seed, "size": size, "variants": split_variants(seed),
                   "timbre_families": [sorted(family) for family in TIMBRE_FAMILIES],
                   "left_out": left_out(seed)}, fout, indent=1)


def ensure_banking_corpus(folder, size: str, seed: int, is_main: bool = True,
                          wait=lambda: None) -> None:
    """The recipes' banking corpus in ``folder``: generated by the main process when the
    folder holds none; then, after ``wait()`` (a barrier across processes), checked by
    every process with :func:`check_current`, as a corpus found on disk is reused."""
    if is_main and not os.path.isfile(os.path.join(folder, "DATASHEET.md")):
        generate(folder, size=size, seed=seed)
    wait()
    check_current(os.path.join(folder, "speakers.json"), seed, size)


def read_speakers(speakers_file) -> dict:
    """A generated corpus's ``speakers.json``, the one reader of it: refused by name when
    it is missing (``FileNotFoundError``), unreadable, or not a mapping with an integer
    seed (``ValueError``)."""
    try:
        with open(speakers_file, encoding="utf-8") as fin:
            data = json.load(fin)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{speakers_file}: not a speakers.json written by multitask synth "
                         f"({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("seed"), int):
        raise ValueError(f"{speakers_file}: not a speakers.json written by multitask synth (a "
                         "mapping with an integer seed)")
    return data


def recorded_seed(speakers_file) -> int:
    """The seed a generated corpus records in its ``speakers.json`` (:func:`read_speakers`)."""
    try:
        return read_speakers(speakers_file)["seed"]
    except FileNotFoundError:
        raise ValueError(f"{speakers_file}: not found (a generated corpus's speakers.json)") from None


def check_current(speakers_file, seed: int, size: str | None = None) -> None:
    """Refuse a corpus on disk whose ``speakers.json`` is missing or records another seed,
    another ``size`` (when given), or voice pools or timbre families other than those this
    version deals for ``seed``. The recipes reuse a corpus they find rather than render it
    again, so such a corpus would be trained on and scored as if it were the one asked for.
    (A change of the generator that leaves all of these alone is not caught.)

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "speakers.json")
    >>> write_pools(path, seed=1234, size="small")
    >>> check_current(path, seed=1234, size="small")
    >>> check_current(path, seed=7)
    Traceback (most recent call last):
    ...
    ValueError: ...speakers.json: this corpus was dealt for seed 1234, size small, not ...
    """
    folder = os.path.dirname(os.path.abspath(os.fspath(speakers_file)))
    again = f"delete {folder} to have it generated again"
    try:
        recorded = read_speakers(speakers_file)
    except FileNotFoundError:
        raise ValueError(f"{speakers_file}: missing, so the corpus in {folder} is not known "
                         f"to be the one asked for; {again}") from None
    except ValueError as err:
        raise ValueError(f"{err}; {again}") from None
    expected = {"seed": seed, "variants": split_variants(seed),
                "timbre_families": [sorted(family) for family in TIMBRE_FAMILIES]}
    if size is not None:
        expected["size"] = size
    if any(recorded.get(k) != v for k, v in expected.items()):
        was = f"seed {recorded['seed']}, size {recorded.get('size')}"
        raise ValueError(f"{speakers_file}: this corpus was dealt for {was}, not for seed "
                         f"{seed}{f', size {size}' if size else ''} with the voice pools and "
                         f"timbre families of this version of multitask synth; {again}")


# Written first into each folder synth generates, so that a folder an interrupted run
# left (before its datasheet) is still known to be synth's.
MARKER = ".multitask-synth"


def _is_synth_datasheet(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fin:
            return "multitask.synth" in fin.read(1000)
    except OSError:
        return False


def _fresh_dir(path: str, datasheet: str) -> str:
    """``path``, emptied: generated folders are replaced whole, so a smaller rerun leaves
    no stale files. A folder with files that synth did not write (no marker, and
    ``datasheet``, the datasheet that describes it, is not synth's) is refused."""
    if os.path.isdir(path) and os.listdir(path):
        if not (os.path.isfile(os.path.join(path, MARKER)) or _is_synth_datasheet(datasheet)):
            raise ValueError(f"{path}: exists and was not generated by multitask synth; it "
                             "would be replaced whole: give another --out")
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, MARKER), "w", encoding="utf-8"):
        pass
    return path


def _check_own_files(out_dir: str, names) -> None:
    """Refuse to write ``names`` (the top-level datasheet, ``speakers.json``) over files
    synth did not write: the datasheet there must be synth's."""
    datasheet = os.path.join(out_dir, "DATASHEET.md")
    for name in names:
        if os.path.exists(os.path.join(out_dir, name)) and not _is_synth_datasheet(datasheet):
            raise ValueError(f"{os.path.join(out_dir, name)}: not written by multitask synth, "
                             "and it would be written over: give another --out")


# ------------------------------------------------------------------------ generate


def generate(
    out_dir,
    size: str = "small",
    seed: int = DEFAULT_SEED,
    jobs: int | None = None,
    domain: str = "banking",
    shots: int = 20,
    progress: bool = True,
    caller_affect: float = 0.0,
    variants: list[str] | None = None,
) -> dict[str, str]:
    """Generate the synthetic corpora.

    Parameters
    ----------
    out_dir : path
        Output folder; the corpus sub-folders in it are replaced.
    size : {"tiny", "small", "full"}
        See :data:`SIZES`.
    seed : int
        Same seed, same bytes (for any ``jobs``).
    jobs : int, optional
        Worker processes (default: all cores).
    domain : {"banking", "new", "calls"}
        ``banking``: Skit-S2I + CREMA-D + joint test. ``new``: the new-intents corpus.
        ``calls``: call audio for pretraining (:func:`plan_calls`).
    shots : int
        New domain only: training clips per intent.
    caller_affect : float
        Banking only: share of the intent corpus's clips spoken with a mild emotion
        (:func:`draw_caller_affect`); 0 keeps it neutral, as the demo does.
    variants : list of str
        Calls only: the voice variants that speak (:func:`manifest_timbres`).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    dict
        Paths of what was written (keys depend on ``domain``).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    if domain not in ("banking", "new", "calls"):
        raise ValueError(f"domain must be 'banking', 'new' or 'calls', not {domain!r}")
    if domain == "calls":
        variants = check_call_variants(variants, seed)
    elif variants is not None:
        raise ValueError(f"variants (the voices of call audio) apply to domain='calls' only, "
                         f"not {domain!r}")
    if not 0.0 <= caller_affect <= 1.0:
        raise ValueError(f"caller_affect must be between 0 and 1, not {caller_affect}")
    if domain != "banking" and caller_affect:
        raise ValueError(f"caller_affect applies to the banking corpus's intent clips; "
                         f"the {domain!r} domain draws its own emotions")
    if domain == "new" and shots < 1:
        raise ValueError(f"shots must be at least 1, not {shots}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir}: a file, not a folder (--out)")
    os.makedirs(out_dir, exist_ok=True)
    pools = speaker_pools(seed)
    if domain == "banking":
        return _generate_banking(out_dir, SIZES[size], size, seed, jobs, pools, progress,
                                 caller_affect)
    if domain == "calls":
        return _generate_calls(out_dir, SIZES[size], size, seed, jobs, variants, progress)
    return _generate_new(out_dir, SIZES[size], size, seed, jobs, pools, shots, progress)


def _generate_banking(out_dir, spec, size, seed, jobs, pools, progress,
                      affect_share) -> dict[str, str]:
    _check_own_files(out_dir, ("DATASHEET.md", "speakers.json"))
    datasheet = os.path.join(out_dir, "DATASHEET.md")
    skit = _fresh_dir(os.path.join(out_dir, "skit_s2i"), datasheet)
    crema = _fresh_dir(os.path.join(out_dir, "crema_d"), datasheet)
    joint = _fresh_dir(os.path.join(out_dir, "joint_test"), datasheet)
    actors = crema_actors(corpus_pools(seed, "crema_d"), seed)
    plans = {
        "skit_s2i": plan_intent_corpus(skit, spec, corpus_pools(seed, "skit_s2i"), seed,
                                       affect_share),
        "crema_d": plan_emotion_corpus(crema, spec, actors, seed),
        "joint_test": plan_joint_test(joint, spec, pools, seed),
    }
    utterances = [u for p in plans.values() for u in p.utterances]
    results = render_all(utterances, jobs, progress)
    by_plan, start = {}, 0
    for name, plan in plans.items():
        by_plan[name] = results[start : start + len(plan.utterances)]
        start += len(plan.utterances)
    write_skit(skit, plans["skit_s2i"].rows)
    _write_csv(
        os.path.join(crema, "sentences.csv"),
        ("code", "text"),
        ({"code": c, "text": t} for c, t in sorted(EMOTION_SENTENCES.items())),
    )
    manifest = write_joint(joint, plans["joint_test"].rows, by_plan["joint_test"])
    speakers = os.path.join(out_dir, "speakers.json")
    write_speakers(speakers, seed, pools, actors, size)
    datasheet = write_banking_datasheet(
        os.path.join(out_dir, "DATASHEET.md"),
        size=size,
        seed=seed,
        pools=pools,
        actors=actors,
        plans=plans,
        results=by_plan,
    )
    return {
        "root": out_dir,
        "skit_s2i": skit,
        "crema_d": crema,
        "joint_test": manifest,
        "speakers": speakers,
        "datasheet": datasheet,
    }


def _generate_new(out_dir, spec, size, seed, jobs, pools, shots, progress) -> dict[str, str]:
    root = _fresh_dir(os.path.join(out_dir, "new_domain"),
                      os.path.join(out_dir, "new_domain", "DATASHEET.md"))
    plan = plan_new_domain(root, spec, pools, seed, shots)
    results = render_all(plan.utterances, jobs, progress)
    paths = {"root": out_dir, "new_domain": root}
    for split in ("train", "valid", "test"):
        paths[split] = os.path.join(root, f"{split}.csv")
        _write_csv(paths[split], NEW_DOMAIN_COLUMNS, (r for r in plan.rows if r["split"] == split))
    paths["speakers"] = os.path.join(root, "speakers.json")
    write_pools(paths["speakers"], seed, size)
    paths["datasheet"] = write_new_domain_datasheet(
        os.path.join(root, "DATASHEET.md"),
        size=size,
        seed=seed,
        shots=shots,
        pools=pools,
        plan=plan,
        results=results,
    )
    return paths


def _generate_calls(out_dir, spec, size, seed, jobs, variants, progress) -> dict[str, str]:
    root = _fresh_dir(os.path.join(out_dir, "calls"),
                      os.path.join(out_dir, "calls", "DATASHEET.md"))
    plan = plan_calls(root, spec, variants, seed)
    results = render_all(plan.utterances, jobs, progress)
    manifest = write_calls(root, plan.rows, results)
    datasheet = write_calls_datasheet(os.path.join(root, "DATASHEET.md"), size=size, seed=seed,
                                      variants=variants, plan=plan, results=results)
    return {"root": out_dir, "calls": manifest, "datasheet": datasheet}
