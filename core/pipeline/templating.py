"""Templates in step config: ``{{ key.path }}`` reads the context, ``${NAME}`` the environment.

- A string that is exactly one ``{{ … }}`` is replaced by the value itself, keeping its
  type (a list stays a list); inside a longer string the value is formatted as text
  (JSON for lists and dicts).
- ``key.path`` walks dicts by key and lists by index: ``{{ rows.0.name }}``. A list that
  carries named fields (``Input.csv``'s rows: ``row_count``, ``columns`` …) answers them too.
- A Go-template path with a leading dot, as the original Go platform's files write it
  (``{{.step.field}}``), reads the same as ``{{ step.field }}``. A result may answer other
  names for its fields too (an ``AI.*`` reply's ``text`` is also ``llm_response``).
- ``${NAME}`` reads an environment variable; ``${NAME:-default}`` falls back to a default.
  The API token is never readable this way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from mimir.core.errors import TemplateError

__all__ = ["contains_template", "lookup_path", "render"]

# An optional leading '.' is the Go-template spelling ({{.a.b}}) of the same path.
_CONTEXT_REF = re.compile(r"\{\{\s*\.?([^{}]*?)\s*\}\}")
_WHOLE_REF = re.compile(r"^\s*\{\{\s*\.?([^{}]*?)\s*\}\}\s*$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: Environment variables a pipeline may never read (they would leak through results).
_SECRET_ENV = frozenset({"MIMIR_API_TOKEN"})


def contains_template(value: Any) -> bool:
    """True when ``value`` (recursively) holds a ``{{ … }}`` or ``${…}`` reference."""
    if isinstance(value, str):
        return "{{" in value or "${" in value
    if isinstance(value, dict):
        return any(contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_template(v) for v in value)
    return False


def lookup_path(context: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``context``; :class:`TemplateError` when absent."""
    if not path:
        raise TemplateError("empty template '{{ }}'")
    current: Any = context
    walked: list[str] = []
    for part in path.split("."):
        if (
            isinstance(current, Mapping)
            and part not in current
            and part in (fields := _fields(current))
        ):
            current = fields[part]
        elif isinstance(current, Mapping):
            if part not in current:
                where = f"under {'.'.join(walked)!r}" if walked else "in the context"
                keys = ", ".join(sorted(map(str, current))[:10]) or "none"
                raise TemplateError(
                    f"'{{{{ {path} }}}}': no key {part!r} {where} (available: {keys})"
                )
            current = current[part]
        elif isinstance(current, list) and part in (fields := _fields(current)):
            current = fields[part]
        elif isinstance(current, list):
            try:
                current = current[int(part)]
            except (ValueError, IndexError):
                raise TemplateError(
                    f"'{{{{ {path} }}}}': {'.'.join(walked)!r} is a list of {len(current)} "
                    f"items; {part!r} is not a valid index"
                ) from None
        else:
            raise TemplateError(
                f"'{{{{ {path} }}}}': {'.'.join(walked)!r} is a {type(current).__name__}, "
                f"not a mapping or list"
            )
        walked.append(part)
    return current


def _fields(value: Any) -> Mapping[str, Any]:
    """Named fields a list or mapping offers besides its indices or keys (see
    :mod:`mimir.core.pipeline.values`); none for a plain one."""
    fields = getattr(value, "template_fields", None)
    return fields() if callable(fields) else {}


def _as_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def _env(match: re.Match[str], environ: Mapping[str, str]) -> str:
    name, default = match.group(1), match.group(2)
    if name in _SECRET_ENV:
        raise TemplateError(f"'${{{name}}}': this variable cannot be read by a pipeline")
    value = environ.get(name)
    if value is None:
        if default is None:
            raise TemplateError(
                f"'${{{name}}}': environment variable {name} is not set "
                f"(use ${{{name}:-default}} for a fallback)"
            )
        return default
    return value


def _render_str(text: str, context: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    if "${" in text:
        text = _ENV_REF.sub(lambda m: _env(m, environ), text)
    if "{{" not in text:
        return text
    whole = _WHOLE_REF.match(text)
    if whole:
        return lookup_path(context, whole.group(1))
    return _CONTEXT_REF.sub(lambda m: _as_text(lookup_path(context, m.group(1))), text)


def render(value: Any, context: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Any:
    """A copy of ``value`` with every template resolved against ``context`` and ``environ``."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        return _render_str(value, context, env)
    if isinstance(value, dict):
        return {k: render(v, context, env) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, env) for v in value]
    return value
