"""Plugins: the registry, the base class and the built-ins."""

from __future__ import annotations

from mimir.core.plugins.base import Plugin, PluginConfig, StepRuntime
from mimir.core.plugins.registry import ENTRY_POINT_GROUP, PluginRegistry, default_registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "Plugin",
    "PluginConfig",
    "PluginRegistry",
    "StepRuntime",
    "default_registry",
]
