"""Digital twins, scenarios and runs: the pydantic models shared by the store, the
simulation, the job handler and the API.

A twin is a network of entities (an ontology's individuals) through which goods or work
flow along typed relationships: which ontology properties mean "supplies" (goods flow from
subject to object), "supplied by" (the other way) or "depends on" (the subject stops when
the object is down) is declared in the twin's ``roles``. :mod:`mimir.core.twin.simulation`
plays scenarios of timed events on it.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator

__all__ = [
    "COMPARED_METRICS",
    "DEFAULT_MAGNITUDE",
    "MAX_FIGURE",
    "ROLE_NAMES",
    "Entity",
    "EventType",
    "Relationship",
    "Role",
    "RunRecord",
    "Scenario",
    "ScenarioEvent",
    "SimulationResult",
    "Twin",
    "default_role",
]


class EventType(StrEnum):
    """What a scenario event does to its target, by family (resource, demand, process,
    policy, external). ``magnitude`` is a factor unless said otherwise."""

    #: The resource stops: capacity 0 while the event lasts (its dependants stop too).
    resource_unavailable = "resource.unavailable"
    #: Capacity x magnitude (0.5 halves it).
    resource_capacity_change = "resource.capacity_change"
    #: External demand x magnitude (default 1.5).
    demand_surge = "demand.surge"
    #: External demand x magnitude (default 0.5).
    demand_drop = "demand.drop"
    #: One order of ``magnitude`` units placed on the target at ``at`` (no default).
    demand_order = "demand.order"
    #: Processing time x magnitude (default 1.5, must be > 0): capacity / magnitude.
    process_delay = "process.delay"
    #: The process fails: capacity 0 until repaired (``duration``).
    process_failure = "process.failure"
    #: Share of the output that is good (default 0.9, from 0 to 1); the rest is scrap.
    process_yield = "process.yield"
    #: The stock the target keeps on hand and orders up to: ``magnitude`` units (no default).
    policy_target_stock = "policy.target_stock"
    #: Lead time of the target's shipments x magnitude (default 0.5: expedited transport).
    policy_expedite = "policy.expedite"
    #: Lead time of the target's shipments x magnitude (default 2: a transport disruption).
    external_transport_delay = "external.transport_delay"
    #: Something outside the network stops the target (a strike, a flood): capacity 0.
    external_outage = "external.outage"


#: Magnitude of each event type when the scenario gives none (``None``: it must be given).
DEFAULT_MAGNITUDE: dict[EventType, float | None] = {
    EventType.resource_unavailable: 0.0,
    EventType.resource_capacity_change: 0.5,
    EventType.demand_surge: 1.5,
    EventType.demand_drop: 0.5,
    EventType.demand_order: None,
    EventType.process_delay: 1.5,
    EventType.process_failure: 0.0,
    EventType.process_yield: 0.9,
    EventType.policy_target_stock: None,
    EventType.policy_expedite: 0.5,
    EventType.external_transport_delay: 2.0,
    EventType.external_outage: 0.0,
}

#: Largest figure an entity or an event may carry (capacity, demand, stock, times,
#: magnitudes): sums and products of such figures stay finite, which JSON needs.
MAX_FIGURE = 1e12

#: The per-entity figures two runs are compared on (``GET …/compare``), in the order they
#: are listed.
COMPARED_METRICS = (
    "fill_rate",
    "delivered",
    "throughput",
    "backlog",
    "peak_backlog",
    "avg_utilisation",
    "avg_inventory",
    "time_bottleneck",
    "time_starved",
    "time_down",
)

#: What a relationship means to the flow.
Role = Literal["supplies", "supplied_by", "depends_on", "none"]

#: Property local names (lower case, without ``_`` and ``-``) given a role when the twin
#: declares none for them.
ROLE_NAMES: dict[str, Role] = {
    **dict.fromkeys(
        ("supplies", "suppliesto", "feeds", "shipsto", "deliversto", "flowsto", "sendsto"),
        "supplies",
    ),
    **dict.fromkeys(
        ("suppliedby", "sourcesfrom", "receivesfrom", "fedby", "buysfrom"), "supplied_by"
    ),
    **dict.fromkeys(("dependson", "requires", "needs", "poweredby", "relieson"), "depends_on"),
}


def default_role(property_name: str) -> Role:
    """The role a property of that name gets when the twin declares none (``none``)."""
    key = property_name.lower().replace("_", "").replace("-", "")
    return ROLE_NAMES.get(key, "none")


class Entity(BaseModel):
    """One individual of the ontology, as the twin models it. Quantities are units per
    time unit (capacity, demand) or units (inventory, buffer, target stock)."""

    id: str
    type: str = "Entity"
    label: str = ""
    #: Work it can do (and ship) per time unit; ``None``: unbounded.
    capacity: float | None = Field(strict=True, default=None, ge=0, le=MAX_FIGURE)
    #: External demand: orders from customers outside the twin, per time unit.
    demand: float = Field(strict=True, default=0.0, ge=0, le=MAX_FIGURE)
    #: Goods on hand at the start, ready to ship.
    inventory: float = Field(strict=True, default=0.0, ge=0, le=MAX_FIGURE)
    #: Most goods it can hold on hand and in transit to it; ``None``: unbounded.
    buffer: float | None = Field(strict=True, default=None, ge=0, le=MAX_FIGURE)
    #: Time its shipments take to reach its customers.
    lead_time: float = Field(strict=True, default=0.0, ge=0, le=MAX_FIGURE)
    #: Stock it orders up to beyond what its backlog needs (base stock).
    target_stock: float = Field(strict=True, default=0.0, ge=0, le=MAX_FIGURE)
    #: Mean time between random failures and mean time to repair them (both or neither).
    mtbf: float | None = Field(strict=True, default=None, gt=0, le=MAX_FIGURE)
    mttr: float | None = Field(strict=True, default=None, gt=0, le=MAX_FIGURE)
    #: With several suppliers: ``any`` (each is an alternative source) or ``all`` (a unit
    #: needs one unit from each: assembly).
    inputs: Literal["any", "all"] = "any"
    #: Every numeric property found in the ontology, by local name.
    properties: dict[str, StrictFloat] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _failures_paired(self) -> Entity:
        if (self.mtbf is None) != (self.mttr is None):
            raise ValueError("mtbf and mttr go together: give both or neither")
        return self


class Relationship(BaseModel):
    """A directed link between two entities (an object property between individuals)."""

    source: str
    target: str
    #: The property's local name.
    type: str = "related"
    #: What it means to the flow; ``None``: the twin's ``roles`` for ``type``, else the
    #: default for that name (:func:`default_role`).
    role: Role | None = None


class Twin(BaseModel):
    """A digital twin: entities and relationships taken from an ontology."""

    id: str = ""
    name: str
    ontology_id: str | None = None
    description: str = ""
    entities: list[Entity] = Field(default_factory=list)
    relationships: list[Relationship] = Field(default_factory=list)
    #: Relationship type (property local name) -> its role in the flow.
    roles: dict[str, Role] = Field(default_factory=dict)
    #: What was assumed when the twin was built (no capacity, no role …).
    warnings: list[str] = Field(default_factory=list)
    created_at: str = ""
    #: When it was last rebuilt from its ontology.
    synced_at: str | None = None

    def entity_index(self) -> dict[str, Entity]:
        """Entities by id."""
        return {e.id: e for e in self.entities}

    def role_of(self, rel: Relationship) -> Role:
        """What ``rel`` means to the flow."""
        if rel.role is not None:
            return rel.role
        return self.roles.get(rel.type) or default_role(rel.type)


class ScenarioEvent(BaseModel):
    """A timed event and how far its impact spreads."""

    model_config = ConfigDict(extra="forbid")

    #: Simulation time at which it happens.
    at: float = Field(strict=True, ge=0)
    type: EventType
    #: Entity id (IRI), its label or its local name.
    target: str
    #: Factor, share or quantity the event applies (see :class:`EventType`).
    magnitude: float | None = Field(strict=True, default=None, ge=0, le=MAX_FIGURE)
    #: How long it lasts; ``None`` until the end of the run.
    duration: float | None = Field(strict=True, default=None, gt=0)
    #: Spread the same event to related entities: ``outgoing`` (source → target),
    #: ``incoming`` or ``both``; ``none`` (default) keeps it on the target, and the flow
    #: carries its consequences (orders upstream, shortages downstream).
    propagate: Literal["outgoing", "incoming", "both", "none"] = "none"
    #: Share of the effect that reaches each next hop (effect = magnitude - 1, scaled).
    multiplier: float = Field(strict=True, default=0.5, ge=0, le=1)
    #: Time each hop takes.
    delay: float = Field(strict=True, default=1.0, ge=0)
    #: Hops at most.
    max_hops: int = Field(strict=True, default=3, ge=0, le=20)

    @model_validator(mode="after")
    def _magnitude_fits(self) -> ScenarioEvent:
        value = self.magnitude
        if value is None and DEFAULT_MAGNITUDE[self.type] is None:
            raise ValueError(f"a {self.type.value} event needs a magnitude")
        if self.type is EventType.process_delay and value is not None and value <= 0:
            raise ValueError(
                "a process.delay multiplies processing time: its magnitude must be above 0"
            )
        if self.type in (EventType.policy_expedite, EventType.external_transport_delay) and (
            value is not None and value <= 0
        ):
            raise ValueError(f"a {self.type.value} multiplies lead time: magnitude above 0")
        if self.type is EventType.process_yield and value is not None and value > 1:
            raise ValueError("a process.yield is the good share of output: from 0 to 1")
        if value is not None and not math.isfinite(value):
            raise ValueError("magnitude must be finite")
        return self

    def effective_magnitude(self) -> float:
        """The magnitude given, else the type's default."""
        if self.magnitude is not None:
            return self.magnitude
        default = DEFAULT_MAGNITUDE[self.type]
        assert default is not None  # checked by the validator
        return default


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
    #: Time between two flow steps; default: the largest divisor of ``snapshot_interval``
    #: that is at most 1.
    step: float | None = Field(strict=True, default=None, gt=0)
    #: Time between two recorded states (a whole number of steps).
    snapshot_interval: float = Field(strict=True, default=1.0, gt=0)
    #: Utilisation at or above which an entity with a backlog is a bottleneck.
    bottleneck_threshold: float = Field(strict=True, default=0.9, gt=0)
    #: Random variation of external demand per step (standard deviation as a share).
    noise: float = Field(strict=True, default=0.0, ge=0, le=1)
    seed: int | None = Field(default=None, strict=True)
    events: list[ScenarioEvent] = Field(default_factory=list)
    created_at: str = ""

    @model_validator(mode="after")
    def _steps_bounded(self) -> Scenario:
        # Compared as multiplications: a tiny step or interval must not overflow a ratio.
        if self.snapshot_interval * 100_000 < self.duration:
            raise ValueError("duration / snapshot_interval must stay under 100,000 snapshots")
        if self.step is not None and self.step * 1_000_000 < max(
            self.duration, self.snapshot_interval
        ):
            raise ValueError(
                "duration / step and snapshot_interval / step must stay under 1,000,000 steps"
            )
        ratio = self.snapshot_interval / self.flow_step
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError("snapshot_interval must be a whole number of steps")
        return self

    @property
    def flow_step(self) -> float:
        """The step given, else the largest divisor of ``snapshot_interval`` up to 1."""
        if self.step is not None:
            return self.step
        return self.snapshot_interval / math.ceil(self.snapshot_interval - 1e-9)


class SimulationResult(BaseModel):
    """What a run produced. ``times`` and the series may be a sample of the run's
    snapshots (``resolution`` says how many the run recorded and how they were reduced)."""

    seed: int
    duration: float
    step: float = 1.0
    snapshot_interval: float
    #: Snapshot times.
    times: list[float]
    #: Entity id -> utilisation (work done / capacity) at each snapshot time.
    utilisation: dict[str, list[float]]
    #: Metric (``inventory``, ``backlog``, ``throughput``) -> entity id -> values.
    series: dict[str, dict[str, list[float]]] = Field(default_factory=dict)
    #: System totals per snapshot: ``demand``, ``delivered``, ``backlog``, ``inventory``,
    #: ``fill_rate``.
    system: dict[str, list[float]] = Field(default_factory=dict)
    metrics: dict[str, Any]
    #: Effects applied, in order: ``{time, entity, type, factor, hop, source_event}``.
    events: list[dict[str, Any]]
    #: Events and state changes in order (``{time, kind, entity, …}``).
    timeline: list[dict[str, Any]] = Field(default_factory=list)
    timeline_truncated: bool = False
    #: ``{snapshots, points, method}``: snapshots recorded, points kept per series, and
    #: ``full``, ``sampled`` or ``mean`` (bucket means).
    resolution: dict[str, Any] = Field(default_factory=dict)
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
    #: The what-if batch it belongs to, if any.
    batch_id: str | None = None
