"""The Knowledge panel's Qt-free parts: SPARQL cells by prefix, run comparisons and what-if
distributions as rows (issue 14)."""

from __future__ import annotations

import pytest

from mimir.app.services.sparql import (
    WELL_KNOWN_PREFIXES,
    query_prefixes,
    shorten_iri,
    sparql_rows,
    sparql_table,
)
from mimir.app.services.twins import (
    bottleneck_rows,
    busiest_entities,
    comparison_rows,
    describe_change,
    distribution_rows,
    entity_rows,
    format_delta,
    format_metric,
    outage_change,
    parameter_change,
    run_summary,
    verdict,
)

SC = "http://mimir-aip.local/ontology/supply-chain#"
RDFS = WELL_KNOWN_PREFIXES["rdfs"]


def _answer(*rows: dict[str, dict[str, str]]) -> dict:
    names = list(rows[0]) if rows else []
    return {"head": {"vars": names}, "results": {"bindings": list(rows)}}


# ---------------------------------------------------------------- prefixes


def test_query_prefixes_add_the_querys_own_to_the_common_ones() -> None:
    prefixes = query_prefixes(
        f"PREFIX sc: <{SC}>\nprefix ex:<http://example.org/>\nPREFIX : <urn:default:>\n"
        "SELECT * { ?s ?p ?o }"
    )
    assert prefixes["sc"] == SC and prefixes["ex"] == "http://example.org/"
    assert prefixes[""] == "urn:default:"
    for name in ("rdf", "rdfs", "owl", "xsd"):
        assert prefixes[name] == WELL_KNOWN_PREFIXES[name]
    # The query's declaration wins over a common one of the same name.
    assert query_prefixes("PREFIX owl: <urn:mine#> ASK {}")["owl"] == "urn:mine#"


def test_shorten_iri_longest_namespace_wins_and_odd_locals_stay_full() -> None:
    prefixes = {"ex": "http://example.org/", "exa": "http://example.org/a/", **query_prefixes("")}
    assert shorten_iri("http://example.org/a/Thing", prefixes) == "exa:Thing"
    assert shorten_iri("http://example.org/Thing", prefixes) == "ex:Thing"
    assert shorten_iri(RDFS + "label", prefixes) == "rdfs:label"
    assert shorten_iri("http://www.w3.org/2002/07/owl#Class", prefixes) == "owl:Class"
    assert shorten_iri("http://www.w3.org/2001/XMLSchema#integer", prefixes) == "xsd:integer"
    # A local part that is no prefixed name (a slash, a space, a query) keeps the full IRI.
    for full in ("http://example.org/a/b/c", "http://example.org/x y", "http://example.org/?q=1"):
        assert shorten_iri(full, {"ex": "http://example.org/"}) == full
    assert shorten_iri("urn:other:thing", prefixes) == "urn:other:thing"
    assert shorten_iri("urn:default:x", {"": "urn:default:"}) == ":x"


def test_table_cells_shown_by_prefix_with_the_full_value_kept() -> None:
    query = f"PREFIX sc: <{SC}>\nSELECT ?s ?p ?label WHERE {{ ?s ?p ?label }}"
    answer = _answer(
        {
            "s": {"type": "uri", "value": SC + "NorthDC"},
            "p": {"type": "uri", "value": RDFS + "label"},
            "label": {"type": "literal", "value": "http://looks-like-an-iri/but-is-text"},
        },
        {
            "s": {"type": "bnode", "value": "b0"},
            "p": {"type": "uri", "value": "http://unknown.example/vocab#weight"},
            "label": {"type": "literal", "value": "12", "datatype": WELL_KNOWN_PREFIXES["xsd"]},
        },
    )
    table = sparql_table(answer, query_prefixes(query))
    assert table.columns == ["s", "p", "label"]
    first, second = table.rows
    assert first == [
        ("sc:NorthDC", SC + "NorthDC"),
        ("rdfs:label", RDFS + "label"),
        # A literal is never shortened, even when it looks like an IRI.
        ("http://looks-like-an-iri/but-is-text", "http://looks-like-an-iri/but-is-text"),
    ]
    # No declared prefix fits: one is named after the namespace's last part.
    assert second[0] == ("b0", "b0")
    assert second[1] == ("vocab:weight", "http://unknown.example/vocab#weight")
    assert table.prefixes == {
        "sc": SC,
        "rdfs": RDFS,
        "vocab": "http://unknown.example/vocab#",
    }
    # Full values for whoever needs them (the API tests, a copy).
    assert sparql_rows(answer)[1][0] == [SC + "NorthDC", RDFS + "label", first[2][1]]


def test_invented_prefixes_never_take_a_declared_name() -> None:
    answer = _answer(
        {"s": {"type": "uri", "value": "http://a.example/vocab#x"}},
        {"s": {"type": "uri", "value": "http://b.example/vocab#y"}},
    )
    table = sparql_table(answer, query_prefixes("PREFIX vocab: <urn:taken#> SELECT ?s {}"))
    assert [row[0][0] for row in table.rows] == ["vocab2:x", "vocab3:y"]
    assert table.prefixes == {
        "vocab2": "http://a.example/vocab#",
        "vocab3": "http://b.example/vocab#",
    }


def test_other_answer_shapes() -> None:
    assert sparql_table({"boolean": True}, {}).rows == [[("True", "True")]]
    table = sparql_table({"vars": ["s"], "rows": [[SC + "York"]]}, {"sc": SC})
    assert table.rows == [[("sc:York", SC + "York")]]
    # Without prefixes (None) nothing is shortened.
    assert sparql_table({"vars": ["s"], "rows": [[SC + "York"]]}).rows == [
        [(SC + "York", SC + "York")]
    ]


# ---------------------------------------------------------------- comparisons


COMPARE = {
    "runs": [
        {"id": "aaaaaaaa1", "scenario_id": "holiday-rush", "seed": 1},
        {"id": "bbbbbbbb2", "scenario_id": "holiday-rush", "seed": 2},
    ],
    "system": {
        "backlog": {"a": 2405.7, "b": 1800.0, "delta": -605.7, "delta_pct": -25.18},
        "fill_rate": {"a": 0.9198, "b": 0.9, "delta": -0.0198, "delta_pct": -2.15},
        "avg_utilisation": {"a": 0.76, "b": 0.8, "delta": 0.04, "delta_pct": 5.2},
        "delivered": {"a": 27594.3, "b": 27594.3, "delta": 0.0, "delta_pct": 0.0},
        "time_down": {"a": 0.0, "b": 3.0, "delta": 3.0, "delta_pct": None},
        "peak_backlog": {"a": 7.0, "b": 2807.0, "delta": 2800.0, "delta_pct": 40000.0},
    },
    "entities": {
        SC + "NorthDC": {
            "label": "North DC",
            "fill_rate": {"a": 1.0, "b": 1.0, "delta": 0.0},
            "backlog": {"a": 300.0, "b": 0.0, "delta": -300.0},
            "avg_utilisation": {"a": 0.9, "b": 0.95, "delta": 0.05},
            "time_bottleneck": {"a": 36.0, "b": 30.0, "delta": -6.0},
            "time_starved": {"a": 0.0, "b": 0.0, "delta": 0.0},
        },
        SC + "StoreYork": {
            "label": "Store York",
            "fill_rate": {"a": 0.91, "b": 0.909, "delta": -0.001},
            "backlog": {"a": 700.0, "b": 701.0, "delta": 1.0},
        },
    },
}


def test_verdicts_follow_the_operators_interest() -> None:
    assert verdict("fill_rate", 0.02) == "better" and verdict("fill_rate", -0.02) == "worse"
    assert verdict("backlog", -10, 100) == "better" and verdict("backlog", 10, 100) == "worse"
    assert verdict("time_down", 2) == "worse"
    assert verdict("avg_utilisation", 0.2) == "neutral"  # neither better nor worse
    assert verdict("avg_inventory", -50, 100) == "neutral"
    assert verdict("backlog", 0.2, 2400) == "same"  # below 0.5 % of the base
    assert verdict("fill_rate", 0.0001) == "same"
    assert verdict("backlog", None) == "neutral"


def test_formats() -> None:
    assert format_metric("fill_rate", 0.91981) == "92.0%"
    assert format_metric("backlog", 2405.68) == "2,406"
    assert format_metric("throughput", 45.25) == "45"
    assert format_metric("backlog", 7.04) == "7.0" and format_metric("backlog", 0.0) == "0"
    assert format_metric("time_bottleneck", 36.0) == "36 d"
    assert format_metric("backlog", None) == "—"
    assert format_delta("fill_rate", -0.0198) == "-2.0 pp"
    assert format_delta("backlog", 605.7) == "+606"
    assert format_delta("time_down", 3.0) == "+3 d"


def test_comparison_rows_in_the_servers_order_with_judged_deltas() -> None:
    rows = comparison_rows(COMPARE)
    assert [r.metric for r in rows] == list(COMPARE["system"])
    by = {r.metric: r for r in rows}
    assert (by["fill_rate"].a, by["fill_rate"].b, by["fill_rate"].delta) == (
        "92.0%",
        "90.0%",
        "-2.0 pp",
    )
    assert by["fill_rate"].verdict == "worse"
    assert by["backlog"].delta == "-606 (-25.2%)" and by["backlog"].verdict == "better"
    assert by["delivered"].verdict == "same"
    assert by["peak_backlog"].delta == "+2,800"  # no +40000 % of a base of 7
    assert by["avg_utilisation"].verdict == "neutral"
    assert by["time_down"].delta == "+3 d" and by["time_down"].verdict == "worse"


def test_entity_rows_most_changed_first() -> None:
    north, york = entity_rows(COMPARE)
    assert (north.label, york.label) == ("North DC", "Store York")
    shown, tip, judged = north.cells["backlog"]
    assert shown == "0 (-300)" and tip == "A: 300 · B: 0" and judged == "better"
    assert north.cells["fill_rate"] == ("100.0%", "A: 100.0% · B: 100.0%", "same")
    assert york.cells["time_bottleneck"] == ("—", "A: — · B: —", "neutral")


def test_run_summary_and_busiest_entities() -> None:
    assert run_summary({"summary": {"fill_rate": 0.5}}) == {"fill_rate": 0.5}
    run = {"result": {"metrics": {"fill_rate": 0.9, "backlog": 10.0, "delivered": 90.0, "x": 1}}}
    assert run_summary(run) == {"fill_rate": 0.9, "backlog": 10.0, "delivered": 90.0}
    assert run_summary({"status": "queued"}) == {}
    result = {
        "utilisation": {"a": [0.1, 0.5], "b": [0.9, 0.2], "c": [0.3, 0.3]},
        "series": {"backlog": {"a": [0.0, 50.0], "b": [0.0, 0.0]}},
    }
    assert busiest_entities(result, "utilisation", 2) == ["b", "a"]
    assert busiest_entities(result, "backlog") == ["a", "b"]
    assert busiest_entities(result, "inventory") == []


# ---------------------------------------------------------------- what-if


def test_changes_as_the_api_takes_them() -> None:
    assert parameter_change("NorthDC", "capacity", -30) == {
        "target": "NorthDC",
        "parameter": "capacity",
        "factor": 0.7,
    }
    assert parameter_change("X", "lead_time", 50)["factor"] == 1.5
    with pytest.raises(ValueError):
        parameter_change("X", "colour", 10)
    with pytest.raises(ValueError):
        parameter_change("X", "demand", -120)
    outage = outage_change("SteelCo", 10, 20)
    assert outage == {
        "event": {"at": 20.0, "type": "resource.unavailable", "target": "SteelCo", "duration": 10.0}
    }
    labels = {"NorthDC": "North DC"}
    assert describe_change(parameter_change("NorthDC", "capacity", -30), labels) == (
        "North DC capacity -30 %"
    )
    assert describe_change(outage) == "SteelCo out for 10 days from day 20"


BATCH = {
    "status": "succeeded",
    "done": 20,
    "total": 20,
    "failed": 0,
    "base": {
        "fill_rate": {"mean": 0.92, "p5": 0.9, "p95": 0.94},
        "backlog": {"mean": 2400.0, "p5": 2100.0, "p95": 2700.0},
        "stability_score": {"mean": 0.8, "p5": 0.7, "p95": 0.9},
    },
    "variant": {
        "fill_rate": {"mean": 0.8, "p5": 0.75, "p95": 0.85},
        "backlog": {"mean": 6000.0, "p5": 5000.0, "p95": 7000.0},
        "stability_score": {"mean": 0.6, "p5": 0.5, "p95": 0.7},
    },
    "delta": {"fill_rate": {"mean": -0.12, "p5": -0.15, "p95": -0.09}},
    "bottlenecks": [
        {
            "entity": SC + "NorthDC",
            "label": "North DC",
            "base_share": 1.0,
            "variant_share": 0.3,
            "mean_time": 36.0,
        },
        {
            "entity": SC + "SteelCo",
            "label": "SteelCo",
            "base_share": 0.0,
            "variant_share": 0.7,
            "mean_time": 12.5,
        },
    ],
}


def test_distribution_rows_key_metrics_first() -> None:
    rows = distribution_rows(BATCH)
    assert [r.metric for r in rows] == ["fill_rate", "backlog", "stability_score"]  # as given
    fill, backlog, stability = rows
    assert fill.base == (0.92, 0.9, 0.94) and fill.variant == (0.8, 0.75, 0.85)
    assert fill.base_text == "92.0% (90.0%\u201394.0%)"
    assert fill.delta == "-12.0 pp" and fill.verdict == "worse"
    # No delta in the answer: the difference of the means.
    assert backlog.delta == "+3,600" and backlog.verdict == "worse"
    assert stability.verdict == "worse"
    empty = distribution_rows({"base": {"fill_rate": {"mean": 0.5}}, "variant": {}})
    assert empty[0].base == (0.5, 0.5, 0.5) and empty[0].variant is None
    assert empty[0].variant_text == "—"


def test_bottleneck_ranking_by_the_variants_share() -> None:
    assert bottleneck_rows(BATCH) == [
        ("SteelCo", "0%", "70%", "—", "12.5 d"),
        ("North DC", "100%", "30%", "—", "36 d"),
    ]
    north = {**BATCH["bottlenecks"][0], "base_mean_time": 36.0, "variant_mean_time": 20.0}
    north["variant_share"] = 1 / 3
    assert bottleneck_rows({"bottlenecks": [north]}) == [
        ("North DC", "100%", "33.3%", "36 d", "20 d")
    ]
