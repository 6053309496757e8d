"""``mimir runs list|show|logs|export``: the run history, through the server's API.

The server is ``--api-url`` (default ``MIMIR_API_URL``, else ``http://localhost:8080``);
the token is ``--token`` (default ``MIMIR_API_TOKEN``). Filters are the API's:
``--pipeline``, ``--status``, ``--queue``, ``--since``, ``--until`` (ISO 8601 or an age
such as ``24h``, ``7d``) and ``-q`` (text in the error or the pipeline name).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["main"]

STATUSES = ["succeeded", "failed", "cancelled", "dead"]


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", help="only runs of this pipeline")
    parser.add_argument("--status", choices=STATUSES, help="only runs that ended so")
    parser.add_argument("--queue", help="only runs of this worker pool")
    parser.add_argument("--since", help="ended at or after: ISO 8601 time or age (24h, 7d)")
    parser.add_argument("--until", help="ended before: ISO 8601 time or age")
    parser.add_argument("-q", "--query", dest="q", help="text in the error or pipeline name")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimir runs", description="The run history kept by the server (its run store)."
    )
    parser.add_argument("--api-url", help="server URL (default: MIMIR_API_URL)")
    parser.add_argument("--token", help="API token (default: MIMIR_API_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="runs newest first")
    _filters(listing)
    listing.add_argument("--limit", type=int, default=50, help="runs to show (default 50)")
    listing.add_argument("--cursor", help="continue after a page (its next_cursor)")
    listing.add_argument("--json", action="store_true", help="the API's answer as JSON")

    show = commands.add_parser("show", help="one run with its steps and artifacts")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true", help="the API's answer as JSON")

    logs = commands.add_parser("logs", help="a run's log lines")
    logs.add_argument("job_id")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="follow a running job until it ends"
    )

    export = commands.add_parser("export", help="every matching run as CSV or JSON lines")
    _filters(export)
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="default csv")
    export.add_argument("-o", "--output", help="write to this file (default: stdout)")

    stats = commands.add_parser("stats", help="counts, failure rate and p50/p95 duration")
    stats.add_argument("--since", help="from this time or age on (default 24h)")
    stats.add_argument("--group-by", choices=["pipeline", "status", "hour"], default="pipeline")
    stats.add_argument("--json", action="store_true", help="the API's answer as JSON")
    return parser


class ApiError(Exception):
    """The server refused or could not be reached (the message says which)."""


def _params(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {
        name: getattr(args, name) for name in names if getattr(args, name, None) not in (None, "")
    }


class Api:
    """The few calls the command makes (httpx, synchronous)."""

    def __init__(self, base_url: str, token: str | None) -> None:
        import httpx

        from mimir.core.tls import TlsError, api_verify

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            verify = api_verify()  # $MIMIR_CA_FILE for an https:// server with a private CA
        except TlsError as exc:
            raise ApiError(str(exc)) from None
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(30.0, read=None),
            verify=verify,
        )

    def close(self) -> None:
        self.http.close()

    def _check(self, answer: Any) -> Any:
        if answer.status_code >= 400:
            answer.read()
            try:
                message = answer.json().get("error") or answer.text
            except ValueError:
                message = answer.text
            raise ApiError(f"{answer.status_code}: {message}")
        return answer

    def get(self, path: str, **params: Any) -> Any:
        import httpx

        from mimir.core.tls import describe_http_error

        try:
            return self._check(self.http.get(path, params=params)).json()
        except httpx.HTTPError as exc:
            raise ApiError(describe_http_error(exc, str(self.http.base_url))) from None

    def stream(self, path: str, **params: Any) -> Iterator[bytes]:
        import httpx

        from mimir.core.tls import describe_http_error

        try:
            with self.http.stream("GET", path, params=params) as answer:
                self._check(answer)
                yield from answer.iter_bytes()
        except httpx.HTTPError as exc:
            raise ApiError(describe_http_error(exc, str(self.http.base_url))) from None

    def events(self, path: str, **params: Any) -> Iterator[tuple[str, Any]]:
        """Server-sent events as ``(event, data)``."""
        import httpx

        from mimir.core.tls import describe_http_error

        try:
            with self.http.stream("GET", path, params=params) as answer:
                self._check(answer)
                kind, data = "message", list[str]()
                for line in answer.iter_lines():
                    if not line:
                        if data:
                            yield kind, json.loads("\n".join(data))
                        kind, data = "message", []
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
        except httpx.HTTPError as exc:
            raise ApiError(describe_http_error(exc, str(self.http.base_url))) from None


def _short_time(value: str | None) -> str:
    return "-" if not value else value.replace("T", " ")[:19]


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def _table(rows: list[list[str]], out: IO[str]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def _line(line: dict[str, Any]) -> str:
    step = f" [{line['step']}]" if line.get("step") else ""
    return (
        f"{_short_time(line.get('t'))} {line.get('level', 'INFO'):<7}{step} {line.get('msg', '')}"
    )


def _list(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    params = _params(args, "pipeline", "status", "queue", "since", "until", "q", "cursor")
    answer = api.get("/api/v1/runs", limit=args.limit, **params)
    if args.json:
        out.write(json.dumps(answer, indent=2) + "\n")
        return 0
    rows = [["JOB", "PIPELINE", "STATUS", "QUEUE", "FINISHED (UTC)", "DURATION", "ERROR"]]
    for run in answer["runs"]:
        rows.append(
            [
                run["job_id"],
                run.get("pipeline") or "-",
                run["status"],
                run.get("queue") or "-",
                _short_time(run.get("finished_at")),
                _duration(run.get("duration_ms")),
                (run.get("error") or "")[:60],
            ]
        )
    _table(rows, out)
    if answer.get("next_cursor"):
        out.write(f"more: --cursor {answer['next_cursor']}\n")
    return 0


def _show(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    run = api.get(f"/api/v1/runs/{args.job_id}")
    if args.json:
        out.write(json.dumps(run, indent=2) + "\n")
        return 0
    for label, key in (
        ("job", "job_id"),
        ("pipeline", "pipeline"),
        ("status", "status"),
        ("queue", "queue"),
        ("priority", "priority"),
        ("attempts", "attempts"),
        ("worker", "worker_id"),
        ("enqueued", "enqueued_at"),
        ("started", "started_at"),
        ("finished", "finished_at"),
    ):
        out.write(f"{label + ':':<10} {run.get(key) if run.get(key) is not None else '-'}\n")
    out.write(f"{'duration:':<10} {_duration(run.get('duration_ms'))}\n")
    if run.get("origin_kind"):
        out.write(f"{'origin:':<10} {run['origin_kind']} {run.get('origin_id')}\n")
    if run.get("error"):
        out.write(f"{'error:':<10} {run['error']}\n")
    if run.get("steps"):
        out.write("steps:\n")
        rows = [["#", "STEP", "PLUGIN", "STATUS", "DURATION", "ERROR"]]
        for step in run["steps"]:
            rows.append(
                [
                    str(step["index"]),
                    step["name"],
                    step.get("plugin") or "-",
                    step["status"],
                    _duration(step.get("duration_ms")),
                    (step.get("error") or "")[:60],
                ]
            )
        _table(rows, out)
    if run.get("artifacts"):
        out.write("artifacts:\n")
        for artifact in run["artifacts"]:
            out.write(
                f"  {artifact['name']}  {artifact['size']} bytes  {artifact['content_type']}"
                f"  sha256:{artifact.get('sha256') or '-'}\n"
            )
    return 0


def _logs(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    path = f"/api/v1/runs/{args.job_id}/logs"
    if not args.follow:
        answer = api.get(path)
        for line in answer["lines"]:
            out.write(_line(line) + "\n")
        if answer.get("truncated"):
            out.write("[log cut at 1 MiB]\n")
        return 0
    for kind, data in api.events(path, follow="true"):
        if kind == "line":
            out.write(_line(data) + "\n")
            out.flush()
        elif kind == "error":
            print(f"mimir runs: {data.get('error')}", file=sys.stderr)
        elif kind == "end":
            print(f"-- {args.job_id}: {data.get('status')}", file=sys.stderr)
            return 0 if data.get("status") == "succeeded" else 1
    return 0


def _export(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    params = _params(args, "pipeline", "status", "queue", "since", "until", "q")
    chunks = api.stream("/api/v1/runs/export", format=args.format, **params)
    if args.output:
        with open(args.output, "wb") as target:
            for chunk in chunks:
                target.write(chunk)
        return 0
    binary = getattr(out, "buffer", None)
    for chunk in chunks:
        if binary is not None:
            binary.write(chunk)
        else:
            out.write(chunk.decode("utf-8"))
    out.flush()
    return 0


def _stats(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    answer = api.get("/api/v1/runs/stats", group_by=args.group_by, **_params(args, "since"))
    if args.json:
        out.write(json.dumps(answer, indent=2) + "\n")
        return 0
    rows = [[args.group_by.upper(), "RUNS", "OK", "FAILED", "FAIL %", "P50", "P95"]]
    for row in answer["rows"]:
        rows.append(
            [
                row["key"] or "-",
                str(row["count"]),
                str(row["succeeded"]),
                str(row["failed"]),
                f"{row['failure_rate'] * 100:.1f}",
                _duration(row.get("p50_ms")),
                _duration(row.get("p95_ms")),
            ]
        )
    _table(rows, out)
    return 0


COMMANDS = {"list": _list, "show": _show, "logs": _logs, "export": _export, "stats": _stats}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mimir runs``; answers the exit code."""
    from mimir.core.settings import Settings

    args = _parser().parse_args(argv)
    if getattr(args, "limit", 1) < 1:
        print("mimir runs: --limit must be at least 1", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    try:
        api = Api(args.api_url or settings.api_url, args.token or settings.api_token)
    except ApiError as exc:
        print(f"mimir runs: {exc}", file=sys.stderr)
        return 1
    try:
        return COMMANDS[args.command](api, args, sys.stdout)
    except ApiError as exc:
        print(f"mimir runs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        api.close()
