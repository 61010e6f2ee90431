"""Which ``hyperparams.yaml`` files :class:`MultitaskClassifier` builds without being told to trust them.

A model's ``hyperparams.yaml`` is code: HyperPyYAML's ``!new:``, ``!name:``,
``!apply:``, ``!applyref:`` and ``!module:`` tags import and call whatever they
name, ``!include:`` reads another file, and the YAML loader HyperPyYAML uses
(PyYAML's full ``yaml.Loader``) also runs ``!!python/object/apply:`` and friends.
:func:`check_hparams` reads the file without constructing anything and refuses
every tag that could run code unless its target is on :data:`ALLOWED_TARGETS`:
the few callables an exported model folder needs (see ``multitask.export``).

Targets are matched exactly, never by prefix: HyperPyYAML resolves a name
attribute by attribute (``pydoc.locate``), so ``multitask.inference.os.system``
is ``os.system``.

The check runs twice, because HyperPyYAML reads the file in two passes. The text
as written is checked first: the first pass runs ``!applyref:`` and ``!include:``
itself. Only then is the first pass replayed (``!ref`` and ``!copy`` resolved,
nothing constructed) and its output checked as the second pass will read it, so
tags produced by the first pass (``!ref <a.b>`` becomes ``!apply:getattr``) or
hidden in a string that the second pass reads as a tuple are seen too.

Example
-------
>>> untrusted_targets("encoder: !apply:os.system ['touch pwned']")
['!apply:os.system (line 1)']
>>> untrusted_targets("heads: !new:torch.nn.ModuleDict\\n    modules: {}")
[]
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re

from speechbrain.utils.fetching import FetchConfig, LocalStrategy, fetch

from .source import HUB, source_kind

# Exactly what `multitask export` writes into hyperparams.yaml (multitask.export.HPARAMS_TEMPLATE).
ALLOWED_TARGETS = frozenset({
    "multitask.inference.encoder_from_config",
    "multitask.inference.TaskHead",
    "multitask.inference.ExtendedHead",
    "multitask.inference.ModelFolderPretrainer",
    "torch.nn.ModuleDict",
    "speechbrain.dataio.encoder.CategoricalEncoder",
    "speechbrain.dataio.encoder.CategoricalEncoder.load",
    "safetensors.torch.load_model",
})

# HyperPyYAML tags whose suffix is imported (and, except for !module:, called).
IMPORTING_TAGS = ("!new:", "!name:", "!apply:", "!applyref:", "!module:")
# Tags that only move data around.
DATA_TAGS = frozenset({"!ref", "!copy", "!tuple", "!PLACEHOLDER"})
# The YAML core schema: what yaml.SafeLoader constructs (no Python objects).
_CORE = "tag:yaml.org,2002:"
CORE_TAGS = frozenset(_CORE + name for name in (
    "null", "bool", "int", "float", "str", "binary", "timestamp", "seq", "map", "omap",
    "pairs", "set", "merge", "value"))
# HyperPyYAML's implicit resolver: a plain scalar like `(1, 2)` becomes a !tuple,
# whose text is read again by yaml.Loader (tags inside included).
_TUPLE_TEXT = re.compile(r"^\(.*\)$", re.DOTALL)
_REFERENCE = re.compile(r"<[^>]*>")

TRUST_FLAG = "trust_remote_code=True"
_COMMIT = re.compile(r"[0-9a-f]{40}")


class UntrustedHparamsError(ValueError):
    """A ``hyperparams.yaml`` calls code outside :data:`ALLOWED_TARGETS`; nothing of it was run."""


def check_hparams(path, source=None, overrides=None) -> None:
    """Refuse a ``hyperparams.yaml`` that would run code outside :data:`ALLOWED_TARGETS`.

    Nothing in the file is imported, called or constructed.

    Parameters
    ----------
    path : str or os.PathLike
        The fetched file.
    source : str, optional
        Where it came from (a folder or a Hub repo id), named in the error.
    overrides : dict or str, optional
        The overrides the file will be loaded with (they are part of what is built).

    Raises
    ------
    UntrustedHparamsError
        Naming the file, each refused tag and target, and the trust flag.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "hyperparams.yaml")
    >>> with open(path, "w") as fout:
    ...     _ = fout.write("steal: !name:os.system\\nsafe: !new:torch.nn.ModuleDict\\n")
    >>> check_hparams(path, source="org/name")
    Traceback (most recent call last):
        ...
    multitask.trust.UntrustedHparamsError: org/name/hyperparams.yaml runs code that is not on multitask's allow-list:
      !name:os.system (line 1)
    Nothing in it was run. If you trust this model, load it with MultitaskClassifier.from_hparams(..., trust_remote_code=True), pinned to the revision you reviewed.
    """
    with open(path, encoding="utf-8") as fin:
        text = fin.read()
    name = os.path.basename(os.fspath(path))
    shown = f"{os.fspath(source)}/{name}" if source is not None else os.fspath(path)
    refused = untrusted_targets(text, overrides, shown)
    if refused:
        raise UntrustedHparamsError(
            f"{shown} runs code that is not on multitask's allow-list:\n"
            + "".join(f"  {item}\n" for item in refused)
            + "Nothing in it was run. If you trust this model, load it with "
            f"MultitaskClassifier.from_hparams(..., {TRUST_FLAG}), "
            "pinned to the revision you reviewed."
        )


def fetch_and_check(source: str, kwargs: dict) -> dict:
    """Fetch ``hyperparams.yaml`` as ``Pretrained.from_hparams`` will, check it, and
    return the ``from_hparams`` keyword arguments that load exactly the checked file.

    Same file name, savedir, local strategy and fetch settings (revision, token,
    cache, network) as SpeechBrain's own fetch. From the Hub, the file is read from
    the cache folder of the commit it was downloaded from, and the model is then
    loaded pinned to that commit: a push between the check and the load (or a
    moving branch) cannot swap in another file, and the weights come from the
    same commit as the checked ``hyperparams.yaml``.

    Raises :class:`UntrustedHparamsError` as :func:`check_hparams` does.
    """
    hparams_file = kwargs.get("hparams_file", "hyperparams.yaml")
    fetch_config = kwargs.get("fetch_config") or FetchConfig()
    if source_kind(source) == HUB:
        path = fetch(hparams_file, source, fetch_config=fetch_config)  # no savedir: the cache's copy
        snapshot = path.parents[len(os.path.normpath(hparams_file).split(os.sep)) - 1]
        if snapshot.parent.name == "snapshots" and _COMMIT.fullmatch(snapshot.name):
            kwargs = {**kwargs, "fetch_config": dataclasses.replace(
                fetch_config, revision=snapshot.name, allow_updates=True)}
    else:
        path = fetch(hparams_file, source, savedir=kwargs.get("savedir"),
                     local_strategy=kwargs.get("local_strategy", LocalStrategy.SYMLINK),
                     fetch_config=fetch_config)
    check_hparams(path, source=source, overrides=kwargs.get("overrides"))
    return kwargs


@contextlib.contextmanager
def weights_only_loads():
    """Within the block, ``torch.load`` never unpickles arbitrary objects.

    SpeechBrain's default weight hook calls ``torch.load(path)`` without
    ``weights_only``: safe by default since torch 2.6, but the environment variable
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns it into plain unpickling. Here
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` wins, and a pickled payload is an
    ``UnpicklingError``. (Exported models load through safetensors, not torch.load.)

    Example
    -------
    >>> import tempfile, torch
    >>> class Payload:
    ...     def __reduce__(self):
    ...         return (print, ("unpickled!",))
    >>> path = os.path.join(tempfile.mkdtemp(), "weights.ckpt")
    >>> torch.save({"w": Payload()}, path)
    >>> with weights_only_loads():
    ...     torch.load(path)
    Traceback (most recent call last):
        ...
    _pickle.UnpicklingError: Weights only load failed...
    """
    saved = {name: os.environ.get(name) for name in
             ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def untrusted_targets(text: str, overrides=None, shown: str = "hyperparams.yaml") -> list[str]:
    """Every tag in ``text`` that would run code outside :data:`ALLOWED_TARGETS`.

    Each item is ``<tag><target> (line N)``; an empty list means the file only
    builds allowed objects. Text that is not valid YAML raises
    :class:`UntrustedHparamsError` (it cannot be checked).

    Example
    -------
    >>> untrusted_targets('''
    ... ok: !new:torch.nn.ModuleDict
    ... shell: !!python/object/apply:os.system ["id"]
    ... lookalike: !apply:multitask.inference.os.system ["id"]
    ... pulled: !include:other.yaml
    ... ''')
    ['!!python/object/apply:os.system (line 3)', '!apply:multitask.inference.os.system (line 4)', '!include:other.yaml (line 5: reads another file)']
    >>> untrusted_targets("b: !ref <a.__class__>\\na: 1")
    ['!apply:getattr (line 1: !ref to an attribute)']
    >>> untrusted_targets("t: (!!python/name:os.system , 1)")
    ['!!python/name:os.system (line 1, inside a tuple)']
    """
    import ruamel.yaml
    import yaml

    refused: dict[str, None] = {}
    try:
        written = ruamel.yaml.YAML().compose(io.StringIO(text))
    except ruamel.yaml.YAMLError as err:
        raise UntrustedHparamsError(f"{shown} is not valid YAML, so it cannot be checked: {err}") from err
    _check_tree(written, refused, yaml, first_pass=True)
    if refused:
        # !include: and !applyref: run while the first pass is replayed: stop here.
        return sorted(refused, key=_line_of)

    from hyperpyyaml.core import resolve_references

    resolved = resolve_references(io.StringIO(text), overrides).getvalue()
    try:
        _check_tree(yaml.compose(resolved, Loader=yaml.SafeLoader), refused, yaml, first_pass=False)
    except yaml.YAMLError as err:
        raise UntrustedHparamsError(f"{shown} cannot be checked: {err}") from err
    return sorted(refused, key=_line_of)


def _check_tree(root, refused: dict, yaml, first_pass: bool) -> None:
    """Add to ``refused`` every untrusted tag of a composed YAML node graph (keys included)."""
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:  # anchors and aliases share nodes
            continue
        seen.add(id(node))
        tag = str(getattr(node.tag, "value", node.tag) or "")
        where = f"line {node.start_mark.line + 1}" if first_pass else "after resolving !ref"
        problem = _tag_problem(tag)
        if problem:
            shown, note = problem
            refused.setdefault(f"{shown} ({where}{note})", None)
        value = node.value
        if isinstance(value, str):
            if tag in ("!ref", "!copy") and any("." in ref for ref in _REFERENCE.findall(value)):
                # HyperPyYAML turns `<key.attr>` into `!apply:getattr [<key>, attr]`.
                refused.setdefault(f"!apply:getattr ({where}: {tag} to an attribute)", None)
            else:
                _check_tuple_text(tag, value, refused, yaml, where)
        elif isinstance(value, list):
            for item in value:
                stack.extend(item if isinstance(item, tuple) else (item,))


def _check_tuple_text(tag: str, value: str, refused: dict, yaml, where: str) -> None:
    """A scalar read as a tuple is parsed again, as YAML, by yaml.Loader: check that text too."""
    text = value.strip()
    if not (tag in ("!tuple", _CORE + "str") and _TUPLE_TEXT.match(text)):
        return
    try:
        node = yaml.compose("[" + text[1:-1] + "]", Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # yaml.Loader cannot read it either: the load fails before building anything
    found: dict[str, None] = {}
    _check_tree(node, found, yaml, first_pass=False)
    for item in found:
        refused.setdefault(f"{item.split(' (', 1)[0]} ({where}, inside a tuple)", None)


def _tag_problem(tag: str) -> tuple[str, str] | None:
    """``None`` for a tag that runs no code (or only allowed code), else ``(tag as written, note)``."""
    if not tag or tag in CORE_TAGS or tag in DATA_TAGS:
        return None
    for prefix in IMPORTING_TAGS:
        if tag.startswith(prefix):
            return None if tag[len(prefix):] in ALLOWED_TARGETS else (tag, "")
    if tag.startswith("!include:"):
        return tag, ": reads another file"
    # Any other tag (!!python/object/apply:, !!python/name:, a typo...) is not ours.
    return ("!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag), ""


def _line_of(item: str) -> int:
    match = re.search(r"\(line (\d+)", item)
    return int(match.group(1)) if match else 1 << 30
