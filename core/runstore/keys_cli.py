"""``mimir keys create NAME --role R | list | revoke NAME|ID``: API keys with roles.

It works on the run store's database directly, with the server's own settings
(``MIMIR_DATABASE_URL``, else SQLite in ``MIMIR_DATA_DIR``): the first key can be made
before any server runs and without a token, and on a PostgreSQL run store shared by
several servers one command serves them all. A running server sees a new key at once
(or, when it had no key and no token, within ``ANY_KEYS_SECONDS``: the first key turns
auth on) and stops accepting a key revoked here within ``KEY_CACHE_SECONDS`` (10 s);
``DELETE /api/v1/keys/{id}`` revokes at once on the server that answers it.

The key is printed once, on stdout, alone on its line; nothing else prints it.
Creations and revocations are written to the audit log as ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimir keys",
        description="API keys with roles, in the server's run store (its database).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser("create", help="a new key (printed once)")
    create.add_argument("name")
    create.add_argument(
        "--role", required=True, choices=["viewer", "operator", "admin"], help="what it may do"
    )
    listing = commands.add_parser("list", help="keys by name, role, created and last use")
    listing.add_argument("--json", action="store_true", help="as JSON")
    revoke = commands.add_parser("revoke", help="revoke a key by name or id")
    revoke.add_argument("key", metavar="NAME|ID")
    return parser


def _audit(engine: Any, action: str, method: str, target: dict[str, str]) -> None:
    from mimir.core.runstore.audit import AuditLog

    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    AuditLog(engine).write(
        [
            {
                "at": datetime.now(UTC),
                "actor": f"cli:{user}"[:200],
                "action": action,
                "method": method,
                "route": "mimir keys",
                "target": target,
                "outcome": 200,
            }
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from mimir.core.runstore.db import database_url, open_database, redact_database_url
    from mimir.core.runstore.keys import KeyExistsError, KeyStore, Role
    from mimir.core.settings import Settings

    settings = Settings.from_env()
    try:
        engine = open_database(settings)
    except Exception as exc:
        url = redact_database_url(database_url(settings))
        print(f"mimir keys: cannot open the run store {url}: {exc}", file=sys.stderr)
        return 1
    try:
        store = KeyStore(engine)
        if args.command == "create":
            try:
                record, key = store.create(args.name, Role[args.role])
            except KeyExistsError as exc:
                print(f"mimir keys: {exc}", file=sys.stderr)
                return 1
            except ValueError as exc:
                print(f"mimir keys: {exc}", file=sys.stderr)
                return 2
            _audit(engine, "keys.create", "POST", {"key_id": record.id, "name": record.name})
            print(
                f"created {record.role} key {record.name!r} (id {record.id}); "
                "it is shown this once:",
                file=sys.stderr,
            )
            print(key)
            return 0
        if args.command == "list":
            keys = store.list()
            if args.json:
                print(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
                return 0
            print(f"{'ID':<12}  {'NAME':<24}  {'ROLE':<8}  {'CREATED':<20}  LAST USE")
            for k in keys:
                used = k.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if k.last_used_at else "-"
                created = k.created_at.strftime("%Y-%m-%d %H:%M:%S")
                print(f"{k.id:<12}  {k.name:<24}  {k.role:<8}  {created:<20}  {used}")
            return 0
        gone = store.revoke(args.key)
        if gone is None:
            print(f"mimir keys: no key {args.key!r}", file=sys.stderr)
            return 1
        _audit(engine, "keys.delete", "DELETE", {"key_id": gone.id, "name": gone.name})
        print(f"revoked key {gone.name!r} (id {gone.id})")
        return 0
    finally:
        engine.dispose()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
