"""``mimir schedules list|add|pause|resume|run-now|rm``: schedules through the API.

The API is ``--api-url`` (default ``MIMIR_API_URL``, else ``http://localhost:8080``) with
``--token`` (default ``MIMIR_API_TOKEN``). A schedule is named by its id or its name.
Exit codes: 0 done, 1 the API refused (its message printed), 2 bad options.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from mimir.core.tls import TlsError, api_verify, describe_http_error

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimir schedules", description="Run pipelines on a schedule (through the API)."
    )
    parser.add_argument("--api-url", help="the API (default: MIMIR_API_URL)")
    parser.add_argument("--token", help="API token (default: MIMIR_API_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="schedules with state, next and last run")
    listing.add_argument("--json", action="store_true", help="the API's answer as JSON")
    add = commands.add_parser("add", help="add a schedule")
    add.add_argument("name", help="the schedule's name")
    which = add.add_mutually_exclusive_group(required=True)
    which.add_argument("--pipeline", help="a stored pipeline's name")
    which.add_argument("--pipeline-file", help="a YAML file in the pipelines directory")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="cron expression: 5 fields, or 6 with seconds first")
    when.add_argument("--interval", help="Go duration: 30s, 5m, 1h")
    add.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    add.add_argument("--context", default="{}", help="JSON object seeding the context")
    add.add_argument("--priority", choices=["high", "normal", "low"], default="normal")
    add.add_argument("--queue", default="default", help="worker pool (default: default)")
    add.add_argument("--timeout", help="per-attempt timeout, e.g. 90s")
    add.add_argument("--max-retries", type=int, help="retries after a failure")
    add.add_argument("--start-at", help="ISO time of the first possible tick")
    add.add_argument("--end-at", help="ISO time after which the schedule ends")
    add.add_argument("--jitter", type=float, default=0.0, help="up to this many seconds late")
    add.add_argument("--misfire", choices=["skip", "run_once"], default="skip")
    add.add_argument("--overlap", choices=["allow", "skip"], default="allow")
    for name, text in (
        ("pause", "stop firing"),
        ("resume", "fire again from the next tick"),
        ("run-now", "enqueue one run now"),
        ("rm", "delete a schedule"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("schedule", help="id or name")
    return parser


class _ApiError(Exception):
    pass


def _check(answer: httpx.Response) -> Any:
    if answer.status_code >= 400:
        try:
            message = answer.json().get("error") or answer.text
        except ValueError:
            message = answer.text
        raise _ApiError(f"{answer.status_code}: {message}")
    return answer.json() if answer.content else None


def _find(client: httpx.Client, key: str) -> dict[str, Any]:
    """The schedule whose id or name is ``key``."""
    answer = client.get(f"/api/v1/schedules/{key}")
    if answer.status_code == 200:
        found: dict[str, Any] = answer.json()
        return found
    for schedule in _check(client.get("/api/v1/schedules")):
        if schedule["name"] == key:
            return dict(schedule)
    raise _ApiError(f"no schedule {key!r}")


def _short(moment: str | None) -> str:
    return (moment or "-").replace("T", " ").replace("Z", "")[:19]


def _print_table(schedules: list[dict[str, Any]]) -> None:
    rows = [("ID", "NAME", "STATE", "RULE", "NEXT RUN (UTC)", "LAST RUN")]
    for item in schedules:
        spec = item["spec"]
        rule = spec.get("cron") or f"every {spec.get('interval')}"
        if spec.get("cron") and spec.get("timezone", "UTC") != "UTC":
            rule += f" ({spec['timezone']})"
        last = item.get("last_run")
        last_text = f"{last['status']} {_short(last['finished_at'])}" if last else "-"
        rows.append(
            (
                item["id"][:12],
                item["name"],
                item["state"],
                rule,
                _short(item["next_run"]),
                last_text,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _run(args: argparse.Namespace, client: httpx.Client) -> int:
    if args.command == "list":
        schedules = _check(client.get("/api/v1/schedules"))
        if args.json:
            print(json.dumps(schedules, indent=2))
        else:
            _print_table(schedules)
        return 0
    if args.command == "add":
        try:
            context = json.loads(args.context)
        except ValueError as exc:
            raise _ApiError(f"--context is not JSON: {exc}") from None
        body: dict[str, Any] = {
            "name": args.name,
            "context": context,
            "timezone": args.timezone,
            "priority": args.priority,
            "queue": args.queue,
            "jitter": args.jitter,
            "misfire": args.misfire,
            "overlap": args.overlap,
        }
        optional = {
            "pipeline_name": args.pipeline,
            "pipeline_file": args.pipeline_file,
            "cron": args.cron,
            "interval": args.interval,
            "timeout": args.timeout,
            "max_retries": args.max_retries,
            "start_at": args.start_at,
            "end_at": args.end_at,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        created = _check(client.post("/api/v1/schedules", json=body))
        print(created["id"])
        print(
            f"schedule {created['name']!r} added; next runs: "
            + ", ".join(_short(moment) for moment in created["next_runs"][:3]),
            file=sys.stderr,
        )
        return 0
    schedule = _find(client, args.schedule)
    path = f"/api/v1/schedules/{schedule['id']}"
    if args.command == "rm":
        _check(client.delete(path))
        print(f"schedule {schedule['name']!r} deleted", file=sys.stderr)
    elif args.command == "run-now":
        print(_check(client.post(f"{path}/run-now"))["job_id"])
    else:
        changed = _check(client.post(f"{path}/{args.command}"))
        print(f"schedule {changed['name']!r} is {changed['state']}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from mimir.core.settings import Settings

    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    token = args.token or settings.api_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base_url = (args.api_url or settings.api_url).rstrip("/")
    try:
        with httpx.Client(
            base_url=base_url, headers=headers, timeout=30.0, verify=api_verify()
        ) as client:
            return _run(args, client)
    except TlsError as exc:
        print(f"mimir schedules: {exc}", file=sys.stderr)
        return 1
    except _ApiError as exc:
        print(f"mimir schedules: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"mimir schedules: {describe_http_error(exc, base_url)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
