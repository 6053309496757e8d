"""The plugins that ship with Mimir, one module per family.

| family | module | plugins |
|---|---|---|
| ``Input`` | :mod:`.inputs` | ``csv``, ``json``, ``xml``, ``markdown``, ``api`` |
| ``Input``, ``Output`` | :mod:`.excel` | ``excel`` (.xlsx, streamed both ways) |
| ``Data_Processing`` | :mod:`.processing` | ``transform``, ``aggregate`` |
| ``AI`` | :mod:`.ai` | ``mock``, ``openai`` |
| ``AI`` | :mod:`.ai_anthropic`, :mod:`.ai_ollama` | ``anthropic``, ``ollama`` |
| ``Output`` | :mod:`.outputs` | ``json``, ``csv``, ``html`` |
| ``Output`` | :mod:`.pdf` | ``pdf`` |
| ``Debug`` | :mod:`.debug` | ``echo``, ``sleep``, ``fail`` |
| ``Ontology`` | :mod:`.ontology` | ``query``, ``load`` |
"""

from __future__ import annotations

from typing import Any

from mimir.core.plugins.base import Plugin
from mimir.core.plugins.builtin.ai import MockAIPlugin, OpenAIPlugin
from mimir.core.plugins.builtin.ai_anthropic import AnthropicPlugin
from mimir.core.plugins.builtin.ai_ollama import OllamaPlugin
from mimir.core.plugins.builtin.debug import EchoPlugin, FailPlugin, SleepPlugin
from mimir.core.plugins.builtin.excel import ExcelInputPlugin, ExcelOutputPlugin
from mimir.core.plugins.builtin.inputs import (
    ApiInputPlugin,
    CsvInputPlugin,
    JsonInputPlugin,
    MarkdownInputPlugin,
    XmlInputPlugin,
)
from mimir.core.plugins.builtin.ontology import OntologyLoadPlugin, OntologyQueryPlugin
from mimir.core.plugins.builtin.outputs import CsvOutputPlugin, HtmlOutputPlugin, JsonOutputPlugin
from mimir.core.plugins.builtin.pdf import PdfOutputPlugin
from mimir.core.plugins.builtin.processing import AggregatePlugin, TransformPlugin

__all__ = ["BUILTIN_PLUGINS"]

#: Every built-in plugin class, registered by :func:`default_registry`.
BUILTIN_PLUGINS: list[type[Plugin[Any]]] = [
    CsvInputPlugin,
    JsonInputPlugin,
    XmlInputPlugin,
    MarkdownInputPlugin,
    ApiInputPlugin,
    ExcelInputPlugin,
    TransformPlugin,
    AggregatePlugin,
    MockAIPlugin,
    OpenAIPlugin,
    AnthropicPlugin,
    OllamaPlugin,
    JsonOutputPlugin,
    CsvOutputPlugin,
    HtmlOutputPlugin,
    ExcelOutputPlugin,
    PdfOutputPlugin,
    EchoPlugin,
    FailPlugin,
    SleepPlugin,
    OntologyQueryPlugin,
    OntologyLoadPlugin,
]
