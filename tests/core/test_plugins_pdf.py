"""``Output.pdf`` writes real PDF files, read back with pypdf: pages, page size and
orientation, the text (Unicode included), pagination with the header repeated, wide tables
fitted to the page, and the fonts used."""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from pypdf import PdfReader

import mimir.core.plugins.builtin.pdf as pdf_module
from mimir.core.engine import execute_pipeline
from mimir.core.errors import PipelineValidationError
from mimir.core.pipeline import load_pipeline
from mimir.core.plugins.builtin.pdf import find_unicode_font
from tests.core.plugin_harness import StepFailed, run_plugin


def needs_unicode_font(test):  # type: ignore[no-untyped-def]
    """make test installs fonts-dejavu-core (scripts/system-deps.sh): a missing font fails
    the test with that message instead of skipping it."""

    def checked(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert find_unicode_font() is not None, (
            "DejaVu Sans is not installed (scripts/system-deps.sh installs fonts-dejavu-core)"
        )
        return test(*args, **kwargs)

    return functools.wraps(test)(checked)


ROWS = [
    {"region": "Île-de-France", "amount": 1234.5, "units": 3, "note": "Straße, Größe"},
    {"region": "Αθήνα", "amount": 7, "units": 12, "note": "ελληνικά"},
]

# Points: 1 mm = 72 / 25.4 pt.
A4 = (595.28, 841.89)
SIZES = {"A4": A4, "A3": (841.89, 1190.55), "Letter": (612.0, 792.0), "Legal": (612.0, 1008.0)}


@pytest.fixture(autouse=True)
def _default_fonts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fonts found on the machine, whatever the environment of the test run says."""
    monkeypatch.delenv("MIMIR_PDF_FONT", raising=False)
    monkeypatch.delenv("MIMIR_PDF_FALLBACK_FONTS", raising=False)


def _pdf(data_dir: Path, config: dict[str, Any]) -> tuple[dict[str, Any], PdfReader]:
    out = run_plugin("Output.pdf", config, data_dir)
    return out, PdfReader(data_dir / out["file_path"])


def _size(page: Any) -> tuple[float, float]:
    box = page.mediabox
    return round(float(box.width), 2), round(float(box.height), 2)


def _text(reader: PdfReader) -> str:
    return "\n".join(page.extract_text() for page in reader.pages)


@needs_unicode_font
def test_rows_become_a_table_with_unicode_text(data_dir: Path) -> None:
    out = run_plugin(
        "Output.pdf",
        {
            "input": "{{ rows }}",
            "file_path": "reports/sales.pdf",
            "title": "Ventes — Σύνοψη",
            "description": "Chiffres d'affaires par région",
        },
        data_dir,
        context={"rows": ROWS},
    )
    written = data_dir / "reports" / "sales.pdf"
    reader = PdfReader(written)
    assert out["file_path"] == "reports/sales.pdf"
    assert out["bytes"] == written.stat().st_size and out["pages"] == len(reader.pages) == 1
    assert (out["rows"], out["rows_omitted"], out["replaced_characters"]) == (2, 0, 0)
    assert "DejaVu" in out["font"] and out["font"].endswith(".ttf)")
    assert [p.name for p in written.parent.iterdir()] == ["sales.pdf"]  # no temporary left
    assert _size(reader.pages[0]) == A4
    assert reader.metadata is not None and reader.metadata.title == "Ventes — Σύνοψη"
    text = reader.pages[0].extract_text()
    for expected in (
        "Ventes — Σύνοψη",
        "Chiffres d'affaires par région",
        "2 rows",
        "region amount units note",
        "Île-de-France 1,234.50 3 Straße, Größe",
        "Αθήνα 7 12 ελληνικά",
    ):
        assert expected in text, (expected, text)


@pytest.mark.parametrize(
    ("page_size", "orientation", "expected"),
    [
        ("A4", "portrait", SIZES["A4"]),
        ("letter", "L", SIZES["Letter"][::-1]),
        ("A3", "landscape", SIZES["A3"][::-1]),
        ("Legal", "p", SIZES["Legal"]),
    ],
)
def test_page_size_and_orientation(
    data_dir: Path, page_size: str, orientation: str, expected: tuple[float, float]
) -> None:
    _, reader = _pdf(
        data_dir,
        {
            "input": ROWS,
            "file_path": "sized.pdf",
            "page_size": page_size,
            "orientation": orientation,
        },
    )
    assert all(_size(page) == expected for page in reader.pages)


def test_unknown_page_size_or_orientation_is_a_config_error(data_dir: Path) -> None:
    with pytest.raises(PipelineValidationError, match=r"config\.page_size"):
        run_plugin("Output.pdf", {"input": [], "file_path": "x.pdf", "page_size": "B5"}, data_dir)
    with pytest.raises(PipelineValidationError, match=r"config\.orientation"):
        run_plugin("Output.pdf", {"input": [], "file_path": "x.pdf", "orientation": "up"}, data_dir)


@needs_unicode_font
def test_a_long_table_repeats_its_header_on_every_page(data_dir: Path) -> None:
    rows = [{"order": f"ORD-{i:04d}", "customer": f"Kunde Nr. {i} (Müller)", "total": i * 1.5}
            for i in range(400)]  # fmt: skip
    out, reader = _pdf(data_dir, {"input": rows, "file_path": "long.pdf", "title": "Orders"})
    assert out["pages"] == len(reader.pages) > 3
    pages = [page.extract_text() for page in reader.pages]
    assert all("order customer total" in page for page in pages)
    assert pages[0].startswith("Orders")
    # Every row is there, in order, once.
    found = re.findall(r"ORD-(\d{4})", "\n".join(pages))
    assert [int(n) for n in found] == list(range(400))
    assert pages[-1].rstrip().endswith(f"{len(pages)} / {len(pages)}")  # page numbers


def test_max_rows_cuts_the_table_and_says_so(data_dir: Path) -> None:
    rows = [{"n": i} for i in range(120)]
    out, reader = _pdf(data_dir, {"input": rows, "file_path": "cut.pdf", "max_rows": 50})
    assert (out["rows"], out["rows_omitted"]) == (120, 70)
    text = _text(reader)
    assert "… and 70 more rows not shown (max_rows: 50)." in text
    assert "120 rows" in text and "\n49\n" in text and "\n50\n" not in text


@needs_unicode_font
def test_a_wide_table_is_split_into_column_groups_that_fit_the_page(data_dir: Path) -> None:
    columns = [f"measurement_{c:02d}" for c in range(24)]
    long_text = "a long description that needs wrapping " * 12 + "https://example.org/" + "x" * 80
    rows = [
        {name: (long_text if c == 3 else f"r{r}c{c}") for c, name in enumerate(columns)}
        for r in range(5)
    ]
    _, reader = _pdf(data_dir, {"input": rows, "file_path": "wide.pdf"})
    text = _text(reader).replace("\n", " ")
    groups = re.findall(r"Columns (\d+)\u2013(\d+) of 24", text)
    assert len(groups) >= 2 and groups[0][0] == "1" and groups[-1][1] == "24"
    # Every column's cells are shown somewhere; the key column (0) in every group.
    for c in range(24):
        assert f"r4c{c}" in text or c == 3
    assert text.count("r4c0") == len(groups)
    assert "…" in text  # the long cell was cut to a few lines
    width, _ = _size(reader.pages[0])
    starts: list[float] = []

    def visit(part: str, cm: list[float], tm: list[float], *_: Any) -> None:
        if part.strip():
            starts.append(tm[4] * cm[0] + cm[4])

    for page in reader.pages:
        page.extract_text(visitor_text=visit)
    assert starts and max(starts) < width - 30  # within the right margin (12 mm = 34 pt)


@needs_unicode_font
def test_an_object_becomes_field_value_pairs(data_dir: Path) -> None:
    summary = {"total": 1234.5, "region": "Nord-Süd", "tags": ["a", "b"], "ok": True}
    out, reader = _pdf(data_dir, {"input": summary, "file_path": "kv.pdf", "title": None})
    text = reader.pages[0].extract_text()
    assert "rows" not in out
    for expected in ("4 fields", "field value", "total 1,234.50", "region Nord-Süd",
                     'tags ["a", "b"]', "ok true"):  # fmt: skip
        assert expected in text, (expected, text)
    assert "Mimir report" not in text  # title: null leaves the heading out


@needs_unicode_font
def test_a_string_becomes_paragraphs_over_pages(data_dir: Path) -> None:
    paragraphs = [f"Paragraph {i}: " + "Lorem ipsum dolor sit amet, ça va. " * 30
                  for i in range(40)]  # fmt: skip
    out, reader = _pdf(data_dir, {"input": "\n\n".join(paragraphs), "file_path": "text.pdf"})
    assert out["pages"] == len(reader.pages) > 2
    text = _text(reader)
    assert "Paragraph 0:" in text and "Paragraph 39:" in text and "ça va" in text


@needs_unicode_font
def test_characters_no_font_has_show_as_replacement_marks(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pdf_module, "FALLBACK_FONTS", ())  # as on a machine without CJK fonts
    out, reader = _pdf(
        data_dir, {"input": [{"name": "東京 Tokyo", "note": "ok"}], "file_path": "cjk.pdf"}
    )
    assert out["replaced_characters"] == 2 and out["fallback_fonts"] == []
    assert "\ufffd\ufffd Tokyo ok" in reader.pages[0].extract_text()


def _font_with(path: Path, characters: str) -> Path:
    """A real TrueType font whose glyphs (plain boxes) cover ``characters``."""
    names = [".notdef", "space"] + [f"uni{ord(c):04X}" for c in characters]
    pen = TTGlyphPen(None)
    pen.moveTo((100, 0))
    pen.lineTo((100, 800))
    pen.lineTo((900, 800))
    pen.lineTo((900, 0))
    pen.closePath()
    box = pen.glyph()
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({32: "space", **{ord(c): f"uni{ord(c):04X}" for c in characters}})
    builder.setupGlyf({name: box for name in names})
    builder.setupHorizontalMetrics({name: (1000, 100) for name in names})
    builder.setupHorizontalHeader(ascent=880, descent=-120)
    builder.setupNameTable({"familyName": "MimirTestCJK", "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=880, usWinAscent=880, usWinDescent=120)
    builder.setupPost()
    builder.save(str(path))
    return path


@needs_unicode_font
def test_a_fallback_font_supplies_the_missing_characters(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pdf_module, "FALLBACK_FONTS", ())
    font = _font_with(tmp_path / "cjk-boxes.ttf", "東京報告")
    monkeypatch.setenv("MIMIR_PDF_FALLBACK_FONTS", str(font))
    out, reader = _pdf(
        data_dir,
        {"input": [{"name": "東京 Tokyo"}], "file_path": "cjk.pdf", "title": "報告 Report"},
    )
    assert out["replaced_characters"] == 0 and out["fallback_fonts"] == ["cjk-boxes.ttf"]
    text = reader.pages[0].extract_text()
    assert "報告 Report" in text and "東京 Tokyo" in text


def test_core_font_replaces_what_windows_1252_cannot_encode(data_dir: Path) -> None:
    out, reader = _pdf(
        data_dir,
        {
            "input": [{"city": "Zürich", "word": "Straße “quoted” €5", "other": "Őrség ελλάδα"}],
            "file_path": "core.pdf",
            "title": "Résumé",
            "font": "core",
        },
    )
    assert out["font"].startswith("Helvetica") and "Windows-1252" in out["font"]
    # ő → o (approximated); the six Greek letters → '?'. Distinct characters counted.
    assert out["replaced_characters"] == len(set("Őελλάδα"))
    text = reader.pages[0].extract_text()
    assert "Résumé" in text
    assert "Zürich Straße “quoted” €5 Orség ??????" in text


@needs_unicode_font
def test_mimir_pdf_font_names_the_font(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mono = find_unicode_font()
    assert mono is not None
    mono = mono.with_name("DejaVuSansMono.ttf")
    assert mono.is_file(), "DejaVuSansMono.ttf is not beside DejaVuSans.ttf (fonts-dejavu-core)"
    monkeypatch.setenv("MIMIR_PDF_FONT", str(mono))
    out, reader = _pdf(data_dir, {"input": "plain text", "file_path": "mono.pdf"})
    assert "DejaVuSansMono" in out["font"] and "plain text" in reader.pages[0].extract_text()


def test_a_failed_write_keeps_the_old_file(data_dir: Path) -> None:
    (data_dir / "report.pdf").write_bytes(b"old")
    with pytest.raises(StepFailed, match=r"input rows must be all objects"):
        run_plugin("Output.pdf", {"input": [{"a": 1}, [1]], "file_path": "report.pdf"}, data_dir)
    assert (data_dir / "report.pdf").read_bytes() == b"old"
    assert [p.name for p in data_dir.iterdir()] == ["report.pdf"]


@needs_unicode_font
def test_control_and_format_characters_are_not_drawn(data_dir: Path) -> None:
    out, reader = _pdf(
        data_dir, {"input": "tab\there\x07bell zero\u200bwidth", "file_path": "c.pdf"}
    )
    assert out["replaced_characters"] == 0
    assert "tab    here bell zerowidth" in reader.pages[0].extract_text()


@needs_unicode_font
def test_the_shipped_example_writes_a_workbook_and_a_pdf(data_dir: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "resources" / "data" / "sales.csv", data_dir / "sales.csv")
    pipeline = load_pipeline(root / "resources" / "pipelines" / "sales_report_pdf.yaml")
    result = asyncio.run(execute_pipeline(pipeline, {}, data_dir=data_dir))
    assert result.success, result.error
    assert result.context["sheet"]["row_count"] == 12
    assert result.context["workbook"]["rows"] == 12
    reader = PdfReader(data_dir / "reports" / "sales_summary.pdf")
    text = reader.pages[0].extract_text()
    assert "Sales by region" in text and "from 12 sales in reports/sales.xlsx" in text
    assert "region count units_sum amount_sum amount_mean" in text
