"""What tracing costs the queue: the queue benchmark's Mimir figures with tracing off, on
at 100 % sampling and on at 1 %, side by side.

``python -m benchmarks.tracing [--jobs 4000] [--single 1000] [--roundtrips 200] [--runs 3]``

Each measurement runs in a child process whose environment sets the mode (the workers
inherit it), with a fresh redis-server, two worker processes and the queue benchmark's
one-step no-op job (:mod:`benchmarks.queue`'s driver): enqueue one job per call and in
batches of 1,000 (rate and the client's CPU per job), the drain of a prefilled queue (rate
and the workers' CPU per job, user + system, their export threads included), and the
round trips. CPU time per job is the figure to read on a busy machine: throughput swings
with whatever else runs, CPU time much less. On: spans go by OTLP/HTTP to a local sink
(a child process that answers every export and counts its bytes),
``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` with ``OTEL_TRACES_SAMPLER_ARG`` 1.0 or
0.01; the benchmark's client traces its enqueues too (``configure_tracing``), so every job
carries a ``traceparent`` and the workers' job and step spans follow its sampling. Modes
alternate within each run; figures are medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_RATIO = "parentbased_traceidratio"
MODES = {
    "off": {},
    "on 100 %": {"OTEL_TRACES_SAMPLER": _RATIO, "OTEL_TRACES_SAMPLER_ARG": "1.0"},
    "on 1 %": {"OTEL_TRACES_SAMPLER": _RATIO, "OTEL_TRACES_SAMPLER_ARG": "0.01"},
}
#: (field of benchmarks.queue.Figures, label, higher is better)
ROWS = [
    ("enqueue_single", "enqueue, one job per call (jobs/s)", True),
    ("client_cpu_single_us", "  client CPU per enqueue call (us)", False),
    ("enqueue_batch", "enqueue, batches of 1,000 (jobs/s)", True),
    ("client_cpu_batch_us", "  client CPU per job batched (us)", False),
    ("drain_prefilled", "drain of a prefilled queue (jobs/s)", True),
    ("worker_cpu_us", "  worker CPU per job (us)", False),
    ("p50_ms", "round trip enqueue + wait p50 (ms)", False),
    ("p99_ms", "round trip enqueue + wait p99 (ms)", False),
    ("one_call_p50_ms", "enqueue_and_wait p50 (ms)", False),
]


# -- the sink: an OTLP/HTTP endpoint that takes everything ---------------------------------


class _Sink(ThreadingHTTPServer):
    requests = 0
    received = 0


class _SinkHandler(BaseHTTPRequestHandler):
    server: _Sink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests += 1
        self.server.received += len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        answer = json.dumps({"requests": self.server.requests, "bytes": self.server.received})
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _sink(port: int) -> int:
    _Sink(("127.0.0.1", port), _SinkHandler).serve_forever()
    return 0


def _sink_stats(port: int) -> dict[str, int]:
    import httpx

    return dict(httpx.get(f"http://127.0.0.1:{port}/").json())


# -- one measurement, in a child process -------------------------------------------------------


def _one(args: argparse.Namespace) -> int:
    import psutil

    from benchmarks.queue import MimirDriver, RedisProcess, WorkerProcesses, _roundtrips, _wait_for
    from mimir.core import telemetry

    traced = telemetry.configure_tracing("mimir-bench")
    figures: dict[str, Any] = {"traced": traced}
    with tempfile.TemporaryDirectory(prefix="mimir-bench-tracing-") as tmp:
        redis = RedisProcess(Path(tmp))
        driver = MimirDriver(redis.url, args.concurrency)
        pool: WorkerProcesses | None = None
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            driver.enqueue_single(args.single)
            figures["enqueue_single"] = args.single / (time.perf_counter() - wall)
            figures["client_cpu_single_us"] = (time.process_time() - cpu) / args.single * 1e6
            cpu, wall = time.process_time(), time.perf_counter()
            driver.enqueue_batch(args.jobs)
            figures["enqueue_batch"] = args.jobs / (time.perf_counter() - wall)
            figures["client_cpu_batch_us"] = (time.process_time() - cpu) / args.jobs * 1e6
            redis.flush()
            command, env, marker = driver.worker_command()
            pool = WorkerProcesses(command, env, args.workers, marker, Path(tmp))
            workers = [psutil.Process(p.pid) for p in pool.processes]

            def worker_cpu() -> float:
                return sum(sum(w.cpu_times()[:2]) for w in workers)

            # A prefilled queue (workers stopped meanwhile), drained from their SIGCONT.
            pool.pause()
            handle = driver.enqueue_batch(args.jobs)
            before = worker_cpu()
            wall = time.perf_counter()
            pool.resume()
            _wait_for(lambda: driver.completed(handle, args.jobs), 600, "drain", interval=0.005)
            figures["drain_prefilled"] = args.jobs / (time.perf_counter() - wall)
            figures["worker_cpu_us"] = (worker_cpu() - before) / args.jobs * 1e6
            figures["p50_ms"], figures["p99_ms"] = _roundtrips(driver.roundtrip, args.roundtrips)
            figures["one_call_p50_ms"], _ = _roundtrips(driver.roundtrip_one_call, args.roundtrips)
        finally:
            if pool is not None:
                pool.stop()
            driver.close()
            redis.stop()
    telemetry.shutdown_tracing()
    print(json.dumps(figures))
    return 0


def _micro() -> int:
    """CPU per call of what tracing adds, in this process (no Redis, no I/O): the producer's
    enqueue span and ``traceparent``; the worker's queue-wait, job and step spans of a job
    enqueued so (its parent sampled or not as the sampler decided). Min of 5 rounds."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    from mimir.core import telemetry

    telemetry.configure_tracing("mimir-bench")
    job_attributes = {"mimir.job.id": "0" * 32, "mimir.job.attempt": 1, "mimir.queue": "q"}

    def enqueue() -> str | None:
        if not telemetry.tracing_enabled():
            return None
        with telemetry.span(
            "enqueue", kind=SpanKind.PRODUCER, attributes=lambda: {"mimir.queue": "default"}
        ) as current:
            value = telemetry.traceparent()
            if current.is_recording():
                current.set_attribute("mimir.job.id", "0" * 32)
            return value

    def run_job(parent: str | None) -> None:
        if not telemetry.tracing_enabled():
            return
        telemetry.record_span("queue.wait", 1, 2, parent=parent)
        with telemetry.span("job noop", parent=parent, attributes=lambda: job_attributes):
            with telemetry.span(
                "step s", attributes=lambda: {"mimir.plugin": "Debug.echo"}
            ) as step:
                pass
            telemetry.record_outcome(step, "succeeded")
            telemetry.record_outcome(trace.get_current_span(), "succeeded")

    def per_call(call: Any, count: int) -> float:
        rounds = []
        for _ in range(5):
            began = time.process_time()
            for _ in range(count):
                call()
            rounds.append((time.process_time() - began) / count * 1e6)
        return min(rounds)

    parents = [enqueue() for _ in range(1000)]
    figures = {
        "enqueue_us": per_call(enqueue, 2000),
        "job_us": per_call(lambda: [run_job(p) for p in parents[:100]], 20) / 100,
    }
    telemetry.shutdown_tracing()
    print(json.dumps(figures))
    return 0


def _env(mode: str, sink_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if MODES[mode]:
        env.update(MODES[mode], OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink_port}")
    return env


def _measure(mode: str, args: argparse.Namespace, sink_port: int) -> dict[str, Any]:
    env = _env(mode, sink_port)
    command = [
        sys.executable, "-m", "benchmarks.tracing", "--one",
        "--jobs", str(args.jobs), "--single", str(args.single),
        "--roundtrips", str(args.roundtrips), "--workers", str(args.workers),
        "--concurrency", str(args.concurrency),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{mode}: exit {done.returncode}:\n{done.stderr[-3000:]}")
    figures = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    if figures["traced"] != bool(MODES[mode]):
        raise RuntimeError(f"{mode}: tracing is {'on' if figures['traced'] else 'off'}")
    return figures


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing", description=__doc__)
    parser.add_argument("--jobs", type=int, default=4000, help="jobs per drain (default 4000)")
    parser.add_argument("--single", type=int, default=1000, help="single enqueues (1000)")
    parser.add_argument("--roundtrips", type=int, default=200, help="round trips (200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode (median; 3)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sink", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--micro", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink is not None:
        return _sink(args.sink)
    if args.one:
        return _one(args)
    if args.micro:
        return _micro()

    from benchmarks._processes import free_port, wait_for

    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        print("tracing: the tracing extra is not installed (pip install -e '.[tracing]')")
        return 0
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.tracing", "--sink", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    exported: dict[str, list[int]] = {mode: [] for mode in MODES}
    try:
        wait_for(lambda: _sink_up(port), 10, "the OTLP sink")
        started = time.monotonic()
        for run in range(args.runs):
            for mode in MODES:
                before = _sink_stats(port)["bytes"]
                results[mode].append(_measure(mode, args, port))
                exported[mode].append(_sink_stats(port)["bytes"] - before)
                print(f"  run {run + 1} {mode}: done", file=sys.stderr, flush=True)
        micro = {}
        for mode in MODES:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.tracing", "--micro"],
                env=_env(mode, port), cwd=ROOT, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            micro[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        sink.terminate()
        sink.wait(10)
    print(
        f"Tracing cost on the queue benchmark ({args.jobs:,} no-op jobs, {args.workers} workers "
        f"x {args.concurrency}, medians of {args.runs}; {time.monotonic() - started:.0f} s)"
    )
    names = list(MODES)
    print(f"{'':44}" + "".join(f"{name:>12}" for name in names) + "   100 %/off    1 %/off")
    for field, label, _ in ROWS:
        medians = [statistics.median(f[field] for f in results[name]) for name in names]
        cells = "".join(
            f"{value:>12,.2f}" if value < 100 else f"{value:>12,.0f}" for value in medians
        )
        ratios = f"{_ratio(medians[1], medians[0]):>9}  {_ratio(medians[2], medians[0]):>9}"
        print(f"{label:44}{cells}   {ratios}")
    kib = [statistics.median(exported[name]) / 1024 for name in names]
    print(f"{'OTLP exported (KiB per run)':44}" + "".join(f"{value:>12,.0f}" for value in kib))
    print("CPU per call of the tracing code alone (in one process, no I/O; min of 5 rounds):")
    for key, label in (("enqueue_us", "  enqueue span + traceparent (us)"),
                       ("job_us", "  a job's wait, job and step spans (us)")):  # fmt: skip
        print(f"{label:44}" + "".join(f"{micro[name][key]:>12,.1f}" for name in names))
    return 0


def _sink_up(port: int) -> bool:
    try:
        _sink_stats(port)
        return True
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
