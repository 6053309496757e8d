"""``Input.*``: read CSV, JSON, XML and Markdown files from the data directory, or call an API.

File paths are relative to the data directory and never leave it (see
:meth:`StepRuntime.resolve_path`). Reading and parsing happen in a worker thread so the
event loop stays free while a big file loads.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeElementTree
from pydantic import ConfigDict, Field, field_validator, model_validator

from mimir.core.errors import MimirError, PluginError
from mimir.core.pipeline.values import Rows
from mimir.core.plugins.base import Plugin, PluginConfig, StepRuntime

__all__ = [
    "ApiInputPlugin",
    "CsvInputPlugin",
    "JsonInputPlugin",
    "MarkdownInputPlugin",
    "XmlInputPlugin",
]

logger = logging.getLogger(__name__)

#: Files bigger than this are refused rather than read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024


def _read_text(path: Path, shown: str, encoding: str) -> str:
    """The text of ``path``; errors name the path as the pipeline gave it (``shown``)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PluginError(
                f"file {shown!r} is {size} bytes; the limit is {MAX_FILE_BYTES} bytes"
            )
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise PluginError(f"file {shown!r} does not exist in the data directory") from None
    except IsADirectoryError:
        raise PluginError(f"{shown!r} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise PluginError(f"file {shown!r} is not valid {encoding}: {exc.reason}") from None
    except LookupError:
        raise PluginError(f"unknown encoding {encoding!r}") from None
    except OSError as exc:
        raise PluginError(f"cannot read {shown!r}: {exc.strerror or exc}") from None


class FileInputConfig(PluginConfig):
    file_path: str = Field(description="Path of the file, relative to the data directory.")
    encoding: str = Field(default="utf-8", description="Text encoding of the file.")


# --------------------------------------------------------------------------- CSV

_INT = re.compile(r"^[+-]?(0|[1-9][0-9]*)$")
_FLOAT = re.compile(
    r"^[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)$"
)


def infer_scalar(text: str) -> Any:
    """``"12"`` → 12, ``"1.5"`` → 1.5; anything else (``"007"``, ``"n/a"``, ``""``) unchanged."""
    stripped = text.strip()
    if _INT.match(stripped):
        return int(stripped)
    if _FLOAT.match(stripped):
        return float(stripped)
    return text


class CsvInputConfig(FileInputConfig):
    has_headers: bool = Field(
        default=True, description="First row names the columns (rows become objects)."
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="Field separator.")
    infer_types: bool = Field(
        default=True, description="Turn numeric cells into numbers (e.g. '12' → 12)."
    )


def _parse_csv(text: str, config: CsvInputConfig, shown: str) -> list[Any]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=config.delimiter, strict=True)

    def cell(value: str) -> Any:
        return infer_scalar(value) if config.infer_types else value

    try:
        records = [row for row in reader if row]
    except csv.Error as exc:
        raise PluginError(f"{shown}: line {reader.line_num}: invalid CSV: {exc}") from None
    if not config.has_headers:
        return [[cell(value) for value in row] for row in records]
    if not records:
        return []
    header = [name.strip() for name in records[0]]
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise PluginError(f"{shown}: the header repeats column(s) {', '.join(duplicates)}")
    rows: list[dict[str, Any]] = []
    for number, record in enumerate(records[1:], start=2):
        if len(record) > len(header):
            raise PluginError(
                f"{shown}: row {number} has {len(record)} fields but the header has "
                f"{len(header)} ({', '.join(header)})"
            )
        values = [cell(v) for v in record] + [None] * (len(header) - len(record))
        rows.append(dict(zip(header, values, strict=True)))
    return rows


class CsvInputPlugin(Plugin[CsvInputConfig]):
    plugin_type = "Input"
    plugin_name = "csv"
    description = (
        "Read a CSV file: a list of objects (with headers) or of lists; "
        "'{{ x.row_count }}', '{{ x.columns }}' also work."
    )
    config_model = CsvInputConfig

    async def run(self, config: CsvInputConfig, run: StepRuntime) -> Any:
        path = run.resolve_path(config.file_path)

        def load() -> list[Any]:
            rows = _parse_csv(
                _read_text(path, config.file_path, config.encoding), config, config.file_path
            )
            # A list that also answers the original platform's result fields.
            meta = {
                "file_path": config.file_path,
                "has_headers": config.has_headers,
                "delimiter": config.delimiter,
            }
            return Rows(rows, meta)

        return await asyncio.to_thread(load)


# --------------------------------------------------------------------------- JSON


class JsonInputConfig(PluginConfig):
    file_path: str | None = Field(
        default=None, description="Path of the file, relative to the data directory."
    )
    json_string: str | None = Field(
        default=None, description="JSON text to parse instead of a file."
    )
    encoding: str = Field(default="utf-8", description="Text encoding of the file.")

    @model_validator(mode="after")
    def _one_source(self) -> JsonInputConfig:
        if (self.file_path is None) == (self.json_string is None):
            raise ValueError("give exactly one of 'file_path' or 'json_string'")
        return self


def _parse_json(text: str, shown: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PluginError(
            f"{shown}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"
        ) from None
    except RecursionError:
        raise PluginError(f"{shown}: the JSON is nested too deeply") from None


class JsonInputPlugin(Plugin[JsonInputConfig]):
    plugin_type = "Input"
    plugin_name = "json"
    description = "Read a JSON file (or parse 'json_string') and return its value."
    config_model = JsonInputConfig

    async def run(self, config: JsonInputConfig, run: StepRuntime) -> Any:
        if config.json_string is not None:
            return _parse_json(config.json_string, "json_string")
        file_path = config.file_path
        assert file_path is not None
        path = run.resolve_path(file_path)

        def load() -> Any:
            return _parse_json(_read_text(path, file_path, config.encoding), file_path)

        return await asyncio.to_thread(load)


# --------------------------------------------------------------------------- XML


class XmlInputConfig(FileInputConfig):
    strip_namespaces: bool = Field(
        default=True, description="Drop '{namespace}' prefixes from tag and attribute names."
    )


def _local(name: str, strip: bool) -> str:
    return name.rsplit("}", 1)[-1] if strip and name.startswith("{") else name


def element_to_data(element: Element, strip_namespaces: bool = True) -> Any:
    """An element as plain data.

    Attributes become ``"@name"`` keys, child elements keys by tag (a repeated tag
    becomes a list), text ``"#text"``. An element with only text becomes that string,
    an empty one ``None``.
    """
    data: dict[str, Any] = {
        f"@{_local(key, strip_namespaces)}": value for key, value in element.attrib.items()
    }
    for child in element:
        tag = _local(child.tag, strip_namespaces) if isinstance(child.tag, str) else None
        if tag is None:  # comments and processing instructions
            continue
        value = element_to_data(child, strip_namespaces)
        if tag not in data:
            data[tag] = value
        elif isinstance(data[tag], list):  # element values are never lists themselves
            data[tag].append(value)
        else:
            data[tag] = [data[tag], value]
    text = (element.text or "").strip()
    if not data:
        return text or None
    if text:
        data["#text"] = text
    return data


class XmlInputPlugin(Plugin[XmlInputConfig]):
    plugin_type = "Input"
    plugin_name = "xml"
    description = "Read an XML file into objects (safe parser: no DTDs, no entities)."
    config_model = XmlInputConfig

    async def run(self, config: XmlInputConfig, run: StepRuntime) -> Any:
        path = run.resolve_path(config.file_path)

        def load() -> Any:
            text = _read_text(path, config.file_path, config.encoding)
            try:
                root = SafeElementTree.fromstring(
                    text, forbid_dtd=True, forbid_entities=True, forbid_external=True
                )
            except DefusedXmlException as exc:
                raise PluginError(
                    f"{config.file_path}: refused: the XML declares a DTD or entities "
                    f"({type(exc).__name__}); they are not allowed"
                ) from None
            except ParseError as exc:
                line, column = exc.position
                raise PluginError(
                    f"{config.file_path}: line {line}, column {column + 1}: invalid XML"
                ) from None
            tag = _local(root.tag, config.strip_namespaces)
            return {tag: element_to_data(root, config.strip_namespaces)}

        return await asyncio.to_thread(load)


# --------------------------------------------------------------------------- Markdown

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n---[ \t]*\n", re.DOTALL)


def parse_markdown(text: str) -> dict[str, Any]:
    """The headings and sections of Markdown ``text`` (ATX and setext headings).

    Lines inside fenced code blocks are never headings. Each section holds the text
    between its heading and the next heading; text before the first heading is a
    section with ``heading: None``.
    """
    lines = text.splitlines()
    headings: list[dict[str, Any]] = []
    starts: list[tuple[int, int, int]] = []  # (heading line index, body start, heading no.)
    fence: str | None = None
    for index, line in enumerate(lines):
        fenced = _FENCE.match(line)
        if fenced:
            marker = fenced.group(1)
            fence = None if fence == marker else (fence or marker)
            continue
        if fence:
            continue
        atx = _ATX.match(line)
        heading: tuple[int, str] | None = None
        if atx:
            heading = (len(atx.group(1)), (atx.group(2) or "").strip())
            body = index + 1
            at = index
        elif (
            _SETEXT.match(line)
            and index > 0
            and lines[index - 1].strip()
            and not _ATX.match(lines[index - 1])
            and not (starts and starts[-1][0] == index - 1)
        ):
            heading = (1 if line.strip().startswith("=") else 2, lines[index - 1].strip())
            body = index + 1
            at = index - 1
        if heading is not None:
            headings.append({"level": heading[0], "text": heading[1], "line": at + 1})
            starts.append((at, body, len(headings) - 1))
    sections: list[dict[str, Any]] = []
    first = starts[0][0] if starts else len(lines)
    preamble = "\n".join(lines[:first]).strip()
    if preamble:
        sections.append({"heading": None, "level": 0, "content": preamble})
    for position, (_, body, number) in enumerate(starts):
        end = starts[position + 1][0] if position + 1 < len(starts) else len(lines)
        sections.append(
            {
                "heading": headings[number]["text"],
                "level": headings[number]["level"],
                "content": "\n".join(lines[body:end]).strip(),
            }
        )
    title = next((h["text"] for h in headings if h["level"] == 1), None)
    return {"title": title, "headings": headings, "sections": sections}


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(\s*<?([^\s()<>]+)>?(?:\s+\"([^\"]*)\")?\s*\)")
_AUTOLINK = re.compile(r"<(https?://[^\s<>]+)>")


def markdown_links(text: str) -> list[dict[str, Any]]:
    """Links and images (``[text](url "title")``, ``![alt](src)``, ``<https://…>``) with
    their line numbers; none from fenced code blocks."""
    links: list[dict[str, Any]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        fenced = _FENCE.match(line)
        if fenced:
            marker = fenced.group(1)
            fence = None if fence == marker else (fence or marker)
            continue
        if fence:
            continue
        for match in _LINK.finditer(line):
            link: dict[str, Any] = {
                "text": match.group(2),
                "url": match.group(3),
                "line": number,
                "image": match.group(1) == "!",
            }
            if match.group(4) is not None:
                link["title"] = match.group(4)
            links.append(link)
        for match in _AUTOLINK.finditer(line):
            url = match.group(1)
            links.append({"text": url, "url": url, "line": number, "image": False})
    return links


def front_matter(text: str, shown: str) -> dict[str, Any]:
    """The YAML front matter of ``text`` (``---`` … ``---`` at its start) as a mapping."""
    from mimir.core.pipeline.loader import parse_yaml  # bounded: sizes, aliases, depth

    found = _FRONT_MATTER.match(text)
    if not found:
        return {}
    block = found.group(0).split("\n", 1)[1].rsplit("---", 1)[0]
    try:
        data, _ = parse_yaml(block, shown)
    except MimirError as exc:
        raise PluginError(f"{shown}: invalid front matter: {exc}") from None
    return data if isinstance(data, dict) else {}


class MarkdownInputConfig(FileInputConfig):
    extract_sections: bool = Field(
        default=True, description="Give 'headings' and 'sections' (text under each heading)."
    )
    extract_links: bool = Field(
        default=True, description="Give 'links': links and images with their line numbers."
    )
    extract_metadata: bool = Field(
        default=True, description="Give 'metadata': the YAML front matter, if any."
    )


class MarkdownInputPlugin(Plugin[MarkdownInputConfig]):
    plugin_type = "Input"
    plugin_name = "markdown"
    description = "Read a Markdown file: its text, title, headings, sections, links, metadata."
    config_model = MarkdownInputConfig

    async def run(self, config: MarkdownInputConfig, run: StepRuntime) -> Any:
        path = run.resolve_path(config.file_path)

        def load() -> dict[str, Any]:
            text = _read_text(path, config.file_path, config.encoding)
            # Blank out YAML front matter, keeping line numbers true to the file.
            body = _FRONT_MATTER.sub(lambda m: "\n" * m.group(0).count("\n"), text, count=1)
            parsed = parse_markdown(body)
            result: dict[str, Any] = {"text": text, "title": parsed["title"]}
            if config.extract_sections:
                result.update(headings=parsed["headings"], sections=parsed["sections"])
            if config.extract_links:
                result["links"] = markdown_links(body)
            if config.extract_metadata:
                result["metadata"] = front_matter(text, config.file_path)
            # The original platform's names for the text and its size.
            result.update(
                content=text, word_count=len(body.split()), line_count=len(text.splitlines())
            )
            return result

        return await asyncio.to_thread(load)


# --------------------------------------------------------------------------- API

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class ApiInputConfig(PluginConfig):
    url: str = Field(description="http:// or https:// URL to call.")
    method: HttpMethod = Field(default="GET", description="HTTP method.")
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Query parameters."
    )
    body: str | None = Field(default=None, description="Raw request body (text).")
    json_body: Any = Field(
        default=None, alias="json", description="JSON request body (instead of body)."
    )
    timeout: float = Field(default=30.0, gt=0, le=600, description="Seconds before giving up.")
    allowed_status: list[int] = Field(
        default_factory=list,
        description="Non-2xx status codes to accept as answers instead of errors.",
    )
    follow_redirects: bool = Field(
        default=True,
        description="Follow HTTP redirects (each one checked by MIMIR_HTTP_ALLOW/DENY; "
        "never to another scheme).",
    )
    max_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="Largest response body accepted."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"url must start with http:// or https:// and name a host: {value!r}")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ApiInputPlugin(Plugin[ApiInputConfig]):
    plugin_type = "Input"
    plugin_name = "api"
    description = "Call an HTTP API; return {status, status_code, url, headers, body, json}."
    config_model = ApiInputConfig

    async def run(self, config: ApiInputConfig, run: StepRuntime) -> Any:
        import httpx  # here, not at the top: loading the plugin registry must not load it

        from mimir.core.outbound import default_outbound_policy

        if config.body is not None and config.json_body is not None:
            raise PluginError("give either 'body' or 'json', not both")
        target = f"{config.method} {config.url.split('?', 1)[0]}"
        try:
            async with (
                default_outbound_policy().client(
                    config.url, timeout=config.timeout, follow_redirects=config.follow_redirects
                ) as client,
                client.stream(
                    config.method,
                    # Added to, not replacing, the query string already in the URL (which is
                    # sent as written when there are no params).
                    httpx.URL(config.url).copy_merge_params(config.params)
                    if config.params
                    else config.url,
                    headers=config.headers,
                    content=config.body,
                    json=config.json_body,
                ) as response,
            ):
                chunks: list[bytes] = []
                received = 0
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > config.max_bytes:
                        raise PluginError(
                            f"{target}: the response exceeds max_bytes ({config.max_bytes})"
                        )
                    chunks.append(chunk)
                content = b"".join(chunks)
        except httpx.TimeoutException:
            raise PluginError(f"{target}: no answer within {config.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise PluginError(f"{target}: request failed: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        text = content.decode(response.encoding or "utf-8", errors="replace")
        if not (200 <= status < 300) and status not in config.allowed_status:
            excerpt = text[:300] + ("…" if len(text) > 300 else "")
            raise PluginError(f"{target}: HTTP {status} {response.reason_phrase}: {excerpt}")
        result: dict[str, Any] = {
            "status": status,
            # The original platform's name for it, so its pipelines' references work.
            "status_code": status,
            "url": str(response.url),
            "headers": dict(response.headers),
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        content_type = response.headers.get("content-type", "")
        if "json" in content_type.split(";")[0]:
            try:
                result["json"] = json.loads(text) if text.strip() else None
            except json.JSONDecodeError as exc:
                raise PluginError(
                    f"{target}: the answer says JSON but is not: {exc.msg} "
                    f"(line {exc.lineno}, column {exc.colno})"
                ) from None
            # As in the original: 'body' is the parsed JSON when the answer is JSON.
            result["body"] = result["json"]
        else:
            result["body"] = text
        logger.debug("%s → %s (%d bytes)", target, status, len(content))
        return result
