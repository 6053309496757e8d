"""Mimir AIP desktop console (PySide6) and its Qt-free services (API client, cluster control)."""

from __future__ import annotations

__all__: list[str] = []
