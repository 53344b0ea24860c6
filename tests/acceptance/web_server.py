"""A real `tasker web` process for the dashboard's tests, and plain HTTP to it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.acceptance.cluster import ROOT, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebServer:
    """`python -m tasker.cli web` on a free port; its output goes to a log file."""

    def __init__(self, db_url: str, tmp: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"web-{self.port}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tasker.cli", "web", "--port", str(self.port), *args],
            env={**os.environ, "TASKER_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        wait_for(self._up, 30, f"tasker web on port {self.port}", every=0.1)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"tasker web exited:\n{self.output()}")
        try:
            return self.get("/api/topics")[0] == 200
        except OSError:
            return False

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        """(status, parsed JSON or text) of one request; never raises on 4xx/5xx."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, payload, ctype = resp.status, resp.read(), resp.headers["content-type"]
        except urllib.error.HTTPError as err:
            status, payload, ctype = err.code, err.read(), err.headers["content-type"] or ""
        text = payload.decode(errors="replace")
        return status, json.loads(text) if "json" in (ctype or "") else text

    def get(self, path: str, **headers: str) -> tuple[int, Any]:
        return self.request("GET", path, headers=headers)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
