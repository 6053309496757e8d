"""Run one plugin step through the real loader and engine; a scripted HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mimir.core.engine import PipelineResult, execute_pipeline
from mimir.core.pipeline import load_pipeline


class StepFailed(AssertionError):
    """The step failed; ``str()`` is the engine's error message for it."""


def run_pipeline(
    steps: list[dict[str, Any]], data_dir: Path, context: dict[str, Any] | None = None
) -> PipelineResult:
    """Validate and run a pipeline made of ``steps`` with ``data_dir`` as the data directory."""
    pipeline = load_pipeline({"name": "test", "steps": steps})
    return asyncio.run(execute_pipeline(pipeline, context or {}, data_dir=data_dir))


def run_plugin(
    plugin: str,
    config: dict[str, Any],
    data_dir: Path,
    context: dict[str, Any] | None = None,
) -> Any:
    """The output of a one-step pipeline; :class:`StepFailed` with the step's error."""
    result = run_pipeline(
        [{"name": "step", "plugin": plugin, "config": config, "output": "out"}], data_dir, context
    )
    if not result.success:
        raise StepFailed(result.steps[-1].error)
    return result.context["out"]


@dataclass
class Recorded:
    """One request the stub server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


#: A reply: status, headers, body (bytes, str, or anything JSON-serialisable).
Reply = tuple[int, dict[str, str], Any]


@dataclass
class StubServer:
    """A real HTTP server on 127.0.0.1 whose replies a test scripts, recording each request."""

    base_url: str
    requests: list[Recorded] = field(default_factory=list)
    #: Called for each request; the default answers ``200 {"ok": true}``.
    respond: Callable[[Recorded], Reply] = lambda request: (200, {}, {"ok": True})
    #: Set to make handlers wait (to test client timeouts); the test sets it to finish.
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def stub_server() -> Iterator[StubServer]:
    """Start a :class:`StubServer` on a free port of 127.0.0.1; stop it afterwards."""
    stub_holder: list[StubServer] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            stub = stub_holder[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Recorded(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            stub.requests.append(request)
            status, headers, payload = stub.respond(request)
            if isinstance(payload, bytes):
                data = payload
            elif isinstance(payload, str):
                data = payload.encode()
                headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
            else:
                data = json.dumps(payload).encode()
                headers = {"Content-Type": "application/json", **headers}
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    stub_holder.append(StubServer(base_url=f"http://127.0.0.1:{port}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub_holder[0]
    finally:
        stub_holder[0].release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
