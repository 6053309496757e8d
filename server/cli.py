"""``mimir server``: run the API with uvicorn; ``--embedded`` adds a private Redis and workers.

::

    mimir server [--host 127.0.0.1] [--port $MIMIR_PORT] [--embedded] [--workers N]
                 [--insecure] [--tls-cert FILE --tls-key FILE] [--log-level LEVEL]

Listening beyond loopback without ``MIMIR_API_TOKEN`` is refused unless ``--insecure``;
beyond loopback without TLS, a warning at start. ``--tls-cert``/``--tls-key`` (or
``MIMIR_TLS_CERT``/``MIMIR_TLS_KEY``) serve HTTPS (uvicorn's own TLS); the files are
checked before binding (exit 2 naming the file, or a key that does not match).
With ``--embedded``, a redis-server (AOF on) runs in ``$MIMIR_STATE_DIR/embedded-redis``
and N worker processes drain its queue; SIGINT/SIGTERM stop the server, then the workers
(they drain), then Redis.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
from types import FrameType

import uvicorn

from mimir.core import telemetry
from mimir.core.queue.connection import check_redis_password_file
from mimir.core.redis_embedded import EmbeddedRedis, EmbeddedRedisError, start_redis
from mimir.core.settings import Settings
from mimir.core.tls import TlsError, check_server_files
from mimir.server.embedded import WorkerProcesses, worker_env
from mimir.server.logs import configure_logging
from mimir.server.redaction import redact_url

__all__ = ["build_parser", "is_loopback", "main"]

logger = logging.getLogger("mimir.server")

#: Seconds embedded workers get to finish their jobs on shutdown.
WORKER_GRACE = 30.0


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimir server", description="Run the Mimir REST API.")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=settings.port,
        help=f"port to listen on (default $MIMIR_PORT or 8080; now {settings.port})",
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="start a private redis-server (AOF on) and worker processes with the server",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes to start with --embedded (default 1)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond loopback without MIMIR_API_TOKEN",
    )
    parser.add_argument(
        "--tls-cert",
        default=str(settings.tls_cert) if settings.tls_cert else None,
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (chain) (default $MIMIR_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        default=str(settings.tls_key) if settings.tls_key else None,
        metavar="FILE",
        help="the certificate's PEM private key (default $MIMIR_TLS_KEY)",
    )
    parser.add_argument(
        "--log-level", default=None, help="log level (default $MIMIR_LOG_LEVEL or INFO)"
    )
    return parser


class _Server(uvicorn.Server):
    """uvicorn's server, printing the URL once it really listens (logging it instead when
    the log is JSON lines: a log collector reads stdout too, and every line must parse)."""

    json_logs = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        host, port = self.config.host, self.config.port
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                port = sock.getsockname()[1]
                break
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self.config.ssl_certfile else "http"
        if self.json_logs:
            logger.info("Mimir API listening on %s://%s:%s", scheme, shown, port)
        else:
            print(f"Mimir API listening on {scheme}://{shown}:{port}", flush=True)


class _Signals:
    """Records SIGINT/SIGTERM so shutdown runs our cleanup instead of dying mid-way.

    uvicorn handles these signals while it serves, then re-raises them once it has
    stopped; these handlers receive that re-raise.
    """

    def __init__(self) -> None:
        self.received: list[int] = []

    def __enter__(self) -> _Signals:
        self._previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; return the exit code."""
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"mimir server: {exc}", file=sys.stderr)
        return 2
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    try:
        configure_logging(
            args.log_level or settings.log_level, settings.log_dir, settings.log_format
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.workers is not None and not args.embedded:
        parser.error("--workers needs --embedded (otherwise start workers with 'mimir worker')")
    if not args.embedded:  # --embedded gives its own Redis's file
        try:
            check_redis_password_file()
        except ValueError as exc:
            print(f"mimir server: {exc}", file=sys.stderr)
            return 2
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be 0 or more")
    if bool(args.tls_cert) != bool(args.tls_key):
        print(
            "mimir server: TLS needs both --tls-cert and --tls-key "
            "(or MIMIR_TLS_CERT and MIMIR_TLS_KEY)",
            file=sys.stderr,
        )
        return 2
    if args.tls_cert:
        try:
            check_server_files(args.tls_cert, args.tls_key)
        except TlsError as exc:
            print(f"mimir server: {exc}", file=sys.stderr)
            return 2
    if not is_loopback(args.host):
        if settings.api_token:
            logger.info("listening on %s: every call but /health needs the bearer token", args.host)
        elif args.insecure:
            logger.warning(
                "listening on %s WITHOUT a token (--insecure): anyone who can reach this port "
                "can run pipelines",
                args.host,
            )
        else:
            print(
                f"mimir server: refusing to listen on {args.host} without MIMIR_API_TOKEN.\n"
                f"Set MIMIR_API_TOKEN (clients then send 'Authorization: Bearer <token>'), "
                f"listen on 127.0.0.1, or pass --insecure to accept the risk.",
                file=sys.stderr,
            )
            return 2
        if not args.tls_cert:
            logger.warning(
                "listening on %s without TLS: the token and every request travel in clear; "
                "pass --tls-cert/--tls-key or put a TLS reverse proxy in front",
                args.host,
            )

    _raise_open_files_limit()
    with _Signals() as signals:
        return _serve(args, settings, signals)


#: The open-files limit the server asks for when the hard limit allows (each waiter,
#: event-stream subscriber and client connection holds a socket).
_WANTED_OPEN_FILES = 65536


def _raise_open_files_limit() -> None:
    """Raise the soft limit on open files towards the hard one: the common default soft
    limit (1024) caps the server at about a thousand concurrent connections."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, _WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-files limit from %d: %s", soft, exc)
            return
        logger.info("open-files limit raised from %d to %d", soft, wanted)
    if wanted < 4096:
        logger.warning(
            "open-files limit %d (hard): concurrent connections, waits and event streams "
            "are bounded by it; raise it (ulimit -n, LimitNOFILE=) for more",
            wanted,
        )


def _serve(args: argparse.Namespace, settings: Settings, signals: _Signals) -> int:
    from mimir.server.app import create_app  # after logging is set up

    # OTEL_* environment: traces of requests, enqueues and the runs done here.
    telemetry.configure_tracing("mimir-server")

    redis: EmbeddedRedis | None = None
    workers: WorkerProcesses | None = None
    # The port really served, for this process's plugins (their outbound policy denies
    # the API's own port) and for embedded workers, which inherit the environment.
    settings = settings.with_(port=args.port)
    os.environ["MIMIR_PORT"] = str(args.port)
    try:
        if args.embedded:
            if settings.redis_url_set:
                logger.warning(
                    "--embedded: ignoring REDIS_URL=%s for a private Redis",
                    redact_url(settings.redis_url),
                )
            try:
                redis = start_redis(
                    settings.state_dir / "embedded-redis", die_with_parent=True, auth=True
                )
            except EmbeddedRedisError as exc:
                print(f"mimir server: cannot start the embedded Redis: {exc}", file=sys.stderr)
                return 1
            settings = settings.with_(redis_url=redis.url, redis_url_set=True)
            os.environ["REDIS_URL"] = redis.url
            # Its password, for this process's clients and the workers (their environment).
            assert redis.password_file is not None
            os.environ["MIMIR_REDIS_PASSWORD_FILE"] = str(redis.password_file)
            print(f"Embedded Redis at {redis.url} (AOF in {redis.directory})", flush=True)
            count = 1 if args.workers is None else args.workers
            if count:
                workers = WorkerProcesses(count, worker_env(redis.url)).start()
        elif not settings.redis_url_set:
            logger.warning(
                "REDIS_URL is not set: the queue uses %s (pass --embedded for a private Redis)",
                settings.redis_url,
            )
        config = uvicorn.Config(
            create_app(settings),
            host=args.host,
            port=args.port,
            log_config=None,  # ours (configure_logging)
            access_log=False,  # RequestLogMiddleware logs one line per request
            server_header=False,
            timeout_graceful_shutdown=10,
            ssl_certfile=args.tls_cert,
            ssl_keyfile=args.tls_key,
        )
        server = _Server(config)
        server.json_logs = settings.log_format == "json"
        if signals.received:  # asked to stop while Redis and the workers were starting
            return 0
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits this way when it cannot bind
            return int(exc.code or 1) if not isinstance(exc.code, str) else 1
        return 0 if server.started else 1
    finally:
        telemetry.shutdown_tracing()  # export what is buffered
        if workers is not None:
            workers.stop(grace=WORKER_GRACE)
        if redis is not None:
            redis.stop()
        if signals.received:
            logger.info("stopped on signal %s", signal.Signals(signals.received[0]).name)
