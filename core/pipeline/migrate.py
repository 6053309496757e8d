"""``mimir migrate``: rewrite the original Go platform's pipeline files in this project's form.

What a migrated file says is what the original file meant, written the way this project
reads it without any compatibility rule:

- unknown pipeline and step fields are dropped (the original ignored them too);
- plugin names and config keys of the original become this project's (``AIModels.openai``
  → ``AI.openai``, ``pretty_print`` → ``indent``, ``filename`` → ``file_path`` …);
- bare strings that name a context key become ``{{ key }}`` templates, where that passes
  the same value (a bare key read by ``Output.json`` is kept when the value's shape is not
  known: there the original passed a non-mapping as ``{"value": …}``);
- a step that relied on the original's default output key gets ``output:`` explicitly;
- ``{{.a.b}}`` becomes ``{{ a.b }}``; ``./x`` becomes ``x``; an absolute path under
  ``--root`` becomes relative to the data directory;
- the original's pipeline-store files (JSON or YAML ``{id, name, metadata, config}``)
  become pipeline files named after the pipeline, their metadata kept under ``metadata``.

A file with something that cannot be carried over (a plugin that exists nowhere, a path
outside ``--root`` …) is reported and left as it is; nothing half-converted is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from mimir.core.errors import MimirError, PipelineValidationError
from mimir.core.pipeline.issues import ValidationIssue
from mimir.core.pipeline.loader import check_plugins, parse_yaml, select_pipeline
from mimir.core.pipeline.models import Pipeline
from mimir.core.pipeline.origin import (
    AI_CONTEXT_KEYS,
    AI_RESULT_ALIASES,
    DEFAULT_OUTPUTS,
    Findings,
    _missing_plugins,
    context_references,
    normalize,
    reference_findings,
)
from mimir.core.pipeline.templating import contains_template
from mimir.core.plugins.registry import PluginRegistry, default_registry

__all__ = ["Migration", "migrate_file", "migrate_paths", "write_migration"]

_PIPELINE_SUFFIXES = (".yaml", ".yml")
_STORE_SUFFIXES = (".yaml", ".yml", ".json")
#: Plugins whose result is always a mapping (so '{{ key }}' passes what the original did).
_MAPPING_RESULTS = frozenset(
    {
        "Input.api",
        "Input.markdown",
        "Input.xml",
        "Output.json",
        "Output.html",
        "Output.csv",
        "Output.excel",
        "Output.pdf",
        "Debug.sleep",
    }
)
_PATH_KEY = re.compile(r"(^|_)(path|file|filename|dir|directory)$")


@dataclass
class Migration:
    """What migrating one file found and, unless ``blocked``, the text to write."""

    source: Path
    #: Where the migrated file goes (``None`` until decided, or when nothing is written).
    target: Path | None = None
    #: The migrated YAML text; ``None`` when the file is not a pipeline or is blocked.
    text: str | None = None
    #: What was changed, one line each.
    changes: list[str] = field(default_factory=list)
    #: What cannot be carried over: the file is left as it is.
    blocked: list[str] = field(default_factory=list)
    #: What to look at in the migrated file (it still runs).
    warnings: list[str] = field(default_factory=list)
    #: Why the file was skipped (not a pipeline file at all), if it was.
    skipped: str | None = None

    @property
    def changed(self) -> bool:
        """Whether writing it would change anything."""
        if self.text is None or self.target is None:
            return False
        try:
            return self.target.read_text(encoding="utf-8") != self.text
        except OSError:
            return True


def _where(issue: ValidationIssue) -> str:
    parts = []
    if issue.line is not None:
        parts.append(f"line {issue.line}")
    if issue.step_index is not None:
        parts.append(
            f"step {issue.step_index}" + (f" {issue.step_name!r}" if issue.step_name else "")
        )
    if issue.field:
        parts.append(issue.field)
    return ", ".join(parts)


def _say(issue: ValidationIssue, context: str = "") -> str:
    where = ", ".join(p for p in (context, _where(issue)) if p)
    return f"{where}: {issue.message}" if where else issue.message


# --------------------------------------------------------------------------- the forms


_PIPELINE_KEYS = {"name", "enabled", "description", "steps"}
_STEP_KEYS = {"name", "plugin", "config", "output"}


def _lower_keys(data: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """Go's JSON decoding matched field names case-insensitively (``Steps``, ``Plugin``)."""
    return {
        (key.lower() if isinstance(key, str) and key.lower() in known else key): value
        for key, value in data.items()
    }


def _is_store_record(data: Any) -> bool:
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("config"), Mapping)
        and ("metadata" in data or "id" in data)
        and "steps" not in data
    )


def _from_store(data: Mapping[str, Any], migration: Migration) -> dict[str, Any]:
    """A pipeline mapping from the original's pipeline-store record."""
    config = _lower_keys(data["config"], _PIPELINE_KEYS)
    steps = config.get("steps")
    if isinstance(steps, list):
        config["steps"] = [
            _lower_keys(step, _STEP_KEYS) if isinstance(step, Mapping) else step for step in steps
        ]
    metadata = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    pipeline: dict[str, Any] = {
        "name": metadata.get("name") or data.get("name") or config.get("name"),
    }
    description = metadata.get("description") or config.get("description")
    if description:
        pipeline["description"] = description
    if isinstance(metadata.get("tags"), list) and metadata["tags"]:
        pipeline["tags"] = [str(tag) for tag in metadata["tags"]]
    kept = {
        key: value
        for key, value in metadata.items()
        if key not in {"name", "description", "tags"} and value not in (None, "", [], {})
    }
    if data.get("id") and "id" not in kept:
        kept["id"] = data["id"]
    if kept:
        pipeline["metadata"] = {"origin": json.loads(json.dumps(kept, default=str))}
    for key, value in config.items():
        if key not in pipeline and key not in {"name", "description"}:
            pipeline[key] = value
    migration.changes.append(
        "a pipeline-store record ({id, name, metadata, config}) written as a pipeline file"
        + (" (its metadata under 'metadata.origin')" if kept else "")
    )
    return pipeline


# --------------------------------------------------------------------------- one pipeline


def _known_mapping(step_plugin: str, config: Mapping[str, Any]) -> bool:
    if step_plugin in _MAPPING_RESULTS or step_plugin.startswith("AI."):
        return True
    if step_plugin == "Input.json" and isinstance(config.get("json_string"), str):
        try:
            return isinstance(json.loads(config["json_string"]), dict)
        except ValueError:
            return False
    return False


def _map_path(
    value: str, root: PurePosixPath | None, where: str, migration: Migration
) -> str | None:
    """``value`` as a path inside the data directory, or ``None`` (blocked) if it cannot be."""
    if contains_template(value) or "://" in value:
        return value
    path = PurePosixPath(value)
    if path.is_absolute():
        if root is not None and path.is_relative_to(root):
            relative = path.relative_to(root).as_posix()
            migration.changes.append(f"{where}: {value!r} → {relative!r} (under --root {root})")
            return relative
        migration.blocked.append(
            f"{where}: absolute path {value!r} "
            + (f"is not under --root {root}" if root else "(give --root DIR to map it)")
            + ": plugins here read and write inside the data directory only"
        )
        return None
    if ".." in path.parts:
        migration.blocked.append(
            f"{where}: {value!r} leaves its directory ('..'): plugins here stay inside the "
            "data directory"
        )
        return None
    if value.startswith("./"):
        relative = path.as_posix()
        migration.changes.append(f"{where}: {value!r} → {relative!r} (relative to the data dir)")
        return relative
    return value


def _map_paths(config: Any, root: PurePosixPath | None, where: str, migration: Migration) -> Any:
    if not isinstance(config, Mapping):
        return config
    mapped = {}
    for key, value in config.items():
        place = f"{where}.{key}"
        if isinstance(value, str) and isinstance(key, str) and _PATH_KEY.search(key):
            new = _map_path(value, root, place, migration)
            mapped[key] = value if new is None else new
        elif isinstance(value, Mapping):
            mapped[key] = _map_paths(value, root, place, migration)
        else:
            mapped[key] = value
    return mapped


_REF = re.compile(r"\{\{\s*(\.?)([^{}]*?)\s*\}\}")


def _templates(value: Any, ai_outputs: set[str], where: str, migration: Migration) -> Any:
    """Go-template references (``{{.a.b}}``) as ``{{ a.b }}``, and the original's names for
    an AI reply's fields (``{{ reply.content }}``) as this project's (``{{ reply.text }}``)."""
    if isinstance(value, str):

        def fix(match: re.Match[str]) -> str:
            path = match.group(2)
            head, _, rest = path.partition(".")
            field_name, _, tail = rest.partition(".")
            if head in ai_outputs and field_name in AI_RESULT_ALIASES:
                path = ".".join(p for p in (head, AI_RESULT_ALIASES[field_name], tail) if p)
            fixed = "{{ " + path + " }}"
            if fixed != match.group(0) and (match.group(1) or path != match.group(2)):
                migration.changes.append(f"{where}: {match.group(0)!r} → {fixed!r}")
                return fixed
            return match.group(0)

        return _REF.sub(fix, value)
    if isinstance(value, Mapping):
        return {k: _templates(v, ai_outputs, f"{where}.{k}", migration) for k, v in value.items()}
    if isinstance(value, list):
        return [_templates(v, ai_outputs, f"{where}.{i}", migration) for i, v in enumerate(value)]
    return value


def _migrate_pipeline(
    data: Mapping[str, Any],
    registry: PluginRegistry,
    root: PurePosixPath | None,
    migration: Migration,
    label: str = "",
) -> dict[str, Any]:
    """One pipeline mapping in the canonical form; problems go into ``migration``."""
    prefix = f"{label}: " if label else ""
    normalized, findings = normalize(data, registry)
    for issue in findings.warnings:
        if issue.message.startswith("unknown field"):
            name = repr(issue.field)
            step = f"step {issue.step_index} {issue.step_name!r}, " if issue.step_index else ""
            extra = ""
            value = data.get(issue.field) if issue.step_index is None and issue.field else None
            if isinstance(value, Mapping) and "steps" in value:
                extra = ": a pipeline the original never ran; not carried over" + _missing_plugins(
                    value.get("steps"), registry
                )
                migration.blocked.append(f"{prefix}{step}field {name}{extra}")
                continue
            migration.changes.append(
                f"{prefix}{step}field {name} dropped (the original ignored it)"
            )
        else:
            migration.changes.append(prefix + _say(issue))
    for issue in findings.notes:
        if "Go-template" not in issue.message:  # said where it is rewritten, below
            migration.changes.append(prefix + _say(issue))
    for issue in findings.errors:
        migration.blocked.append(prefix + _say(issue))
    steps = normalized.get("steps")
    if isinstance(steps, list):
        ai_outputs = {
            str(s["output"])
            for s in steps
            if isinstance(s, Mapping)
            and str(s.get("plugin", "")).startswith("AI.")
            and s.get("output")
        }
        for index, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            where = f"{prefix}step {index + 1} {step.get('name')!r}, config"
            config = step.get("config")
            if isinstance(config, Mapping):
                config = _map_paths(config, root, where, migration)
                step["config"] = _templates(config, ai_outputs, where, migration)
    try:
        pipeline = Pipeline.model_validate(normalized)
    except ValidationError as exc:
        for error in exc.errors():
            loc = ".".join(map(str, error["loc"]))
            message = error["msg"]
            if error["type"] == "missing" and tuple(error["loc"]) == ("steps",):
                message = "no top-level 'steps': nothing to run"
            migration.blocked.append(f"{prefix}{loc}: {message}")
        return normalized
    for issue in check_plugins(pipeline, registry):
        migration.blocked.append(prefix + _say(issue))
    if migration.blocked:
        return normalized
    _convert_references(normalized, pipeline, registry, migration, prefix)
    return normalized


def _convert_references(
    normalized: dict[str, Any],
    pipeline: Pipeline,
    registry: PluginRegistry,
    migration: Migration,
    prefix: str,
) -> None:
    steps: list[dict[str, Any]] = normalized["steps"]
    # Steps that relied on the original's default output key get it explicitly.
    added: dict[str, int] = {}
    for ref in context_references(pipeline, registry):
        if ref.kind != "implicit" or ref.producer is None:
            continue
        producer = pipeline.steps[ref.producer]
        if DEFAULT_OUTPUTS.get(producer.plugin) == ref.key and not producer.output:
            steps[ref.producer]["output"] = ref.key
            added[ref.key] = ref.producer
            migration.changes.append(
                f"{prefix}step {ref.producer + 1} {producer.name!r}: 'output: {ref.key}' added "
                f"(the original stored {producer.plugin}'s result there by default)"
            )
    if added:
        pipeline = Pipeline.model_validate(normalized)
    for ref in context_references(pipeline, registry):
        step = steps[ref.step_index]
        where = f"{prefix}step {ref.step_index + 1} {ref.step_name!r}, config.{ref.field}"
        if ref.kind == "output" and ref.producer is not None:
            producer = pipeline.steps[ref.producer]
            if ref.view == "origin" and not _known_mapping(producer.plugin, producer.config):
                migration.warnings.append(
                    f"{where}: kept as the bare key {ref.key!r}: it reads {producer.plugin}'s "
                    "result as the original did (a mapping as it is, anything else as "
                    f"{{'value': …}}); '{{{{ {ref.key} }}}}' would pass the value itself"
                )
                continue
            step["config"] = {**step["config"], ref.field: f"{{{{ {ref.key} }}}}"}
            migration.changes.append(f"{where}: {ref.key!r} → '{{{{ {ref.key} }}}}'")
        elif ref.kind in {"implicit", "later"}:
            migration.blocked.append(
                f"{where}: {ref.key!r} names "
                + (
                    "a key the original's AI plugins set on every call; here a reply goes "
                    "only under its step's 'output'"
                    if ref.key in AI_CONTEXT_KEYS
                    else "a step output that does not exist when this step runs"
                )
            )
    findings = Findings()
    try:
        checked = Pipeline.model_validate(normalized)
    except ValidationError:  # pragma: no cover - validated above
        return
    findings.extend(reference_findings(checked, registry))
    for issue in findings.warnings:
        migration.warnings.append(prefix + _say(issue))


def _dump(document: Mapping[str, Any], source: Path) -> str:
    header = (
        f"# Migrated by 'mimir migrate' from {source.name} (a pipeline of the original Go "
        "platform).\n"
    )
    body = yaml.safe_dump(
        _plain(document), sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )
    return header + body


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- one file


def _looks_like_pipeline(data: Any) -> bool:
    return isinstance(data, Mapping) and any(k in data for k in ("steps", "pipelines", "name"))


def migrate_file(
    path: Path,
    *,
    root: PurePosixPath | None = None,
    registry: PluginRegistry | None = None,
) -> Migration:
    """Migrate the file at ``path`` (nothing is written: see :func:`write_migration`)."""
    registry = registry or default_registry()
    migration = Migration(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        migration.blocked.append(f"cannot read it: {exc}")
        return migration
    try:
        if path.suffix.lower() == ".json":
            data: Any = json.loads(raw)
        else:
            data, _ = parse_yaml(raw, str(path))
    except (ValueError, RecursionError) as exc:
        migration.blocked.append(f"not valid JSON: {exc}")
        return migration
    except MimirError as exc:
        migration.blocked.append(str(exc))
        return migration
    if _is_store_record(data):
        pipeline = _from_store(data, migration)
        document = _migrate_pipeline(pipeline, registry, root, migration)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(document.get("name") or path.stem))
        migration.target = path.with_name(slug.strip("-._") + ".yaml")
    elif path.suffix.lower() in _PIPELINE_SUFFIXES and _looks_like_pipeline(data):
        migration.target = path
        document = _migrate_document(data, registry, root, migration)
    else:
        migration.skipped = "not a pipeline file (no 'name', 'steps', 'pipelines' or 'config')"
        return migration
    if migration.blocked:
        return migration
    text = _dump(document, path)
    # The result must load cleanly, with nothing left for a compatibility rule to do.
    try:
        from mimir.core.pipeline.loader import load_pipeline

        checked = load_pipeline(text, registry=registry, strict=True)
    except PipelineValidationError as exc:
        migration.blocked += [f"the migrated file: {_say(issue)}" for issue in exc.errors]
        return migration
    leftover = [n for n in checked.notes if "context key" not in n.message]
    migration.blocked += [f"the migrated file still needs: {_say(n)}" for n in leftover]
    if migration.blocked:
        return migration
    # A file already in this project's form is kept as written (comments and all).
    migration.text = text if migration.changes else raw
    return migration


def _migrate_document(
    data: Mapping[str, Any],
    registry: PluginRegistry,
    root: PurePosixPath | None,
    migration: Migration,
) -> dict[str, Any]:
    findings = Findings()
    try:
        selected, where = select_pipeline(data, str(migration.source), findings)
    except PipelineValidationError as exc:
        ambiguous = [i for i in exc.errors if "enabled" in i.message]
        entries = data.get("pipelines")
        if not ambiguous or not isinstance(entries, list) or not entries:
            migration.blocked += [_say(i) for i in exc.errors]
            return dict(data)
        # The original ran the first entry: say so with 'enabled: true'.
        first = dict(entries[0])
        first["enabled"] = True
        data = {**data, "pipelines": [first, *entries[1:]]}
        migration.changes.append(
            f"pipelines: the original ran the first entry ({first.get('name')!r}) although no "
            "entry said 'enabled: true'; it now says so"
        )
        selected, where = select_pipeline(data, str(migration.source), findings)
    for issue in findings.warnings:
        migration.changes.append(f"{issue.message} (dropped)")
    entries = data.get("pipelines") if where else None
    if not isinstance(entries, list) or len(entries) == 1:
        if where:
            migration.changes.append("a 'pipelines:' list of one entry written as one pipeline")
        return _migrate_pipeline(selected, registry, root, migration)
    migrated = []
    for index, entry in enumerate(entries):
        label = f"pipelines[{index + 1}] {entry.get('name')!r}"
        migrated.append(_migrate_pipeline(entry, registry, root, migration, label))
    return {"pipelines": migrated}


# --------------------------------------------------------------------------- many files


def _files(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """Every candidate file with the directory it was found under (for ``--out``)."""
    found: list[tuple[Path, Path]] = []
    for given in paths:
        if given.is_dir():
            for path in sorted(given.rglob("*")):
                if path.is_file() and path.suffix.lower() in _STORE_SUFFIXES:
                    found.append((path, given))
        else:
            found.append((given, given.parent))
    return found


def migrate_paths(
    paths: Iterable[Path],
    *,
    root: PurePosixPath | None = None,
    out: Path | None = None,
    registry: PluginRegistry | None = None,
) -> list[Migration]:
    """Migrate every pipeline file in ``paths`` (files, or directories searched
    recursively); with ``out`` the targets are under ``out``, in the same layout."""
    migrations = []
    claimed: dict[Path, Path] = {}  # target -> the file that migrates to it
    for path, base in _files(paths):
        migration = migrate_file(path, root=root, registry=registry)
        target = migration.target
        if out is not None and target is not None:
            target = migration.target = out / target.relative_to(base)
        if target is not None and migration.text is not None and migration.changed:
            other = claimed.setdefault(target.resolve(), path)
            if other != path:
                migration.blocked.append(f"{other} also migrates to {target}; rename one")
            elif out is None and target != path and target.exists():
                # A store record's new file would replace a file that is not its own.
                migration.blocked.append(f"{target} exists and differs; not replaced (use --out)")
        migrations.append(migration)
    return migrations


def write_migration(migration: Migration, *, in_place: bool) -> Path | None:
    """Write ``migration.text`` to its target atomically; return the backup made, if any.

    In place, the original file is kept as ``FILE.bak`` first (an existing ``.bak`` is
    never overwritten: that is an error).
    """
    assert migration.text is not None and migration.target is not None
    target = migration.target
    backup: Path | None = None
    if in_place and target.exists():
        backup = target.with_name(target.name + ".bak")
        if backup.exists():
            raise FileExistsError(
                f"{backup} exists; move it away (or use --out DIR) before migrating in place"
            )
        shutil.copy2(target, backup)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(migration.text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return backup
