"""Command-line handling shared by the recipes: SpeechBrain's conventions, Accelerate's ownership.

Recipes take ``HPARAMS.yaml --key=value ...`` exactly as SpeechBrain recipes do. The
run options SpeechBrain's ``Brain`` would read (``--device``, ``--precision``,
``--distributed_launch``, ...) are refused rather than silently ignored: here
Accelerate owns device, data parallelism and precision, set with
``accelerate launch`` or its config file.
"""

from __future__ import annotations

import os

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml.error import YAMLError

# Brain run options that have an Accelerate equivalent (and what to use instead).
ACCELERATE_OWNS = {
    "device": "accelerate launch --cpu, or CUDA_VISIBLE_DEVICES",
    "precision": "accelerate launch --mixed_precision bf16|fp16|no",
    "eval_precision": "accelerate launch --mixed_precision",
    "auto_mix_prec": "accelerate launch --mixed_precision fp16",
    "bfloat16_mix_prec": "accelerate launch --mixed_precision bf16",
    "distributed_launch": "accelerate launch --multi_gpu --num_processes N",
    "distributed_backend": "the accelerate config file",
    "data_parallel_backend": "accelerate launch --multi_gpu",
}
# Keys an earlier version read, and what replaced them: a config that still sets one
# is refused, as an unknown key would otherwise be silently ignored.
RENAMED_KEYS = {
    "augment_tasks": "task_augmentation: {task: augmentation}, which augments only "
                     "the rows labelled for that task",
}
# Brain run options that name one of our hparams: SpeechBrain's parser captures them,
# so they are handed on as YAML overrides (run option -> hparam key).
HPARAM_RUN_OPTIONS = {
    "max_grad_norm": "max_grad_norm",
    "nonfinite_patience": "nonfinite_patience",
    "grad_accumulation_factor": "grad_accumulation",
}


def parse_arguments(argv: list[str]) -> tuple[str, str]:
    """``(hparams_file, overrides)`` from SpeechBrain-style recipe arguments.

    Example
    -------
    >>> parse_arguments(["hparams/train.yaml", "--seed=7"])
    ('hparams/train.yaml', 'seed: 7')
    >>> parse_arguments(["hparams/train.yaml", "--max_grad_norm=1.5"])
    ('hparams/train.yaml', 'max_grad_norm: 1.5')
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    given = set(run_opts.get("overridden_args", ()))
    refused = sorted(given & set(ACCELERATE_OWNS))
    if refused:
        hints = "; ".join(f"--{name}: use {ACCELERATE_OWNS[name]}" for name in refused)
        raise SystemExit(f"Accelerate owns device, precision and parallelism here. {hints}")
    forwarded = [f"{HPARAM_RUN_OPTIONS[name]}: {run_opts[name]}"
                 for name in sorted(given & set(HPARAM_RUN_OPTIONS))]
    return hparams_file, "\n".join(line for line in [overrides, *forwarded] if line)


def load_hparams(hparams_file: str, overrides: str | dict = "") -> dict:
    """Load a HyperPyYAML file with overrides, naming the file in any error.

    A command-line override may only set a key the file defines, as in HyperPyYAML; a
    mistyped one is refused in a line that names it, rather than in a traceback.
    """
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)
    except FileNotFoundError as err:
        if err.filename and os.path.abspath(err.filename) != os.path.abspath(hparams_file):
            raise SystemExit(f"{hparams_file}: loading it needs {err.filename} (a file it "
                             "includes or names), which is not found") from None
        raise SystemExit(f"{hparams_file}: hparams file not found") from None
    except ValueError as err:
        raise SystemExit(f"{hparams_file}: {err}") from None
    except YAMLError as err:
        raise SystemExit(f"{hparams_file} or its overrides: not valid YAML: {err}") from None
    except KeyError as err:
        unknown = _unknown_override(err)
        if unknown is None:
            raise
        raise SystemExit(
            f"{hparams_file}: no key `{unknown}` to override; a command-line override can "
            "only set a key the file defines (to add one, copy the file and add it there)"
        ) from None
    stale = sorted(set(hparams) & set(RENAMED_KEYS))
    if stale:
        raise SystemExit(f"{hparams_file}: " + "; ".join(
            f"`{key}` is no longer read; use {RENAMED_KEYS[key]}" for key in stale))
    return hparams


def _unknown_override(err: KeyError) -> str | None:
    """The key named by HyperPyYAML's refusal of an override, or None for another KeyError."""
    message = err.args[0] if err.args and isinstance(err.args[0], str) else ""
    prefix = "Override '"
    if not message.startswith(prefix) or "' not found" not in message:
        return None
    return message[len(prefix):message.index("' not found")]
