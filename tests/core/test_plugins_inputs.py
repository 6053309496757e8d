"""``Input.*`` plugins against real files in a fresh data directory, and a real HTTP server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.core.plugin_harness import Recorded, StepFailed, run_plugin, stub_server

# --------------------------------------------------------------------------- CSV


def test_csv_with_headers_gives_objects_with_numbers_inferred(data_dir: Path) -> None:
    (data_dir / "sales.csv").write_text(
        'region,amount,code,note\nnorth,12,007,first\nsouth,3.5,010,"a, quoted"\n'
    )
    rows = run_plugin("Input.csv", {"file_path": "sales.csv"}, data_dir)
    assert rows == [
        {"region": "north", "amount": 12, "code": "007", "note": "first"},
        {"region": "south", "amount": 3.5, "code": "010", "note": "a, quoted"},
    ]


def test_csv_without_headers_gives_lists_and_honours_the_delimiter(data_dir: Path) -> None:
    (data_dir / "plain.csv").write_text("a;1\nb;2\n\nc;3\n")
    rows = run_plugin(
        "Input.csv",
        {"file_path": "plain.csv", "has_headers": False, "delimiter": ";"},
        data_dir,
    )
    assert rows == [["a", 1], ["b", 2], ["c", 3]]


def test_csv_infer_types_off_keeps_text(data_dir: Path) -> None:
    (data_dir / "t.csv").write_text("n\n5\n")
    rows = run_plugin("Input.csv", {"file_path": "t.csv", "infer_types": False}, data_dir)
    assert rows == [{"n": "5"}]


def test_csv_short_rows_are_padded_and_long_rows_are_refused_by_number(data_dir: Path) -> None:
    (data_dir / "short.csv").write_text("a,b,c\n1,2\n")
    assert run_plugin("Input.csv", {"file_path": "short.csv"}, data_dir) == [
        {"a": 1, "b": 2, "c": None}
    ]
    (data_dir / "long.csv").write_text("a,b\n1,2\n1,2,3\n")
    with pytest.raises(StepFailed, match=r"long\.csv: row 3 has 3 fields but the header has 2"):
        run_plugin("Input.csv", {"file_path": "long.csv"}, data_dir)


def test_csv_missing_file_is_named(data_dir: Path) -> None:
    with pytest.raises(StepFailed, match=r"file 'nope\.csv' does not exist in the data directory"):
        run_plugin("Input.csv", {"file_path": "nope.csv"}, data_dir)


# --------------------------------------------------------------------------- JSON


def test_json_returns_the_value(data_dir: Path) -> None:
    (data_dir / "d.json").write_text(json.dumps({"items": [1, 2, {"x": None}]}))
    assert run_plugin("Input.json", {"file_path": "d.json"}, data_dir) == {
        "items": [1, 2, {"x": None}]
    }


def test_json_error_names_line_and_column(data_dir: Path) -> None:
    (data_dir / "bad.json").write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(StepFailed, match=r"bad\.json: line 4, column 1: invalid JSON"):
        run_plugin("Input.json", {"file_path": "bad.json"}, data_dir)


# --------------------------------------------------------------------------- XML


def test_xml_becomes_objects_with_attributes_repeats_and_text(data_dir: Path) -> None:
    (data_dir / "feed.xml").write_text(
        '<?xml version="1.0"?>\n'
        '<catalog xmlns="urn:x" version="2">\n'
        '  <book id="b1"><title>Dune</title><price currency="EUR">9.5</price></book>\n'
        '  <book id="b2"><title>Emma</title><tag/></book>\n'
        "  <!-- a comment -->\n"
        "  <note>hello</note>\n"
        "</catalog>\n"
    )
    data = run_plugin("Input.xml", {"file_path": "feed.xml"}, data_dir)
    assert data == {
        "catalog": {
            "@version": "2",
            "book": [
                {
                    "@id": "b1",
                    "title": "Dune",
                    "price": {"@currency": "EUR", "#text": "9.5"},
                },
                {"@id": "b2", "title": "Emma", "tag": None},
            ],
            "note": "hello",
        }
    }


def test_xml_keeps_namespaces_when_asked(data_dir: Path) -> None:
    (data_dir / "ns.xml").write_text('<r xmlns="urn:x"><a>1</a></r>')
    data = run_plugin("Input.xml", {"file_path": "ns.xml", "strip_namespaces": False}, data_dir)
    assert data == {"{urn:x}r": {"{urn:x}a": "1"}}


@pytest.mark.parametrize(
    "document",
    [
        # the billion laughs: entity expansion
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>\n<lolz>&lol2;</lolz>',
        # an external entity reading a local file
        '<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<r>&x;</r>',
        # a bare DTD
        '<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "http://127.0.0.1:1/r.dtd">\n<r/>',
    ],
    ids=["entity-expansion", "external-entity", "dtd"],
)
def test_xml_with_dtd_or_entities_is_refused(data_dir: Path, document: str) -> None:
    (data_dir / "evil.xml").write_text(document)
    with pytest.raises(StepFailed, match=r"evil\.xml: refused: the XML declares a DTD or entities"):
        run_plugin("Input.xml", {"file_path": "evil.xml"}, data_dir)


def test_xml_syntax_error_names_line_and_column(data_dir: Path) -> None:
    (data_dir / "broken.xml").write_text("<a>\n  <b></a>\n")
    with pytest.raises(StepFailed, match=r"broken\.xml: line 2, column \d+: invalid XML"):
        run_plugin("Input.xml", {"file_path": "broken.xml"}, data_dir)


# --------------------------------------------------------------------------- Markdown


def test_markdown_gives_text_title_headings_and_sections(data_dir: Path) -> None:
    text = (
        "---\nauthor: me\n---\n"
        "Intro line.\n\n"
        "# Report\n\nBody of the report.\n\n"
        "## Details ##\n\n```python\n# not a heading\n```\n\n"
        "Setext heading\n--------------\n\nLast part.\n"
    )
    (data_dir / "doc.md").write_text(text)
    doc = run_plugin("Input.markdown", {"file_path": "doc.md"}, data_dir)
    assert doc["text"] == text
    assert doc["title"] == "Report"
    assert doc["headings"] == [
        {"level": 1, "text": "Report", "line": 6},
        {"level": 2, "text": "Details", "line": 10},
        {"level": 2, "text": "Setext heading", "line": 16},
    ]
    assert doc["sections"] == [
        {"heading": None, "level": 0, "content": "Intro line."},
        {"heading": "Report", "level": 1, "content": "Body of the report."},
        {"heading": "Details", "level": 2, "content": "```python\n# not a heading\n```"},
        {"heading": "Setext heading", "level": 2, "content": "Last part."},
    ]


def test_markdown_rejects_binary_files_clearly(data_dir: Path) -> None:
    (data_dir / "img.md").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(StepFailed, match=r"file 'img\.md' is not valid utf-8"):
        run_plugin("Input.markdown", {"file_path": "img.md"}, data_dir)


# --------------------------------------------------------------------------- API


def test_api_get_returns_status_headers_and_json(data_dir: Path) -> None:
    with stub_server() as stub:
        stub.respond = lambda r: (200, {"X-Answer": "42"}, {"path": r.path})
        out = run_plugin(
            "Input.api",
            {
                "url": f"{stub.base_url}/items",
                "params": {"page": 2},
                "headers": {"X-Token": "abc"},
            },
            data_dir,
        )
    assert out["status"] == out["status_code"] == 200
    assert out["json"] == {"path": "/items?page=2"}
    # The original platform's 'body' is the parsed JSON when the answer is JSON.
    assert out["body"] == out["json"]
    assert out["headers"]["x-answer"] == "42"
    assert out["timestamp"].endswith("Z")
    assert stub.requests[0].headers["x-token"] == "abc"


def test_api_keeps_the_query_string_of_the_url(data_dir: Path) -> None:
    with stub_server() as stub:
        stub.respond = lambda r: (200, {}, {"path": r.path})
        plain = run_plugin("Input.api", {"url": f"{stub.base_url}/q?a=1&b=x"}, data_dir)
        merged = run_plugin(
            "Input.api", {"url": f"{stub.base_url}/q?a=1", "params": {"c": 3}}, data_dir
        )
    assert plain["json"] == {"path": "/q?a=1&b=x"}
    assert merged["json"] == {"path": "/q?a=1&c=3"}


def test_api_post_sends_json_or_raw_body_with_the_method(data_dir: Path) -> None:
    def echo(request: Recorded) -> tuple[int, dict[str, str], str]:
        return 201, {}, f"{request.method} {request.body.decode()}"

    with stub_server() as stub:
        stub.respond = echo
        sent_json = run_plugin(
            "Input.api",
            {"url": stub.base_url, "method": "post", "json": {"q": "{{ query }}"}},
            data_dir,
            context={"query": "hello"},
        )
        sent_raw = run_plugin(
            "Input.api", {"url": stub.base_url, "method": "PUT", "body": "raw text"}, data_dir
        )
    assert sent_json == {
        "status": 201,
        "status_code": 201,
        "url": stub.base_url,
        "headers": sent_json["headers"],
        "timestamp": sent_json["timestamp"],
        "body": 'POST {"q":"hello"}',
    }
    assert stub.requests[0].headers["content-type"] == "application/json"
    assert sent_raw["body"] == "PUT raw text"


def test_api_non_2xx_is_an_error_unless_allowed(data_dir: Path) -> None:
    with stub_server() as stub:
        stub.respond = lambda r: (404, {}, "no such thing")
        with pytest.raises(StepFailed, match=r"GET .*/missing: HTTP 404 Not Found: no such thing"):
            run_plugin("Input.api", {"url": f"{stub.base_url}/missing"}, data_dir)
        out = run_plugin(
            "Input.api",
            {"url": f"{stub.base_url}/missing", "allowed_status": [404]},
            data_dir,
        )
    assert out["status"] == 404
    assert out["body"] == "no such thing"


def test_api_timeout_is_reported(data_dir: Path) -> None:
    with stub_server() as stub:

        def slow(request: Recorded) -> tuple[int, dict[str, str], str]:
            stub.release.wait(10)
            return 200, {}, "late"

        stub.respond = slow
        with pytest.raises(StepFailed, match=r"no answer within 0\.2s"):
            run_plugin("Input.api", {"url": stub.base_url, "timeout": 0.2}, data_dir)


def test_api_refuses_a_url_that_is_not_http_at_validation(data_dir: Path) -> None:
    from mimir.core.errors import PipelineValidationError

    with pytest.raises(PipelineValidationError, match=r"field 'config.url'.*http:// or https://"):
        run_plugin("Input.api", {"url": "file:///etc/passwd"}, data_dir)
