"""The plugin registry, keyed ``<Type>.<name>``; third parties join via entry points."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from typing import Any

from mimir.core.errors import PluginError, UnknownPluginError
from mimir.core.plugins.base import Plugin

__all__ = ["ENTRY_POINT_GROUP", "PluginRegistry", "default_registry"]

logger = logging.getLogger(__name__)

#: Entry-point group through which installed packages contribute plugins. An entry
#: point's object is a Plugin subclass or an iterable of them.
ENTRY_POINT_GROUP = "mimir.plugins"


class PluginRegistry:
    """Plugins by full name; each plugin class is instantiated once."""

    def __init__(self) -> None:
        self._plugins: dict[str, Plugin[Any]] = {}
        #: Entry points that failed to load: ``{entry point name: reason}``.
        self.load_errors: dict[str, str] = {}

    def register(self, plugin_class: type[Plugin[Any]], *, replace: bool = False) -> None:
        """Add ``plugin_class``; a name already taken is an error unless ``replace``."""
        if not (isinstance(plugin_class, type) and issubclass(plugin_class, Plugin)):
            raise PluginError(f"{plugin_class!r} is not a Plugin subclass")
        name = plugin_class.full_name()
        if name in self._plugins and not replace:
            raise PluginError(f"plugin {name!r} is already registered")
        self._plugins[name] = plugin_class()

    def get(self, name: str) -> Plugin[Any]:
        """The plugin called ``name`` (or that the original platform's name ``name`` stands
        for: ``AIModels.openai`` is ``AI.openai``); :class:`UnknownPluginError` lists close
        matches and, for the original's names, what exists nowhere."""
        plugin = self._plugins.get(name)
        if plugin is not None:
            return plugin
        from mimir.core.pipeline.origin import canonical_plugin, unknown_plugin_hint

        canonical = canonical_plugin(name, self)
        if canonical is not None:
            return self._plugins[canonical]
        raise UnknownPluginError(name, self.suggest(name), unknown_plugin_hint(name, self))

    def suggest(self, name: str) -> list[str]:
        """Registered names close to ``name`` (case-insensitive match first)."""
        names = list(self._plugins)
        exact = [n for n in names if n.lower() == name.lower()]
        lowered = {n.lower(): n for n in names}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
        return list(dict.fromkeys(exact + [lowered[c] for c in close]))

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self) -> Iterator[Plugin[Any]]:
        return iter(sorted(self._plugins.values(), key=lambda p: p.full_name()))

    def __len__(self) -> int:
        return len(self._plugins)

    def names(self) -> list[str]:
        """Every registered full name, sorted."""
        return sorted(self._plugins)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Register the plugins that installed packages declare in ``group``.

        A broken third-party plugin is logged and recorded in ``load_errors``; it never
        stops the others from loading.
        """
        for entry in entry_points(group=group):
            try:
                loaded = entry.load()
                classes: Iterable[Any] = [loaded] if isinstance(loaded, type) else list(loaded)
                for plugin_class in classes:
                    self.register(plugin_class)
            except Exception as exc:  # third-party code: anything can go wrong
                self.load_errors[entry.name] = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "plugin entry point %r (%s) not loaded: %s", entry.name, entry.value, exc
                )


_default: PluginRegistry | None = None


def default_registry() -> PluginRegistry:
    """The process-wide registry: built-ins plus entry-point plugins (built once)."""
    global _default
    if _default is None:
        from mimir.core.plugins.builtin import BUILTIN_PLUGINS

        registry = PluginRegistry()
        for plugin_class in BUILTIN_PLUGINS:
            registry.register(plugin_class)
        registry.load_entry_points()
        _default = registry
    return _default
