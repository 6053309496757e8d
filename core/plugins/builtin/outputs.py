"""``Output.*``: write JSON, CSV and HTML report files inside the data directory.

Each file is written to a temporary name beside it and then renamed over the target,
so a reader never sees half a file. The result names the file relative to the data
directory, with its size. ``Output.json`` without ``file_path`` returns the JSON text
instead, and ``Output.html`` without ``input`` shows the whole context, as the original
Go platform's plugins did.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from mimir.core.errors import PluginError
from mimir.core.plugins.base import Plugin, PluginConfig, StepRuntime, context_input

__all__ = ["CsvOutputPlugin", "HtmlOutputPlugin", "JsonOutputPlugin"]

_INPUT_HELP = (
    "The value to write: '{{ some_output }}', a value, or a bare context key "
    "(e.g. 'rows', as the original platform wrote it)."
)


class FileOutputConfig(PluginConfig):
    input: Any = context_input(description=_INPUT_HELP)
    file_path: str = Field(description="Where to write, relative to the data directory.")


def _write_atomically(path: Path, text: str, shown: str) -> int:
    data = text.encode("utf-8")
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except IsADirectoryError:
        raise PluginError(f"{shown!r} is a directory") from None
    except OSError as exc:
        raise PluginError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
    return len(data)


async def _write(run: StepRuntime, file_path: str, render: Any, rows: int | None) -> dict[str, Any]:
    """Resolve ``file_path`` for writing, render the text in a thread and write it."""
    path = run.resolve_path(file_path, for_write=True)

    def work() -> int:
        return _write_atomically(path, render(), file_path)

    size = await asyncio.to_thread(work)
    run.record_artifact(path)
    relative = path.relative_to(run.data_dir.expanduser().resolve()).as_posix()
    result: dict[str, Any] = {"file_path": relative, "bytes": size}
    if rows is not None:
        result["rows"] = rows
    return result


def _row_count(value: Any) -> int | None:
    return len(value) if isinstance(value, list) else None


# --------------------------------------------------------------------------- JSON


class JsonOutputConfig(PluginConfig):
    # A bare key reads the value as the original's Output.json did (a mapping as it is,
    # anything else as {"value": v}), so its files come out the same here.
    input: Any = context_input(description=_INPUT_HELP, view="origin")
    file_path: str | None = Field(
        default=None,
        description="Where to write, relative to the data directory (none: the result "
        "holds the JSON text as 'json_string').",
    )
    indent: int | None = Field(default=2, ge=0, le=8, description="Indentation (null: compact).")


class JsonOutputPlugin(Plugin[JsonOutputConfig]):
    plugin_type = "Output"
    plugin_name = "json"
    description = "Write a value to a JSON file (or return the JSON text)."
    config_model = JsonOutputConfig

    async def run(self, config: JsonOutputConfig, run: StepRuntime) -> Any:
        def render() -> str:
            return json.dumps(config.input, indent=config.indent, default=str, ensure_ascii=False)

        rows = _row_count(config.input)
        if config.file_path is None:
            text = await asyncio.to_thread(render)
            result: dict[str, Any] = {
                "success": True,
                "json_string": text,
                "bytes": len(text.encode("utf-8")),
            }
            if rows is not None:
                result["rows"] = rows
            return result
        written = await _write(run, config.file_path, render, rows)
        # The original's field names next to this project's own.
        return {**written, "success": True, "bytes_written": written["bytes"]}


# --------------------------------------------------------------------------- CSV


class CsvOutputConfig(FileOutputConfig):
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="Field separator.")
    columns: list[str] | None = Field(
        default=None, description="Columns, in order (default: every field, first seen first)."
    )
    write_header: bool = Field(default=True, description="Write the column names first.")


def _cell(value: Any) -> Any:
    return (
        json.dumps(value, default=str, ensure_ascii=False)
        if isinstance(value, dict | list)
        else value
    )


def columns_of(rows: list[Mapping[str, Any]]) -> list[str]:
    """Every field name in ``rows``, in the order first seen."""
    return list(dict.fromkeys(name for row in rows for name in row))


def render_csv(value: Any, config: CsvOutputConfig) -> str:
    """CSV text for a list of objects, a list of lists, or a single object."""
    rows = [value] if isinstance(value, Mapping) else value
    if not isinstance(rows, list):
        raise PluginError(f"input must be a list of rows, got a {type(value).__name__}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=config.delimiter, lineterminator="\n")
    if rows and all(isinstance(row, Mapping) for row in rows):
        columns = config.columns or columns_of(rows)
        if config.write_header:
            writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column)) for column in columns])
    elif all(isinstance(row, list | tuple) for row in rows):
        if config.columns and config.write_header:
            writer.writerow(config.columns)
        for row in rows:
            writer.writerow([_cell(cell) for cell in row])
    else:
        raise PluginError("input rows must be all objects or all lists")
    return buffer.getvalue()


class CsvOutputPlugin(Plugin[CsvOutputConfig]):
    plugin_type = "Output"
    plugin_name = "csv"
    description = "Write rows (objects or lists) to a CSV file."
    config_model = CsvOutputConfig

    async def run(self, config: CsvOutputConfig, run: StepRuntime) -> Any:
        return await _write(
            run,
            config.file_path,
            lambda: render_csv(config.input, config),
            _row_count(config.input),
        )


# --------------------------------------------------------------------------- HTML


class HtmlOutputConfig(PluginConfig):
    input: Any = context_input(
        None, description=_INPUT_HELP + " Not given: the whole pipeline context."
    )
    file_path: str | None = Field(
        default=None,
        description="Where to write, relative to the data directory (none: the result "
        "holds the page as 'html').",
    )
    title: str = Field(default="Mimir report", description="Heading and page title.")
    description: str | None = Field(default=None, description="A paragraph under the title.")
    columns: list[str] | None = Field(
        default=None, description="Table columns, in order (default: every field)."
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: .25rem; }
p.meta { color: #666; font-size: .85rem; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; font-size: .95rem; }
th, td { border: 1px solid #ddd; padding: .35rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 1rem; overflow-x: auto; }
""".strip()


def _html_cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{html.escape('' if value is None else str(value).lower())}</td>"
    if isinstance(value, int | float):
        if isinstance(value, int):
            text = f"{value:,}"
        elif value == 0 or 0.01 <= abs(value) < 1e15:
            text = f"{value:,.2f}"
        else:  # tiny, huge, inf and nan read better in general format
            text = f"{value:g}"
        return f'<td class="num">{html.escape(text)}</td>'
    if isinstance(value, dict | list):
        return f"<td><code>{html.escape(json.dumps(value, default=str))}</code></td>"
    return f"<td>{html.escape(str(value))}</td>"


def _table(rows: list[Mapping[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(_html_cell(row.get(c)) for c in columns) + "</tr>" for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def render_html(value: Any, config: HtmlOutputConfig, generated_at: datetime) -> str:
    """A self-contained HTML page showing ``value``; every piece of data is escaped."""
    if isinstance(value, list) and value and all(isinstance(r, Mapping) for r in value):
        content = _table(value, config.columns or columns_of(value))
        summary = f"{len(value)} row{'s' if len(value) != 1 else ''}"
    elif isinstance(value, list):
        content = _table([{"value": v} for v in value], ["value"])
        summary = f"{len(value)} item{'s' if len(value) != 1 else ''}"
    elif isinstance(value, Mapping):
        content = _table([{"field": k, "value": v} for k, v in value.items()], ["field", "value"])
        summary = f"{len(value)} field{'s' if len(value) != 1 else ''}"
    else:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
        content = f"<pre>{html.escape(text)}</pre>"
        summary = "text"
    title = html.escape(config.title)
    description = f"<p>{html.escape(config.description)}</p>\n" if config.description else ""
    stamp = html.escape(generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>\n{_STYLE}\n</style>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n{description}"
        f'<p class="meta">{summary} · generated by Mimir AIP at {stamp}</p>\n'
        f"{content}\n</body>\n</html>\n"
    )


class HtmlOutputPlugin(Plugin[HtmlOutputConfig]):
    plugin_type = "Output"
    plugin_name = "html"
    description = "Write a readable HTML report: a title and a table of the rows."
    config_model = HtmlOutputConfig

    async def run(self, config: HtmlOutputConfig, run: StepRuntime) -> Any:
        generated_at = datetime.now(UTC)
        value = config.input if "input" in config.model_fields_set else dict(run.context)
        # The original's fields (its Output.html only reported that a report was made).
        origin = {
            "format": "html",
            "generated": True,
            "timestamp": generated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        rows = _row_count(value)
        if config.file_path is None:
            page = await asyncio.to_thread(render_html, value, config, generated_at)
            result: dict[str, Any] = {
                **origin,
                "html": page,
                "bytes": len(page.encode("utf-8")),
            }
            if rows is not None:
                result["rows"] = rows
            return result
        written = await _write(
            run, config.file_path, lambda: render_html(value, config, generated_at), rows
        )
        return {**written, **origin}
