"""Mimir AIP worker: drains the Redis job queue and runs jobs with the core engine."""

from __future__ import annotations

__all__: list[str] = []
