"""Mimir AIP core: pipeline model, plugins, engine, queue client and settings.

Nothing here imports Qt, FastAPI or Docker (checked by import-linter).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
