"""Loading the plugin registry (every worker does on its first job) leaves the heavy
optional libraries unloaded until a step needs them: idle workers stay small."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
from mimir.core.plugins.registry import default_registry
registry = default_registry()
print("names=" + ",".join(registry.names()))
heavy = ("pyoxigraph", "httpx", "openpyxl", "fpdf", "fontTools", "PIL")
print("loaded=" + ",".join(m for m in heavy if m in sys.modules))
"""


def test_default_registry_does_not_import_pyoxigraph_or_httpx() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    names = lines["names"].split(",")
    # The plugins that need them are registered all the same.
    assert {"Ontology.load", "Ontology.query", "Input.excel", "Output.pdf"} <= set(names), names
    assert lines["loaded"] == "", f"loading the registry imported {lines['loaded']}"
