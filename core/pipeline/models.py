"""Pydantic models of a pipeline and its steps (compatible with the Go platform's YAML)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from mimir.core.durations import parse_duration
from mimir.core.pipeline.issues import ValidationIssue
from mimir.core.pipeline.templating import contains_template

__all__ = ["PLUGIN_NAME_PATTERN", "Pipeline", "Step"]

#: ``<Type>.<name>``, e.g. ``Input.csv`` or ``Data_Processing.aggregate``.
PLUGIN_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_-]*$"
_PLUGIN_NAME = re.compile(PLUGIN_NAME_PATTERN)


class Step(BaseModel):
    """One step: run ``plugin`` with ``config``; store the result under ``output``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    plugin: str
    config: dict[str, Any] = Field(default_factory=dict)
    #: Context key under which the step's result is stored (nothing stored when unset).
    output: str | None = None
    #: Seconds the step may run (a number or a Go-style duration such as ``"30s"``).
    timeout: float | None = Field(default=None, gt=0)
    #: A disabled step is skipped (reported with status ``skipped``).
    enabled: bool = True

    # Whether config holds any template; computed once so the engine skips rendering.
    _templated: bool = PrivateAttr(default=False)

    @field_validator("plugin")
    @classmethod
    def _plugin_name(cls, value: str) -> str:
        if not _PLUGIN_NAME.match(value):
            raise ValueError(f"plugin must look like '<Type>.<name>' (e.g. Input.csv): {value!r}")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    def model_post_init(self, __context: Any) -> None:
        self._templated = contains_template(self.config)

    @property
    def templated(self) -> bool:
        """True when ``config`` contains ``{{ … }}`` or ``${…}`` references."""
        return self._templated


class Pipeline(BaseModel):
    """A named, ordered list of steps."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    version: str | int | float | None = None
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)

    # What validation found besides errors (set by the loader; not part of the definition).
    _warnings: list[ValidationIssue] = PrivateAttr(default_factory=list)
    _notes: list[ValidationIssue] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[ValidationIssue]:
        """Fields ignored, bare strings that stay literal …: it runs, but have a look."""
        return self._warnings

    @property
    def notes(self) -> list[ValidationIssue]:
        """What is read differently from how it is written (aliases, context keys)."""
        return self._notes
