"""An offline stand-in for the Hugging Face Hub HTTP API, for tests.

The product pushes model folders with ``huggingface_hub`` (``create_repo`` +
``upload_folder``) and users load them with SpeechBrain, which downloads through
``huggingface_hub.hf_hub_download``. Tests cannot reach the Hub, so this module
serves the small part of the Hub HTTP API that huggingface_hub 2.4 calls for
that round trip, from memory, on a loopback port.

Usage::

    with running_hub(token="hf_test") as hub:
        env = hub.client_env(hf_home=tmp_path / "hf_home", token="hf_test")
        subprocess.run([sys.executable, "push_and_load.py"], env=env, check=True)
        assert hub.repos["org/name"].files()["hyperparams.yaml"] == b"..."

huggingface_hub reads ``HF_ENDPOINT`` (and ``HF_HOME``, ``HF_HUB_OFFLINE``,
``HF_TOKEN``...) once, at import time, and its module-level helpers
(``huggingface_hub.create_repo`` and friends) are bound to an ``HfApi`` built
at that moment. Run client code in a subprocess with :meth:`HubServer.client_env`,
or, in-process, pass ``endpoint=hub.endpoint`` explicitly (``HfApi(endpoint=...)``,
``hf_hub_download(..., endpoint=...)``).

Model of the data: a repo is a set of commits, each a full snapshot
``{path: bytes}`` with a 40-hex sha and a parent; branches and tags point at
commits. A branch name, a tag or a full commit sha resolves to a snapshot, so
``revision=<old sha>`` keeps returning old bytes after new commits.

Routes (``{kind}`` is ``models``, ``datasets`` or ``spaces``):

- ``GET  /api/whoami-v2``
- ``POST /api/repos/create``, ``POST /api/repos/delete``
- ``POST /api/validate-yaml`` (model cards), ``POST /api/telemetry/...`` (ignored),
  ``GET /api/agent-harnesses`` (empty registry, fetched by the client's user-agent code)
- ``GET  /api/{kind}/{repo}`` and ``/api/{kind}/{repo}/revision/{rev}`` (repo info)
- ``GET  /api/{kind}/{repo}/tree/{rev}[/{path}]``, ``POST .../paths-info/{rev}``
- ``GET  /api/{kind}/{repo}/refs``, ``GET .../commits/{rev}``
- ``POST /api/{kind}/{repo}/preupload/{rev}`` (every file "regular", never LFS)
- ``POST /api/{kind}/{repo}/commit/{rev}`` (NDJSON: header, file, deletedFile, deletedFolder)
- ``POST|DELETE /api/{kind}/{repo}/branch/{branch}``, ``POST .../tag/{rev}``
- ``GET|HEAD /[datasets/|spaces/]{repo}/resolve/{rev}/{path}`` (with ``Range``)

Like the real Hub: writes need ``Authorization: Bearer <token>`` (401 otherwise);
a wrong token is rejected everywhere, even on public reads; private repos look
missing to anonymous clients; committing to a branch that does not exist is a
404 ``RevisionNotFound`` (create it with ``create_branch`` first); a new repo
starts with one commit holding ``.gitattributes``.

Not like the real Hub: no LFS/Xet storage (bodies above 64 MiB are refused), no
pull requests (``create_pr=True`` gets a 400), no gated repos, no pagination.
Also, huggingface_hub only maps a bare 401 on a repo URL to
``RepositoryNotFoundError`` for ``https://`` endpoints, so against this ``http://``
server an anonymous write raises a plain ``HfHubHTTPError`` with status 401;
product code should catch ``HfHubHTTPError`` and look at the status.

Seed or inspect state without HTTP with :meth:`HubServer.add_repo`,
:meth:`HubServer.commit`, :attr:`HubServer.repos` and :attr:`HubServer.request_log`
(each entry names the route that answered, ``None`` for a route not served here).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_BRANCH = "main"
# Bodies are held in memory: refuse anything that a small test model would not need.
MAX_BODY_BYTES = 64 * 1024 * 1024
# A stalled client must not pin a handler thread forever.
SOCKET_TIMEOUT_S = 30.0

# What the Hub puts in a new repo (abridged): clients see it in siblings and listings.
INITIAL_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.ckpt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)

_KIND_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob: what the Hub uses as a regular file's ETag and oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def repo_key(repo_id: str, repo_type: str = "model") -> str:
    """Key of a repo in :attr:`HubServer.repos`: its URL path (``org/name``, ``datasets/org/name``)."""
    return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"


class HubError(Exception):
    """An HTTP error answer, with the headers huggingface_hub uses to pick its exception."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, object] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.body = {"error": message, **(body or {})}
        if code is not None:
            self.headers["X-Error-Code"] = code


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    files: dict[str, bytes]
    date: datetime
    author: str


@dataclass
class Repo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name -> head commit sha
    tags: dict[str, str] = field(default_factory=dict)  # name -> commit sha
    created_at: datetime = field(default_factory=_now)

    def resolve(self, revision: str = DEFAULT_BRANCH) -> Commit | None:
        """The commit a branch, a tag or a full sha names, or None."""
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)

    def head(self, branch: str = DEFAULT_BRANCH) -> Commit:
        return self.commits[self.branches[branch]]

    def files(self, revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """The snapshot at `revision` (raises KeyError for an unknown revision)."""
        commit = self.resolve(revision)
        if commit is None:
            raise KeyError(revision)
        return dict(commit.files)

    def history(self, revision: str = DEFAULT_BRANCH) -> list[Commit]:
        """Commits reachable from `revision`, newest first (like ``git log``)."""
        out: list[Commit] = []
        commit = self.resolve(revision)
        while commit is not None:
            out.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return out


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # as sent, still percent-encoded, query included
    status: int
    authenticated: bool  # sent the configured token
    route: str | None  # name of the route that answered; None when no route matched


class HubServer:
    """In-memory Hub with one accepted token; serve it with :meth:`start` or :func:`running_hub`."""

    def __init__(self, token: str = "hf_test", user: str = "test-user", host: str = "127.0.0.1"):
        self.token = token
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.request_log: list[LoggedRequest] = []
        self._lock = threading.RLock()
        self._sha_counter = itertools.count()
        self._httpd = _HubHTTPServer((host, 0), _HubRequestHandler, self)
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="hub-stand-in",
                daemon=True,
            )
            self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # -- helpers for tests -------------------------------------------------

    def client_env(
        self,
        hf_home: str | os.PathLike[str],
        token: str | None = None,
        offline: bool = False,
        base: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Environment for a subprocess that should talk to this server and nothing else.

        Inherited ``HF_*`` variables (a developer's real token, cache or endpoint) and
        proxy settings are dropped so the child cannot leak to, or read from, the real Hub.
        """
        env = {
            k: v
            for k, v in (os.environ if base is None else base).items()
            if not k.startswith(("HF_", "HUGGINGFACE_"))
            and k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
        }
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(hf_home),
            NO_PROXY="127.0.0.1,localhost",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_SYMLINKS_WARNING="1",
        )
        if token is not None:
            env["HF_TOKEN"] = token
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        return env

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | str] | None = None,
        *,
        repo_type: str = "model",
        private: bool = False,
        message: str = "Seed files",
    ) -> Repo:
        """Create a repo directly (no HTTP), optionally with a first commit of `files`."""
        with self._lock:
            if repo_key(repo_id, repo_type) in self.repos:
                raise ValueError(f"Repo already exists: {repo_key(repo_id, repo_type)}")
            repo = self._create_repo(repo_id, repo_type, private)
            if files:
                encoded = {p: c.encode() if isinstance(c, str) else c for p, c in files.items()}
                self._commit(repo, DEFAULT_BRANCH, {**repo.head().files, **encoded}, message, "")
            return repo

    def commit(
        self,
        repo_id: str,
        changes: dict[str, bytes | str | None],
        *,
        branch: str = DEFAULT_BRANCH,
        message: str = "Update files",
        repo_type: str = "model",
    ) -> Commit:
        """Commit directly (no HTTP): `changes` are applied to the branch head, None deletes."""
        with self._lock:
            repo = self.repos[repo_key(repo_id, repo_type)]
            files = dict(repo.head(branch).files)
            for path, content in changes.items():
                if content is None:
                    files.pop(path, None)
                else:
                    files[path] = content.encode() if isinstance(content, str) else content
            return self._commit(repo, branch, files, message, "")

    def requests_to(self, route: str) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.request_log if r.route == route]

    # -- state changes (callers hold the lock) -----------------------------

    def _create_repo(self, repo_id: str, repo_type: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private)
        self.repos[repo_key(repo_id, repo_type)] = repo
        self._commit(
            repo, DEFAULT_BRANCH, {".gitattributes": INITIAL_GITATTRIBUTES}, "initial commit", ""
        )
        return repo

    def _commit(
        self, repo: Repo, branch: str, files: dict[str, bytes], title: str, message: str
    ) -> Commit:
        parent = repo.branches.get(branch)
        # Any unique 40-hex string will do; a counter keeps two identical snapshots apart.
        seed = f"{repo.repo_id}\0{parent}\0{title}\0{next(self._sha_counter)}\0"
        digest = hashlib.sha1(seed.encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_sha(files[path])}\0".encode())
        commit = Commit(digest.hexdigest(), parent, title, message, dict(files), _now(), self.user)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # an in-flight request never blocks interpreter exit

    def __init__(self, address: tuple[str, int], handler: type, hub: HubServer):
        self.hub = hub
        super().__init__(address, handler)


Route = tuple[str, re.Pattern[str], str]
_REPO = r"/api/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+(?:/[^/]+)?)"
# Ordered: the first match wins. Repo ids have one or two segments, revisions arrive
# percent-encoded (no raw "/"), file paths may contain "/".
ROUTES: list[Route] = [
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/repos/delete$"), "delete_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/agent-harnesses$"), "agent_harnesses"),
    ("POST", re.compile(r"^/api/telemetry/.*$"), "telemetry"),
    ("GET", re.compile(r"^/api/telemetry/.*$"), "telemetry"),
    ("POST", re.compile(rf"^{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^{_REPO}/branch/(?P<branch>[^/]+)$"), "create_branch"),
    ("DELETE", re.compile(rf"^{_REPO}/branch/(?P<branch>[^/]+)$"), "delete_branch"),
    ("POST", re.compile(rf"^{_REPO}/tag/(?P<rev>[^/]+)$"), "create_tag"),
    ("POST", re.compile(rf"^{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("GET", re.compile(rf"^{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", re.compile(rf"^{_REPO}/refs$"), "refs"),
    ("GET", re.compile(rf"^{_REPO}/commits/(?P<rev>[^/]+)$"), "commits"),
    ("GET", re.compile(rf"^{_REPO}/revision/(?P<rev>[^/]+)$"), "repo_info"),
    ("GET", re.compile(rf"^{_REPO}$"), "repo_info"),
    (
        "GET",
        re.compile(
            r"^/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+(?:/[^/]+)?)"
            r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
        ),
        "resolve",
    ),
]


def _match_route(method: str, path: str) -> tuple[str | None, dict[str, str]]:
    """Name of the route serving `method path` and its unquoted parameters."""
    method = "GET" if method == "HEAD" else method  # HEAD is a GET without a body
    for route_method, pattern, name in ROUTES:
        match = pattern.match(path) if route_method == method else None
        if match:
            return name, {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
    return None, {}


class _HubRequestHandler(BaseHTTPRequestHandler):
    server: _HubHTTPServer
    timeout = SOCKET_TIMEOUT_S
    server_version = "hub-stand-in/1.0"

    # -- plumbing ----------------------------------------------------------

    def log_message(self, format: str, *args: object) -> None:
        pass  # the request log replaces stderr chatter

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self._query = parse_qs(split.query)
        self._authenticated = False
        self._responded = False
        self._route, params = _match_route(method, split.path)
        try:
            # Drain the body before anything can fail: closing a socket with unread
            # request bytes resets the connection and the client would never see a 401.
            self._body = self._receive_body()
            self._authenticated = self._check_token()
            if self._route is None:
                raise HubError(404, f"Route not served by the Hub stand-in: {method} {split.path}")
            getattr(self, f"_handle_{self._route}")(**params)
        except HubError as err:
            # Header values must be latin-1; keep them ASCII whatever the paths contain.
            header_message = err.message.encode("ascii", "backslashreplace").decode()
            self._send_json(
                err.status,
                err.body,
                {"X-Error-Message": header_message, **err.headers},
            )
        except Exception as err:
            if self._responded:  # e.g. the client hung up mid-body: nothing left to tell it
                raise
            # A bug in the stand-in must reach the test as a 500, not as a hang.
            self._send_json(500, {"error": f"stand-in crashed: {err!r}"})

    def _check_token(self) -> bool:
        header = self.headers.get("Authorization")
        if header is None:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip() == self.hub.token:
            return True
        # The real Hub rejects a bad token even where no token is needed.
        raise HubError(401, "Invalid credentials in Authorization header")

    def _require_token(self) -> None:
        if not self._authenticated:
            raise HubError(
                401, "You must be authenticated (Authorization: Bearer <token>) to do this"
            )

    def _read_body(self) -> bytes:
        return self._body

    def _receive_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise HubError(
                411, "Chunked bodies are not supported by the stand-in; send Content-Length"
            )
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise HubError(
                413, f"Body of {length} bytes exceeds the stand-in limit of {MAX_BODY_BYTES}"
            )
        return self.rfile.read(length) if length else b""

    def _read_json(self) -> dict:
        body = self._read_body()
        try:
            data = json.loads(body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Body is not JSON: {err}") from err
        if not isinstance(data, dict):
            raise HubError(400, "JSON body must be an object")
        return data

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        # Log before answering: once the client has its response, a test may read the log.
        entry = LoggedRequest(self.command, self.path, status, self._authenticated, self._route)
        with self.hub._lock:
            self.hub.request_log.append(entry)
        self._responded = True
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _repo(self, kind: str, repo: str, *, write: bool = False) -> Repo:
        """Look a repo up, answering like the Hub when it is missing or hidden."""
        if write:
            self._require_token()
        repo_type = _KIND_TO_TYPE[kind]
        found = self.hub.repos.get(repo_key(repo, repo_type))
        if found is None or (found.private and not self._authenticated):
            # Anonymous clients get 401 for both cases, so private repos cannot be probed.
            status = 404 if self._authenticated else 401
            raise HubError(status, f"Repository not found: {repo}", "RepoNotFound")
        return found

    def _commit_at(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _url_prefix(self, repo: Repo) -> str:
        return f"{self.hub.endpoint}/{repo_key(repo.repo_id, repo.repo_type)}"

    # -- account and repo management --------------------------------------

    def _handle_whoami(self) -> None:
        self._require_token()
        self._send_json(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.hub.user,
                "fullname": "Test User",
                "email": None,
                "emailVerified": False,
                "isPro": False,
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "test", "role": "write"},
                },
            },
        )

    def _handle_create_repo(self) -> None:
        self._require_token()
        payload = self._read_json()
        name = payload.get("name") or ""
        namespace = payload.get("organization") or self.hub.user
        repo_type = payload.get("type") or "model"
        if repo_type not in _KIND_TO_TYPE.values():
            raise HubError(400, f"Invalid repo type: {repo_type}")
        if not (_NAME_RE.match(name) and _NAME_RE.match(namespace)):
            raise HubError(400, f"Invalid repo name: {namespace}/{name}")
        private = payload.get("visibility") == "private" or payload.get("private") is True
        repo_id = f"{namespace}/{name}"
        with self.hub._lock:
            existing = self.hub.repos.get(repo_key(repo_id, repo_type))
            if existing is not None:
                url = self._url_prefix(existing)
                raise HubError(
                    409, f"You already created this {repo_type} repo: {repo_id}", body={"url": url}
                )
            repo = self.hub._create_repo(repo_id, repo_type, private)
        self._send_json(200, {"url": self._url_prefix(repo), "name": repo_id, "id": repo_id})

    def _handle_delete_repo(self) -> None:
        self._require_token()
        payload = self._read_json()
        namespace = payload.get("organization") or self.hub.user
        key = repo_key(f"{namespace}/{payload.get('name')}", payload.get("type") or "model")
        with self.hub._lock:
            if self.hub.repos.pop(key, None) is None:
                raise HubError(404, f"Repository not found: {key}", "RepoNotFound")
        self._send_json(200, {})

    def _handle_validate_yaml(self) -> None:
        self._read_body()
        self._send_json(200, {"errors": [], "warnings": []})

    def _handle_agent_harnesses(self) -> None:
        # huggingface_hub fetches this registry to tag its user agent; empty = detect nothing.
        self._send_json(200, {"standardEnvVars": [], "harnesses": {}})

    def _handle_telemetry(self) -> None:
        self._read_body()
        self._send_json(200, {})

    # -- uploads -----------------------------------------------------------

    def _handle_preupload(self, kind: str, repo: str, rev: str) -> None:
        payload = self._read_json()
        with self.hub._lock:
            found = self._repo(kind, repo, write=True)
            if rev not in found.branches:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            current = found.head(rev).files
        # Always "regular": the commit then carries the bytes inline and no LFS/Xet
        # storage is needed. "oid" lets the client skip files that did not change.
        files = [
            {
                "path": entry["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha(current[entry["path"]]) if entry["path"] in current else None,
            }
            for entry in payload.get("files", [])
        ]
        self._send_json(200, {"files": files, "commitOid": found.branches[rev]})

    def _handle_commit(self, kind: str, repo: str, rev: str) -> None:
        if self._query.get("create_pr") == ["1"]:
            raise HubError(400, "Pull requests are not supported by the Hub stand-in")
        self._require_token()
        try:
            lines = [json.loads(line) for line in self._read_body().splitlines() if line.strip()]
        except ValueError as err:
            raise HubError(400, f"Commit body is not NDJSON: {err}") from err
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit body must start with a 'header' line")
        header = lines[0]["value"]
        with self.hub._lock:
            found = self._repo(kind, repo, write=True)
            if rev not in found.branches:
                raise HubError(
                    404,
                    f"Invalid rev id: {rev} (commits go to an existing branch)",
                    "RevisionNotFound",
                )
            head = found.head(rev)
            parent = header.get("parentCommit")
            if parent is not None and parent != head.sha:
                raise HubError(
                    412, f"A commit has happened since {parent}; head of {rev} is {head.sha}"
                )
            files = _apply_operations(dict(head.files), lines[1:])
            commit = self.hub._commit(
                found, rev, files, header.get("summary") or "", header.get("description") or ""
            )
        self._send_json(
            200,
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self._url_prefix(found)}/commit/{commit.sha}",
                "hookOutput": "",
                "pullRequestUrl": None,
            },
        )

    def _handle_create_branch(self, kind: str, repo: str, branch: str) -> None:
        payload = self._read_json()
        with self.hub._lock:
            found = self._repo(kind, repo, write=True)
            if branch in found.branches:
                raise HubError(409, f"Branch already exists: {branch}")
            start = self._commit_at(found, payload.get("startingPoint") or DEFAULT_BRANCH)
            found.branches[branch] = start.sha
        self._send_json(200, {})

    def _handle_delete_branch(self, kind: str, repo: str, branch: str) -> None:
        with self.hub._lock:
            found = self._repo(kind, repo, write=True)
            if branch == DEFAULT_BRANCH:
                raise HubError(403, "Cannot delete the default branch")
            if found.branches.pop(branch, None) is None:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        self._send_json(200, {})

    def _handle_create_tag(self, kind: str, repo: str, rev: str) -> None:
        payload = self._read_json()
        tag = payload.get("tag") or ""
        with self.hub._lock:
            found = self._repo(kind, repo, write=True)
            if not tag or tag in found.tags:
                raise HubError(409, f"Tag already exists or is empty: {tag!r}")
            found.tags[tag] = self._commit_at(found, rev).sha
        self._send_json(200, {})

    # -- reads -------------------------------------------------------------

    def _handle_repo_info(self, kind: str, repo: str, rev: str = DEFAULT_BRANCH) -> None:
        with self.hub._lock:
            found = self._repo(kind, repo)
            commit = self._commit_at(found, rev)
        with_blobs = self._query.get("blobs", ["false"])[0].lower() in {"1", "true"}
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, object] = {"rfilename": path}
            if with_blobs:
                sibling.update(
                    size=len(commit.files[path]), blobId=git_blob_sha(commit.files[path])
                )
            siblings.append(sibling)
        namespace = found.repo_id.split("/")[0]
        self._send_json(
            200,
            {
                "_id": hashlib.sha1(found.repo_id.encode()).hexdigest()[:24],
                "id": found.repo_id,
                "modelId": found.repo_id,
                "author": namespace,
                "sha": commit.sha,
                "lastModified": _iso(commit.date),
                "createdAt": _iso(found.created_at),
                "private": found.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            },
        )

    def _handle_tree(self, kind: str, repo: str, rev: str, path: str = "") -> None:
        with self.hub._lock:
            commit = self._commit_at(self._repo(kind, repo), rev)
        recursive = self._query.get("recursive", ["false"])[0].lower() in {"1", "true"}
        entries = _tree_entries(commit.files)
        prefix = path.strip("/")
        if prefix and not any(e["path"] == prefix and e["type"] == "directory" for e in entries):
            raise HubError(
                404,
                f"Not a directory: {prefix}",
                "EntryNotFound",
                headers={"X-Repo-Commit": commit.sha},
            )
        under = [e for e in entries if not prefix or e["path"].startswith(prefix + "/")]
        if not recursive:
            depth = prefix.count("/") + 1 if prefix else 0
            under = [e for e in under if e["path"].count("/") == depth]
        self._send_json(200, under)

    def _handle_paths_info(self, kind: str, repo: str, rev: str) -> None:
        form = parse_qs(self._read_body().decode())
        with self.hub._lock:
            commit = self._commit_at(self._repo(kind, repo), rev)
        wanted = set(form.get("paths", []))
        self._send_json(200, [e for e in _tree_entries(commit.files) if e["path"] in wanted])

    def _handle_refs(self, kind: str, repo: str) -> None:
        with self.hub._lock:
            found = self._repo(kind, repo)
            branches = dict(found.branches)
            tags = dict(found.tags)

        def refs(names: dict[str, str], prefix: str) -> list[dict[str, str]]:
            return [
                {"name": n, "ref": f"{prefix}{n}", "targetCommit": sha}
                for n, sha in sorted(names.items())
            ]

        self._send_json(
            200,
            {
                "branches": refs(branches, "refs/heads/"),
                "tags": refs(tags, "refs/tags/"),
                "converts": [],
                "pullRequests": [],
            },
        )

    def _handle_commits(self, kind: str, repo: str, rev: str) -> None:
        with self.hub._lock:
            found = self._repo(kind, repo)
            self._commit_at(found, rev)
            history = found.history(rev)
        self._send_json(
            200,
            [
                {
                    "id": c.sha,
                    "title": c.title,
                    "message": c.message,
                    "date": _iso(c.date),
                    "authors": [{"user": c.author}],
                }
                for c in history
            ],
        )

    def _handle_resolve(self, repo: str, rev: str, path: str, kind: str = "models") -> None:
        with self.hub._lock:
            commit = self._commit_at(self._repo(kind, repo), rev)
        data = commit.files.get(path)
        if data is None:
            # X-Repo-Commit on the 404 lets huggingface_hub cache the absence per commit.
            raise HubError(
                404,
                f"Entry not found: {path}",
                "EntryNotFound",
                headers={"X-Repo-Commit": commit.sha},
            )
        headers = {
            "Content-Type": "application/octet-stream",
            # For regular (non-LFS) files the Hub's ETag is the git blob id, and
            # huggingface_hub names the cached blob after it.
            "ETag": f'"{git_blob_sha(data)}"',
            "X-Repo-Commit": commit.sha,
            "Accept-Ranges": "bytes",
        }
        status, body = 200, data
        byte_range = self.headers.get("Range")
        if byte_range:
            # Resumed downloads ask for "bytes=<start>-[<end>]".
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", byte_range.strip())
            start = int(match.group(1)) if match else len(data)
            end = int(match.group(2)) if match and match.group(2) else len(data) - 1
            if not match or start >= len(data) or end < start:
                raise HubError(
                    416,
                    f"Unsatisfiable range {byte_range!r}",
                    headers={"Content-Range": f"bytes */{len(data)}"},
                )
            end = min(end, len(data) - 1)
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, body, headers)


def _checked_path(path: object) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _apply_operations(files: dict[str, bytes], operations: list[dict]) -> dict[str, bytes]:
    """Apply the commit NDJSON lines after the header to a snapshot."""
    for op in operations:
        key, value = op.get("key"), op.get("value") or {}
        path = _checked_path(value.get("path"))
        if key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"Unsupported encoding for {path}: {value.get('encoding')!r}")
            files[path] = base64.b64decode(value.get("content") or "")
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            doomed = [p for p in files if p.startswith(prefix)]
            if not doomed:
                raise HubError(
                    404, f"A folder with this name doesn't exist: {path}", "EntryNotFound"
                )
            for p in doomed:
                del files[p]
        elif key == "lfsFile":
            raise HubError(
                400, "LFS is not supported by the Hub stand-in (preupload answers 'regular')"
            )
        else:
            raise HubError(400, f"Unknown commit operation: {key!r}")
    return files


def _tree_entries(files: dict[str, bytes]) -> list[dict[str, object]]:
    """Tree listing of a snapshot: every file plus every folder implied by the paths."""
    folders: dict[str, list[str]] = {}
    for path in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]), []).append(path)
    entries: list[dict[str, object]] = [
        {"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": path}
        for path, data in files.items()
    ]
    for folder, members in folders.items():
        # Not git's tree hash, but stable for a given content, which is all clients compare.
        oid = hashlib.sha1(
            "\0".join(f"{p}:{git_blob_sha(files[p])}" for p in sorted(members)).encode()
        )
        entries.append({"type": "directory", "oid": oid.hexdigest(), "size": 0, "path": folder})
    return sorted(entries, key=lambda e: str(e["path"]))


@contextlib.contextmanager
def running_hub(token: str = "hf_test", user: str = "test-user") -> Iterator[HubServer]:
    """Serve a fresh in-memory Hub on 127.0.0.1 (ephemeral port) for the duration of the block."""
    server = HubServer(token=token, user=user)
    with server:
        yield server


def write_folder(root: str | os.PathLike[str], files: dict[str, bytes | str]) -> Path:
    """Write `files` ({relative path: content}) under `root`; handy to build an upload folder."""
    root = Path(root)
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


__all__ = [
    "Commit",
    "HubServer",
    "LoggedRequest",
    "Repo",
    "git_blob_sha",
    "repo_key",
    "running_hub",
    "write_folder",
]
