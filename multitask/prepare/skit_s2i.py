"""Skit-S2I (Indian-English banking speech-to-intent) to train/valid/test manifests.

The corpus folder, as released by Skit (github.com/skit-ai/speech-to-intent-dataset)::

    train.csv, test.csv   id, intent_class, template, audio_path, speaker_id
    intent_info.csv       intent_class, intent_name, description
    <audio_path>          8 kHz 16-bit telephone WAVs, paths relative to the folder

The Hugging Face Hub's Parquet copy (``skit-ai/skit-s2i``) is read too: it is first
unpacked into that layout in ``<out_dir>/hub_copy`` (:mod:`.skit_s2i_hub`).

Intent names come from ``intent_info.csv``; an ``intent_class`` it does not list is an
error naming the file and line. The corpus has no validation split and its test
speakers also speak in train, hence two schemes:

``speaker`` (default)
    All rows pooled, then split so that no speaker is in two splits. Test figures
    measure generalisation to new callers: the honest number.
``official``
    The corpus's own test set; valid is a stratified random share of train. Test
    speakers overlap train, so figures are optimistic; use them only to compare
    with published results.

Rows get ids ``s2i-<official split>-<corpus id>`` (unique even if ids restart per file) and
keep ``intent_class``, ``template``, ``official_split``, ``sample_rate`` and
``split_scheme`` as extra columns.

Example
-------
>>> paths = prepare_skit_s2i("data/skit-s2i", "manifests/skit", split="speaker")  # doctest: +SKIP
>>> sorted(paths)  # doctest: +SKIP
['test', 'train', 'valid']
"""

from __future__ import annotations

import os

from multitask.audio import MIN_SECONDS
from multitask.manifest import SPLITS
from multitask.prepare import common, skit_s2i_hub

NAME = "skit-s2i"
SCHEMES = ("speaker", "official")
LABEL_FILES = ("train.csv", "test.csv", "intent_info.csv")
HUB_UNPACKED = "hub_copy"  # in the output folder: the Hub copy, unpacked (skit_s2i_hub)
SPLIT_COLUMNS = ("id", "intent_class", "audio_path", "speaker_id")
NOTES = {
    "speaker": "speaker-disjoint train/valid/test from all rows: test speakers are unseen",
    "official": "official test set; its speakers also appear in train, so test figures are "
                "optimistic; valid is a random share of official train",
}


def read_intent_names(path) -> dict[str, str]:
    """``{intent_class: intent_name}`` from ``intent_info.csv``."""
    names: dict[str, str] = {}
    _, rows = common.read_label_csv(path, ("intent_class", "intent_name"))
    for row in rows:
        if not row["intent_name"]:
            raise common.CorpusError(f"{path}: line {row['_line']} has an empty intent_name")
        if row["intent_class"] in names:
            raise common.CorpusError(
                f"{path}: line {row['_line']} lists intent_class {row['intent_class']!r} twice"
            )
        names[row["intent_class"]] = row["intent_name"]
    if not names:
        raise common.CorpusError(f"{path}: lists no intents")
    return names


def read_split_file(corpus_dir, official_split: str, intents: dict[str, str], scheme: str):
    """Candidate rows of ``train.csv`` or ``test.csv``, labels checked against intents."""
    name = f"{official_split}.csv"
    path = os.path.join(corpus_dir, name)
    rows = []
    _, table = common.read_label_csv(path, SPLIT_COLUMNS)
    for raw in table:
        if raw["intent_class"] not in intents:
            raise common.CorpusError(
                f"{path}: line {raw['_line']} has intent_class {raw['intent_class']!r}, which "
                f"intent_info.csv does not list (it lists {', '.join(sorted(intents))})"
            )
        rows.append({
            "id": f"s2i-{official_split}-{raw['id']}",
            "wav": os.path.join(corpus_dir, raw["audio_path"]),
            "task": "intent",
            "intent": intents[raw["intent_class"]],
            "emotion": "",
            "speaker": raw["speaker_id"],
            "split": official_split,
            "sample_rate": "",
            "split_scheme": scheme,
            "intent_class": raw["intent_class"],
            "template": raw.get("template", ""),
            "official_split": official_split,
            "_where": f"{name} line {raw['_line']}",
        })
    return rows


def _hub_copy_hint(corpus_dir) -> str:
    data = os.path.join(corpus_dir, "data")
    if os.path.isdir(data) and any(name.endswith(".parquet") for name in os.listdir(data)):
        return (" It holds Parquet files, as the Hugging Face Hub's copy does, but not both"
                " data/train-*.parquet and data/test-*.parquet.")
    return ""


def prepare_skit_s2i(
    corpus_dir,
    out_dir,
    split: str = "speaker",
    seed: int = 1234,
    valid_fraction: float = 0.1,
    test_fraction: float | None = None,
    min_seconds: float = MIN_SECONDS,
    force: bool = False,
) -> dict[str, str]:
    """Write Skit-S2I manifests ``train.csv``, ``valid.csv``, ``test.csv`` into out_dir.

    Parameters
    ----------
    corpus_dir : str or os.PathLike
        Folder holding ``train.csv``, ``test.csv``, ``intent_info.csv`` and the audio,
        or the Hub's copy (``data/*.parquet`` and ``intent_info.csv``).
    out_dir : str or os.PathLike
        Where the manifests, ``rejected.csv`` and ``prepare_options.json`` go.
    split : {"speaker", "official"}
        Split scheme (see the module docstring).
    seed : int
        Seed of every random choice; the same seed gives byte-identical manifests.
    valid_fraction, test_fraction : float
        Shares of utterances. ``test_fraction`` (default 0.1) is for the speaker
        scheme; the official one keeps the corpus's test set, and refuses it.
    min_seconds : float
        Recordings shorter than this are rejected.
    force : bool
        Redo the work even if ``out_dir`` is up to date.

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.

    Raises
    ------
    CorpusError
        If a label file is missing, lacks a column or disagrees with intent_info.csv, or
        if a fraction is out of range (or given for the official test set).
    """
    if split not in SCHEMES:
        raise ValueError(f"split must be one of {', '.join(SCHEMES)}; got {split!r}")
    if split == "official" and test_fraction is not None:
        raise common.CorpusError(f"a test fraction ({test_fraction}) is for --split speaker; "
                                 "--split official keeps the corpus's own test.csv as test")
    if split == "speaker" and test_fraction is None:
        test_fraction = 0.1
    common.check_fractions(valid_fraction, test_fraction or 0.0)
    source_dir = corpus_dir = os.path.abspath(corpus_dir)
    if skit_s2i_hub.is_hub_copy(corpus_dir):
        common.check_out_dir(out_dir)
        corpus_dir = skit_s2i_hub.unpack_hub_copy(corpus_dir, os.path.join(out_dir, HUB_UNPACKED))
    for name in LABEL_FILES:
        if not os.path.isfile(os.path.join(corpus_dir, name)):
            raise common.CorpusError(
                f"{os.path.join(corpus_dir, name)}: not found; is {corpus_dir} a Skit-S2I "
                f"folder?{_hub_copy_hint(corpus_dir)}"
            )
    options = {"corpus_dir": source_dir, "split": split, "seed": seed,
               "valid_fraction": valid_fraction, "min_seconds": min_seconds,
               "test_fraction": test_fraction}
    inputs = {name: common.file_digest(os.path.join(corpus_dir, name)) for name in LABEL_FILES}
    record = common.make_record(NAME, options, inputs, SPLITS)

    def build():
        intents = read_intent_names(os.path.join(corpus_dir, "intent_info.csv"))
        rows = [row for official in ("train", "test")
                for row in read_split_file(corpus_dir, official, intents, split)]
        rows, rejected = common.drop_duplicate_ids(rows, NAME)
        if split == "speaker":
            common.assign_speaker_splits(rows, valid_fraction, test_fraction, seed)
        else:
            train = [row for row in rows if row["official_split"] == "train"]
            common.assign_random_splits(train, valid_fraction, 0.0, seed,
                                        key=lambda row: row["intent"])
        return rows, rejected, {"split_scheme": split, "speaker_disjoint": split == "speaker",
                                "note": NOTES[split]}

    return common.run_preparer(out_dir, record, build, min_seconds=min_seconds, force=force)


def add_parser(subparsers) -> None:
    """Register ``prepare-skit-s2i`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "prepare-skit-s2i",
        help="Skit-S2I corpus folder -> train/valid/test manifests",
        description="Write train/valid/test manifests for the Skit-S2I intent corpus.",
    )
    parser.add_argument("--corpus", required=True,
                        help="folder with train.csv, test.csv, intent_info.csv and the wavs "
                             "(the zip), or the Hugging Face Hub's Parquet copy")
    parser.add_argument("--split", choices=SCHEMES, default="speaker",
                        help="speaker: speaker-disjoint splits (honest); official: the "
                             "corpus's test set, whose speakers overlap train (optimistic)")
    common.add_common_arguments(parser, test_fraction_help="share of utterances for test "
                                "(--split speaker only; default 0.1)")
    parser.set_defaults(func=_run, test_fraction=None)  # None: 0.1, or refused by official


def _run(args) -> None:
    paths = prepare_skit_s2i(args.corpus, args.out, split=args.split, seed=args.seed,
                             valid_fraction=args.valid_fraction,
                             test_fraction=args.test_fraction,
                             min_seconds=args.min_seconds, force=args.force)
    common.print_outputs(paths)
