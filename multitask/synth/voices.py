"""Synthetic speakers and their voice-disjoint split.

A voice is an espeak-ng English accent (language file) combined with a voice
variant (``en-us+f2``). The variant carries the timbre (formants, pitch, breathiness);
the accent carries pronunciation and intonation. A *speaker*, in the corpora's speaker
and actor ids, is a variant: one timbre that talks in every accent. Changing accent
does not disguise a timbre, so a speaker id per voice would let a speaker-disjoint
split put the same timbre on both sides. Pools are split **by variant** too, so a
variant heard in training never reappears in validation, test or the joint test, in
any accent. Each split gets male and female variants.

A few variants share one timbre under several names (:data:`TIMBRE_FAMILIES`). The
joint pool keeps none whose family has a member in another pool, and the new domain's
validation none whose family is in training. The corpora's preparers split by variant,
so within the corpora a family may span a corpus's splits, or both corpora (seed 1234's
three pooled members are all in the demo's prepared training splits).

The four pools:

``train``  intent corpus ``train.csv``, emotion corpus actors, new-domain training
``valid``  intent corpus ``train.csv`` too (Skit-S2I has no validation split), emotion
           actors, new-domain validation
``test``   intent corpus ``test.csv``, emotion actors
``joint``  the joint IVR test set and the new domain's test: in neither corpus

Within the train, valid and test pools, each variant speaks in **one** corpus, intent or
emotion (:func:`corpus_of_variants`; the variants of one family may be dealt to both), as
real Skit-S2I and CREMA-D share no speakers.
Were a timbre in both, the emotion corpus's training split could hold the intent
corpus's validation or test speakers (each corpus is split by its own preparer), and
joint training would have heard them.

Example
-------
>>> split = split_variants(seed=0)
>>> sorted(split) == ["joint", "test", "train", "valid"]
True
>>> all(set(split[a]).isdisjoint(split[b]) for a in split for b in split if a != b)
True
>>> split_variants(seed=1234)["joint"]  # Henrique sounds like Diogo, michel and miguel
['Denis', 'Reed', 'anika', 'antonio', 'david', 'grandma', 'm1']
"""

from __future__ import annotations

import numpy as np

# English language files shipped in espeak-ng-data/lang/gmw (en-shaw, the Shavian
# alphabet, is left out: it is a spelling, not an accent).
ACCENTS: list[str] = [
    "en", "en-us", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd",
]  # fmt: skip

# Variants from espeak-ng-data/voices/!v that sound human and keep a trackable pitch.
# Left out: whisper/whisperf (unvoiced), croak/grandpa/announcer/klatt/klatt2/Storm
# (mostly unvoiced or creaky), caleb/zac (pitch too high to track), robosoft*,
# UniRobot, anikaRobot, Demonic (robotic by design).
FEMALE_VARIANTS: list[str] = [
    "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty",
    "belinda", "grandma", "linda", "shelby", "steph",
]  # fmt: skip
MALE_VARIANTS: list[str] = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Alex", "Andy", "Denis", "Diogo",
    "Gene", "Henrique", "Jacky", "Lee", "Mario", "Michael", "Reed", "adam", "antonio",
    "boris", "david", "ed", "edward", "gustave", "john", "klatt4", "marcelo", "max",
    "michel", "miguel", "norbert", "pablo", "paul", "quincy", "rob", "travis", "victor",
]  # fmt: skip

# Variants with the same formant, voicing and consonant lines in espeak-ng-data/voices/!v,
# differing only in pitch and tone: one timbre under several names (tests/test_synth.py
# checks this list against the installed data).
TIMBRE_FAMILIES: list[frozenset[str]] = [frozenset({"Diogo", "Henrique", "michel", "miguel"})]

POOLS = ("train", "valid", "test", "joint")
POOL_FRACTIONS = {"valid": 0.12, "test": 0.15, "joint": 0.15}  # the rest is train


def _split_one(variants: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    order = [variants[i] for i in rng.permutation(len(variants))]
    out, start = {}, 0
    for pool in ("valid", "test", "joint"):
        n = max(1, int(round(POOL_FRACTIONS[pool] * len(variants))))
        out[pool] = order[start : start + n]
        start += n
    out["train"] = order[start:]
    return out


def family_of(variant: str) -> frozenset[str]:
    """The variants sharing ``variant``'s timbre, itself included.

    >>> sorted(family_of("michel")), sorted(family_of("f2"))
    (['Diogo', 'Henrique', 'michel', 'miguel'], ['f2'])
    """
    return next((family for family in TIMBRE_FAMILIES if variant in family),
                frozenset({variant}))


def unheard(variants: list[str], heard) -> list[str]:
    """The ``variants`` none of whose timbre family is in ``heard``, in their order.

    >>> unheard(["Henrique", "m1"], heard={"Diogo", "f1"})
    ['m1']
    """
    heard = set(heard)
    return [v for v in variants if family_of(v).isdisjoint(heard)]


def split_variants(seed: int) -> dict[str, list[str]]:
    """Variants per pool, drawn separately for female and male variants (seeded). A joint
    variant whose timbre family has a member in another pool is left out of every pool,
    as the joint test must sound like no voice of the corpora (the draw itself is not
    redrawn, so the other pools, and the corpora, do not depend on the families)."""
    rng = np.random.default_rng([seed, 7001])
    female, male = _split_one(FEMALE_VARIANTS, rng), _split_one(MALE_VARIANTS, rng)
    pools = {pool: sorted(female[pool] + male[pool]) for pool in POOLS}
    elsewhere = [v for pool in POOLS if pool != "joint" for v in pools[pool]]
    pools["joint"] = unheard(pools["joint"], elsewhere)
    if not pools["joint"]:
        raise ValueError(f"seed {seed} leaves the joint test no voice: every joint variant "
                         "shares a timbre with a corpus variant (TIMBRE_FAMILIES)")
    return pools


def left_out(seed: int) -> list[str]:
    """The variants in no pool of ``seed`` (:func:`split_variants`), sorted.

    >>> left_out(seed=1234)
    ['Henrique']
    """
    pooled = {v for variants in split_variants(seed).values() for v in variants}
    return sorted(set(FEMALE_VARIANTS + MALE_VARIANTS) - pooled)


def voices_of(variants: list[str], accents: list[str] = ACCENTS) -> list[str]:
    """Every accent x variant combination as espeak voice names, e.g. ``en-us+f2``."""
    return [f"{accent}+{variant}" for variant in variants for accent in accents]


def variant_of(voice: str) -> str:
    """The timbre of a voice: ``variant_of("en-us+f2") == "f2"``; it is the speaker id."""
    return voice.split("+", 1)[1]


def speaker_pools(seed: int) -> dict[str, list[str]]:
    """Voice names (accent + variant) per pool."""
    return {pool: voices_of(variants) for pool, variants in split_variants(seed).items()}


CORPORA = ("skit_s2i", "crema_d")


def corpus_of_variants(seed: int) -> dict[str, str]:
    """The one corpus each train, valid and test variant speaks in (seeded; each pool's
    variants are dealt alternately, so both corpora get some of every pool).

    >>> corpus_of = corpus_of_variants(seed=0)
    >>> everyone = len(FEMALE_VARIANTS + MALE_VARIANTS)
    >>> joint_or_none = len(split_variants(0)["joint"]) + len(left_out(0))
    >>> sorted(set(corpus_of.values())), len(corpus_of) == everyone - joint_or_none
    (['crema_d', 'skit_s2i'], True)
    """
    rng = np.random.default_rng([seed, 7002])
    corpus_of = {}
    for pool, variants in split_variants(seed).items():
        if pool == "joint":
            continue
        for rank, index in enumerate(rng.permutation(len(variants))):
            corpus_of[variants[index]] = CORPORA[rank % len(CORPORA)]
    return corpus_of


def corpus_pools(seed: int, corpus: str) -> dict[str, list[str]]:
    """Voice names per train, valid and test pool, for one corpus's variants only."""
    corpus_of = corpus_of_variants(seed)
    return {pool: [v for v in voices if corpus_of[variant_of(v)] == corpus]
            for pool, voices in speaker_pools(seed).items() if pool != "joint"}
