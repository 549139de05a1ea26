"""A tiny Hugging Face Hub on 127.0.0.1, for tests that run the real huggingface_hub client.

It answers the calls huggingface_hub (and `datasets`) make to download a repository:
``GET /api/{models,datasets}/{repo}/revision/{rev}`` (the commit), ``GET .../tree/{rev}``
(the file list), ``POST .../paths-info/{rev}``, and ``HEAD``/``GET``
``[/datasets]/{repo}/resolve/{rev}/{file}`` with the ETag, X-Repo-Commit and Content-Length
headers and Range support. Errors use the Hub's X-Error-Code header, so the client raises its
own exception types (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError).

Faults are set per test on the server object:
- ``gated``: repo ids answered with 401 GatedRepo (whatever the token);
- ``pause_in``: a file name; its body stops halfway until ``resume`` is set
  (``paused`` is set when it gets there), so a test can cancel in the middle of a file;
- ``drop_in``: a file name; the connection closes halfway through its body, ``drops`` times;
- ``slow``: a path fragment; any request whose path contains it waits ``slow_s`` first.
Every request is logged in ``log`` as (method, path, status).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


def commit_sha(label: str) -> str:
    return hashlib.sha1(label.encode()).hexdigest()


@dataclass
class Repo:
    """A repository: revisions (branch or tag name -> commit sha) and each commit's files."""

    kind: str  # "model" or "dataset"
    repo_id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> files
    refs: dict[str, str] = field(default_factory=dict)  # "main", "v1" -> sha

    def add(self, ref: str, files: dict[str, bytes]) -> str:
        sha = commit_sha(f"{self.repo_id}@{ref}")
        self.commits[sha] = dict(files)
        self.refs[ref] = sha
        return sha

    def resolve(self, rev: str) -> str | None:
        return rev if rev in self.commits else self.refs.get(rev)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.gated: set[str] = set()
        self.pause_in: str | None = None
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.drop_in: str | None = None
        self.drops = 0
        self.slow: str | None = None
        self.slow_s = 0.0
        self.log: list[tuple[str, str, int]] = []
        self.auth_headers: list[str] = []
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- content ------------------------------------------------------------------------------
    def add_repo(self, kind: str, repo_id: str, files: dict[str, bytes], ref: str = "main") -> str:
        repo = self.repos.setdefault((kind, repo_id), Repo(kind, repo_id))
        return repo.add(ref, files)

    # -- life ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name="fake-hub").start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self.resume.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait(self, seconds: float) -> None:
        """Sleep that ends early when the server stops."""
        self._closing.wait(seconds)

    def requests(self, method: str = "", fragment: str = "") -> list[tuple[str, str, int]]:
        return [r for r in self.log if r[0].startswith(method) and fragment in r[1]]


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server_hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              *, head: bool = False, content_type: str = "application/json") -> None:
        hub = self.server_hub
        hub.log.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str, message: str, *, head: bool = False) -> None:
        self._send(status, b"" if head else json.dumps({"error": message}).encode(),
                   {"X-Error-Code": code, "X-Error-Message": message}, head=head)

    def _slow(self) -> None:
        hub = self.server_hub
        if hub.slow and hub.slow in self.path:
            hub.wait(hub.slow_s)

    def _repo(self, kind: str, repo_id: str, *, head: bool = False) -> Repo | None:
        hub = self.server_hub
        if self.headers.get("Authorization"):
            hub.auth_headers.append(self.headers["Authorization"])
        repo = hub.repos.get((kind, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository not found: {repo_id}", head=head)
            return None
        if repo_id in hub.gated:
            self._error(401, "GatedRepo", f"Access to {kind} {repo_id} is restricted. You must "
                        "have access to it and be authenticated to access it.", head=head)
            return None
        return repo

    # -- routes -------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._route(head=False, body=body)

    def _route(self, *, head: bool, body: bytes = b"") -> None:
        self._slow()
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        try:
            if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in ("models", "datasets"):
                self._api(parts[1][:-1], "/".join(parts[2:4]), parts[4:], split.query, body)
            elif len(parts) >= 5 and (parts[2] == "resolve" or parts[3:4] == ["resolve"]):
                kind = "dataset" if parts[0] == "datasets" else "model"
                if kind == "dataset":
                    parts = parts[1:]
                self._resolve(kind, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
            else:
                self._error(404, "EntryNotFound", f"No route for {split.path}", head=head)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _api(self, kind: str, repo_id: str, rest: list[str], query: str, body: bytes) -> None:
        repo = self._repo(kind, repo_id)
        if repo is None:
            return
        rev = rest[1] if len(rest) >= 2 else "main"
        sha = repo.resolve(rev)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        files = repo.commits[sha]
        if rest[:1] in ([], ["revision"]):
            self._json(200, {"id": repo_id, "sha": sha, "private": False,
                             "gated": repo_id in self.server_hub.gated,
                             "siblings": [{"rfilename": f} for f in files],
                             "cardData": {}, "tags": []})
        elif rest[:1] == ["tree"]:
            prefix = "/".join(rest[2:]).strip("/")
            recursive = parse_qs(query).get("recursive", ["false"])[0].lower() == "true"
            self._json(200, _tree(files, prefix, recursive))
        elif rest[:1] == ["paths-info"]:
            form = parse_qs(body.decode()) if body else {}
            wanted = form.get("paths", [])
            if body.startswith(b"{"):
                wanted = json.loads(body).get("paths", [])
            entries = [e for e in _tree(files, "", True, folders=True) if e["path"] in wanted]
            self._json(200, entries)
        else:
            self._error(404, "EntryNotFound", f"No API route {'/'.join(rest)}")

    def _resolve(self, kind: str, repo_id: str, rev: str, filename: str, head: bool) -> None:
        hub = self.server_hub
        repo = self._repo(kind, repo_id, head=head)
        if repo is None:
            return
        sha = repo.resolve(rev)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
            return
        data = repo.commits[sha].get(filename)
        if data is None:
            self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha},
                       head=head)
            return
        headers = {"ETag": f'"{_etag(data)}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and not head:
            first, _, last = rng[6:].partition("-")
            start = int(first or 0)
            end = int(last) + 1 if last else len(data)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            status, body = 206, data[start:end]
        else:
            status, body = 200, data
        hub.log.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        half = len(body) // 2
        if hub.drop_in == filename and hub.drops > 0 and half:
            hub.drops -= 1
            self.wfile.write(body[:half])
            self.wfile.flush()
            self.close_connection = True
            return
        if hub.pause_in == filename and half:
            self.wfile.write(body[:half])
            self.wfile.flush()
            hub.paused.set()
            hub.resume.wait(30)
            self.wfile.write(body[half:])
            return
        self.wfile.write(body)


def _tree(files: dict[str, bytes], prefix: str, recursive: bool, *,
          folders: bool = True) -> list[dict]:
    out: list[dict] = []
    seen: set[str] = set()
    for path, data in files.items():
        if prefix and not path.startswith(prefix + "/"):
            continue
        rel = path[len(prefix) + 1:] if prefix else path
        parts = rel.split("/")
        for i in range(1, len(parts)):  # the folders on the way
            folder = "/".join(([prefix] if prefix else []) + parts[:i])
            if folders and folder not in seen and (recursive or i == 1):
                seen.add(folder)
                out.append({"type": "directory", "path": folder, "oid": _git_oid(folder.encode()),
                            "size": 0})
        if len(parts) > 1 and not recursive:
            continue
        out.append({"type": "file", "path": path, "size": len(data), "oid": _git_oid(data)})
    return out
