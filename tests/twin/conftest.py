"""Fixtures of the twin tests: the API server fixtures of ``tests/server``."""

from __future__ import annotations

from tests.server.conftest import api_client, api_server, make_server  # noqa: F401 - fixtures
