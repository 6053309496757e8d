"""Mimir AIP API server (FastAPI): routers per resource over the core."""

from __future__ import annotations

__all__: list[str] = []
