"""Pipeline files of the original Go platform (Mimir-AIP-Go): what they mean here.

The original read a step's ``name``, ``plugin``, ``config`` and ``output`` and a pipeline's
``name``, ``enabled``, ``description`` and ``steps``, and ignored every other field. It had
no templates: an Output plugin's ``input: json_data`` named a context key. This module
holds what this project knows about those files, in one place:

- :func:`normalize` turns a selected pipeline mapping into this project's canonical form
  (unknown fields dropped, plugin and config-key aliases resolved) and says what it did,
  as warnings and notes (or errors, when the original's meaning cannot be kept);
- :func:`context_references` finds the bare strings in config fields that take data
  (fields marked with :func:`~mimir.core.plugins.base.context_input`) and says which
  name a context key, which stay literal text, and which would mean something else here;
- the tables below: plugin type aliases, the original's default output keys, the context
  keys its AI plugins set, the plugins it had that exist nowhere here.

``mimir migrate`` (:mod:`mimir.core.pipeline.migrate`) uses the same functions to write
files in the canonical form.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mimir.core.pipeline.issues import ValidationIssue, node_position
from mimir.core.pipeline.templating import contains_template

if TYPE_CHECKING:
    from mimir.core.pipeline.models import Pipeline
    from mimir.core.plugins.registry import PluginRegistry

__all__ = [
    "AI_CONTEXT_KEYS",
    "AI_RESULT_ALIASES",
    "DEFAULT_OUTPUTS",
    "NO_COUNTERPART",
    "TYPE_ALIASES",
    "ContextReference",
    "Findings",
    "context_references",
    "normalize",
]

Loc = tuple[str | int, ...]
LineMap = dict[Loc, tuple[int, int]]

#: Plugin types of the original that are spelled differently here.
TYPE_ALIASES: dict[str, str] = {"AIModels": "AI"}

#: Context keys the original stored a step's result under when the step had no ``output``.
DEFAULT_OUTPUTS: dict[str, str] = {
    "Input.json": "json_data",
    "Output.json": "json_output",
    "Output.html": "report_generated",
    "Output.pdf": "pdf_output",
    "Output.excel": "excel_output",
}

#: Context keys the original's AI plugins set on every call, whatever the step's
#: ``output`` (which they ignored).
AI_CONTEXT_KEYS: tuple[str, ...] = ("llm_response", "llm_usage", "llm_model", "llm_tool_calls")

#: The original's names for fields of an ``AI.*`` reply (``{alias: field here}``); templates
#: may use either (see :class:`~mimir.core.pipeline.values.Aliased`).
AI_RESULT_ALIASES: dict[str, str] = {
    "llm_response": "text",
    "content": "text",
    "llm_usage": "usage",
    "llm_model": "model",
}

#: Plugins the original platform had (or its example files use) that exist nowhere here.
NO_COUNTERPART: dict[str, str] = {
    "Storage.vector": "the original's vector storage (chromem collections)",
    "Data_Processing.analyze": "an analysis plugin that the original's example files name",
    "Input.mysql": "the original's MySQL input",
    "Ontology.management": "the original's ontology management plugin (use the ontology API)",
    "Ontology.extract": "the original's LLM ontology extraction",
    "Ontology.auto_update": "the original's ontology auto-update",
    "Ontology.drift_detection": "the original's ontology drift detection",
    "Ontology.suggestions": "the original's ontology suggestions",
    "AI.azure": "the original's Azure OpenAI provider (AI.openai with its 'base_url' may serve)",
    "AI.google": "the original's Google provider",
    "AI.openrouter": (
        "the original's OpenRouter provider (AI.openai with base_url "
        "https://openrouter.ai/api/v1 speaks its protocol)"
    ),
    "AI.local": "the original's local-model provider (AI.ollama or AI.openai may serve)",
    "AI.z-ai": "the original's Z.ai provider",
}

#: Pipeline and step fields the original read; every other field it ignored.
ORIGIN_PIPELINE_FIELDS = frozenset({"name", "enabled", "description", "steps"})
ORIGIN_STEP_FIELDS = frozenset({"name", "plugin", "config", "output"})

_GO_TEMPLATE = re.compile(r"\{\{\s*\.")
#: A string that could be a context key (no spaces, no punctuation beyond . _ -).
_KEY_LIKE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass
class Findings:
    """What checking or converting a pipeline found, by severity."""

    errors: list[ValidationIssue] = field(default_factory=list)
    #: Fields ignored, strings that stay literal …: the pipeline runs, but look.
    warnings: list[ValidationIssue] = field(default_factory=list)
    #: What was read differently from how it is written (aliases, context keys).
    notes: list[ValidationIssue] = field(default_factory=list)

    def extend(self, other: Findings) -> None:
        self.errors += other.errors
        self.warnings += other.warnings
        self.notes += other.notes


class _Reporter:
    def __init__(
        self,
        findings: Findings,
        lines: LineMap,
        prefix: Loc,
        registry: PluginRegistry | None = None,
    ) -> None:
        self.findings = findings
        self.lines = lines
        self.prefix = prefix
        self.registry = registry

    def issue(
        self,
        message: str,
        loc: Loc = (),
        *,
        step: tuple[int, str | None] | None = None,
        field_name: str | None = None,
        suggestions: list[str] | None = None,
    ) -> ValidationIssue:
        line, column = node_position(self.lines, (*self.prefix, *loc))
        return ValidationIssue(
            message=message,
            line=line,
            column=column,
            step_index=step[0] + 1 if step else None,
            step_name=step[1] if step else None,
            field=field_name,
            suggestions=suggestions or [],
        )

    def error(self, *args: Any, **kwargs: Any) -> None:
        self.findings.errors.append(self.issue(*args, **kwargs))

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self.findings.warnings.append(self.issue(*args, **kwargs))

    def note(self, *args: Any, **kwargs: Any) -> None:
        self.findings.notes.append(self.issue(*args, **kwargs))


# --------------------------------------------------------------------------- normalize


def _step_label(step: Mapping[str, Any], index: int) -> tuple[int, str | None]:
    name = step.get("name")
    return index, str(name) if name is not None else None


def _unknown_fields(
    data: dict[str, Any],
    known: list[str],
    loc: Loc,
    report: _Reporter,
    strict: bool,
    step: tuple[int, str | None] | None = None,
) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in data.items():
        if key in known:
            kept[key] = value
            continue
        close = difflib.get_close_matches(str(key), known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        if strict:
            report.error(
                f"unknown field {key!r}{hint}",
                (*loc, key),
                step=step,
                field_name=str(key),
                suggestions=close,
            )
            continue
        if step is None and isinstance(value, Mapping) and "steps" in value:
            why = (
                f"ignored: {key!r} looks like a pipeline, but only the top-level 'steps' (or a "
                "'pipelines:' list) run, here as in the original platform"
                + _missing_plugins(value.get("steps"), report.registry)
            )
        else:
            why = "ignored, as the original platform ignored it (--strict: an error)"
        report.warning(
            f"unknown field {key!r} {why}{hint}",
            (*loc, key),
            step=step,
            field_name=str(key),
            suggestions=close,
        )
    return kept


def _missing_plugins(steps: Any, registry: PluginRegistry | None) -> str:
    """``"; its plugins X, Y exist nowhere here"`` for the steps of an ignored pipeline."""
    if registry is None or not isinstance(steps, list):
        return ""
    names = [s.get("plugin") for s in steps if isinstance(s, Mapping)]
    missing = sorted(
        {n for n in names if isinstance(n, str) and canonical_plugin(n, registry) is None}
    )
    return f" (its plugins {', '.join(missing)} exist nowhere here)" if missing else ""


def canonical_plugin(name: str, registry: PluginRegistry) -> str | None:
    """The registered name that ``name`` stands for (itself, or the alias's target)."""
    if name in registry:
        return name
    kind, _, rest = name.partition(".")
    target = f"{TYPE_ALIASES[kind]}.{rest}" if kind in TYPE_ALIASES and rest else None
    return target if target is not None and target in registry else None


def unknown_plugin_hint(name: str, registry: PluginRegistry) -> str:
    """Why ``name`` exists nowhere, in the original's terms, for an error message."""
    kind, _, rest = name.partition(".")
    parts: list[str] = []
    if kind in TYPE_ALIASES and rest:
        target = f"{TYPE_ALIASES[kind]}.{rest}"
        same_type = [n for n in registry.names() if n.startswith(f"{TYPE_ALIASES[kind]}.")]
        parts.append(
            f"the original's {name} is {target} here, which does not exist either "
            f"({TYPE_ALIASES[kind]} plugins here: {', '.join(same_type) or 'none'})"
        )
    target = f"{TYPE_ALIASES[kind]}.{rest}" if kind in TYPE_ALIASES and rest else name
    for known in dict.fromkeys((name, target)):
        if known in NO_COUNTERPART:
            parts.append(f"no plugin here is {NO_COUNTERPART[known]}")
    return "; ".join(parts)


Converter = Callable[[dict[str, Any], _Reporter, Loc, tuple[int, str | None]], dict[str, Any]]


def _rename(
    config: dict[str, Any],
    old: str,
    new: str,
    report: _Reporter,
    loc: Loc,
    step: tuple[int, str | None],
) -> dict[str, Any]:
    if old not in config:
        return config
    if new in config:
        report.error(
            f"both {old!r} (the original's name) and {new!r} are given; keep one",
            (*loc, old),
            step=step,
            field_name=f"config.{old}",
        )
        return {k: v for k, v in config.items() if k != old}
    renamed = {new if key == old else key: value for key, value in config.items()}
    report.note(f"{old!r} is read as {new!r}", (*loc, old), step=step, field_name=f"config.{old}")
    return renamed


def _json_output(
    config: dict[str, Any], report: _Reporter, loc: Loc, step: tuple[int, str | None]
) -> dict[str, Any]:
    # The original's Output.json read 'pretty_print' (default true); its example files
    # write 'pretty'. Both become 'indent'.
    for old in ("pretty_print", "pretty"):
        if old not in config:
            continue
        value = config[old]
        where = (*loc, old)
        config = {k: v for k, v in config.items() if k != old}
        if "indent" in config:
            report.error(
                f"both {old!r} and 'indent' are given; keep one",
                where,
                step=step,
                field_name=f"config.{old}",
            )
            continue
        if not isinstance(value, bool):
            report.error(
                f"{old!r} must be true or false (it becomes 'indent'), not {value!r}",
                where,
                step=step,
                field_name=f"config.{old}",
            )
            continue
        config["indent"] = 2 if value else None
        report.note(
            f"{old!r}: {str(value).lower()} is read as 'indent': {config['indent']}",
            where,
            step=step,
            field_name=f"config.{old}",
        )
    return config


def _api_input(
    config: dict[str, Any], report: _Reporter, loc: Loc, step: tuple[int, str | None]
) -> dict[str, Any]:
    # The original's Input.api sent 'data' as a JSON body on POST and PUT only.
    if "data" not in config:
        return config
    method = str(config.get("method", "GET")).upper()
    where = (*loc, "data")
    if method in {"POST", "PUT"}:
        return _rename(config, "data", "json", report, loc, step)
    report.warning(
        f"'data' ignored: the original sent it only with POST and PUT, this is {method}",
        where,
        step=step,
        field_name="config.data",
    )
    return {k: v for k, v in config.items() if k != "data"}


def _ai(
    config: dict[str, Any], report: _Reporter, loc: Loc, step: tuple[int, str | None]
) -> dict[str, Any]:
    if "operation" not in config:
        return config
    operation = config["operation"]
    where = (*loc, "operation")
    if operation == "chat":
        report.note(
            "'operation: chat' is what AI plugins do here; the key is dropped",
            where,
            step=step,
            field_name="config.operation",
        )
        return {k: v for k, v in config.items() if k != "operation"}
    report.error(
        f"operation {operation!r} exists nowhere: AI plugins here only chat "
        "('operation: chat', or leave it out)",
        where,
        step=step,
        field_name="config.operation",
    )
    return {k: v for k, v in config.items() if k != "operation"}


#: Per plugin (or ``"<Type>.*"``): conversions of the original's config keys.
_CONVERTERS: dict[str, Converter] = {
    "Output.json": _json_output,
    "Input.api": _api_input,
    "AI.*": _ai,
}


def _normalize_config(
    plugin: str,
    config: dict[str, Any],
    registry: PluginRegistry,
    report: _Reporter,
    loc: Loc,
    step: tuple[int, str | None],
) -> dict[str, Any]:
    fields = registry.get(plugin).config_model.model_fields
    known = {info.alias or name for name, info in fields.items()}
    # 'filename' was the original's examples' name for 'file_path'.
    if "file_path" in known and "filename" not in known:
        config = _rename(config, "filename", "file_path", report, loc, step)
    kind = plugin.partition(".")[0]
    for converter in (_CONVERTERS.get(plugin), _CONVERTERS.get(f"{kind}.*")):
        if converter is _ai and "operation" in known:
            continue  # a plugin that has operations of its own
        if converter is not None:
            config = converter(config, report, loc, step)
    if "operation" in config and "operation" not in known:
        # The original's example files give plugins operations that exist nowhere.
        report.error(
            f"operation {config['operation']!r} exists nowhere: {plugin} has no operations "
            f"here (its config keys: {', '.join(sorted(known)) or 'none'})",
            (*loc, "operation"),
            step=step,
            field_name="config.operation",
        )
        config = {k: v for k, v in config.items() if k != "operation"}
    return config


def _go_templates(value: Any, path: Loc, found: list[Loc]) -> None:
    if isinstance(value, str):
        if _GO_TEMPLATE.search(value):
            found.append(path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _go_templates(item, (*path, key), found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _go_templates(item, (*path, index), found)


def normalize(
    data: Mapping[str, Any],
    registry: PluginRegistry,
    *,
    lines: LineMap | None = None,
    prefix: Loc = (),
    strict: bool = False,
) -> tuple[dict[str, Any], Findings]:
    """``data`` (one pipeline mapping) in this project's canonical form, and the findings.

    Unknown pipeline and step fields are dropped with a warning (with ``strict``: an
    error each); ``AIModels.x`` becomes ``AI.x`` where that exists; the original's config
    keys become this project's (``pretty_print`` → ``indent``, ``filename`` →
    ``file_path``, ``data`` → ``json``, ``operation: chat`` dropped). What cannot be
    converted is an error. Values of the wrong type are left for schema validation.
    """
    from mimir.core.pipeline.models import Pipeline, Step

    findings = Findings()
    report = _Reporter(findings, lines or {}, prefix, registry)
    result = _unknown_fields(dict(data), list(Pipeline.model_fields), (), report, strict)
    steps = result.get("steps")
    if not isinstance(steps, list):
        return result, findings
    normalized_steps: list[Any] = []
    for index, raw in enumerate(steps):
        if not isinstance(raw, Mapping):
            normalized_steps.append(raw)
            continue
        label = _step_label(raw, index)
        loc: Loc = ("steps", index)
        step = _unknown_fields(dict(raw), list(Step.model_fields), loc, report, strict, label)
        if "config" in step and step["config"] is None:  # 'config:' left empty: no config
            del step["config"]
        plugin = step.get("plugin")
        if isinstance(plugin, str):
            canonical = canonical_plugin(plugin, registry)
            if canonical is not None and canonical != plugin:
                report.note(
                    f"plugin {plugin!r} is {canonical!r} here",
                    (*loc, "plugin"),
                    step=label,
                    field_name="plugin",
                )
                step["plugin"] = canonical
            config = step.get("config")
            if canonical is not None and isinstance(config, Mapping):
                step["config"] = _normalize_config(
                    canonical, dict(config), registry, report, (*loc, "config"), label
                )
        go: list[Loc] = []
        _go_templates(step.get("config"), (), go)
        for path in go:
            report.note(
                "a Go-template reference ('{{.a.b}}') is read as '{{ a.b }}'",
                (*loc, "config", *path),
                step=label,
                field_name=".".join(map(str, ("config", *path))),
            )
        normalized_steps.append(step)
    result["steps"] = normalized_steps
    return result, findings


# --------------------------------------------------------------------------- references


@dataclass(frozen=True)
class ContextReference:
    """A bare string in a config field that takes data, and what it is read as."""

    step_index: int  # 0-based
    step_name: str
    field: str  # config key
    key: str  # the bare string
    #: ``"output"`` (an earlier step's output), ``"context"`` (a given context key),
    #: ``"literal"`` (names nothing: stays text), ``"implicit"`` (a key the original set
    #: but this project does not: an error), ``"later"`` (a step that runs later, or is
    #: disabled: an error).
    kind: str
    #: The step whose output it names (0-based), for ``output``/``implicit``/``later``.
    producer: int | None = None
    #: How the field reads the value (``"value"`` or ``"origin"``).
    view: str = "value"


def context_references(
    pipeline: Pipeline,
    registry: PluginRegistry,
    context_keys: frozenset[str] | set[str] | None = None,
) -> list[ContextReference]:
    """Every bare string in a data-taking config field, classified (see the fields of
    :class:`ContextReference`). ``context_keys`` are the job context's keys, when known."""
    from mimir.core.errors import UnknownPluginError
    from mimir.core.plugins.base import context_input_fields

    given = set(context_keys or ())
    outputs: dict[str, int] = {}  # produced so far → step (0-based)
    implicit: dict[str, int] = {}  # what the original would have had → step
    all_outputs = {s.output: i for i, s in reversed(list(enumerate(pipeline.steps))) if s.output}
    found: list[ContextReference] = []
    for index, step in enumerate(pipeline.steps):
        try:
            plugin = registry.get(step.plugin)
        except UnknownPluginError:
            plugin = None
        fields = context_input_fields(plugin.config_model) if plugin is not None else {}
        for key, view in fields.items():
            value = step.config.get(key)
            if not isinstance(value, str) or contains_template(value) or not value:
                continue
            producer: int | None
            if value in outputs:
                kind, producer = "output", outputs[value]
            elif value in given:
                kind, producer = "context", None
            elif value in implicit:
                kind, producer = "implicit", implicit[value]
            elif value in all_outputs:
                kind, producer = "later", all_outputs[value]
            else:
                kind, producer = "literal", None
            found.append(ContextReference(index, step.name, key, value, kind, producer, view))
        if step.enabled and step.output:
            outputs[step.output] = index
        if step.enabled and not step.output and step.plugin in DEFAULT_OUTPUTS:
            implicit.setdefault(DEFAULT_OUTPUTS[step.plugin], index)
        if step.enabled and step.plugin.startswith("AI."):
            for name in AI_CONTEXT_KEYS:
                implicit.setdefault(name, index)
    return found


def reference_findings(
    pipeline: Pipeline,
    registry: PluginRegistry,
    *,
    lines: LineMap | None = None,
    prefix: Loc = (),
    context_keys: frozenset[str] | set[str] | None = None,
) -> Findings:
    """Notes, warnings and errors for the bare strings of :func:`context_references`."""
    findings = Findings()
    report = _Reporter(findings, lines or {}, prefix)
    steps = pipeline.steps
    for ref in context_references(pipeline, registry, context_keys):
        loc: Loc = ("steps", ref.step_index, "config", ref.field)
        label = (ref.step_index, ref.step_name)
        name = f"config.{ref.field}"
        producer = steps[ref.producer] if ref.producer is not None else None
        who = (
            f"step {ref.producer + 1} {producer.name!r}"
            if producer is not None and ref.producer is not None
            else ""
        )
        if ref.kind == "output":
            how = (
                ": a mapping as it is, anything else as {'value': …} ('{{ "
                + ref.key
                + " }}' would pass the value itself)"
                if ref.view == "origin"
                else f"; '{{{{ {ref.key} }}}}' says the same explicitly"
            )
            report.note(
                f"{ref.key!r} is read as the context key {ref.key!r} (the output of {who}), "
                f"as the original platform read it{how}",
                loc,
                step=label,
                field_name=name,
            )
        elif ref.kind == "context":
            report.note(
                f"{ref.key!r} is read as the context key {ref.key!r} (given in the context)",
                loc,
                step=label,
                field_name=name,
            )
        elif ref.kind == "implicit":
            assert producer is not None
            if producer.plugin.startswith("AI.") and ref.key in AI_CONTEXT_KEYS:
                field_here = AI_RESULT_ALIASES.get(ref.key, "text")
                fix = (
                    f": write '{{{{ {producer.output}.{field_here} }}}}'"
                    if producer.output
                    else ": give it an 'output' and read that"
                )
                detail = (
                    f"the original's AI plugins set {ref.key!r} on every call; here {who}'s "
                    f"reply goes only under its 'output'{fix}"
                )
            else:
                detail = (
                    f"the original stored the result of {who} ({producer.plugin}) under "
                    f"{ref.key!r} because it has no 'output'; here it is stored only under "
                    f"its 'output': add 'output: {ref.key}' to it"
                )
            report.error(
                f"{ref.key!r} names nothing here: {detail}", loc, step=label, field_name=name
            )
        elif ref.kind == "later":
            assert producer is not None
            if ref.producer == ref.step_index:
                what = "this step's own output"
            else:
                why = "is disabled" if not producer.enabled else "runs later"
                what = f"the output of {who}, which {why}"
            report.error(
                f"{ref.key!r} names {what}: the key does not exist when this step runs",
                loc,
                step=label,
                field_name=name,
            )
        elif _KEY_LIKE.match(ref.key):
            report.warning(
                f"{ref.key!r} names no earlier step's output: it is used as the text "
                f"{ref.key!r}, unless the job's context has a key {ref.key!r} (then that "
                f"value is read; the original platform always read a context key here)",
                loc,
                step=label,
                field_name=name,
            )
    return findings
