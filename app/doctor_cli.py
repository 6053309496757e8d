"""``mimir doctor``: check a running cluster and say what is wrong and what to do.

::

    mimir doctor [--project P] [--backend docker|local] [--profile FILE.json]
                 [--api-url URL] [--token T] [--json]

With ``--api-url`` alone only the API is asked (Redis, workers, queues, the server's disk);
otherwise the project's cluster backend is asked too (containers, processes, Redis's disk),
and the API is the one the cluster publishes. Exit status: 0 nothing wrong, 1 warnings,
2 errors (so it can run from cron or a monitoring check); 3 when it could not run at all.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from mimir.app.cluster.base import ClusterBackend, ClusterError
from mimir.app.cluster.selection import create_backend, default_backend_name
from mimir.app.services.api import ApiClient
from mimir.app.services.doctor import Report, diagnose, format_report, report_json
from mimir.core.settings import Settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimir doctor",
        description="Check a running Mimir cluster: API, Redis, workers, queues, containers, "
        "disks and clocks. Exit 0 nothing wrong, 1 warnings, 2 errors, 3 the doctor could "
        "not run (bad options included).",
    )
    parser.add_argument("--project", help="cluster name, as for mimir cluster (default: mimir)")
    parser.add_argument(
        "--backend", choices=["docker", "local", "swarm"], help="as for mimir cluster"
    )
    parser.add_argument(
        "--profile", help="JSON profile of mimir cluster (docker_host, TLS, api_port, api_token)"
    )
    parser.add_argument("--docker-host", help="engine URL (default: DOCKER_HOST, else local)")
    parser.add_argument(
        "--api-url", help="ask this API only (no cluster control; default: the cluster's API)"
    )
    parser.add_argument("--token", help="API token (default: MIMIR_API_TOKEN)")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    return parser


async def _run(args: argparse.Namespace, settings: Settings) -> Report:
    backend: ClusterBackend | None = None
    api_url = args.api_url
    token = args.token or settings.api_token
    if not (args.api_url and not args.project and not args.backend and not args.profile):
        project = args.project or "mimir"
        name = args.backend or default_backend_name(
            project, settings, docker_host=args.docker_host, profile=args.profile
        )
        options: dict[str, Any] = {}
        if name in ("docker", "swarm"):
            options = {"docker_host": args.docker_host, "profile": args.profile}
        backend = create_backend(name, project, settings, **options)
        if api_url is None:
            try:
                status = await backend.status()
                api_url = status.api_url
            except ClusterError as exc:
                # An engine that does not answer is a finding (cluster.control, which
                # diagnose reports); the API is still checked where the backend puts it.
                logging.getLogger(__name__).debug("cluster status: %s", exc)
            api_url = api_url or getattr(backend, "api_url", None) or settings.api_url
        token = token or getattr(backend, "api_token", None)
    api = ApiClient(api_url or settings.api_url, token)
    try:
        return await diagnose(api, backend)
    finally:
        await api.aclose()
        close = getattr(backend, "close", None)
        if close is not None:
            close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mimir doctor``; returns the exit status."""
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse's usage error is 2, which here means "errors found"
        return 3 if exc.code == 2 else int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        report = asyncio.run(_run(args, settings))
    except (ClusterError, ValueError) as exc:
        print(f"mimir doctor: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a crash must not exit 1, which reads as "warnings"
        logging.getLogger(__name__).debug("doctor failed", exc_info=True)
        print(f"mimir doctor: could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    print(report_json(report) if args.json else format_report(report))
    return report.exit_code
