"""A local stand-in of the Hugging Face Hub's HTTP API, enough for `HfApi.create_repo` and `upload_folder`:
it creates any repository, asks for every file inline ("regular" upload mode, no LFS) and keeps the files
of each commit in memory, so a push can be checked byte for byte without the network (loopback only).

Point a process at it with HF_ENDPOINT (read when huggingface_hub is imported: use it for subprocesses).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator


@dataclasses.dataclass
class HubStandIn:
    url: str
    refuse_with: int | None = None  # an HTTP status every write is answered with (e.g. 403)
    repos: list[str] = dataclasses.field(default_factory=list)
    files: dict[str, dict[str, bytes]] = dataclasses.field(default_factory=dict)  # repo -> path -> bytes

    def environment(self, home: str) -> dict[str, str]:
        """The variables that send a huggingface_hub client here, with a token and a fresh HF_HOME."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": "hf_standin_token",
            "HF_HOME": home,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "0",
        }


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        hub: HubStandIn = self.server.hub  # type: ignore[attr-defined]
        if self.path.startswith("/api/models/"):  # repo_info: only repositories created here exist
            repo = "/".join(self.path[len("/api/models/") :].split("?")[0].split("/")[:2])
            if repo not in hub.repos:
                return self._answer(404, {"error": "Repository not found"})
            return self._answer(200, {"id": repo, "sha": "0" * 40, "private": False})
        self._answer(200, {})  # metadata probes the client makes on the side

    def do_POST(self) -> None:
        hub: HubStandIn = self.server.hub  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if hub.refuse_with is not None:
            return self._answer(hub.refuse_with, {"error": "stand-in refuses: no write access"})
        if self.path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}"
            hub.repos.append(repo)
            return self._answer(200, {"url": f"{hub.url}/{repo}"})
        if self.path.startswith("/api/models/") and "/preupload/" in self.path:
            paths = [f["path"] for f in json.loads(body)["files"]]
            return self._answer(
                200, {"files": [{"path": p, "uploadMode": "regular", "shouldIgnore": False} for p in paths]}
            )
        if self.path.startswith("/api/models/") and "/commit/" in self.path:
            repo = self.path[len("/api/models/") :].split("/commit/")[0]
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    content = base64.b64decode(item["value"]["content"])
                    hub.files.setdefault(repo, {})[item["value"]["path"]] = content
            oid = "0" * 40
            return self._answer(
                200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
            )
        if self.path == "/api/validate-yaml":
            return self._answer(200, {})
        self._answer(404, {"error": f"the stand-in does not know {self.path}"})


@contextlib.contextmanager
def hub_standin(refuse_with: int | None = None) -> Iterator[HubStandIn]:
    """Serves the stand-in on 127.0.0.1 (a free port) for the duration of the block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    hub = HubStandIn(f"http://127.0.0.1:{server.server_port}", refuse_with=refuse_with)
    server.hub = hub  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
