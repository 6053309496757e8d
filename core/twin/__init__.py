"""Digital twins: built from an ontology, played through scenarios of timed events in a
discrete-event simulation, stored with their runs in SQLite."""

from __future__ import annotations

from mimir.core.twin.builder import twin_from_triples
from mimir.core.twin.models import (
    Entity,
    EventType,
    Relationship,
    RunRecord,
    Scenario,
    ScenarioEvent,
    SimulationResult,
    Twin,
)
from mimir.core.twin.simulation import TwinError, simulate
from mimir.core.twin.store import (
    ScenarioExistsError,
    TwinConflictError,
    TwinExistsError,
    TwinNotFoundError,
    TwinStore,
)

__all__ = [
    "Entity",
    "EventType",
    "Relationship",
    "RunRecord",
    "Scenario",
    "ScenarioEvent",
    "ScenarioExistsError",
    "SimulationResult",
    "Twin",
    "TwinConflictError",
    "TwinError",
    "TwinExistsError",
    "TwinNotFoundError",
    "TwinStore",
    "simulate",
    "twin_from_triples",
]
