"""An in-memory Hugging Face Hub behind `huggingface_hub.set_client_factory`, so that `flip push` (a real `HfApi`
upload) and `huggingface_hub.snapshot_download` (which lays out the real Hub cache: blobs, snapshots, refs) run
offline. It answers only the calls those two make; anything else gets a 404."""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from huggingface_hub import constants, get_session, set_client_factory
from huggingface_hub.utils import _http

# the HTTP client library huggingface_hub was built on (httpx in 1.x, httpx2 later): its Response / MockTransport
http = importlib.import_module(type(get_session()).__module__.split(".")[0])

API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>revision|tree|preupload|commit)/(?P<revision>[^/]+)")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")


def git_sha(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


class FakeHub:
    """Model repos as `{repo_id: {path: bytes}}`; each commit replaces the files it names. Use `fake_hub()`."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}

    def sha(self, repo_id: str) -> str:
        """The repo's commit hash: a digest of its paths and contents."""
        files = self.repos[repo_id]
        return git_sha(b"".join(path.encode() + git_sha(files[path]).encode() for path in sorted(files)))

    def handle(self, request):
        """One Hub HTTP request -> its response."""
        path = request.url.path
        if request.method == "POST" and path == "/api/repos/create":
            body = json.loads(request.content)
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            return http.Response(200, json={"url": f"https://huggingface.co/{repo_id}", "name": repo_id})
        if request.method == "POST" and path == "/api/validate-yaml":  # README.md metadata, checked before upload
            return http.Response(200, json={"errors": [], "warnings": []})
        if match := API.match(path):
            return getattr(self, match["action"])(match["repo"], request)
        if (match := RESOLVE.match(path)) and match["path"] in self.repos.get(match["repo"], {}):
            content = self.repos[match["repo"]][match["path"]]
            headers = {
                constants.HUGGINGFACE_HEADER_X_REPO_COMMIT: self.sha(match["repo"]),
                "ETag": f'"{git_sha(content)}"',
                "Content-Length": str(len(content)),
            }
            return http.Response(200, headers=headers, content=b"" if request.method == "HEAD" else content)
        return http.Response(404, json={"error": f"{request.method} {path}: not served by FakeHub"})

    def preupload(self, repo_id: str, request):
        files = json.loads(request.content)["files"]
        modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
        return http.Response(200, json={"files": modes})

    def commit(self, repo_id: str, request):
        repo = self.repos.setdefault(repo_id, {})
        for line in request.content.decode().splitlines():
            entry = json.loads(line)
            if entry["key"] == "file":
                repo[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
        sha = self.sha(repo_id)
        return http.Response(
            200, json={"commitUrl": f"https://huggingface.co/{repo_id}/commit/{sha}", "commitOid": sha}
        )

    def revision(self, repo_id: str, request):
        if repo_id not in self.repos:
            return http.Response(404, json={"error": "Repository not found"})
        siblings = [{"rfilename": path} for path in sorted(self.repos[repo_id])]
        return http.Response(200, json={"id": repo_id, "sha": self.sha(repo_id), "siblings": siblings})

    def tree(self, repo_id: str, request):
        files = self.repos[repo_id]
        entries = [{"type": "file", "path": p, "size": len(c), "oid": git_sha(c)} for p, c in sorted(files.items())]
        return http.Response(200, json=entries)


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    """Route every `huggingface_hub` request to a new `FakeHub` (offline mode off) inside the block."""
    hub = FakeHub()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        set_client_factory(lambda: http.Client(transport=http.MockTransport(hub.handle)))
        try:
            yield hub
        finally:
            set_client_factory(_http.default_client_factory)
