"""A local stand-in for the Hugging Face Hub, on 127.0.0.1, for tests that go through the real client.

It speaks the part of the Hub's HTTP API that ``huggingface_hub`` (2.x) uses to download and search:

* ``GET /api/models/OWNER/NAME[/revision/REV]``: model info (``sha``, ``siblings``, ``gated``, ...);
* ``GET /api/models/OWNER/NAME/tree/REV``: the file listing ``snapshot_download`` filters (``oid``,
  ``size``, ``lfs``);
* ``HEAD``/``GET /OWNER/NAME/resolve/REV/PATH``: small files are served with ``ETag`` (the git blob
  sha1), ``X-Repo-Commit`` and ``Content-Length``; large (LFS) files answer ``302`` to a second,
  "CDN" server with ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and ``X-Repo-Commit``, as the
  Hub does. Both honour ``Range`` (``206``/``416``);
* ``GET /api/models?search=&author=&sort=&limit=``: the model search, paginated with ``Link``.

A gated repository answers ``401`` (no token) or ``403`` (a token) with ``X-Error-Code: GatedRepo`` on
``resolve``; an unknown repository ``401 RepoNotFound``; an unknown revision ``404
RevisionNotFound``. Faults are injected per path (``fail``: a status such as 429 with
``Retry-After``; ``drop``: cut a body halfway and close the connection; ``stall``: send half and hang
until released), and every request is recorded (``requests()``), so a test can say which files were
asked for. Standard library only; one thread per server.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: bytes}
    branches: dict[str, str] = field(default_factory=dict)  # branch -> sha
    gated: bool = False
    card: dict[str, Any] = field(default_factory=dict)  # pipeline_tag, library_name, downloads, tags

    def commit_of(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


@dataclass
class Fault:
    kind: str  # "status" | "drop" | "stall"
    path_part: str
    times: int
    method: str | None = None
    status: int = 429
    headers: dict[str, str] = field(default_factory=dict)
    fraction: float = 0.5
    release: threading.Event = field(default_factory=threading.Event)
    reached: threading.Event = field(default_factory=threading.Event)  # the cut point was sent


class HubServer:
    """``with HubServer() as hub: hub.add_repo(...); os.environ["HF_ENDPOINT"] = hub.endpoint``."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: list[Fault] = []
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.blobs: dict[str, bytes] = {}  # sha256 -> bytes, what the CDN serves
        self._servers: list[_Server] = []

    # -- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> "HubServer":
        for role in ("hub", "cdn"):
            server = _Server(("127.0.0.1", 0), _Handler)
            server.hub, server.role = self, role  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for fault in self.faults:
            fault.release.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    # -- content -------------------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: Mapping[str, bytes] | Path | None = None, *, branch: str = "main",
                 gated: bool = False, **card: Any) -> str:
        """Commit ``files`` (a mapping or a folder) on ``branch`` of ``repo_id``; return the commit sha.

        Calling it again for the same repository adds a commit (the branch moves; older shas stay
        resolvable). ``card``: ``pipeline_tag``, ``library_name``, ``downloads``, ``tags``. ``files=None``
        makes a repository that is only listed by the search.
        """
        if isinstance(files, Path):
            files = {p.relative_to(files).as_posix(): p.read_bytes() for p in sorted(files.rglob("*")) if p.is_file()}
        files = dict(files or {})
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo(repo_id))
            repo.gated = repo.gated or gated
            repo.card.update(card)
            digest = hashlib.sha1(f"{repo_id}\0{repo.branches.get(branch, '')}".encode())
            for path in sorted(files):
                digest.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
            sha = digest.hexdigest()
            repo.commits[sha] = files
            repo.branches[branch] = sha
            for data in files.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        return sha

    # -- faults --------------------------------------------------------------------------------------------------
    def fail(self, path_part: str, status: int = 429, *, times: int = 1, method: str | None = None,
             headers: Mapping[str, str] | None = None) -> Fault:
        """Answer ``status`` (default 429, ``Retry-After: 0``) to the next ``times`` requests whose path has
        ``path_part``."""
        default = {"Retry-After": "0"} if status == 429 else {}
        return self._add(Fault("status", path_part, times, method, status, dict(headers or default)))

    def drop(self, path_part: str, *, fraction: float = 0.5, times: int = 1) -> Fault:
        """Cut the next ``times`` bodies of matching GETs after ``fraction`` of them; close the connection."""
        return self._add(Fault("drop", path_part, times, "GET", fraction=fraction))

    def stall(self, path_part: str, *, fraction: float = 0.5) -> Fault:
        """Send ``fraction`` of the next matching body, set ``fault.reached``, then hang until ``fault.release``."""
        return self._add(Fault("stall", path_part, 1, "GET", fraction=fraction))

    def _add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, kinds: tuple[str, ...], method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if (fault.kind in kinds and fault.times > 0 and fault.path_part in path
                        and fault.method in (None, method)):
                    fault.times -= 1
                    return fault
        return None

    # -- what was asked ------------------------------------------------------------------------------------------
    def requests(self, method: str | None = None, role: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.log if method in (None, r["method"]) and role in (None, r["role"])]

    def resolved_files(self, method: str | None = None) -> set[str]:
        """The repository paths asked for through ``resolve`` (``HEAD`` and ``GET``, or one of them)."""
        found = set()
        for request in self.requests(method, "hub"):
            match = re.fullmatch(r"/[^/]+/[^/]+/resolve/[^/]+/(.+)", request["path"])
            if match:
                found.add(unquote(match.group(1)))
        return found

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a client killed on purpose
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _dispatch(self, body: bool) -> None:
        self.want_body = body
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.record = {"method": self.command, "role": self.server.role, "path": url.path,  # type: ignore[attr-defined]
                       "query": self.query, "range": self.headers.get("Range"),
                       "auth": self.headers.get("Authorization") is not None, "status": None}
        with self.hub.lock:
            self.hub.log.append(self.record)
        fault = self.hub.take_fault(("status",), self.command, url.path)
        try:
            if fault is not None:
                self._json({"error": f"injected {fault.status}"}, fault.status, fault.headers)
            elif self.server.role == "cdn":  # type: ignore[attr-defined]
                self._cdn(url.path)
            else:
                self._route(url.path)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, or gave up)
            self.close_connection = True

    def _start(self, status: int, headers: Mapping[str, str]) -> None:
        self.record["status"] = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)

    def _json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        self._start(status, {"Content-Type": "application/json", "Content-Length": str(len(raw)), **(headers or {})})
        self.end_headers()
        if self.want_body:
            self.wfile.write(raw)

    def _error(self, status: int, code: str, message: str, **headers: str) -> None:
        self._json({"error": message}, status, {"X-Error-Code": code, "X-Error-Message": message, **headers})

    def _bytes(self, data: bytes, headers: Mapping[str, str]) -> None:
        """Send ``data`` (or the ``Range`` asked for), applying a drop or stall fault to a GET body."""
        start, end, status = 0, len(data), 200
        extra = {"Accept-Ranges": "bytes", **headers}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", (self.headers.get("Range") or "").strip())
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1, len(data)) if match.group(2) else len(data)
            if start >= len(data) or start >= end:
                self._start(416, {**extra, "Content-Range": f"bytes */{len(data)}", "Content-Length": "0"})
                self.end_headers()
                return
            status = 206
            extra["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        self._start(status, {**extra, "Content-Type": "application/octet-stream", "Content-Length": str(end - start)})
        self.end_headers()
        if not self.want_body:
            return
        chunk = data[start:end]
        fault = self.hub.take_fault(("drop", "stall"), self.command, urlsplit(self.path).path)
        if fault is None:
            self.wfile.write(chunk)
            return
        self.wfile.write(chunk[: int(len(chunk) * fault.fraction)])
        self.wfile.flush()
        fault.reached.set()
        if fault.kind == "stall":
            fault.release.wait(60)
        self.close_connection = True  # the client sees the body end early

    # -- the CDN -------------------------------------------------------------------------------------------------
    def _cdn(self, path: str) -> None:
        match = re.fullmatch(r"/blobs/([0-9a-f]{64})", path)
        data = self.hub.blobs.get(match.group(1)) if match else None
        if data is None:
            self._json({"error": "no such blob"}, 404)
            return
        self._bytes(data, {"ETag": f'"{match.group(1)}"'})  # type: ignore[union-attr]

    # -- the Hub -------------------------------------------------------------------------------------------------
    def _route(self, raw: str) -> None:
        if raw == "/api/models":
            self._search()
            return
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", raw)
        if match:
            self._info(unquote(match.group(1)), unquote(match.group(2) or "main"))
            return
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", raw)
        if match:
            self._tree(unquote(match.group(1)), unquote(match.group(2)))
            return
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", raw)
        if match:
            self._resolve(unquote(match.group(1)), unquote(match.group(2)), unquote(match.group(3)))
            return
        self._json({"error": f"not served by the test hub: {raw}"}, 404)

    def _repo_at(self, repo_id: str, revision: str) -> tuple[Repo, str] | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or not repo.commits:
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        sha = repo.commit_of(revision)
        if sha is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
            return None
        return repo, sha

    def _info(self, repo_id: str, revision: str) -> None:
        found = self._repo_at(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        self._json({**_listing(repo), "sha": sha, "siblings": [{"rfilename": p} for p in sorted(repo.commits[sha])],
                    "lastModified": "2024-01-01T00:00:00.000Z"}, headers={"X-Repo-Commit": sha})

    def _tree(self, repo_id: str, revision: str) -> None:
        found = self._repo_at(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        entries = []
        for path, data in sorted(repo.commits[sha].items()):
            entry: dict[str, Any] = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            if path.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        self._json(entries)

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is not None and repo.gated:
            authed = self.headers.get("Authorization") is not None
            self._error(403 if authed else 401, "GatedRepo",
                        f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                        "to access it. Please log in.")
            return
        found = self._repo_at(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        data = repo.commits[sha].get(path)
        if data is None:
            self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", **{"X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(data)}"'}
        if path.endswith(LFS_SUFFIXES):
            digest = hashlib.sha256(data).hexdigest()
            self._start(302, {**headers, "Location": f"{self.hub.cdn}/blobs/{digest}", "X-Linked-Etag": f'"{digest}"',
                              "X-Linked-Size": str(len(data)), "Content-Length": "0"})
            self.end_headers()
            return
        self._bytes(data, headers)

    def _search(self) -> None:
        q = self.query
        owner = q["author"] + "/" if q.get("author") else ""
        found = [_listing(r) for r in self.hub.repos.values()
                 if q.get("search", "").lower() in r.id.lower() and r.id.startswith(owner)]
        if q.get("pipeline_tag"):
            found = [r for r in found if r.get("pipeline_tag") == q["pipeline_tag"]]
        if q.get("sort"):
            found.sort(key=lambda r: (r.get(q["sort"]) or 0, r["id"]), reverse=True)
        offset, size = int(q.get("cursor", 0)), int(q.get("limit", 50))
        headers = {}
        if offset + size < len(found):
            nxt = urlencode({**q, "cursor": offset + size})
            headers["Link"] = f'<{self.hub.endpoint}/api/models?{nxt}>; rel="next"'
        self._json(found[offset:offset + size], headers=headers)


def _listing(repo: Repo) -> dict[str, Any]:
    """The fields the Hub returns for a model in a search (and in its info)."""
    return {"_id": hashlib.md5(repo.id.encode()).hexdigest()[:24], "id": repo.id, "modelId": repo.id,
            "private": False, "gated": "auto" if repo.gated else False, "disabled": False, "likes": 0,
            "downloads": repo.card.get("downloads", 0), "pipeline_tag": repo.card.get("pipeline_tag"),
            "library_name": repo.card.get("library_name"), "tags": list(repo.card.get("tags", ())),
            "createdAt": "2024-01-01T00:00:00.000Z"}
