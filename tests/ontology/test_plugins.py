"""``Ontology.load`` and ``Ontology.query`` in pipelines, on the default store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mimir.core.engine import execute_pipeline
from mimir.core.ontology import close_ontology_stores, open_ontology_store
from mimir.core.pipeline import load_pipeline
from mimir.core.plugins.builtin.ontology import sparql_term
from mimir.core.settings import Settings

ROWS = [
    {"id": 1, "name": 'Widget "X"', "price": 9.5, "stock": 3, "maker": "acme"},
    {"id": 2, "name": "Gadget", "price": 3, "stock": None, "maker": "globex"},
]


def _run(data_dir: Path, steps: list[dict[str, Any]], context: dict[str, Any]) -> Any:
    pipeline = load_pipeline({"name": "kg", "steps": steps})
    try:
        return asyncio.run(execute_pipeline(pipeline, context, data_dir=data_dir))
    finally:
        close_ontology_stores()


LOAD = {
    "name": "load",
    "plugin": "Ontology.load",
    "output": "loaded",
    "config": {
        "ontology": "products@1",
        "create": True,
        "input": "{{ rows }}",
        "subject": "http://ex/item/{id}",
        "type": "http://ex/Item",
        "label": "name",
        "properties": {
            "http://ex/price": "price",
            "http://ex/stock": {"column": "stock", "datatype": "integer"},
            "http://ex/maker": {"column": "http://ex/maker/{maker}", "iri": True},
        },
    },
}


def test_load_then_query_with_params(data_dir: Path) -> None:
    query = {
        "name": "find",
        "plugin": "Ontology.query",
        "output": "found",
        "config": {
            "query": "SELECT ?item ?price WHERE { ?item <http://www.w3.org/2000/01/rdf-schema#label>"
            " $name ; <http://ex/price> ?price ; <http://ex/maker> $maker }",
            "params": {"name": "{{ wanted }}", "maker": {"iri": "http://ex/maker/acme"}},
            "ontology": "products",
        },
    }
    result = _run(data_dir, [LOAD, query], {"rows": ROWS, "wanted": 'Widget "X"'})
    assert result.success, result.error
    # 2 x (type, label, price, maker) + 1 stock (the other row's stock is missing).
    assert result.context["loaded"] == {"ontology": "products@1", "triples": 9, "rows": 2}
    assert result.context["found"] == [{"item": "http://ex/item/1", "price": 9.5}]
    store = open_ontology_store(Settings(data_dir=data_dir))
    try:
        assert store.stats("products").individuals == 2
    finally:
        close_ontology_stores()


def test_params_cannot_inject_sparql(data_dir: Path) -> None:
    hostile = '" } ; DROP ALL ; SELECT * { "'
    steps = [
        LOAD,
        {
            "name": "find",
            "plugin": "Ontology.query",
            "output": "found",
            "config": {"query": "SELECT ?s WHERE { ?s ?p $v }", "params": {"v": hostile}},
        },
        {"name": "count", "plugin": "Ontology.query", "output": "still",
         "config": {"query": "ASK { <http://ex/item/1> ?p ?o }"}},
    ]  # fmt: skip
    result = _run(data_dir, steps, {"rows": ROWS})
    assert result.success, result.error
    assert result.context["found"] == [] and result.context["still"] is True
    assert sparql_term(3) == "3" and sparql_term({"iri": "http://a/b"}) == "<http://a/b>"


def test_errors_name_the_problem(data_dir: Path) -> None:
    missing = dict(LOAD, config={**LOAD["config"], "create": False, "ontology": "nope"})
    result = _run(data_dir, [missing], {"rows": ROWS})
    assert not result.success and "no ontology 'nope'" in (result.error or "")
    bad_column = dict(LOAD, config={**LOAD["config"], "subject": "http://ex/{sku}"})
    result = _run(data_dir, [bad_column], {"rows": ROWS})
    assert not result.success and "row 0" in (result.error or "") and "sku" in result.error
    bad_query = {"name": "q", "plugin": "Ontology.query", "config": {"query": "SELEC"}}
    result = _run(data_dir, [bad_query], {})
    assert not result.success and "invalid SPARQL" in (result.error or "")


@pytest.mark.parametrize("value", [float("nan"), [1, 2]])
def test_unsupported_param_values(value: Any) -> None:
    from mimir.core.errors import PluginError

    with pytest.raises(PluginError):
        sparql_term(value)
