"""What a plugin is: a config model, a one-line description and an async ``run``."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mimir.core.capture import current_capture
from mimir.core.paths import resolve_data_path

__all__ = [
    "CONTEXT_INPUT_MARK",
    "Plugin",
    "PluginConfig",
    "StepRuntime",
    "context_input",
    "context_input_fields",
]

#: Key in a config field's JSON schema that marks it as taking data: a bare string there
#: that names a context key is read as that key (the original Go platform's ``input:
#: json_data``). Its value is how the value is read: ``"value"`` (as stored) or
#: ``"origin"`` (as the original platform's plugins saw it: see
#: :func:`mimir.core.pipeline.values.origin_view`).
CONTEXT_INPUT_MARK = "x-mimir-context-input"
ContextView = Literal["value", "origin"]


def context_input(
    default: Any = ..., *, description: str, view: ContextView = "value", **kwargs: Any
) -> Any:
    """A config ``Field`` that takes data: a value, a ``{{ template }}``, or a bare string
    naming a context key (read as that key when the context holds it)."""
    return Field(
        default, description=description, json_schema_extra={CONTEXT_INPUT_MARK: view}, **kwargs
    )


@functools.cache
def context_input_fields(model: type[BaseModel]) -> dict[str, ContextView]:
    """The config keys of ``model`` marked with :func:`context_input`, and how each is read."""
    found: dict[str, ContextView] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get(CONTEXT_INPUT_MARK) in ("value", "origin"):
            # Keyed as the config spells it (a field's alias, if it has one).
            found[info.alias or name] = extra[CONTEXT_INPUT_MARK]  # type: ignore[assignment]
    return found


class PluginConfig(BaseModel):
    """Base of every plugin's config model: unknown keys are errors (typos get caught)."""

    model_config = ConfigDict(extra="forbid")


ConfigT = TypeVar("ConfigT", bound=PluginConfig)


class StepRuntime:
    """What a running step may see: its name, the pipeline context and the data directory."""

    __slots__ = ("_data_dir", "context", "step_name")

    def __init__(
        self, step_name: str, context: Mapping[str, Any], data_dir: Path | None = None
    ) -> None:
        self.step_name = step_name
        self.context = context
        self._data_dir = data_dir

    @property
    def data_dir(self) -> Path:
        """The directory plugins may read and write (``MIMIR_DATA_DIR`` unless given)."""
        if self._data_dir is None:
            from mimir.core.settings import Settings

            self._data_dir = Settings.from_env().data_dir
        return self._data_dir

    def resolve_path(self, path: str, *, for_write: bool = False) -> Path:
        """``path`` inside the data directory; :class:`PathEscapeError` if it leaves it."""
        return resolve_data_path(self.data_dir, path, for_write=for_write)

    def record_artifact(self, path: Path) -> None:
        """Record a file this step wrote (inside the data directory) as an artifact of
        the run: its path, size, content type and sha256 are kept with the run's history
        when a worker runs the job. A no-op outside a worker (``mimir run``, the server's
        execute). Call it once the file is complete."""
        capture = current_capture.get()
        if capture is not None:
            capture.artifact(path, self.data_dir, self.step_name)


class Plugin(ABC, Generic[ConfigT]):
    """Base class of plugins. Subclasses set the class attributes and implement ``run``.

    A plugin is registered under ``<plugin_type>.<plugin_name>`` (e.g. ``Input.csv``).
    One instance serves every step that uses it, so ``run`` must keep no per-call state
    on ``self``. Blocking work (files, parsing big inputs) belongs in
    ``asyncio.to_thread`` so the event loop stays responsive.
    """

    plugin_type: ClassVar[str]
    plugin_name: ClassVar[str]
    #: One line, shown by ``mimir plugins`` and ``GET /api/v1/plugins``.
    description: ClassVar[str]
    config_model: ClassVar[type[PluginConfig]] = PluginConfig

    @classmethod
    def full_name(cls) -> str:
        """``<Type>.<name>``."""
        return f"{cls.plugin_type}.{cls.plugin_name}"

    @abstractmethod
    async def run(self, config: ConfigT, run: StepRuntime) -> Any:
        """Do the step's work and return its result (JSON-serialisable)."""
