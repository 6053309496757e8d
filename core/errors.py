"""Exceptions of the Mimir core.

Every error a caller must handle derives from :class:`MimirError`; its ``str()`` is
meant for a person. The server maps these to HTTP answers in one place
(``mimir.server.errors``)::

    MimirError
     ├── PipelineValidationError   a pipeline is malformed; ``.errors`` lists each problem
     ├── PipelineNotFoundError     no pipeline file or name matches
     ├── PipelineExistsError       creating a pipeline whose name is taken
     ├── PluginError               a plugin failed or was misused
     │    ├── UnknownPluginError   no plugin registered under that name (``.suggestions``)
     │    ├── PluginConfigError    a step's config does not fit the plugin's config model
     │    └── StepTimeoutError     a step ran longer than its ``timeout``
     ├── TemplateError             ``{{ key.path }}`` or ``${NAME}`` cannot be resolved
     ├── PathEscapeError           a file path leaves the data directory
     ├── LimitExceededError        input goes past a named limit (``mimir.core.limits``)
     ├── OutboundRefusedError      a plugin's outbound call is refused by the HTTP policy
     └── ExecutionTimeoutError     a synchronous execute ran past ``MIMIR_EXECUTE_TIMEOUT``
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mimir.core.pipeline.issues import ValidationIssue

__all__ = [
    "ExecutionTimeoutError",
    "LimitExceededError",
    "MimirError",
    "OutboundRefusedError",
    "PathEscapeError",
    "PipelineExistsError",
    "PipelineNotFoundError",
    "PipelineValidationError",
    "PluginConfigError",
    "PluginError",
    "StepTimeoutError",
    "TemplateError",
    "UnknownPluginError",
]


class MimirError(Exception):
    """Base of every Mimir error; the message is meant for a person."""


class PipelineValidationError(MimirError):
    """A pipeline failed validation; ``errors`` holds one issue per problem found."""

    def __init__(
        self,
        errors: Sequence[ValidationIssue],
        source: str | None = None,
        *,
        warnings: Sequence[ValidationIssue] = (),
        notes: Sequence[ValidationIssue] = (),
    ) -> None:
        self.errors = list(errors)
        self.source = source
        #: What else validation found (fields ignored, aliases read …), for reports.
        self.warnings = list(warnings)
        self.notes = list(notes)
        where = f" ({source})" if source else ""
        if len(self.errors) == 1:
            message = f"invalid pipeline{where}: {self.errors[0]}"
        else:
            lines = "\n".join(f"  - {issue}" for issue in self.errors)
            message = f"invalid pipeline{where}: {len(self.errors)} problems\n{lines}"
        super().__init__(message)


class PipelineNotFoundError(MimirError):
    """No pipeline file or name matches the request."""


class PipelineExistsError(MimirError):
    """A pipeline with that name already exists."""


class PluginError(MimirError):
    """A plugin failed, or was asked for something it cannot do."""


class UnknownPluginError(PluginError):
    """No plugin is registered under ``name``; ``suggestions`` lists close names and
    ``detail`` says more (e.g. what the original platform's plugin of that name did)."""

    def __init__(self, name: str, suggestions: Sequence[str] = (), detail: str = "") -> None:
        self.name = name
        self.suggestions = list(suggestions)
        hint = f" (did you mean {', '.join(self.suggestions)}?)" if self.suggestions else ""
        super().__init__(f"unknown plugin {name!r}{hint}" + (f": {detail}" if detail else ""))


class PluginConfigError(PluginError):
    """A step's config (after templating) does not fit the plugin's config model."""


class StepTimeoutError(PluginError):
    """A step ran longer than its ``timeout``."""


class TemplateError(MimirError):
    """A ``{{ key.path }}`` or ``${NAME}`` reference cannot be resolved."""


class PathEscapeError(MimirError):
    """A file path given to a plugin leaves the data directory."""


class LimitExceededError(MimirError):
    """Input goes past one of the named limits of :mod:`mimir.core.limits`."""


class OutboundRefusedError(PluginError):
    """A plugin's outbound HTTP call is refused by the policy (``MIMIR_HTTP_ALLOW``/``DENY``)."""


class ExecutionTimeoutError(MimirError):
    """A synchronous execute ran longer than ``MIMIR_EXECUTE_TIMEOUT`` and was cancelled."""
