"""Model folders on the Hugging Face Hub, and the model commands of the command line.

    multitask export --from results/train/1986 --out exported/     # best checkpoint -> folder
    multitask push --model exported/ --repo-id org/name            # folder -> Hub repo
    multitask predict --model org/name --json call1.wav call2.wav  # folder or repo -> labels

:func:`push_model` uploads the files of an export (:mod:`multitask.export`) and
nothing else; a failed push ends in one line that says why (no token, token refused,
no network). ``predict`` loads a folder or a repo id with
:class:`multitask.inference.MultitaskClassifier` and writes one line per file.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

from .card import PLACEHOLDER_CALIBRATED_REPO_ID, PLACEHOLDER_REPO_ID
from .export import CARD_FILE, ExportError, export_file_names, export_model


class HubError(RuntimeError):
    """A push that could not happen; the message is one line meant for the user."""


def upload_allow_list(model_dir) -> list[str]:
    """The files of an export folder that are uploaded: the export's own, nothing else.

    Raises :class:`HubError` if the folder is not a complete export.
    """
    folder = Path(model_dir)
    try:
        allowed = export_file_names(folder)
    except ExportError as err:
        raise HubError(str(err)) from None
    # An allowed name that links elsewhere (label_encoder_intent.txt -> ~/.netrc) would
    # upload the file it points to; exports never contain links.
    links = [name for name in allowed if (folder / name).is_symlink()]
    if links:
        raise HubError(f"{folder}: refusing to upload symbolic links ({', '.join(links)}); "
                       "copy the real files in or export again")
    return allowed


def card_for_repo(card: str, repo_id: str) -> str:
    """An export's model card as pushed to ``repo_id``: a card exported (or calibrated)
    without ``--repo-id`` names a placeholder repo (in its usage examples, and its name as
    the title and model-index name), which the pushed copy replaces, in one pass; any
    other card is pushed as it is.

    >>> card_for_repo('# your-model: from_hparams(source="your-org/your-model")', "bank/your-model-2")
    '# your-model-2: from_hparams(source="bank/your-model-2")'
    >>> card_for_repo("# your-model-large", "bank/ivr")  # no placeholder repo id: as it is
    '# your-model-large'
    >>> card_for_repo('source="your-org/your-model-2"', "bank/ivr")  # a real id: as it is
    'source="your-org/your-model-2"'
    >>> card = "---\\nmodel-index:\\n- name: your-model\\n---\\n# your-model\\nyour-org/your-model"
    >>> card_for_repo(card, "bank/true")  # in the front matter, a YAML string
    '---\\nmodel-index:\\n- name: "true"\\n---\\n# true\\nbank/true'
    """
    for placeholder in (PLACEHOLDER_CALIBRATED_REPO_ID, PLACEHOLDER_REPO_ID):
        if placeholder in card:
            break
    else:
        return card
    name = placeholder.split("/")[-1]
    pattern = re.compile(rf"(?<![\w/.-])(?:{re.escape(placeholder)}|{re.escape(name)})(?![\w.-])")
    front_matter_end = card.find("\n---", 3) if card.startswith("---") else -1

    def replacement(found: re.Match) -> str:
        new = repo_id if "/" in found.group() else repo_id.split("/")[-1]
        line_end = card.find("\n", found.end())
        whole_value = card[found.end():line_end if line_end >= 0 else len(card)] == ""
        if found.start() < front_matter_end and whole_value:
            # Quoted: a repo named true, 1.0 or 1e3 must stay a name for every YAML reader.
            return json.dumps(new)
        return new

    return pattern.sub(replacement, card)


def upload_operations(model_dir, allow: list[str], repo_id: str) -> list:
    """One Hub commit operation per ``allow`` file of ``model_dir``: the files as they
    are, but a card naming a placeholder repo as :func:`card_for_repo` makes it for
    ``repo_id`` (given as bytes, so the export folder is never changed and nothing is
    staged or copied)."""
    from huggingface_hub import CommitOperationAdd

    folder = Path(model_dir)
    card = (folder / CARD_FILE).read_text(encoding="utf-8")
    pushed = card_for_repo(card, repo_id)
    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=(
        pushed.encode("utf-8") if name == CARD_FILE and pushed != card else str(folder / name)))
        for name in allow]


def push_model(model_dir, repo_id: str, private: bool = False, revision: str | None = None,
               commit_message: str | None = None, token: str | None = None,
               endpoint: str | None = None):
    """Upload an export folder to a Hub model repo; returns the commit info.

    Parameters
    ----------
    model_dir : str or Path
        A folder written by :func:`export_model`. Only its export files are uploaded
        (see :func:`upload_allow_list`): tokens, caches, logs or data that happen to be
        in the folder stay local. A card exported without ``--repo-id`` is uploaded
        naming ``repo_id`` (:func:`card_for_repo`).
    repo_id : str
        ``org/name``; created if missing (visibility of an existing repo is unchanged).
    private : bool
        Create the repo private.
    revision : str, optional
        Branch to push to; created from ``main`` if it does not exist.
    commit_message : str, optional
    token : str, optional
        Defaults to ``HF_TOKEN`` or the token saved by ``hf auth login``.
    endpoint : str, optional
        Hub URL; defaults to ``HF_ENDPOINT`` (read by huggingface_hub at import).

    Raises
    ------
    HubError
        With a one-line message: no token, token refused (401/403), no network, or any
        other Hub error.
    """
    allow = upload_allow_list(model_dir)
    import huggingface_hub as hf

    token = token or hf.get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login` "
                       "(a token with write access)")
    api = hf.HfApi(endpoint=endpoint, token=token)
    try:
        # The full id (a bare name is the token owner's repo), for the pushed card.
        repo_id = getattr(api.create_repo(repo_id, private=private, exist_ok=True,
                                          repo_type="model"), "repo_id", None) or repo_id
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        # Files the repo already holds unchanged are left out of the commit by
        # huggingface_hub, so a re-push of the same export adds no commit.
        return api.create_commit(
            repo_id=repo_id,
            operations=upload_operations(model_dir, allow, repo_id),
            revision=revision,
            commit_message=commit_message or f"Upload model ({Path(model_dir).name})",
        )
    except Exception as err:
        raise HubError(_hub_error_message(err, repo_id, api.endpoint)) from err


def _hub_error_message(err: Exception, repo_id: str, endpoint: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: unset it to push"
    if isinstance(err, HfHubHTTPError):
        status = getattr(err.response, "status_code", None)
        if status == 401:
            return f"the Hub refused the token (401 Unauthorized) for {repo_id}: check HF_TOKEN or `hf auth login`"
        if status == 403:
            return f"the token may not write to {repo_id} (403 Forbidden): use a token with write access to it"
        return f"push to {repo_id} failed (HTTP {status}): {_first_line(err)}"
    if _is_network_error(err):
        return f"cannot reach the Hub at {endpoint} ({type(err).__name__}): check the network or HF_ENDPOINT"
    return f"push to {repo_id} failed: {type(err).__name__}: {_first_line(err)}"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_network_error(err: Exception) -> bool:
    # huggingface_hub's HTTP client (httpx, or requests in older versions) has its own
    # exception classes; match them by their well-known names, not by import.
    names = {cls.__name__ for cls in type(err).__mro__}
    return isinstance(err, (ConnectionError, TimeoutError)) or bool(
        names & {"TransportError", "ConnectError", "ConnectionError", "TimeoutException", "Timeout"})


# --------------------------------------------------------------------------
# Command line: export, push, predict
# --------------------------------------------------------------------------


def add_parsers(subparsers) -> None:
    """Register ``export``, ``push`` and ``predict`` on an argparse subparsers object."""
    from .cli import add_device_option, positive_int, repo_id

    export = subparsers.add_parser(
        "export", help="Best checkpoint of a training run -> model folder (Hub-ready)",
        description="Write a model folder that MultitaskClassifier.from_hparams and "
                    "foreign_class load: weights, label encoders, hyperparams.yaml, "
                    "custom_interface.py and a model card with the checkpoint's results.")
    export.add_argument("--from", dest="run", required=True, metavar="TRAIN_OUTPUT_FOLDER",
                        help="the training recipe's output_folder")
    export.add_argument("--out", required=True, help="model folder to write")
    export.add_argument("--checkpoint", help="checkpoint folder name (default: best by best_metric)")
    export.add_argument("--repo-id", type=repo_id, help="repo id used in the card's usage examples")
    export.add_argument("--model-name", help="model name in the card (default: from --repo-id)")
    export.add_argument("--dataset", dest="datasets", action="append", metavar="ID",
                        help="Hub dataset id for the card (repeatable; default: prepared corpora)")
    export.add_argument("--license", help="the card's license (default: the run's "
                        "model_license, a fine-tuning's parent's, else apache-2.0)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip loading the export back and comparing with the checkpoint "
                        "(its files are still checked for paths of this machine)")
    export.set_defaults(func=_run_export)

    push = subparsers.add_parser(
        "push", help="Upload an exported model folder to a Hugging Face Hub repo",
        description="Create the repo if needed and upload the export's files only. "
                    "The token comes from HF_TOKEN or `hf auth login`.")
    push.add_argument("--model", required=True, metavar="DIR", help="folder written by export")
    push.add_argument("--repo-id", type=repo_id, required=True, metavar="ORG/NAME")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", metavar="BRANCH", help="branch to push to (created if needed)")
    push.add_argument("--commit-message")
    push.set_defaults(func=_run_push)

    predict = subparsers.add_parser(
        "predict", help="Intent and emotion of audio files, one line per file",
        description="Classify audio files with an exported model (folder or Hub repo id). "
                    "A file that cannot be read gets an error line; the others go on. "
                    "Exit status 1 only if every file failed, 2 if the model cannot be "
                    "loaded.")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--model", required=True, metavar="SOURCE", help="folder or repo id")
    predict.add_argument("--revision", help="Hub branch, tag or commit")
    output = predict.add_mutually_exclusive_group()
    output.add_argument("--json", dest="format", action="store_const", const="json",
                        help="JSON lines (default)")
    output.add_argument("--csv", dest="format", action="store_const", const="csv")
    predict.add_argument("--batch-size", type=positive_int, default=1,  # inference's default
                         help="files per forward pass (default 1: each file alone, as "
                              "classify_file; more is faster, but a group-norm encoder's "
                              "answers then depend on the padding)")
    predict.add_argument("--top-k", type=positive_int, default=3,
                         help="labels listed per task, most probable first (default 3)")
    add_device_option(predict)
    predict.set_defaults(func=_run_predict, format="json")


def _run_export(args) -> int:
    try:
        out = export_model(args.run, args.out, checkpoint=args.checkpoint, repo_id=args.repo_id,
                           model_name=args.model_name, datasets=args.datasets,
                           license=args.license, overwrite=args.overwrite, verify=args.verify)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _run_push(args) -> int:
    try:
        info = push_model(args.model, args.repo_id, private=args.private, revision=args.revision,
                          commit_message=args.commit_message)
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(getattr(info, "commit_url", None) or info)
    return 0


def _run_predict(args) -> int:
    from .inference import MultitaskClassifier, load_failure

    try:
        run_opts = {"device": args.device} if args.device else None
        model = MultitaskClassifier.from_hparams(
            source=args.model, revision=args.revision, run_opts=run_opts)
    except Exception as err:  # one line: the folder or file, or the source and the error
        print(f"error: {load_failure(args.model, err)}", file=sys.stderr)
        return 2
    results = model.classify_files(args.files, batch_size=args.batch_size, top_k=args.top_k)
    write_predictions(results, model.tasks, args.format, sys.stdout)
    failed = sum("error" in r for r in results)
    if failed:
        print(f"{failed} of {len(results)} file(s) could not be classified", file=sys.stderr)
    return 1 if failed == len(results) else 0


def prediction_row(result: dict, tasks) -> dict:
    """A flat record for one file: ``file, <task>, <task>_prob, <task>_top_k..., error``.

    Example
    -------
    >>> result = {"file": "a.wav", "intent": {"label": "lost", "prob": 0.9123456,
    ...           "top_k": [["lost", 0.9123456], ["block", 0.05]], "probs": {}}}
    >>> prediction_row(result, ["intent"])
    {'file': 'a.wav', 'intent': 'lost', 'intent_prob': 0.912346, 'intent_top_k': [['lost', 0.912346], ['block', 0.05]]}
    >>> prediction_row({"file": "b.wav", "error": "b.wav: file not found"}, ["intent"])
    {'file': 'b.wav', 'error': 'b.wav: file not found'}
    """
    row = {"file": result["file"]}
    if "error" in result:
        row["error"] = result["error"]
        return row
    for task in tasks:
        row[task] = result[task]["label"]
        row[f"{task}_prob"] = round(result[task]["prob"], 6)
        row[f"{task}_top_k"] = [[label, round(p, 6)] for label, p in result[task]["top_k"]]
    for key in ("windows", "silent_windows"):  # a long file, classified in windows
        if key in result:
            row[key] = result[key]
    return row


def write_predictions(results, tasks, fmt: str, out) -> None:
    """JSON lines or CSV, one line per file, in input order."""
    if fmt == "json":
        for result in results:
            out.write(json.dumps(prediction_row(result, tasks)) + "\n")
        return
    columns = ["file", *[f"{t}{s}" for t in tasks for s in ("", "_prob", "_top_k")],
               "windows", "silent_windows", "error"]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for result in results:
        row = prediction_row(result, tasks)
        for task in tasks:
            if f"{task}_top_k" in row:
                row[f"{task}_top_k"] = ";".join(f"{label}:{p}" for label, p in row[f"{task}_top_k"])
        writer.writerow(row)
