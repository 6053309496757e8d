"""Load a pipeline from a file, YAML text or a dict, and validate it before anything runs.

Both YAML forms are accepted: a single pipeline (``name:``, ``steps:``), or a
``pipelines:`` list, from which one entry runs, chosen as the original Go platform chose
it (see :func:`select_pipeline`). Files written for the original load as it read them
(see :mod:`mimir.core.pipeline.origin`): unknown fields are ignored with a warning (an
error with ``strict``), its plugin and config-key names are read as this project's, and a
bare string in a config field that takes data names a context key when an earlier step
produces it. Every problem found is reported at once in a
:class:`PipelineValidationError`, located by line and column (YAML source), step index and
name, and field; warnings and notes go with the pipeline (``pipeline.warnings``,
``pipeline.notes``) or the error.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mimir.core.errors import (
    LimitExceededError,
    PipelineNotFoundError,
    PipelineValidationError,
    UnknownPluginError,
)
from mimir.core.limits import Limits, check_depth, default_limits
from mimir.core.pipeline.issues import ValidationIssue, node_position
from mimir.core.pipeline.models import Pipeline, Step
from mimir.core.pipeline.origin import Findings, normalize, reference_findings
from mimir.core.pipeline.templating import contains_template
from mimir.core.plugins.registry import PluginRegistry, default_registry

__all__ = ["PipelineSource", "check_plugins", "load_pipeline", "parse_yaml", "select_pipeline"]

PipelineSource = Path | str | Mapping[str, Any]
Loc = tuple[str | int, ...]
#: Where each node of a YAML document starts: ``{("steps", 0, "config"): (line, column)}``.
LineMap = dict[Loc, tuple[int, int]]


class _BoundedLoader(yaml.SafeLoader):
    """A safe loader that refuses, while composing, what would cost more than ``limits``:
    too many alias uses, or nesting deeper than ``max_depth`` (which would also exhaust
    Python's recursion in the composer)."""

    def __init__(self, text: str, limits: Limits) -> None:
        super().__init__(text)
        self.limits = limits
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.max_yaml_aliases:
                raise _LimitHit(
                    f"more than {self.limits.max_yaml_aliases} aliases "
                    "(limit MIMIR_MAX_YAML_ALIASES)",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > self.limits.max_depth:
                raise _LimitHit(
                    f"nested more than {self.limits.max_depth} levels deep (limit MIMIR_MAX_DEPTH)",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _LimitHit(Exception):
    def __init__(self, message: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(message)
        self.mark = mark


def _check_expanded(root: yaml.Node, limits: Limits) -> None:
    """Refuse a document whose aliases expand past the node, size or depth limits.

    Sizes are computed once per node (aliases share their node), so an alias bomb costs
    time linear in its text, not in its expansion. A recursive alias is refused.
    """
    cost: dict[int, tuple[int, int, int]] = {}  # id(node) -> (nodes, characters, depth)
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in cost:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if not children_done:
            if key in in_progress:
                raise _LimitHit("a recursive alias (a node that contains itself)", node.start_mark)
            in_progress.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in in_progress:
                    raise _LimitHit(
                        "a recursive alias (a node that contains itself)", child.start_mark
                    )
                if id(child) not in cost:
                    stack.append((child, False))
            continue
        in_progress.discard(key)
        nodes, chars, depth = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 1, 0
        for child in children:
            child_nodes, child_chars, child_depth = cost[id(child)]
            nodes += child_nodes
            chars += child_chars
            depth = max(depth, child_depth)
        depth += 0 if isinstance(node, yaml.ScalarNode) else 1
        cost[key] = (nodes, chars, depth)
    nodes, chars, depth = cost[id(root)]
    if nodes > limits.max_yaml_nodes:
        raise _LimitHit(
            f"its aliases expand to {nodes:,} nodes; the limit is {limits.max_yaml_nodes:,} "
            "(MIMIR_MAX_YAML_NODES)"
        )
    if chars > limits.max_yaml_bytes:
        raise _LimitHit(
            f"its aliases expand to {chars:,} characters; the limit is "
            f"{limits.max_yaml_bytes:,} (MIMIR_MAX_YAML_BYTES)"
        )
    if depth > limits.max_depth:
        raise _LimitHit(
            f"its aliases nest it {depth} levels deep; the limit is {limits.max_depth} "
            "(MIMIR_MAX_DEPTH)"
        )


def _limit_issue(exc: _LimitHit, source: str | None) -> PipelineValidationError:
    mark = exc.mark
    issue = ValidationIssue(
        message=f"YAML refused: {exc}",
        line=mark.line + 1 if mark else None,
        column=mark.column + 1 if mark else None,
    )
    return PipelineValidationError([issue], source)


def parse_yaml(
    text: str, source: str | None = None, *, limits: Limits | None = None
) -> tuple[Any, LineMap]:
    """Parse YAML ``text``; return the data and the 1-based position of every node.

    The document is held to ``limits`` (default: the process's): its size in bytes, its
    alias uses, its nesting depth, and its node count and size once aliases are expanded,
    all checked before any Python object is built.
    """
    limits = limits or default_limits()
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > limits.max_yaml_bytes:
        issue = ValidationIssue(
            message=f"YAML refused: the document is {size:,} bytes; the limit is "
            f"{limits.max_yaml_bytes:,} (MIMIR_MAX_YAML_BYTES)"
        )
        raise PipelineValidationError([issue], source)
    try:
        loader = _BoundedLoader(text, limits)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_expanded(node, limits)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _LimitHit as exc:
        raise _limit_issue(exc, source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(filter(None, [exc.context, exc.problem])) or str(exc)
        issue = ValidationIssue(
            message=f"invalid YAML: {problem}",
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        )
        raise PipelineValidationError([issue], source) from None
    except (yaml.YAMLError, RecursionError) as exc:
        issue = ValidationIssue(message=f"invalid YAML: {exc}")
        raise PipelineValidationError([issue], source) from None
    lines: LineMap = {}
    if node is not None:
        _record_lines(node, (), lines)
    return data, lines


def _record_lines(root: yaml.Node, root_loc: Loc, lines: LineMap) -> None:
    # Iterative: the expanded size is already bounded, the recursion depth need not be.
    stack: list[tuple[yaml.Node, Loc]] = [(root, root_loc)]
    while stack:
        node, loc = stack.pop()
        lines[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            # Pushed last-first so they are visited in document order (a repeated key's
            # last position wins, as in the constructed mapping).
            for key_node, value_node in reversed(node.value):
                if isinstance(key_node, yaml.ScalarNode):
                    stack.append((value_node, (*loc, key_node.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(
                (item, (*loc, index)) for index, item in reversed(list(enumerate(node.value)))
            )


def _enabled_is(entry: Mapping[str, Any], value: bool) -> bool:
    return entry.get("enabled") is value


def select_pipeline(
    data: Any, source: str | None = None, findings: Findings | None = None
) -> tuple[dict[str, Any], Loc]:
    """The pipeline mapping in ``data`` and its location in the document.

    The original Go platform's rule, which this project follows: a document with a
    top-level ``name`` is one pipeline (a ``pipelines:`` list beside it is ignored); else,
    from ``pipelines:``, the first entry with ``enabled: true``, else the first entry.
    Where this project's older rule (the first entry not ``enabled: false``) would have
    chosen another entry, the choice is an error that names both, never a silent pick.
    """
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise PipelineValidationError(
            [
                ValidationIssue(
                    message=f"a pipeline must be a mapping with 'name' and 'steps', "
                    f"but the document is {kind}"
                )
            ],
            source,
        )
    if "pipelines" not in data or data.get("name") not in (None, ""):
        return dict(data), ()
    entries = data["pipelines"]
    if not isinstance(entries, list) or not entries:
        raise PipelineValidationError(
            [ValidationIssue(message="'pipelines' must be a non-empty list", field="pipelines")],
            source,
        )
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise PipelineValidationError(
                [
                    ValidationIssue(
                        message="each entry of 'pipelines' must be a mapping",
                        field=f"pipelines.{index}",
                    )
                ],
                source,
            )
    others = [key for key in data if key != "pipelines"]
    if others and findings is not None:
        findings.warnings.append(
            ValidationIssue(
                message=f"top-level field(s) {', '.join(map(repr, others))} ignored beside "
                "'pipelines:' (the original platform ignored them too)",
                field=str(others[0]),
            )
        )
    for index, entry in enumerate(entries):
        if _enabled_is(entry, True):
            return dict(entry), ("pipelines", index)
    first = entries[0]

    def called(entry: Mapping[str, Any], index: int) -> str:
        return repr(entry.get("name")) if entry.get("name") else f"entry {index + 1}"

    if not _enabled_is(first, False):
        return dict(first), ("pipelines", 0)
    # The original ran the first entry even when it says 'enabled: false'.
    later = next((i for i, entry in enumerate(entries) if not _enabled_is(entry, False)), None)
    if later is None:
        message = (
            "every entry of 'pipelines' has 'enabled: false'; the original platform ran the "
            f"first ({called(first, 0)}) anyway: set 'enabled: true' on the one to run"
        )
    else:
        message = (
            "no entry of 'pipelines' has 'enabled: true' and the first "
            f"({called(first, 0)}) has 'enabled: false': the original platform ran "
            f"{called(first, 0)}, this project used to run {called(entries[later], later)}; "
            "set 'enabled: true' on the one to run"
        )
    raise PipelineValidationError([ValidationIssue(message=message, field="pipelines")], source)


def _step_name(data: Mapping[str, Any], index: int) -> str | None:
    steps = data.get("steps")
    if isinstance(steps, list) and index < len(steps) and isinstance(steps[index], Mapping):
        name = steps[index].get("name")
        return str(name) if name is not None else None
    return None


def _schema_issues(
    exc: ValidationError, data: Mapping[str, Any], prefix: Loc, lines: LineMap
) -> list[ValidationIssue]:
    issues = []
    for error in exc.errors():
        loc: Loc = tuple(error["loc"])
        message = error["msg"]
        step_index = step_name = None
        field_loc = loc
        known: list[str] = list(Pipeline.model_fields)
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            step_index, step_name = loc[1] + 1, _step_name(data, loc[1])
            field_loc = loc[2:]
            known = list(Step.model_fields)
        suggestions: list[str] = []
        if error["type"] == "extra_forbidden" and field_loc:
            suggestions = difflib.get_close_matches(str(field_loc[-1]), known, n=3)
            message = f"unknown field {field_loc[-1]!r}" + (
                f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
            )
        elif error["type"] == "missing" and loc == ("steps",):
            message = (
                "required field is missing: no top-level 'steps', so nothing would run (the "
                "original platform ran such a file as an empty pipeline and reported success)"
            )
        elif error["type"] == "missing":
            message = "required field is missing"
        line, column = node_position(lines, (*prefix, *loc))
        issues.append(
            ValidationIssue(
                message=message,
                line=line,
                column=column,
                step_index=step_index,
                step_name=step_name,
                field=".".join(map(str, field_loc)) or None,
                suggestions=suggestions,
            )
        )
    return issues


def _templated_at(config: Any, loc: Loc) -> bool:
    """True when the config value at ``loc`` (or one above it) is filled in at run time."""
    current = config
    for part in loc:
        if isinstance(current, str):
            break
        in_mapping = isinstance(current, Mapping) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and part < len(current)
        if not (in_mapping or in_list):
            return False
        current = current[part]
        if isinstance(current, str) and contains_template(current):
            return True
    return False


def check_plugins(
    pipeline: Pipeline,
    registry: PluginRegistry | None = None,
    *,
    lines: LineMap | None = None,
    prefix: Loc = (),
) -> list[ValidationIssue]:
    """Problems with each step's plugin: unknown name, or config that does not fit.

    Values that are templates are only checked at run time, once they are filled in.
    """
    registry = registry or default_registry()
    lines = lines or {}
    issues: list[ValidationIssue] = []
    seen: dict[str, int] = {}
    for index, step in enumerate(pipeline.steps):
        step_loc: Loc = (*prefix, "steps", index)
        if step.name in seen:
            line, column = node_position(lines, (*step_loc, "name"))
            issues.append(
                ValidationIssue(
                    message=f"duplicate step name (step {seen[step.name]} has the same name)",
                    line=line,
                    column=column,
                    step_index=index + 1,
                    step_name=step.name,
                    field="name",
                )
            )
        seen.setdefault(step.name, index + 1)
        try:
            plugin = registry.get(step.plugin)
        except UnknownPluginError as exc:
            line, column = node_position(lines, (*step_loc, "plugin"))
            issues.append(
                ValidationIssue(
                    message=str(exc),
                    line=line,
                    column=column,
                    step_index=index + 1,
                    step_name=step.name,
                    field="plugin",
                    suggestions=exc.suggestions,
                )
            )
            continue
        try:
            plugin.config_model.model_validate(step.config)
        except ValidationError as exc:
            for error in exc.errors():
                loc: Loc = tuple(error["loc"])
                if _templated_at(step.config, loc):
                    continue
                message = error["msg"]
                if error["type"] == "extra_forbidden":
                    known = list(plugin.config_model.model_fields)
                    close = difflib.get_close_matches(str(loc[-1]), known, n=3)
                    message = f"unknown config key {loc[-1]!r} for {step.plugin}" + (
                        f" (did you mean {', '.join(close)}?)"
                        if close
                        else f" (known: {', '.join(known) or 'none'})"
                    )
                elif error["type"] == "missing":
                    message = f"required by {step.plugin} but missing"
                line, column = node_position(lines, (*step_loc, "config", *loc))
                issues.append(
                    ValidationIssue(
                        message=message,
                        line=line,
                        column=column,
                        step_index=index + 1,
                        step_name=step.name,
                        field=".".join(map(str, ("config", *loc))),
                    )
                )
    return issues


def _read_source(source: PipelineSource, limits: Limits) -> tuple[Any, LineMap, str | None]:
    if isinstance(source, Mapping):
        try:
            check_depth(source, limits.max_depth, "the pipeline")
        except LimitExceededError as exc:
            raise PipelineValidationError([ValidationIssue(message=str(exc))]) from None
        return dict(source), {}, None
    if isinstance(source, Path) or (
        isinstance(source, str)
        and "\n" not in source
        and source.strip().endswith((".yaml", ".yml"))
    ):
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > limits.max_yaml_bytes:
                message = (
                    f"YAML refused: the file is {size:,} bytes; the limit is "
                    f"{limits.max_yaml_bytes:,} (MIMIR_MAX_YAML_BYTES)"
                )
                raise PipelineValidationError([ValidationIssue(message=message)], str(path))
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PipelineNotFoundError(f"pipeline file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PipelineNotFoundError(f"cannot read pipeline file {str(path)!r}: {exc}") from exc
        data, lines = parse_yaml(text, str(path), limits=limits)
        return data, lines, str(path)
    data, lines = parse_yaml(source, limits=limits)
    return data, lines, None


def load_pipeline(
    source: PipelineSource,
    *,
    registry: PluginRegistry | None = None,
    check: bool = True,
    limits: Limits | None = None,
    strict: bool = False,
    context_keys: frozenset[str] | set[str] | None = None,
) -> Pipeline:
    """A validated :class:`Pipeline` from a file path, YAML text or a dict.

    A ``str`` that is one line ending in ``.yaml``/``.yml`` is a path; any other
    ``str`` is YAML text. With ``check`` (the default) each step's plugin and config
    are checked against ``registry`` (default: the process-wide one). The document is
    held to ``limits`` (default: the process's): size, aliases, depth and steps.
    With ``strict``, fields the pipeline model does not know are errors instead of
    warnings. ``context_keys`` (the job context's keys, when known) lets validation say
    which bare strings name them. Raises :class:`PipelineValidationError` listing every
    problem, or :class:`PipelineNotFoundError` for a missing file. The pipeline's
    ``warnings`` and ``notes`` say what else was found (ignored fields, aliases read,
    bare strings read as context keys).
    """
    limits = limits or default_limits()
    registry = registry or default_registry()
    data, lines, name = _read_source(source, limits)
    findings = Findings()
    selected, prefix = select_pipeline(data, name, findings)
    steps = selected.get("steps")
    if isinstance(steps, list) and len(steps) > limits.max_steps:
        line, column = node_position(lines, (*prefix, "steps"))
        issue = ValidationIssue(
            message=f"{len(steps):,} steps; a pipeline may have at most {limits.max_steps:,} "
            "(MIMIR_MAX_STEPS)",
            line=line,
            column=column,
            field="steps",
        )
        raise PipelineValidationError([issue], name)
    normalized, found = normalize(selected, registry, lines=lines, prefix=prefix, strict=strict)
    findings.extend(found)

    def fail(errors: list[ValidationIssue]) -> PipelineValidationError:
        return PipelineValidationError(
            errors,
            name,
            warnings=sorted(findings.warnings, key=_document_order),
            notes=sorted(findings.notes, key=_document_order),
        )

    try:
        pipeline = Pipeline.model_validate(normalized)
    except ValidationError as exc:
        raise fail(findings.errors + _schema_issues(exc, normalized, prefix, lines)) from None
    if check:
        findings.errors += check_plugins(pipeline, registry, lines=lines, prefix=prefix)
        findings.extend(
            reference_findings(
                pipeline, registry, lines=lines, prefix=prefix, context_keys=context_keys
            )
        )
    if findings.errors:
        raise fail(findings.errors)
    pipeline.warnings.extend(sorted(findings.warnings, key=_document_order))
    pipeline.notes.extend(sorted(findings.notes, key=_document_order))
    return pipeline


def _document_order(issue: ValidationIssue) -> tuple[int, int, int]:
    return (issue.line or 0, issue.column or 0, issue.step_index or 0)
