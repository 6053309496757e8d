"""Traces across real processes: a server and a worker exporting to an OTLP/HTTP receiver
this test runs (decoding the protobuf with the official ``opentelemetry-proto``).

One job is one trace: the API request's span, the enqueue, the wait in the queue, the
worker's job span, a span per step and the step's outbound HTTP call (whose request
carries the ``traceparent``). A retried job shows one job span per attempt in the same
trace. Without the ``OTEL_*`` environment asking for it, nothing is exported and the job
record carries no ``traceparent``.
"""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from mimir.core.telemetry import tracing_requested
from tests.helpers import RedisServer, ServerProcess, WorkerProcess, wait_until

ENQUEUE = "/api/v1/queue/pipelines/enqueue"
#: Exports every 50 ms, so spans arrive soon after they end.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    status: int
    attributes: dict[str, Any]


class _Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver on 127.0.0.1: ``POST /v1/traces``, protobuf."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.spans: list[Span] = []
        self.requests = 0
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        Span(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            status=span.status.code,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self.server.lock:
            self.server.requests += 1
            self.server.spans.extend(spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class _Target(ThreadingHTTPServer):
    """The outside API an ``Input.api`` step calls: answers JSON, keeps the headers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TargetHandler)
        self.headers_seen: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/orders"


class _TargetHandler(BaseHTTPRequestHandler):
    server: _Target

    def do_GET(self) -> None:
        self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b'{"orders": 3}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> Iterator[Any]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    yield from _serve(_Receiver())


@pytest.fixture
def target() -> Iterator[_Target]:
    yield from _serve(_Target())


@pytest.fixture
def start_worker(
    redis_server: RedisServer, data_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        clean = {k: "" for k in os.environ if k.startswith("OTEL_")}
        worker = WorkerProcess(
            {**clean, "REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir), **env},
            concurrency=2,
            log_path=tmp_path / f"worker-{len(workers)}.log",
        )
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.kill()


def _wait_job(client: httpx.Client, job_id: str, status: str) -> dict[str, Any]:
    answer = client.get(f"/api/v1/queue/jobs/{job_id}/wait", params={"timeout": "60s"})
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["status"] == status, record
    return dict(record)


def _trace(receiver: _Receiver, trace_id: str, wanted: Callable[[list[Span]], bool]) -> list[Span]:
    def spans() -> list[Span]:
        found = [s for s in receiver.snapshot() if s.trace_id == trace_id]
        return found if wanted(found) else []

    return wait_until(spans, timeout=30, interval=0.05, message=f"the spans of trace {trace_id}")


def _one(spans: list[Span], name: str) -> Span:
    matching = [s for s in spans if s.name == name]
    assert len(matching) == 1, (name, [(s.name, s.service) for s in spans])
    return matching[0]


def test_a_job_is_one_trace_from_the_api_request_to_its_steps_and_their_http_calls(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    receiver: _Receiver,
    target: _Target,
) -> None:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **FAST_EXPORT}
    server = make_server(redis_url=redis_server.url, **otel).start()
    start_worker(**otel)
    pipeline = {
        "name": "orders",
        "steps": [
            {"name": "fetch", "plugin": "Input.api", "config": {"url": target.url},
             "output": "fetched"},
            {"name": "shape", "plugin": "Debug.echo", "config": {"value": {"n": 1}},
             "output": "shaped"},
            {"name": "settle", "plugin": "Debug.sleep", "config": {"seconds": 0.01}},
        ],
    }  # fmt: skip
    # The caller's own trace: the API continues it.
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        enqueued = client.post(
            ENQUEUE,
            json={"pipeline": pipeline, "max_retries": 0},
            headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
        )
        assert enqueued.status_code == 202, enqueued.text
        job_id = enqueued.json()["job_id"]
        record = client.get(f"/api/v1/queue/jobs/{job_id}").json()
        assert record["trace_id"] == caller_trace
        assert record["traceparent"].startswith(f"00-{caller_trace}-")
        done = _wait_job(client, job_id, "succeeded")
        assert done["trace_id"] == caller_trace
        # The run store keeps it (the job's trace id outlives its record in Redis).
        run = wait_until(
            lambda: (
                (answer := client.get(f"/api/v1/runs/{job_id}")).status_code == 200
                and answer.json()
            ),
            timeout=30,
            message="the stored run",
        )
        assert run["options"]["traceparent"] == record["traceparent"]

        # A job that fails and is retried: one job span per attempt, in one trace.
        boom = {"name": "boom", "plugin": "Debug.fail", "config": {"message": "disk on fire"}}
        failing = {"name": "flaky", "steps": [boom]}
        retried = client.post(
            ENQUEUE, json={"pipeline": failing, "max_retries": 1, "retry_backoff": 0}
        )
        assert retried.status_code == 202, retried.text
        retried_id = retried.json()["job_id"]
        failed = _wait_job(client, retried_id, "failed")
        assert failed["attempts"] == 2 and failed["trace_id"]

        # A webhook trigger starts its job's trace inside the hook request's span.
        created = client.post(
            "/api/v1/triggers", json={"name": "orders-hook", "pipeline": pipeline}
        )
        assert created.status_code == 201, created.text
        trigger = created.json()
        hooked = client.post(
            trigger["hook"], json={}, headers={"Authorization": f"Bearer {trigger['secret']}"}
        )
        assert hooked.status_code == 202, hooked.text
        hooked_job = _wait_job(client, hooked.json()["job_id"], "succeeded")

        # A schedule's tick starts a trace of its own (a root span).
        created = client.post(
            "/api/v1/schedules",
            json={"name": "orders-tick", "interval": "1s", "pipeline": pipeline},
        )
        assert created.status_code == 201, created.text
        schedule_id = created.json()["id"]
        ticked = wait_until(
            lambda: client.get(f"/api/v1/schedules/{schedule_id}").json()["last_job_id"],
            timeout=30,
            message="the schedule's first job",
        )
        assert client.delete(f"/api/v1/schedules/{schedule_id}").status_code == 204
        ticked_job = _wait_job(client, ticked, "succeeded")

    expected = {
        f"POST {ENQUEUE}", "enqueue", "queue.wait", "job orders",
        "step fetch", "step shape", "step settle", "GET",
    }  # fmt: skip
    spans = _trace(receiver, caller_trace, lambda found: expected <= {s.name for s in found})
    api = _one(spans, f"POST {ENQUEUE}")
    enqueue = _one(spans, "enqueue")
    wait = _one(spans, "queue.wait")
    job = _one(spans, "job orders")
    steps = [_one(spans, f"step {name}") for name in ("fetch", "shape", "settle")]
    call = _one(spans, "GET")

    assert api.parent_id == caller_span and api.service == "mimir-server"
    assert api.attributes["http.route"] == ENQUEUE
    assert api.attributes["http.response.status_code"] == 202
    assert enqueue.parent_id == api.span_id and enqueue.service == "mimir-server"
    assert enqueue.attributes["mimir.job.id"] == job_id
    assert wait.parent_id == enqueue.span_id and job.parent_id == enqueue.span_id
    assert job.service == "mimir-worker"
    assert job.attributes["mimir.job.id"] == job_id
    assert job.attributes["mimir.job.attempt"] == 1
    assert job.attributes["mimir.queue"] == "default"
    assert job.attributes["mimir.pool"] == "default"
    assert str(job.attributes["mimir.worker.id"]).startswith("worker-")
    assert job.attributes["mimir.outcome"] == "succeeded"
    for step, plugin in zip(steps, ("Input.api", "Debug.echo", "Debug.sleep"), strict=True):
        assert step.parent_id == job.span_id
        assert step.attributes["mimir.plugin"] == plugin
        assert step.attributes["mimir.outcome"] == "succeeded"
    assert call.parent_id == steps[0].span_id
    assert call.attributes["http.response.status_code"] == 200
    assert call.attributes["url.full"] == target.url
    # The outside API received the call's own context.
    # (The first call: the trigger's job below makes the second.)
    assert target.headers_seen[0]["traceparent"] == f"00-{caller_trace}-{call.span_id}-01"

    retried_trace = failed["trace_id"]
    spans = _trace(
        receiver, retried_trace, lambda found: sum(s.name == "job flaky" for s in found) == 2
    )
    attempts = sorted(
        (s for s in spans if s.name == "job flaky"), key=lambda s: s.attributes["mimir.job.attempt"]
    )
    assert [s.attributes["mimir.job.attempt"] for s in attempts] == [1, 2]
    enqueue = _one(spans, "enqueue")
    for attempt in attempts:
        assert attempt.parent_id == enqueue.span_id
        assert attempt.status == 2  # STATUS_CODE_ERROR
        assert attempt.attributes["mimir.outcome"] == "failed"
    booms = [s for s in spans if s.name == "step boom"]
    assert len(booms) == 2 and {s.parent_id for s in booms} == {s.span_id for s in attempts}

    hook_route = "POST /api/v1/hooks/{trigger_id}"
    spans = _trace(
        receiver,
        hooked_job["trace_id"],
        lambda found: (
            {hook_route, "trigger orders-hook", "enqueue", "job orders"} <= {s.name for s in found}
        ),
    )
    hook, fired = _one(spans, hook_route), _one(spans, "trigger orders-hook")
    assert hook.parent_id == "" and fired.parent_id == hook.span_id
    assert fired.attributes["mimir.trigger.id"] == trigger["id"]
    assert _one(spans, "enqueue").parent_id == fired.span_id
    assert _one(spans, "job orders").parent_id == _one(spans, "enqueue").span_id

    spans = _trace(
        receiver,
        ticked_job["trace_id"],
        lambda found: {"schedule orders-tick", "enqueue", "job orders"} <= {s.name for s in found},
    )
    tick = _one(spans, "schedule orders-tick")
    assert tick.parent_id == "" and tick.attributes["mimir.schedule.id"] == schedule_id
    assert _one(spans, "enqueue").parent_id == tick.span_id
    assert _one(spans, "job orders").parent_id == _one(spans, "enqueue").span_id


def test_without_the_otel_environment_nothing_is_traced(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    receiver: _Receiver,
) -> None:
    assert not tracing_requested({})
    assert not tracing_requested({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    # An endpoint alone would turn it on: these switch it off again.
    server = make_server(
        redis_url=redis_server.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_TRACES_EXPORTER="none",
        **FAST_EXPORT,
    ).start()
    worker = start_worker(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SDK_DISABLED="true", **FAST_EXPORT
    )
    pipeline = {"name": "quiet", "steps": [{"name": "nap", "plugin": "Debug.sleep",
                                            "config": {"seconds": 0}}]}  # fmt: skip
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        enqueued = client.post(
            ENQUEUE,
            json={"pipeline": pipeline},
            headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        )
        assert enqueued.status_code == 202, enqueued.text
        done = _wait_job(client, enqueued.json()["job_id"], "succeeded")
    # No trace ids made up without tracing: the record has none.
    assert done.get("traceparent") is None and done["trace_id"] is None
    # A graceful stop flushes whatever a process would have buffered: nothing came.
    assert worker.stop() == 0
    assert server.stop() == 0
    assert receiver.requests == 0
