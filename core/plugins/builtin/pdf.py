"""``Output.pdf``: a report as a PDF file: a title, then a table, key/value pairs or text.

Rows become a table whose header row repeats on every page; a table wider than the page
is split into column groups (the first column repeated in each, as a key), and long cells
wrap and are cut to a few lines. An object becomes a field/value table, a string
paragraphs.

Text is Unicode: the report embeds DejaVu Sans (``MIMIR_PDF_FONT`` names another TTF),
found in the usual font directories. Characters it lacks come from a fallback font when
one is installed (Noto Sans CJK, Droid Sans Fallback, WenQuanYi …, or those listed in
``MIMIR_PDF_FALLBACK_FONTS``), else they show as U+FFFD. Without any TTF the report uses
the PDF core font Helvetica (Windows-1252 only): other characters are approximated
('ő' → 'o') or replaced by '?'. The result says which font was used and how many
characters were replaced. fpdf2 is imported inside ``run``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from mimir.core.errors import PluginError
from mimir.core.plugins.base import Plugin, StepRuntime
from mimir.core.plugins.builtin.excel import (
    atomic_file,
    is_table_result,
    relative_to_data_dir,
    table_of,
)
from mimir.core.plugins.builtin.outputs import FileOutputConfig

__all__ = ["PdfOutputConfig", "PdfOutputPlugin", "find_unicode_font"]

logger = logging.getLogger(__name__)

#: Where DejaVu Sans lives on Debian/Ubuntu, Fedora, Arch, Alpine, macOS (Homebrew), Windows.
FONT_DIRECTORIES = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu-sans-fonts",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/share/fonts/truetype",
    "/usr/local/share/fonts",
    "/usr/local/share/fonts/dejavu",
    "~/.local/share/fonts",
    "~/.fonts",
    "/opt/homebrew/share/fonts",
    "/Library/Fonts",
    "~/Library/Fonts",
    "C:/Windows/Fonts",
)
#: Fonts with CJK (and much else) to fall back on, with the face to take from a collection.
FALLBACK_FONTS = (
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 0),
    ("/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc", 0),
    ("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc", 0),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
    ("/Library/Fonts/Arial Unicode.ttf", 0),
    ("C:/Windows/Fonts/msyh.ttc", 0),
)

PageSize = Literal["A4", "A3", "Letter", "Legal"]
Orientation = Literal["portrait", "landscape"]

MARGIN_MM = 12.0
#: A column is never squeezed below this width (unless its content is narrower).
MIN_COLUMN_MM = 20.0
#: … nor below its heading's width, up to this.
MAX_HEADING_MM = 32.0
#: … nor made wider than this share of the page.
MAX_COLUMN_SHARE = 0.45
CELL_PADDING_MM = 1.2
#: Table cells are cut to this many lines (key/value pairs: ``MAX_VALUE_LINES``), so
#: that every row fits on a page.
MAX_CELL_LINES = 6
MAX_VALUE_LINES = 30
#: Rows measured to size the columns.
SAMPLE_ROWS = 200
#: Longest text rendered as paragraphs.
MAX_TEXT_CHARS = 1_000_000


class PdfOutputConfig(FileOutputConfig):
    title: str | None = Field(default="Mimir report", description="Heading and document title.")
    description: str | None = Field(default=None, description="A paragraph under the title.")
    columns: list[str] | None = Field(
        default=None, description="Table columns, in order (default: every field)."
    )
    page_size: PageSize = Field(default="A4", description="A4, A3, Letter or Legal.")
    orientation: Orientation = Field(
        default="portrait", description="portrait or landscape (P and L also accepted)."
    )
    font_size: float = Field(default=9, ge=5, le=16, description="Body text size in points.")
    max_rows: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="Table rows rendered at most; the rest are counted in a closing note.",
    )
    font: Literal["auto", "core"] = Field(
        default="auto",
        description="auto: an embedded Unicode TTF if one is found; core: Helvetica "
        "(Windows-1252 characters only).",
    )

    @field_validator("page_size", mode="before")
    @classmethod
    def _page_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            sizes = {"a4": "A4", "a3": "A3", "letter": "Letter", "legal": "Legal"}
            return sizes.get(value.strip().lower(), value)
        return value

    @field_validator("orientation", mode="before")
    @classmethod
    def _orientation(cls, value: Any) -> Any:
        if isinstance(value, str):
            named = {"p": "portrait", "portrait": "portrait", "l": "landscape"}
            return named.get(value.strip().lower(), value.strip().lower())
        return value


# --------------------------------------------------------------------------- the document


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]
    #: ``R`` for numeric columns, ``L`` otherwise.
    align: list[str]
    max_lines: int = MAX_CELL_LINES


@dataclass
class _Document:
    """What the report shows, as text, before any font is chosen."""

    blocks: list[_Table | str] = field(default_factory=list)
    summary: str = ""
    notes: list[str] = field(default_factory=list)
    rows: int | None = None
    rows_omitted: int = 0

    def texts(self) -> Iterable[str]:
        for block in self.blocks:
            if isinstance(block, str):
                yield block
            else:
                yield from block.header
                for row in block.rows:
                    yield from row
        yield from self.notes


def _text(value: Any) -> str:
    """A value as the report shows it (numbers as the HTML report shows them)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e15:
            return f"{value:,.2f}"
        return f"{value:g}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    text = str(value)
    # Bound every cell before measuring it; the layout cuts it further.
    return text if len(text) <= 4000 else text[:3999] + "…"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def build_document(value: Any, config: PdfOutputConfig) -> _Document:
    """The blocks that show ``value``: a table of rows, field/value pairs or paragraphs."""
    document = _Document()
    tabular = isinstance(value, list) or is_table_result(value)
    if isinstance(value, Mapping) and not tabular:
        rows = [[str(key), item] for key, item in value.items()]
        document.blocks.append(
            _Table(
                ["field", "value"],
                [[name, _text(item)] for name, item in rows],
                ["L", "R" if rows and all(_is_number(item) for _, item in rows) else "L"],
                MAX_VALUE_LINES,
            )
        )
        document.summary = _plural(len(rows), "field")
    elif tabular:
        header, rows = table_of(value, config.columns)
        width = max([len(header or [])] + [len(row) for row in rows])
        if header is None:
            header = [f"column_{index}" for index in range(1, width + 1)]
        header = header + [f"column_{index}" for index in range(len(header) + 1, width + 1)]
        shown = rows[: config.max_rows]
        align = [
            "R"
            if any(_is_number(row[i]) for row in shown if i < len(row))
            and all(row[i] is None or _is_number(row[i]) for row in shown if i < len(row))
            else "L"
            for i in range(width)
        ]
        texts = [[_text(row[i]) if i < len(row) else "" for i in range(width)] for row in shown]
        document.blocks.append(_Table([str(name) for name in header], texts, align))
        document.rows = len(rows)
        document.rows_omitted = len(rows) - len(shown)
        document.summary = _plural(len(rows), "row")
        if document.rows_omitted:
            document.notes.append(
                f"… and {_plural(document.rows_omitted, 'more row')} not shown "
                f"(max_rows: {config.max_rows:,})."
            )
    else:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
        if len(text) > MAX_TEXT_CHARS:
            document.notes.append(f"… the text is cut at {MAX_TEXT_CHARS:,} characters.")
            text = text[:MAX_TEXT_CHARS]
        paragraphs = [part.strip("\n") for part in text.replace("\r\n", "\n").split("\n\n")]
        document.blocks.extend(part for part in paragraphs if part.strip())
        document.summary = "text"
    return document


# --------------------------------------------------------------------------- fonts


def _font_candidates() -> list[Path]:
    chosen = os.environ.get("MIMIR_PDF_FONT", "").strip()
    candidates = [Path(chosen).expanduser()] if chosen else []
    candidates += [Path(d).expanduser() / "DejaVuSans.ttf" for d in FONT_DIRECTORIES]
    # matplotlib ships DejaVu Sans; use it where it is installed (without importing it).
    spec = importlib.util.find_spec("matplotlib")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(location) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    return candidates


def find_unicode_font() -> Path | None:
    """The TTF the report embeds: ``MIMIR_PDF_FONT``, else DejaVu Sans where installed."""
    return next((path for path in _font_candidates() if path.is_file()), None)


def _fallback_candidates() -> list[tuple[Path, int]]:
    listed = os.environ.get("MIMIR_PDF_FALLBACK_FONTS", "")
    chosen = [(Path(p).expanduser(), 0) for p in listed.split(os.pathsep) if p.strip()]
    return chosen + [(Path(path), number) for path, number in FALLBACK_FONTS]


def _core_replacement(character: str) -> str:
    """``character`` in Windows-1252: itself, an approximation (``ő`` → ``o``) or ``?``."""
    try:
        character.encode("cp1252")
        return character
    except UnicodeEncodeError:
        pass
    approximation = unicodedata.normalize("NFKD", character).encode("cp1252", "ignore")
    text = approximation.decode("cp1252")
    return text if text.strip() else "?"


@dataclass
class _Fonts:
    family: str
    description: str
    fallbacks: list[str]
    #: ``str.translate`` table for the characters no font can show.
    replacements: dict[int, str]
    replaced: int


def _setup_fonts(pdf: Any, config: PdfOutputConfig, characters: set[str]) -> _Fonts:
    printable = {c for c in characters if unicodedata.category(c)[0] != "C"}
    # Control characters become spaces (tabs four), invisible format characters go.
    controls = {
        ord(c): "    " if c == "\t" else " " if unicodedata.category(c) == "Cc" else ""
        for c in characters - printable
        if c != "\n"
    }
    path = find_unicode_font() if config.font == "auto" else None
    if path is not None:
        try:
            pdf.add_font("body", "", str(path))
            bold = path.with_name(path.stem + "-Bold" + path.suffix)
            pdf.add_font("body", "B", str(bold if bold.is_file() else path))
        except Exception as exc:  # a corrupt or unsupported font file
            logger.warning("font %s not usable (%s); using Helvetica", path, exc)
            path = None
    if path is None:
        pdf.core_fonts_encoding = "windows-1252"
        replacements = {ord(c): _core_replacement(c) for c in printable}
        replacements = {k: v for k, v in replacements.items() if v != chr(k)}
        description = "Helvetica (PDF core font: Windows-1252 characters only)"
        if config.font == "auto":
            description += (
                "; no Unicode font found (install fonts-dejavu-core or set MIMIR_PDF_FONT)"
            )
        return _Fonts("helvetica", description, [], replacements | controls, len(replacements))
    covered = set(pdf.fonts["body"].cmap)
    missing = {c for c in printable if ord(c) not in covered}
    fallbacks: list[str] = []
    used: list[str] = []
    for index, (candidate, number) in enumerate(_fallback_candidates()):
        if not missing:
            break
        if not candidate.is_file():
            continue
        name = f"fallback{index}"
        try:
            pdf.add_font(name, "", str(candidate), collection_font_number=number)
        except Exception as exc:
            logger.warning("fallback font %s not usable: %s", candidate, exc)
            continue
        provides = {c for c in missing if ord(c) in pdf.fonts[name].cmap}
        if provides:
            # Bold text falls back to the regular face; fpdf2 wants both styles named.
            pdf.add_font(name, "B", str(candidate), collection_font_number=number)
            fallbacks.append(name)
            used.append(candidate.name)
            missing -= provides
            logger.debug("fallback font %s for %d characters", candidate, len(provides))
    if fallbacks:
        pdf.set_fallback_fonts(fallbacks, exact_match=False)
    marker = "\ufffd" if 0xFFFD in covered else "?"
    replacements = {ord(c): marker for c in missing}
    description = f"{pdf.fonts['body'].name} ({path})"
    return _Fonts("body", description, used, replacements | controls, len(replacements))


# --------------------------------------------------------------------------- layout


def _column_groups(natural: list[float], minimum: list[float], available: float) -> list[list[int]]:
    """Columns split into groups that fit ``available``; later groups repeat column 0."""
    groups: list[list[int]] = []
    current, used = [0], minimum[0]
    for index in range(1, len(natural)):
        if used + minimum[index] > available and not (groups and current == [0]):
            groups.append(current)
            current, used = [0], minimum[0]
        current.append(index)
        used += minimum[index]
    groups.append(current)
    return groups


def _widths(desired: list[float], minimum: list[float], available: float) -> list[float]:
    """Widths of one group of columns within ``available`` mm.

    What the content wants when it all fits; else no column wider than
    ``MAX_COLUMN_SHARE`` of the page unless room is left over; else the widest ones
    narrowed, none under its minimum (the groups are made so that the minimums fit).
    """
    if sum(desired) <= available:
        return desired
    capped = [min(width, available * MAX_COLUMN_SHARE) for width in desired]
    if sum(capped) <= available:  # room left: to the capped columns, as much as they want
        wants = [d - c for d, c in zip(desired, capped, strict=True)]
        spare = available - sum(capped)
        return [c + want * spare / sum(wants) for c, want in zip(capped, wants, strict=True)]
    # Too wide even so: bring the widest columns down to a common level, no column below
    # its minimum, so narrow columns keep their width (the level is found by bisection).
    low, high = 0.0, max(capped)
    for _ in range(50):
        level = (low + high) / 2
        used = sum(min(c, max(m, level)) for c, m in zip(capped, minimum, strict=True))
        low, high = (low, level) if used > available else (level, high)
    return [min(c, max(m, low)) for c, m in zip(capped, minimum, strict=True)]


def _fit(
    pdf: Any, text: str, width: float, max_lines: int, line_height: float, average: float
) -> str:
    """``text`` cut so that it wraps to at most ``max_lines`` lines in a ``width`` mm cell.

    Short text is taken as it is; longer text is wrapped as the table will wrap it (a
    dry run), and cut after the last line that fits, with an ellipsis. ``average`` is the
    width of an average character.
    """
    if text.count("\n") < max_lines // 2 and len(text) * average * 2.5 < width * max_lines:
        return text
    lines = pdf.multi_cell(
        width, line_height, text, dry_run=True, output="LINES", padding=CELL_PADDING_MM
    )
    if len(lines) <= max_lines:
        return text
    last = lines[max_lines - 1]
    while last and pdf.get_string_width(last + "…") > width - 2 * CELL_PADDING_MM:
        last = last[:-1]
    return "\n".join([*lines[: max_lines - 1], last + "…"])


def _render_table(pdf: Any, table: _Table, fonts: _Fonts, size: float) -> None:
    from fpdf.fonts import FontFace

    available = pdf.epw
    line_height = size * 0.45
    # Every row must fit on one page (fpdf2 refuses a taller one): bound the lines per cell.
    max_lines = max(1, min(table.max_lines, int(pdf.eph / line_height) // 2 - 4))
    pdf.set_font(fonts.family, "B", size)
    headings = [pdf.get_string_width(name) for name in table.header]
    pdf.set_font(fonts.family, "", size)
    average = pdf.get_string_width("abcdefghijklmnopqrstuvwxyz0123456789") / 36 or 1.0
    natural: list[float] = []
    for index, heading in enumerate(headings):
        sample = [row[index] for row in table.rows[:SAMPLE_ROWS]]
        longest = max(
            (pdf.get_string_width(line) for text in sample for line in text.split("\n")),
            default=0.0,
        )
        wanted = max(longest, heading) + 2 * CELL_PADDING_MM + 1
        natural.append(min(max(wanted, 8.0), available))
    # Narrow columns, but not below their heading's width (up to a limit): a heading
    # broken in mid-word reads badly.
    minimum = [
        min(n, max(MIN_COLUMN_MM, min(h + 2 * CELL_PADDING_MM + 1, MAX_HEADING_MM)))
        for n, h in zip(natural, headings, strict=True)
    ]
    groups = _column_groups(natural, minimum, available)
    for number, group in enumerate(groups):
        widths = _widths([natural[i] for i in group], [minimum[i] for i in group], available)
        if len(groups) > 1:
            if pdf.will_page_break(line_height * 8):  # keep a caption with its table
                pdf.add_page()
            first, last = group[1 if number else 0] + 1, group[-1] + 1
            pdf.set_font(fonts.family, "B", size)
            pdf.set_text_color(90)
            pdf.cell(
                text=f"Columns {first}\u2013{last} of {len(table.header)}",
                new_x="LMARGIN",
                new_y="NEXT",
            )
            pdf.set_text_color(0)
        pdf.set_font(fonts.family, "B", size)
        header = [
            _fit(pdf, table.header[i], width, 2, line_height, average)
            for i, width in zip(group, widths, strict=True)
        ]
        pdf.set_font(fonts.family, "", size)
        with pdf.table(
            width=min(sum(widths), available),
            col_widths=widths,
            align="LEFT",
            text_align=tuple(table.align[i] for i in group),
            headings_style=FontFace(emphasis="BOLD", fill_color=(229, 231, 235)),
            cell_fill_color=(248, 248, 248),
            cell_fill_mode="ROWS",
            line_height=line_height,
            padding=CELL_PADDING_MM,
            repeat_headings=1,
            borders_layout="HORIZONTAL_LINES",
        ) as rendered:
            heading_row = rendered.row()
            for text in header:
                heading_row.cell(text)
            for row in table.rows:
                cells = rendered.row()
                for i, width in zip(group, widths, strict=True):
                    cells.cell(_fit(pdf, row[i], width, max_lines, line_height, average))
        pdf.ln(4)


def _make_pdf(config: PdfOutputConfig) -> Any:
    from fpdf import FPDF

    class _Report(FPDF):
        #: Set once the fonts are chosen.
        body_family = "helvetica"

        def footer(self) -> None:
            self.set_y(-10)
            self.set_font(self.body_family, "", 7)
            self.set_text_color(120)
            self.cell(0, 5, f"{self.page_no()} / {{nb}}", align="C")

    pdf = _Report(orientation=config.orientation[0].upper(), unit="mm", format=config.page_size)
    pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
    pdf.set_auto_page_break(True, margin=MARGIN_MM + 4)
    pdf.set_creator("Mimir AIP")
    return pdf


def render_pdf(path: Path, config: PdfOutputConfig) -> dict[str, Any]:
    """Write the report for ``config.input`` to ``path`` atomically; what it contains."""
    generated_at = datetime.now(UTC)
    document = build_document(config.input, config)
    title = config.title or ""
    description = config.description or ""
    characters = set(title) | set(description) | set(document.summary)
    for text in document.texts():
        characters.update(text)
    pdf = _make_pdf(config)
    fonts = _setup_fonts(pdf, config, characters)
    pdf.body_family = fonts.family

    def clean(text: str) -> str:
        return text.translate(fonts.replacements) if fonts.replacements else text

    if title:
        pdf.set_title(clean(title))
    pdf.add_page()
    size = config.font_size
    if title:
        pdf.set_font(fonts.family, "B", size + 7)
        pdf.multi_cell(0, (size + 7) * 0.5, clean(title), align="L", new_x="LMARGIN")
    if description:
        pdf.set_font(fonts.family, "", size + 1)
        pdf.multi_cell(0, (size + 1) * 0.5, clean(description), align="L", new_x="LMARGIN")
    pdf.set_font(fonts.family, "", size - 1)
    pdf.set_text_color(110)
    stamp = generated_at.strftime("%Y-%m-%d %H:%M UTC")
    pdf.cell(
        text=f"{clean(document.summary)} · generated by Mimir AIP at {stamp}",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_text_color(0)
    pdf.ln(3)
    for block in document.blocks:
        if isinstance(block, str):
            pdf.set_font(fonts.family, "", size + 1)
            pdf.multi_cell(0, (size + 1) * 0.5, clean(block), align="L", new_x="LMARGIN")
            pdf.ln(2)
        else:
            cleaned = _Table(
                [clean(name) for name in block.header],
                [[clean(cell) for cell in row] for row in block.rows],
                block.align,
                block.max_lines,
            )
            _render_table(pdf, cleaned, fonts, size)
    for note in document.notes:
        pdf.set_font(fonts.family, "", size)
        pdf.set_text_color(110)
        pdf.multi_cell(0, size * 0.5, clean(note), align="L", new_x="LMARGIN")
        pdf.set_text_color(0)
    with atomic_file(path, config.file_path) as temporary:
        pdf.output(str(temporary))
        size_bytes = temporary.stat().st_size
    result: dict[str, Any] = {
        "bytes": size_bytes,
        "pages": pdf.pages_count,
        "font": fonts.description,
        "fallback_fonts": fonts.fallbacks,
        "replaced_characters": fonts.replaced,
    }
    if document.rows is not None:
        result["rows"] = document.rows
        result["rows_omitted"] = document.rows_omitted
    return result


class PdfOutputPlugin(Plugin[PdfOutputConfig]):
    plugin_type = "Output"
    plugin_name = "pdf"
    description = (
        "Write a PDF report: a title, then a table of the rows (header on every page), "
        "field/value pairs or text; Unicode fonts embedded."
    )
    config_model = PdfOutputConfig

    async def run(self, config: PdfOutputConfig, run: StepRuntime) -> Any:
        path = run.resolve_path(config.file_path, for_write=True)
        try:
            written = await asyncio.to_thread(render_pdf, path, config)
        except PluginError:
            raise
        except Exception as exc:  # fpdf2's layout errors, named for the pipeline's author
            raise PluginError(f"cannot lay out the PDF: {type(exc).__name__}: {exc}") from exc
        run.record_artifact(path)
        return {"file_path": relative_to_data_dir(run, path), **written}
