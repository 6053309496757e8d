"""API keys with roles: every route declares its role, and a real server enforces it.

The walk (:func:`test_every_route_answers_each_role_as_declared`) sends every operation
of the OpenAPI schema with a viewer, an operator and an admin key, with minimal bodies:
below the route's role it must be a 403 naming the role; at or above, anything but
401/403, never a 5xx.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select

from mimir.core.runstore.keys import Role, api_keys, parse_key
from mimir.server.app import create_app
from mimir.server.methods import flat_routes
from mimir.server.roles import PUBLIC, ROUTE_ROLES, required_role
from tests.helpers import RedisServer, ServerProcess, wait_until

TOKEN = "bootstrap-token-value-42"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _served() -> set[tuple[str, str]]:
    app = create_app()
    return {
        (method, route.path_format)
        for route in flat_routes(app.router.routes)
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }


def test_every_route_declares_a_role() -> None:
    served = _served()
    undeclared = sorted(served - set(ROUTE_ROLES) - PUBLIC)
    assert not undeclared, f"routes without a role in server/roles.py: {undeclared}"
    stale = sorted(set(ROUTE_ROLES) - served)
    assert not stale, f"server/roles.py lists routes the app does not serve: {stale}"
    # A route nobody declared needs admin (default deny).
    assert required_role("POST", "/api/v1/not-declared") is Role.admin
    assert required_role("HEAD", "/api/v1/runs") is Role.viewer
    assert required_role("GET", "/health") is None


def _key(client: httpx.Client, name: str, role: str) -> str:
    made = client.post("/api/v1/keys", json={"name": name, "role": role}, headers=ADMIN)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["role"] == role and parse_key(body["key"]) == body["id"]
    return str(body["key"])


def _operations() -> list[tuple[str, str]]:
    schema = create_app().openapi()
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    ]


def test_every_route_answers_each_role_as_declared(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(redis_url=redis_server.url, MIMIR_API_TOKEN=TOKEN).start()
    operations = _operations()
    assert len(operations) > 90
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        keys = {role: _key(client, f"walk-{role.name}", role.name) for role in Role}
        wrong = []
        for role in Role:  # viewer, operator, admin
            headers = {"Authorization": f"Bearer {keys[role]}"}
            for method, template in operations:
                if (method, template) in PUBLIC:
                    continue
                needed = required_role(method, template)
                assert needed is not None
                path = re.sub(r"\{[^}]+\}", "no-such-id", template)
                params = {"timeout": "0"} if path.endswith("/wait") else None
                body = {} if method in {"POST", "PUT", "PATCH"} else None
                with client.stream(
                    method, path, json=body, params=params, headers=headers
                ) as answer:
                    status = answer.status_code
                    text = answer.read().decode() if status in {401, 403} else ""
                if role < needed:
                    if status != 403 or f"needs the {needed.name} role" not in text:
                        wrong.append((role.name, method, template, status, text[:200]))
                elif status in {401, 403} or status >= 500:
                    wrong.append((role.name, method, template, status, text[:200]))
        assert not wrong, "\n".join(map(str, wrong))
        # Without a key, or with a made-up one: 401.
        assert client.get("/api/v1/runs").status_code == 401
        fake = "mk_0123456789ab_" + "x" * 43
        assert (
            client.get("/api/v1/runs", headers={"Authorization": f"Bearer {fake}"}).status_code
            == 401
        )


def test_keys_revoke_last_use_storage_audit_and_logs(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    server = make_server(redis_url=redis_server.url, MIMIR_API_TOKEN=TOKEN).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        operator = _key(client, "ci-operator", "operator")
        viewer = _key(client, "dash", "viewer")
        as_operator = {"Authorization": f"Bearer {operator}"}
        as_viewer = {"Authorization": f"Bearer {viewer}"}
        assert client.get("/api/v1/keys", headers=as_operator).status_code == 403
        denied = client.post("/api/v1/schedules", json={}, headers=as_viewer)
        assert denied.status_code == 403
        assert "needs the operator role; key:dash has viewer" in denied.json()["error"]
        assert client.get("/api/v1/runs", headers=as_viewer).status_code == 200
        # Last use: written on first use.
        listed = {k["name"]: k for k in client.get("/api/v1/keys", headers=ADMIN).json()}
        assert set(listed) == {"ci-operator", "dash"}
        assert listed["dash"]["last_used_at"] is not None
        assert "key" not in listed["dash"] and "hash" not in listed["dash"]
        # An operator's mutating call is audited under its key's name.
        cancel = client.post("/api/v1/queue/jobs/nope/cancel", headers=as_operator)
        assert cancel.status_code == 404
        # Revocation is effective at once on this server (the key was cached).
        assert client.delete("/api/v1/keys/dash", headers=ADMIN).status_code == 204
        assert client.get("/api/v1/runs", headers=as_viewer).status_code == 401
        assert client.delete("/api/v1/keys/dash", headers=ADMIN).status_code == 404
        assert (
            client.post(
                "/api/v1/keys", json={"name": "ci-operator", "role": "admin"}, headers=ADMIN
            ).status_code
            == 409
        )

        def audited() -> list[dict[str, object]] | None:
            entries = client.get("/api/v1/audit", headers=ADMIN).json()["entries"]
            actions = {(e["actor"], e["action"]) for e in entries}
            wanted = {
                ("token", "keys.create"),
                ("token", "keys.delete"),
                ("key:ci-operator", "queue.jobs.cancel"),
            }
            return entries if wanted <= actions else None

        entries = wait_until(audited, message="the key calls in the audit log")
        created = [e for e in entries if e["action"] == "keys.create" and e["outcome"] == 201]
        assert {e["target"].get("name") for e in created} == {"ci-operator", "dash"}, created
    # Stored hashed: the database holds scrypt hashes, never a key.
    engine = create_engine(f"sqlite:///{data_dir / 'mimir.db'}")
    with engine.connect() as conn:
        rows = conn.execute(select(api_keys)).all()
    engine.dispose()
    assert [r.name for r in rows] == ["ci-operator"]
    assert rows[0].hash.startswith("scrypt$") and operator not in rows[0].hash
    db_bytes = (data_dir / "mimir.db").read_bytes() + b"".join(
        p.read_bytes() for p in data_dir.glob("mimir.db-*")
    )
    assert operator.encode() not in db_bytes and viewer.encode() not in db_bytes
    # Never in the logs (the server's whole output).
    output = server.output(lines=100_000)
    assert "refused" in output
    for secret in (operator, viewer, operator[16:]):  # operator[16:]: its secret part
        assert secret not in output


def test_cli_and_keys_alone_turn_auth_on(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    env = {**server.env}
    cli = [sys.executable, "-m", "mimir.core.runstore.keys_cli"]

    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        # No token, no key: open on loopback, as before.
        assert client.get("/api/v1/runs").status_code == 200
        made = keys("create", "ops", "--role", "admin")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        assert parse_key(key) and key not in made.stderr
        # The first key turns auth on (within ANY_KEYS_SECONDS on a server that had none).
        wait_until(
            lambda: client.get("/api/v1/runs").status_code == 401,
            timeout=30,
            message="auth on once a key exists",
        )
        good = {"Authorization": f"Bearer {key}"}
        assert client.get("/api/v1/runs", headers=good).status_code == 200
        listing = keys("list")
        assert listing.returncode == 0 and "ops" in listing.stdout and "admin" in listing.stdout
        assert key not in listing.stdout
        # Another key stays: revoking the last one would turn auth off again (README).
        assert keys("create", "spare", "--role", "viewer").returncode == 0
        revoked = keys("revoke", "ops")
        assert revoked.returncode == 0, revoked.stderr
        # Revoked by another process: refused once this server's cache lapses (10 s).
        wait_until(
            lambda: client.get("/api/v1/runs", headers=good).status_code == 401,
            timeout=30,
            message="a key revoked by the CLI refused",
        )
