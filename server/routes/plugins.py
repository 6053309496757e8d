"""``GET /api/v1/plugins``: every plugin with its description and config JSON schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from mimir.core.plugins.registry import PluginRegistry
from mimir.server.deps import RegistryDep

__all__ = ["PluginInfo", "PluginList", "router"]

router = APIRouter(prefix="/api/v1/plugins", tags=["plugins"])


class PluginInfo(BaseModel):
    #: ``<Type>.<name>``, as written in a step's ``plugin``.
    name: str
    type: str
    description: str
    #: JSON schema of the step's ``config``.
    config_schema: dict[str, Any]


class PluginList(BaseModel):
    plugins: list[PluginInfo]
    #: Third-party entry points that failed to load, with the reason.
    load_errors: dict[str, str]


@router.get("")
async def list_plugins(registry: RegistryDep) -> PluginList:
    """The registered plugins, sorted by name."""
    # Building JSON schemas takes milliseconds per plugin; the registry is fixed once
    # built, so the list is made once per registry (and again if plugins are added).
    key = (id(registry), tuple(registry.names()))
    cached = _cache.get(key)
    if cached is None:
        cached = _cache[key] = _plugin_list(registry)
    return cached


_cache: dict[tuple[int, tuple[str, ...]], PluginList] = {}


def _plugin_list(registry: PluginRegistry) -> PluginList:
    return PluginList(
        plugins=[
            PluginInfo(
                name=plugin.full_name(),
                type=plugin.plugin_type,
                description=plugin.description,
                config_schema=plugin.config_model.model_json_schema(),
            )
            for plugin in registry
        ],
        load_errors=dict(registry.load_errors),
    )
