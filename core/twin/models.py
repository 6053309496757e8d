"""Digital twins, scenarios and runs: the pydantic models shared by the store, the
simulation, the job handler and the API."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator

__all__ = [
    "DEFAULT_MAGNITUDE",
    "Entity",
    "EventType",
    "Relationship",
    "RunRecord",
    "Scenario",
    "ScenarioEvent",
    "SimulationResult",
    "Twin",
]


class EventType(StrEnum):
    """What a scenario event does to its target (``magnitude`` multiplies a factor)."""

    #: The resource stops: capacity factor 0 while the event lasts.
    resource_unavailable = "resource.unavailable"
    #: Capacity factor x magnitude (0.5 halves capacity).
    resource_capacity_change = "resource.capacity_change"
    #: Demand factor x magnitude (default 1.5).
    demand_surge = "demand.surge"
    #: Demand factor x magnitude (default 0.5).
    demand_drop = "demand.drop"
    #: Processing time x magnitude (default 1.5): the same work needs more capacity.
    process_delay = "process.delay"
    #: The process fails: capacity factor 0 while the event lasts.
    process_failure = "process.failure"


#: Magnitude of each event type when the scenario gives none.
DEFAULT_MAGNITUDE: dict[EventType, float] = {
    EventType.resource_unavailable: 0.0,
    EventType.resource_capacity_change: 0.5,
    EventType.demand_surge: 1.5,
    EventType.demand_drop: 0.5,
    EventType.process_delay: 1.5,
    EventType.process_failure: 0.0,
}


class Entity(BaseModel):
    """One individual of the ontology, as the twin models it."""

    id: str
    type: str = "Entity"
    label: str = ""
    #: Work the entity can do per time unit (ontology property ``capacity``; default 100).
    capacity: float = Field(strict=True, default=100.0, ge=0)
    #: Work asked of it per time unit (``demand``/``load``/``throughput``; default half capacity).
    demand: float = Field(strict=True, default=50.0, ge=0)
    #: Every numeric property found in the ontology, by local name.
    properties: dict[str, StrictFloat] = Field(default_factory=dict)


class Relationship(BaseModel):
    """A directed link between two entities (an object property between individuals)."""

    source: str
    target: str
    type: str = "related"


class Twin(BaseModel):
    """A digital twin: entities and relationships taken from an ontology."""

    id: str = ""
    name: str
    ontology_id: str | None = None
    description: str = ""
    entities: list[Entity] = Field(default_factory=list)
    relationships: list[Relationship] = Field(default_factory=list)
    created_at: str = ""

    def entity_index(self) -> dict[str, Entity]:
        """Entities by id."""
        return {e.id: e for e in self.entities}


class ScenarioEvent(BaseModel):
    """A timed event and how far its impact spreads."""

    model_config = ConfigDict(extra="forbid")

    #: Simulation time at which it happens.
    at: float = Field(strict=True, ge=0)
    type: EventType
    #: Entity id (IRI), its label or its local name.
    target: str
    #: Factor the event applies (see :class:`EventType`); default per type.
    magnitude: float | None = Field(strict=True, default=None, ge=0)
    #: How long it lasts; ``None`` until the end of the run.
    duration: float | None = Field(strict=True, default=None, gt=0)
    #: Spread along relationships: ``outgoing`` (source → target), ``incoming`` or ``both``;
    #: ``none`` keeps it on the target.
    propagate: Literal["outgoing", "incoming", "both", "none"] = "outgoing"
    #: Share of the effect that reaches each next hop (effect = magnitude - 1, scaled).
    multiplier: float = Field(strict=True, default=0.5, ge=0, le=1)
    #: Time each hop takes.
    delay: float = Field(strict=True, default=1.0, ge=0)
    #: Hops at most.
    max_hops: int = Field(strict=True, default=3, ge=0, le=20)


class Scenario(BaseModel):
    """Events to play on a twin, and how to observe the run."""

    model_config = ConfigDict(extra="forbid")

    #: Unique within its twin; made up when empty. Used in URLs, so URL-safe.
    id: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127})?$")
    twin_id: str = ""
    name: str
    description: str = ""
    #: Simulated time units.
    duration: float = Field(strict=True, default=100.0, gt=0, le=1_000_000)
    snapshot_interval: float = Field(strict=True, default=1.0, gt=0)
    #: Utilisation at or above which an entity counts as a bottleneck.
    bottleneck_threshold: float = Field(strict=True, default=0.9, gt=0)
    #: Random variation of demand per snapshot (standard deviation as a share; 0 = none).
    noise: float = Field(strict=True, default=0.0, ge=0, le=1)
    seed: int | None = Field(default=None, strict=True)
    events: list[ScenarioEvent] = Field(default_factory=list)
    created_at: str = ""

    @model_validator(mode="after")
    def _snapshots_bounded(self) -> Scenario:
        if self.duration / self.snapshot_interval > 100_000:
            raise ValueError("duration / snapshot_interval must stay under 100,000 snapshots")
        return self


class SimulationResult(BaseModel):
    """What a run produced."""

    seed: int
    duration: float
    snapshot_interval: float
    #: Snapshot times.
    times: list[float]
    #: Entity id -> utilisation at each snapshot time.
    utilisation: dict[str, list[float]]
    metrics: dict[str, Any]
    #: Every effect applied, in order: ``{time, entity, type, factor, hop, source_event}``.
    events: list[dict[str, Any]]
    elapsed_ms: float = 0.0


class RunRecord(BaseModel):
    """A run of a scenario on a twin, as stored and served."""

    id: str
    twin_id: str
    scenario_id: str
    status: Literal["queued", "running", "succeeded", "failed"] = "queued"
    job_id: str | None = None
    seed: int | None = None
    created_at: str = ""
    finished_at: str | None = None
    result: SimulationResult | None = None
    error: str | None = None
