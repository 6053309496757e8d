"""``Input.excel`` and ``Output.excel``: read and write ``.xlsx`` workbooks, streamed.

Both sides stream: the reader opens the workbook ``read_only`` and walks the sheet's rows
(openpyxl never builds its cell model), the writer uses a ``write_only`` workbook that
sends each row to the file as it is appended. openpyxl is imported only when a step runs,
so that loading the plugin registry (every idle worker does) does not load it; it parses
the workbook's XML through defusedxml (no DTDs, no entities), which is installed.

Values keep their types: numbers stay numbers, booleans booleans; dates and times read
from a sheet become ISO 8601 strings (the result must be JSON), and ISO strings written
to a sheet become typed date cells again.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

from pydantic import Field, field_validator

from mimir.core.errors import PluginError
from mimir.core.plugins.base import Plugin, PluginConfig, StepRuntime
from mimir.core.plugins.builtin.outputs import FileOutputConfig, columns_of

__all__ = [
    "ExcelInputPlugin",
    "ExcelOutputPlugin",
    "atomic_file",
    "is_table_result",
    "relative_to_data_dir",
    "table_of",
]

#: Workbooks bigger than this on disk are refused.
MAX_WORKBOOK_BYTES = 256 * 1024 * 1024
#: The shared-strings part is held in memory whole (openpyxl, even read_only): its
#: uncompressed size is checked so that a small zip cannot expand into gigabytes.
MAX_SHARED_STRINGS_BYTES = 256 * 1024 * 1024
#: Excel's own limits.
EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_COLUMNS = 16_384
EXCEL_MAX_CELL_CHARS = 32_767
#: Integers beyond this lose digits as Excel numbers (doubles); they are written as text.
_EXACT_INT = 2**53

_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


# --------------------------------------------------------------------------- shared


@contextmanager
def atomic_file(path: Path, shown: str) -> Iterator[Path]:
    """A fresh temporary path beside ``path``, renamed over it if the block succeeds.

    A reader never sees half a file, and a failed write leaves no temporary behind. The
    writer creates the file itself, so it gets the usual permissions (the umask's).
    """
    if path.is_dir():
        raise PluginError(f"{shown!r} is a directory")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    except IsADirectoryError:
        raise PluginError(f"{shown!r} is a directory") from None
    except OSError as exc:
        raise PluginError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)


def relative_to_data_dir(run: StepRuntime, path: Path) -> str:
    """``path`` as the results of every ``Output.*`` plugin name it."""
    return path.relative_to(run.data_dir.expanduser().resolve()).as_posix()


def is_table_result(value: Any) -> bool:
    """Whether ``value`` is a table as ``Input.excel`` returns it: ``{rows, columns, …}``."""
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("rows"), list)
        and isinstance(value.get("columns"), list)
    )


def table_of(value: Any, columns: list[str] | None) -> tuple[list[str] | None, list[list[Any]]]:
    """``(header, rows)`` of a value given as a table, the way ``Output.*`` takes input.

    A list of objects (columns first seen first), a list of lists, a list of scalars
    (one ``value`` column), one object (one row, as ``Output.csv`` does) or a table
    result such as ``Input.excel``'s ``{rows, columns, …}``. ``header`` is ``None`` for
    lists of lists without ``columns``.
    """
    if is_table_result(value):
        if columns is None and all(isinstance(name, str) for name in value["columns"]):
            columns = list(value["columns"]) or None
        value = value["rows"]
    elif isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        raise PluginError(
            f"input must be a list of rows (objects or lists) or an object, "
            f"got a {type(value).__name__}"
        )
    if value and all(isinstance(row, Mapping) for row in value):
        header = columns or columns_of(value)
        return header, [[row.get(name) for name in header] for row in value]
    if all(isinstance(row, list | tuple) for row in value):
        return columns, [list(row) for row in value]
    if any(isinstance(row, Mapping | list | tuple) for row in value):
        raise PluginError("input rows must be all objects, all lists or all plain values")
    return columns or ["value"], [[item] for item in value]


# --------------------------------------------------------------------------- Input.excel


class ExcelInputConfig(PluginConfig):
    file_path: str = Field(description="Path of the .xlsx file, relative to the data directory.")
    sheet_name: str | None = Field(
        default=None, description="Worksheet to read (default: the first worksheet)."
    )
    has_headers: bool = Field(
        default=True,
        description="The first non-empty row names the columns (rows become objects); "
        "otherwise rows are lists and columns are named column_1, column_2, …",
    )
    max_rows: int | None = Field(
        default=None, ge=1, description="Stop after this many data rows (default: all)."
    )


def _json_value(value: Any) -> Any:
    """A cell value as JSON data: dates, times and durations become ISO 8601 strings."""
    if isinstance(value, datetime):
        if value.time() == time(0) and value.tzinfo is None:
            return value.date().isoformat()  # a date cell: Excel stores it as midnight
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _column_letter(index: int) -> str:
    """1 → ``A``, 27 → ``AA``."""
    letters = ""
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(65 + remainder) + letters
    return letters


def _header(cells: Sequence[Any], shown: str, row_number: int) -> list[str]:
    values = list(cells)
    while values and values[-1] in (None, ""):
        values.pop()
    names = []
    for index, value in enumerate(values, start=1):
        text = "" if value is None else str(_json_value(value)).strip()
        names.append(text or f"column_{index}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PluginError(
            f"{shown}: the header (row {row_number}) repeats column(s) {', '.join(duplicates)}"
        )
    return names


def _open_workbook(stream: IO[bytes], shown: str) -> Any:
    """The read-only workbook in ``stream``; every way it can be malformed is a PluginError."""
    from openpyxl import load_workbook

    magic = stream.read(8)
    stream.seek(0)
    if magic == _OLE2_MAGIC:
        raise PluginError(
            f"{shown}: this is a legacy .xls (or other OLE2) file; only .xlsx workbooks "
            "are read: save it as .xlsx, or export it to CSV for Input.csv"
        )
    if not zipfile.is_zipfile(stream):
        raise PluginError(
            f"{shown}: not an Excel workbook (.xlsx files are zip archives; this one is not)"
        )
    stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            names = set(archive.namelist())
            if "xl/workbook.xml" not in names and "[Content_Types].xml" not in names:
                raise PluginError(
                    f"{shown}: a zip archive but not an Excel workbook (no xl/workbook.xml)"
                )
            for info in archive.infolist():
                if (
                    info.filename.endswith("sharedStrings.xml")
                    and info.file_size > MAX_SHARED_STRINGS_BYTES
                ):
                    raise PluginError(
                        f"{shown}: its shared strings expand to {info.file_size} bytes; "
                        f"the limit is {MAX_SHARED_STRINGS_BYTES}"
                    )
    except zipfile.BadZipFile as exc:
        raise PluginError(f"{shown}: a damaged zip archive: {exc}") from None
    stream.seek(0)
    try:
        # data_only: a formula cell gives the value Excel last computed for it.
        return load_workbook(stream, read_only=True, data_only=True)
    except PluginError:
        raise
    except Exception as exc:  # openpyxl raises KeyError, ValueError, XML errors …
        # A KeyError's str() wraps its message in quotes: take the message itself.
        detail = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        detail = detail or type(exc).__name__
        raise PluginError(f"{shown}: not a readable Excel workbook: {detail}") from None


def read_sheet(path: Path, config: ExcelInputConfig) -> dict[str, Any]:
    """The rows of one worksheet of the workbook at ``path``, streamed row by row."""
    shown = config.file_path
    try:
        if path.is_dir():
            raise PluginError(f"{shown!r} is a directory, not a file")
        size = path.stat().st_size
        if size > MAX_WORKBOOK_BYTES:
            raise PluginError(
                f"file {shown!r} is {size} bytes; the limit is {MAX_WORKBOOK_BYTES} bytes"
            )
        stream = path.open("rb")
    except FileNotFoundError:
        raise PluginError(f"file {shown!r} does not exist in the data directory") from None
    except OSError as exc:
        raise PluginError(f"cannot read {shown!r}: {exc.strerror or exc}") from None
    with stream:
        workbook = _open_workbook(stream, shown)
        try:
            return _read_rows(workbook, config)
        finally:
            workbook.close()


def _read_rows(workbook: Any, config: ExcelInputConfig) -> dict[str, Any]:
    shown = config.file_path
    sheets = list(workbook.sheetnames)
    worksheets = {sheet.title: sheet for sheet in workbook.worksheets}
    if config.sheet_name is None:
        if not worksheets:
            raise PluginError(f"{shown}: the workbook has no worksheet")
        sheet = workbook.worksheets[0]
    elif config.sheet_name in worksheets:
        sheet = worksheets[config.sheet_name]
    else:
        what = "a chart sheet, not a worksheet" if config.sheet_name in sheets else "no sheet"
        raise PluginError(
            f"{shown}: {what} {config.sheet_name!r}; its sheets are "
            + ", ".join(repr(name) for name in sheets)
        )
    # The <dimension> a file declares may be wrong (some writers never update it):
    # read each row as long as its last cell instead of trusting it.
    sheet.reset_dimensions()
    columns: list[str] | None = None
    rows: list[Any] = []
    truncated = False
    for number, cells in enumerate(sheet.iter_rows(values_only=True), start=1):
        if all(value is None for value in cells):
            continue  # empty rows, like blank lines in a CSV file, are skipped
        if config.has_headers and columns is None:
            columns = _header(cells, shown, number)
            continue
        if config.max_rows is not None and len(rows) >= config.max_rows:
            truncated = True
            break
        values = [_json_value(value) for value in cells]
        if config.has_headers:
            assert columns is not None
            beyond = values[len(columns) :]
            if any(value is not None for value in beyond):
                column = len(columns) + 1 + next(i for i, v in enumerate(beyond) if v is not None)
                raise PluginError(
                    f"{shown}: row {number} has a value in column {_column_letter(column)}, "
                    f"beyond the header's {len(columns)} column(s) ({', '.join(columns)})"
                )
            del values[len(columns) :]
            values += [None] * (len(columns) - len(values))
            rows.append(dict(zip(columns, values, strict=True)))
        else:
            rows.append(values)
    if not config.has_headers:
        width = max((len(row) for row in rows), default=0)
        for row in rows:
            row.extend([None] * (width - len(row)))
        columns = [f"column_{index}" for index in range(1, width + 1)]
    columns = columns or []
    return {
        "file_path": shown,
        "sheet_name": sheet.title,
        "has_headers": config.has_headers,
        "rows": rows,
        "columns": columns,
        "row_count": len(rows),
        "column_count": len(columns),
        "truncated": truncated,
        "sheet_count": len(sheets),
        "available_sheets": sheets,
        "parsed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


class ExcelInputPlugin(Plugin[ExcelInputConfig]):
    plugin_type = "Input"
    plugin_name = "excel"
    description = (
        "Read a worksheet of an .xlsx file (streamed): {rows, columns, row_count, "
        "column_count, …}, typed values, dates as ISO strings."
    )
    config_model = ExcelInputConfig

    async def run(self, config: ExcelInputConfig, run: StepRuntime) -> Any:
        path = run.resolve_path(config.file_path)
        return await asyncio.to_thread(read_sheet, path, config)


# --------------------------------------------------------------------------- Output.excel

_INVALID_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)
# Characters XML 1.0 cannot carry (openpyxl refuses them with IllegalCharacterError).
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class ExcelOutputConfig(FileOutputConfig):
    sheet_name: str = Field(default="Sheet1", description="Name of the worksheet.")
    with_headers: bool = Field(default=True, description="Write the column names first (bold).")
    columns: list[str] | None = Field(
        default=None, description="Columns, in order (default: every field, first seen first)."
    )
    parse_dates: bool = Field(
        default=True,
        description="Write ISO 8601 strings ('2024-05-01', '2024-05-01T10:30:00') as date cells.",
    )

    @field_validator("sheet_name")
    @classmethod
    def _valid_sheet_name(cls, value: str) -> str:
        if not value.strip() or len(value) > 31 or _INVALID_SHEET_CHARS.search(value):
            raise ValueError("a sheet name has 1 to 31 characters and none of [ ] : * ? / \\")
        if value.startswith("'") or value.endswith("'"):
            raise ValueError("a sheet name cannot begin or end with an apostrophe")
        return value


def _cell_value(value: Any, parse_dates: bool) -> Any:
    """``value`` as openpyxl should store it: typed where Excel has the type, else text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < _EXACT_INT else str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # Excel has no time zones: write UTC
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value if value.year >= 1900 else value.isoformat()
    if isinstance(value, date):
        return value if value.year >= 1900 else value.isoformat()
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    if isinstance(value, str):
        if parse_dates and len(value) <= 32:
            try:
                if _ISO_DATE.match(value):
                    return _cell_value(date.fromisoformat(value), False)
                if _ISO_DATETIME.match(value):
                    return _cell_value(datetime.fromisoformat(value), False)
            except ValueError:  # '2024-02-30' looks like a date but is none
                pass
        text = _ILLEGAL_XML.sub("\ufffd", value)
        if len(text) > EXCEL_MAX_CELL_CHARS:
            text = text[: EXCEL_MAX_CELL_CHARS - 1] + "…"
        return text
    if isinstance(value, dict | list | tuple):
        return _cell_value(json.dumps(value, default=str, ensure_ascii=False), False)
    return _cell_value(str(value), False)


def write_workbook(path: Path, config: ExcelOutputConfig) -> dict[str, Any]:
    """Write ``config.input`` as one worksheet of a new workbook at ``path``, atomically."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    header, rows = table_of(config.input, config.columns)
    with_header = config.with_headers and header is not None
    width = max([len(header or [])] + [len(row) for row in rows])
    if width > EXCEL_MAX_COLUMNS:
        raise PluginError(f"{width} columns; an Excel sheet holds at most {EXCEL_MAX_COLUMNS}")
    if len(rows) + with_header > EXCEL_MAX_ROWS:
        raise PluginError(f"{len(rows)} rows; an Excel sheet holds at most {EXCEL_MAX_ROWS}")

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(config.sheet_name)
    if width and rows:
        # openpyxl writes <dimension> when the sheet can name its size, which a streamed
        # sheet cannot; it is known here. Readers need it: without it openpyxl's read-only
        # mode parses the whole sheet once more just to look for it.
        reference = f"A1:{_column_letter(width)}{len(rows) + with_header}"
        sheet.calculate_dimension = lambda: reference
    # Widths must be set before the first row goes out; judge them from a sample.
    sample = ([header] if header else []) + rows[:200]
    for index in range(width):
        longest = max(
            (len(str(row[index])) for row in sample if index < len(row) and row[index] is not None),
            default=0,
        )
        sheet.column_dimensions[_column_letter(index + 1)].width = min(max(longest + 2, 8), 60)
    if with_header:
        assert header is not None
        sheet.freeze_panes = "A2"
        bold = Font(bold=True)
        cells = []
        for name in header:
            cell = WriteOnlyCell(sheet, value=_cell_value(str(name), False))
            cell.font = bold
            cells.append(cell)
        sheet.append(cells)
    for row in rows:
        values = [_cell_value(value, config.parse_dates) for value in row]
        for index, value in enumerate(values):
            if isinstance(value, str) and value.startswith("="):
                # Data, never a formula: a text cell, whatever it starts with.
                cell = WriteOnlyCell(sheet, value=value)
                cell.data_type = "s"
                values[index] = cell
        sheet.append(values)
    with atomic_file(path, config.file_path) as temporary:
        workbook.save(temporary)
        size = temporary.stat().st_size
    return {
        "bytes": size,
        "sheet_name": config.sheet_name,
        "rows": len(rows),
        "columns": list(header) if header else [],
    }


class ExcelOutputPlugin(Plugin[ExcelOutputConfig]):
    plugin_type = "Output"
    plugin_name = "excel"
    description = "Write rows (objects or lists) to one worksheet of an .xlsx file, typed cells."
    config_model = ExcelOutputConfig

    async def run(self, config: ExcelOutputConfig, run: StepRuntime) -> Any:
        path = run.resolve_path(config.file_path, for_write=True)
        written = await asyncio.to_thread(write_workbook, path, config)
        run.record_artifact(path)
        return {"file_path": relative_to_data_dir(run, path), **written}
