"""Round trips through the offline Hub stand-in (tests/hub_server.py).

These tests pin down that the stand-in answers huggingface_hub 2.4 and SpeechBrain
the way the real Hub would for what the product does: create a repo, push a folder
(also to a new branch), download every file byte for byte, pin an old commit, read
the cache offline, and load a model with ``Pretrained.from_hparams``.

Why client code runs in subprocesses: huggingface_hub copies ``HF_ENDPOINT``,
``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` into module constants when it is
imported, and ``huggingface_hub.create_repo``/``upload_folder``/``model_info`` are
methods of an ``HfApi`` created at that moment. Patching
``huggingface_hub.constants.ENDPOINT`` afterwards redirects ``hf_hub_download``
but not those helpers, which keep calling https://huggingface.co (checked on 2.4.0).
A fresh interpreter with ``hub.client_env(...)`` mirrors a user exactly.
In-process code can still use the stand-in by passing the endpoint explicitly, see
``test_in_process_client_with_explicit_endpoint``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest
from hub_server import HubServer, git_blob_sha, running_hub, write_folder

TOKEN = "hf_test"
REPO = "org/name"

FIRST_FILES = {
    "hyperparams.yaml": b"sample_rate: 16000\nn_intents: 3\n",
    "notes.txt": b"first version\n",
    "weights.bin": bytes(range(256)) * 4 + b"\x00\xff",
    # A model card makes huggingface_hub call /api/validate-yaml first.
    "README.md": b"---\nlicense: apache-2.0\n---\n# Test model\n",
}
SECOND_NOTES = b"second version, longer than the first\n"

# Prepended to every client script; each script then prints its result as one JSON line.
CLIENT_PRELUDE = """
import json, sys

def error_of(call):
    try:
        call()
    except Exception as err:
        response = getattr(err, "response", None)
        return {
            "type": type(err).__name__,
            "status": getattr(response, "status_code", None),
            "message": str(err),
        }
    return None

def read(path):
    with open(path, "rb") as handle:
        return handle.read().hex()
"""


@pytest.fixture
def hub():
    with running_hub(token=TOKEN) as server:
        yield server


def run_client(code: str, env: dict[str, str], *args: str) -> dict:
    """Run `code` in a fresh interpreter and return the JSON it prints last."""
    script = CLIENT_PRELUDE + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"client failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_all_served(hub: HubServer) -> None:
    """The client only used routes the stand-in implements (an unknown one would 404)."""
    unserved = [f"{r.method} {r.path}" for r in hub.request_log if r.route is None]
    assert not unserved, f"client used routes the stand-in does not serve: {unserved}"


def http(method: str, url: str, token: str | None = None, body: bytes | None = None, **headers):
    """Plain urllib call (no proxies), returning (status, headers, body) even for errors."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


# -- the server on its own (plain HTTP, no huggingface_hub) -----------------


def test_resolve_serves_snapshots_with_hub_headers(hub: HubServer):
    repo = hub.add_repo(REPO, {"a.txt": b"old"})
    first = repo.head().sha
    hub.add_repo("org/other")  # unrelated repo, must not interfere
    hub.commit(REPO, {"a.txt": b"new!"})

    status, headers, body = http("HEAD", f"{hub.endpoint}/{REPO}/resolve/main/a.txt")
    assert status == 200 and body == b""
    assert headers["ETag"] == f'"{git_blob_sha(b"new!")}"'
    assert headers["X-Repo-Commit"] == repo.head().sha
    assert headers["Content-Length"] == "4"

    assert http("GET", f"{hub.endpoint}/{REPO}/resolve/{first}/a.txt")[2] == b"old"
    status, headers, body = http(
        "GET", f"{hub.endpoint}/{REPO}/resolve/main/a.txt", Range="bytes=1-"
    )
    assert (status, body, headers["Content-Range"]) == (206, b"ew!", "bytes 1-3/4")

    status, headers, _ = http("GET", f"{hub.endpoint}/{REPO}/resolve/main/missing.txt")
    assert (status, headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert headers["X-Repo-Commit"] == repo.head().sha
    status, headers, _ = http("GET", f"{hub.endpoint}/{REPO}/resolve/nope/a.txt")
    assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")
    status, headers, _ = http("GET", f"{hub.endpoint}/org/absent/resolve/main/a.txt")
    assert (status, headers["X-Error-Code"]) == (401, "RepoNotFound")  # anonymous, like the Hub


def test_writes_need_the_configured_token(hub: HubServer):
    url = f"{hub.endpoint}/api/repos/create"
    body = json.dumps({"name": "name", "organization": "org"}).encode()
    json_header = {"Content-Type": "application/json"}
    assert http("POST", url, body=body, **json_header)[0] == 401
    assert http("POST", url, token="hf_wrong", body=body, **json_header)[0] == 401
    assert http("POST", url, token=TOKEN, body=body, **json_header)[0] == 200
    assert http("POST", url, token=TOKEN, body=body, **json_header)[0] == 409
    assert http("GET", f"{hub.endpoint}/api/whoami-v2")[0] == 401
    # Unknown routes are answered (404) and logged, so a test can spot what is missing.
    assert http("GET", f"{hub.endpoint}/api/not-a-route")[0] == 404
    assert hub.request_log[-1].route is None


def test_server_stops_at_the_end_of_the_context():
    with running_hub() as server:
        endpoint = server.endpoint
        assert http("GET", f"{endpoint}/api/models/org/none")[0] == 401
    with pytest.raises(urllib.error.URLError):
        http("GET", f"{endpoint}/api/models/org/none")


# -- huggingface_hub against the server (subprocesses) -----------------------


def test_push_needs_a_valid_token(hub: HubServer, tmp_path):
    folder = write_folder(tmp_path / "model", FIRST_FILES)
    hub.add_repo("org/existing", {"keep.txt": b"keep"})
    hub.add_repo("org/secret", {"secret.txt": b"s3cret"}, private=True)
    result = run_client(
        """
        from huggingface_hub import create_repo, hf_hub_download, upload_folder, whoami
        folder = sys.argv[1]
        print(json.dumps({
            "create": error_of(lambda: create_repo("org/name", exist_ok=True)),
            "upload": error_of(lambda: upload_folder(
                repo_id="org/existing", folder_path=folder, commit_message="x")),
            "whoami_bad": error_of(lambda: whoami(token="hf_wrong")),
            "secret_anonymous": error_of(lambda: hf_hub_download("org/secret", "secret.txt")),
            "secret_with_token": read(hf_hub_download("org/secret", "secret.txt", token="hf_test")),
        }))
        """,
        hub.client_env(tmp_path / "hf_home"),  # no HF_TOKEN: anonymous by default
        str(folder),
    )
    for call in ("create", "upload", "whoami_bad"):
        assert result[call]["type"] == "HfHubHTTPError", result[call]
        assert result[call]["status"] == 401
    assert result["secret_anonymous"]["type"] == "RepositoryNotFoundError"
    assert bytes.fromhex(result["secret_with_token"]) == b"s3cret"
    assert "org/name" not in hub.repos
    assert [c.title for c in hub.repos["org/existing"].history()] == [
        "Seed files",
        "initial commit",
    ]


def test_push_download_pin_and_offline_cache(hub: HubServer, tmp_path):
    folder = write_folder(tmp_path / "model", FIRST_FILES)
    env = hub.client_env(tmp_path / "hf_home", token=TOKEN)
    pushed = run_client(
        """
        from pathlib import Path
        from huggingface_hub import (create_repo, hf_hub_download, list_repo_files,
                                     model_info, upload_folder, whoami)
        folder, names = sys.argv[1], sys.argv[2].split(",")
        out = {"user": whoami()["name"]}
        out["url"] = str(create_repo("org/name", exist_ok=True, private=False))
        out["again"] = error_of(lambda: create_repo("org/name", exist_ok=True))
        first = upload_folder(repo_id="org/name", folder_path=folder, commit_message="first")
        out["first"] = first.oid
        out["downloads"] = {name: read(hf_hub_download("org/name", name)) for name in names}
        info = model_info("org/name")
        out["sha"] = info.sha
        out["siblings"] = sorted(s.rfilename for s in info.siblings)
        out["files"] = sorted(list_repo_files("org/name"))
        Path(folder, "notes.txt").write_bytes(bytes.fromhex(sys.argv[3]))
        second = upload_folder(repo_id="org/name", folder_path=folder, commit_message="second")
        out["second"] = second.oid
        # Fetch the whole new snapshot so the offline run below can find every file.
        out["main"] = {name: read(hf_hub_download("org/name", name)) for name in names}
        out["notes_first"] = read(hf_hub_download("org/name", "notes.txt", revision=first.oid))
        out["yaml_first"] = read(hf_hub_download("org/name", "hyperparams.yaml", revision=first.oid))
        print(json.dumps(out))
        """,
        env,
        str(folder),
        ",".join(FIRST_FILES),
        SECOND_NOTES.hex(),
    )
    repo = hub.repos[REPO]
    assert pushed["user"] == hub.user
    assert pushed["url"] == f"{hub.endpoint}/{REPO}"
    assert pushed["again"] is None  # exist_ok swallows the 409
    assert {name: bytes.fromhex(h) for name, h in pushed["downloads"].items()} == FIRST_FILES
    assert pushed["sha"] == pushed["first"]
    assert pushed["siblings"] == pushed["files"] == sorted([".gitattributes", *FIRST_FILES])
    assert pushed["second"] == repo.head().sha != pushed["first"]
    second_files = {**FIRST_FILES, "notes.txt": SECOND_NOTES}
    assert {name: bytes.fromhex(h) for name, h in pushed["main"].items()} == second_files
    assert bytes.fromhex(pushed["notes_first"]) == FIRST_FILES["notes.txt"]
    assert bytes.fromhex(pushed["yaml_first"]) == FIRST_FILES["hyperparams.yaml"]
    # initial commit (.gitattributes), then one commit per upload_folder
    assert [c.title for c in repo.history()] == ["second", "first", "initial commit"]
    assert repo.files(pushed["first"])["notes.txt"] == FIRST_FILES["notes.txt"]
    assert_all_served(hub)

    # Same HF_HOME, HF_HUB_OFFLINE=1: everything comes from the cache, nothing is sent.
    seen = len(hub.request_log)
    offline = run_client(
        """
        from huggingface_hub import hf_hub_download
        first, names = sys.argv[1], sys.argv[2].split(",")
        print(json.dumps({
            "main": {name: read(hf_hub_download("org/name", name)) for name in names},
            "first": {name: read(hf_hub_download("org/name", name, revision=first))
                      for name in names},
        }))
        """,
        hub.client_env(tmp_path / "hf_home", token=TOKEN, offline=True),
        pushed["first"],
        ",".join(FIRST_FILES),
    )
    assert {name: bytes.fromhex(h) for name, h in offline["main"].items()} == second_files
    assert {name: bytes.fromhex(h) for name, h in offline["first"].items()} == FIRST_FILES
    assert len(hub.request_log) == seen


def test_upload_to_a_new_branch(hub: HubServer, tmp_path):
    hub.add_repo(REPO, {"notes.txt": b"on main"})
    folder = write_folder(tmp_path / "model", {"notes.txt": b"on v1"})
    result = run_client(
        """
        from huggingface_hub import (create_branch, hf_hub_download, list_repo_refs,
                                     upload_folder)
        def push():
            return upload_folder(repo_id="org/name", folder_path=sys.argv[1],
                                 revision="v1", commit_message="to v1")
        out = {"without_branch": error_of(push)}
        create_branch("org/name", branch="v1", exist_ok=True)
        out["branch_again"] = error_of(lambda: create_branch("org/name", branch="v1", exist_ok=True))
        out["commit"] = push().oid
        out["v1"] = read(hf_hub_download("org/name", "notes.txt", revision="v1"))
        out["main"] = read(hf_hub_download("org/name", "notes.txt"))
        out["branches"] = sorted(b.name for b in list_repo_refs("org/name").branches)
        print(json.dumps(out))
        """,
        hub.client_env(tmp_path / "hf_home", token=TOKEN),
        str(folder),
    )
    # Like the Hub: a commit cannot create its branch, the product must call create_branch.
    assert result["without_branch"]["type"] == "RevisionNotFoundError"
    assert result["branch_again"] is None
    assert bytes.fromhex(result["v1"]) == b"on v1"
    assert bytes.fromhex(result["main"]) == b"on main"
    assert result["branches"] == ["main", "v1"]
    assert hub.repos[REPO].branches["v1"] == result["commit"]
    assert_all_served(hub)


HPARAMS = """\
lin: !new:torch.nn.Linear
    in_features: 2
    out_features: 1
modules:
    lin: !ref <lin>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        lin: !ref <lin>
"""


def test_speechbrain_fetch_and_from_hparams(hub: HubServer, tmp_path):
    torch = pytest.importorskip("torch")
    layer = torch.nn.Linear(2, 1)
    checkpoint = io.BytesIO()
    torch.save(layer.state_dict(), checkpoint)
    repo = hub.add_repo(
        "org/sb-model", {"hyperparams.yaml": HPARAMS, "lin.ckpt": checkpoint.getvalue()}
    )
    first = repo.head().sha
    hub.commit("org/sb-model", {"extra.txt": b"v2"})

    result = run_client(
        """
        from speechbrain.inference.interfaces import Pretrained
        from speechbrain.utils.fetching import FetchConfig, fetch
        tmp, first = sys.argv[1], sys.argv[2]
        out = {
            "yaml": read(fetch("hyperparams.yaml", source="org/sb-model", savedir=tmp + "/a")),
            "extra": read(fetch("extra.txt", source="org/sb-model", savedir=tmp + "/a")),
            "pinned_missing": error_of(lambda: fetch(
                "extra.txt", source="org/sb-model", savedir=tmp + "/b",
                fetch_config=FetchConfig(revision=first))),
        }
        model = Pretrained.from_hparams(source="org/sb-model", savedir=tmp + "/c")
        out["weight"] = model.mods.lin.weight.detach().flatten().tolist()
        print(json.dumps(out))
        """,
        hub.client_env(tmp_path / "hf_home"),
        str(tmp_path),
        first,
    )
    assert bytes.fromhex(result["yaml"]) == HPARAMS.encode()
    assert bytes.fromhex(result["extra"]) == b"v2"
    # extra.txt did not exist at the first commit. SpeechBrain 1.1.2 only turns
    # requests' HTTPError into ValueError, so huggingface_hub 2.x errors pass through.
    assert result["pinned_missing"]["type"] == "RemoteEntryNotFoundError"
    assert result["weight"] == pytest.approx(layer.weight.detach().flatten().tolist())
    assert {r.route for r in hub.request_log} == {"resolve"}


@pytest.fixture
def api(hub: HubServer, monkeypatch):
    """An in-process HfApi bound to the stand-in by an explicit endpoint."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    # Import-time constants again: the suite's conftest may set HF_HUB_OFFLINE=1
    # before huggingface_hub is imported, and with telemetry on, building headers
    # fetches an agent registry from the import-time endpoint (the real Hub).
    # Patch both so this process talks to the stand-in only.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    return huggingface_hub.HfApi(endpoint=hub.endpoint, token=TOKEN)


def test_in_process_client_with_explicit_endpoint(hub: HubServer, api, tmp_path):
    from huggingface_hub import hf_hub_download

    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=b"in-process", path_in_repo="a.txt", repo_id=REPO)
    path = hf_hub_download(
        REPO, "a.txt", endpoint=hub.endpoint, cache_dir=tmp_path / "cache", token=TOKEN
    )
    with open(path, "rb") as handle:
        assert handle.read() == b"in-process"
    assert [s.rfilename for s in api.model_info(REPO).siblings] == [".gitattributes", "a.txt"]
    assert_all_served(hub)


def test_listing_tags_and_deletions(hub: HubServer, api):
    from huggingface_hub import RepoFolder

    hub.add_repo(REPO, {"top.txt": b"t", "ckpt/model.ckpt": b"m", "ckpt/sub/opt.ckpt": b"o"})
    first = hub.repos[REPO].head().sha

    top = {(e.path, isinstance(e, RepoFolder)) for e in api.list_repo_tree(REPO)}
    assert top == {(".gitattributes", False), ("top.txt", False), ("ckpt", True)}
    nested = sorted(e.path for e in api.list_repo_tree(REPO, "ckpt", recursive=True))
    assert nested == ["ckpt/model.ckpt", "ckpt/sub", "ckpt/sub/opt.ckpt"]
    [info] = api.get_paths_info(REPO, ["top.txt", "absent.txt"])
    assert (info.path, info.size, info.blob_id) == ("top.txt", 1, git_blob_sha(b"t"))

    api.create_tag(REPO, tag="v0.1")
    api.delete_file("top.txt", REPO)
    api.delete_folder("ckpt/sub", REPO)
    assert sorted(hub.repos[REPO].files()) == [".gitattributes", "ckpt/model.ckpt"]
    assert api.file_exists(REPO, "top.txt", revision="v0.1")
    assert not api.file_exists(REPO, "top.txt")
    assert api.revision_exists(REPO, first) and not api.revision_exists(REPO, "nope")
    assert [c.commit_id for c in api.list_repo_commits(REPO)][2:] == [
        c.sha for c in hub.repos[REPO].history(first)
    ]
    assert [t.name for t in api.list_repo_refs(REPO).tags] == ["v0.1"]
    assert_all_served(hub)
