"""The plugins that ship with Mimir."""

from __future__ import annotations

from typing import Any

from mimir.core.plugins.base import Plugin
from mimir.core.plugins.builtin.debug import EchoPlugin, FailPlugin, SleepPlugin

__all__ = ["BUILTIN_PLUGINS"]

#: Every built-in plugin class, registered by :func:`default_registry`.
BUILTIN_PLUGINS: list[type[Plugin[Any]]] = [
    EchoPlugin,
    FailPlugin,
    SleepPlugin,
]
