"""``mimir run``, ``mimir validate`` and ``mimir plugins``: pipelines from the command line.

These run in-process with the core alone (no server, no Redis). Exit codes:

- ``mimir run``: 0 the pipeline succeeded, 1 a step failed, 2 the pipeline (or the
  command line) is invalid;
- ``mimir validate``: 0 every file is valid (warnings do not count), 1 one is not (2 for a
  bad command line);
- ``mimir plugins``: 0;
- ``mimir migrate``: 0 every pipeline file was carried over (and, with ``--check``, none
  would change), 1 something cannot be carried over (or, with ``--check``, would change),
  2 for a bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from mimir.core.errors import (
    LimitExceededError,
    MimirError,
    PipelineNotFoundError,
    PipelineValidationError,
)
from mimir.core.limits import check_depth, default_limits
from mimir.core.pipeline.issues import ValidationIssue

__all__ = ["describe_plugins", "migrate_main", "plugins_main", "run_main", "validate_main"]


def _setup_logging() -> None:
    # stdout carries the result; logs go to stderr, quiet unless MIMIR_LOG_LEVEL says so,
    # as text or JSON lines (MIMIR_LOG_FORMAT; anything else stops the command, exit 2).
    from mimir.core.logtext import log_formatter, parse_log_format, quiet_url_loggers

    level = (os.environ.get("MIMIR_LOG_LEVEL") or "WARNING").upper()
    try:
        log_format = parse_log_format(os.environ.get("MIMIR_LOG_FORMAT"))
    except ValueError as exc:
        print(f"mimir: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(log_format, "%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), handlers=[handler])
    quiet_url_loggers()


def format_issue(issue: ValidationIssue, source: str | None) -> str:
    """``file:line:column: step 2 'load', field 'config.x': message`` (what's known of it)."""
    where = source or "<pipeline>"
    if issue.line is not None:
        where += f":{issue.line}"
        if issue.column is not None:
            where += f":{issue.column}"
    rest = issue.model_copy(update={"line": None, "column": None})
    return f"{where}: {rest}"


def _print_invalid(exc: PipelineValidationError, source: str, stream: TextIO) -> None:
    count = len(exc.errors)
    print(f"{source}: invalid pipeline ({count} problem{'s' if count != 1 else ''})", file=stream)
    for issue in exc.errors:
        print(f"  {format_issue(issue, source)}", file=stream)
        if issue.suggestions and "did you mean" not in issue.message:
            print(f"    did you mean: {', '.join(issue.suggestions)}", file=stream)
    _print_findings(exc.warnings, exc.notes, source, stream)


def _print_findings(
    warnings: list[ValidationIssue],
    notes: list[ValidationIssue],
    source: str,
    stream: TextIO,
    *,
    with_notes: bool = True,
) -> None:
    for issue in warnings:
        print(f"  warning: {format_issue(issue, source)}", file=stream)
    for issue in notes if with_notes else []:
        print(f"  note: {format_issue(issue, source)}", file=stream)


# --------------------------------------------------------------------------- run


def _parse_context(raw: str | None, parser: argparse.ArgumentParser) -> dict[str, Any]:
    if raw is None:
        return {}
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            parser.error(f"--context {raw}: cannot read the file: {exc.strerror or exc}")
    try:
        context = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"--context is not valid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        parser.error(f"--context is nested more than {default_limits().max_depth} levels deep")
    if not isinstance(context, dict):
        parser.error(f"--context must be a JSON object, got {type(context).__name__}")
    try:
        check_depth(context, default_limits().max_depth, "--context")
    except LimitExceededError as exc:
        parser.error(str(exc))
    return context


def run_main(argv: list[str]) -> int:
    """``mimir run FILE.yaml [--context JSON] [--data-dir DIR]``: run locally, print the result."""
    parser = argparse.ArgumentParser(
        prog="mimir run",
        description="Run a pipeline file in this process and print its result as JSON.",
    )
    parser.add_argument("file", metavar="FILE.yaml", help="the pipeline file")
    parser.add_argument(
        "--context",
        metavar="JSON",
        help="the initial context, a JSON object (or @file.json)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="directory plugins read and write (default $MIMIR_DATA_DIR)",
    )
    parser.add_argument("--compact", action="store_true", help="print the result on one line")
    args = parser.parse_args(argv)
    context = _parse_context(args.context, parser)
    _setup_logging()

    from mimir.core.engine import execute_pipeline
    from mimir.core.pipeline.loader import load_pipeline

    try:
        pipeline = load_pipeline(Path(args.file), context_keys=set(context))
    except PipelineValidationError as exc:
        _print_invalid(exc, args.file, sys.stderr)
        return 2
    except PipelineNotFoundError as exc:
        print(f"mimir run: {exc}", file=sys.stderr)
        return 2
    # What runs differently from how it reads is worth a line on stderr (notes: validate).
    _print_findings(pipeline.warnings, [], args.file, sys.stderr, with_notes=False)
    data_dir = args.data_dir
    if data_dir is None:
        from mimir.core.settings import Settings

        data_dir = Settings.from_env().data_dir
    try:
        result = asyncio.run(execute_pipeline(pipeline, context, data_dir=data_dir))
    except KeyboardInterrupt:
        print("mimir run: interrupted", file=sys.stderr)
        return 130
    payload = result.model_dump(mode="json")
    print(json.dumps(payload, indent=None if args.compact else 2, default=str))
    if not result.success:
        print(f"mimir run: {result.error}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- validate


def validate_main(argv: list[str]) -> int:
    """``mimir validate [--strict] [--json] FILE.yaml [FILE.yaml ...]``: check files without
    running them; warnings and notes (the original platform's names, bare strings read as
    context keys, fields ignored) are printed under each file."""
    parser = argparse.ArgumentParser(
        prog="mimir validate",
        description="Check pipeline files (YAML, schema, plugins and their config) without "
        "running them. Warnings and notes say what is ignored or read differently from how "
        "it is written (files of the original Go platform).",
    )
    parser.add_argument("files", nargs="+", metavar="FILE.yaml", help="pipeline files")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="unknown pipeline and step fields are errors (by default: warnings)",
    )
    args = parser.parse_args(argv)
    _setup_logging()

    from mimir.core.pipeline.loader import load_pipeline

    findings: list[dict[str, Any]] = []
    for file in args.files:
        try:
            pipeline = load_pipeline(Path(file), strict=args.strict)
        except PipelineValidationError as exc:
            findings.append(
                {
                    "file": file,
                    "valid": False,
                    "errors": [i.model_dump() for i in exc.errors],
                    "warnings": [i.model_dump() for i in exc.warnings],
                    "notes": [i.model_dump() for i in exc.notes],
                }
            )
            if not args.json:
                _print_invalid(exc, file, sys.stdout)
        except MimirError as exc:
            findings.append({"file": file, "valid": False, "errors": [{"message": str(exc)}]})
            if not args.json:
                print(f"{file}: {exc}")
        else:
            findings.append(
                {
                    "file": file,
                    "valid": True,
                    "name": pipeline.name,
                    "steps": len(pipeline.steps),
                    "warnings": [i.model_dump() for i in pipeline.warnings],
                    "notes": [i.model_dump() for i in pipeline.notes],
                }
            )
            if not args.json:
                steps = len(pipeline.steps)
                print(f"OK {file}: {pipeline.name} ({steps} step{'s' if steps != 1 else ''})")
                _print_findings(pipeline.warnings, pipeline.notes, file, sys.stdout)
    if args.json:
        print(json.dumps({"files": findings}, indent=2))
    return 0 if all(f["valid"] for f in findings) else 1


# --------------------------------------------------------------------------- plugins


def describe_plugins() -> list[dict[str, Any]]:
    """Every registered plugin as ``{name, type, description, config_schema}``."""
    from mimir.core.plugins.registry import default_registry

    return [
        {
            "name": plugin.full_name(),
            "type": plugin.plugin_type,
            "description": plugin.description,
            "config_schema": plugin.config_model.model_json_schema(),
        }
        for plugin in default_registry()
    ]


def plugins_main(argv: list[str]) -> int:
    """``mimir plugins [--json]``: list the plugins (``--json`` adds their config schemas)."""
    parser = argparse.ArgumentParser(
        prog="mimir plugins",
        description="List the available plugins: built-ins and those installed through the "
        "'mimir.plugins' entry-point group.",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON with each plugin's config schema"
    )
    args = parser.parse_args(argv)
    _setup_logging()

    from mimir.core.plugins.registry import default_registry

    plugins = describe_plugins()
    if args.json:
        print(json.dumps({"plugins": plugins}, indent=2))
    else:
        width = max(len(p["name"]) for p in plugins)
        print(f"{'PLUGIN':<{width}}  DESCRIPTION")
        for plugin in plugins:
            print(f"{plugin['name']:<{width}}  {plugin['description']}")
    for name, reason in default_registry().load_errors.items():
        print(f"mimir plugins: entry point {name!r} not loaded: {reason}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- migrate


def migrate_main(argv: list[str]) -> int:
    """``mimir migrate FILE|DIR... [--out DIR] [--root DIR] [--check]``: rewrite the original
    Go platform's pipeline files (and its pipeline-store records) in this project's form."""
    parser = argparse.ArgumentParser(
        prog="mimir migrate",
        description="Rewrite pipeline files of the original Go platform (and its "
        "pipeline-store JSON/YAML records) in this project's canonical form: unknown fields "
        "dropped, plugin and config-key aliases resolved, bare context keys turned into "
        "'{{ key }}' templates, paths made relative to the data directory. Prints what it "
        "changed and what it cannot carry over; a file with something it cannot carry over "
        "is left as it is. Without --out, files are rewritten in place and the original "
        "is kept as FILE.bak.",
    )
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR", help="files or directories")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write the migrated files under DIR (same layout; originals untouched) "
        "instead of in place",
    )
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="the original's data directory: absolute paths under it become relative to "
        "the data directory (MIMIR_DATA_DIR)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only report; exit 1 if anything would change or cannot be carried over",
    )
    args = parser.parse_args(argv)
    _setup_logging()

    from pathlib import PurePosixPath

    from mimir.core.pipeline.migrate import migrate_paths, write_migration

    root = None
    if args.root is not None:
        root = PurePosixPath(args.root)
        if not root.is_absolute():
            parser.error(f"--root must be an absolute path, got {args.root!r}")
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such file or directory: {', '.join(missing)}")
    migrations = migrate_paths([Path(p) for p in args.paths], root=root, out=args.out)
    failed = False
    counts = {"migrated": 0, "unchanged": 0, "blocked": 0, "skipped": 0}
    for migration in migrations:
        source = str(migration.source)
        if migration.skipped:
            counts["skipped"] += 1
            print(f"skip {source}: {migration.skipped}")
            continue
        if migration.blocked:
            counts["blocked"] += 1
            failed = True
            print(f"CANNOT {source}: left as it is; cannot carry over:")
            for line in migration.blocked:
                print(f"  - {line}")
            for line in migration.changes:
                print(f"  (would change) {line}")
            continue
        if not migration.changed:
            counts["unchanged"] += 1
            print(f"unchanged {source}")
            for line in migration.warnings:
                print(f"  check: {line}")
            continue
        counts["migrated"] += 1
        target = str(migration.target)
        verb = "would migrate" if args.check else "migrated"
        print(f"{verb} {source}" + (f" -> {target}" if target != source else ""))
        for line in migration.changes:
            print(f"  - {line}")
        for line in migration.warnings:
            print(f"  check: {line}")
        if args.check:
            failed = True
            continue
        try:
            backup = write_migration(migration, in_place=args.out is None)
        except OSError as exc:
            failed = True
            print(f"  not written: {exc}")
            continue
        if backup is not None:
            print(f"  original kept as {backup}")
    summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    print(f"mimir migrate: {summary or 'nothing to do'}", file=sys.stderr)
    return 1 if failed else 0
