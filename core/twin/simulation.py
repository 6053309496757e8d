"""The discrete-event flow model of a twin (simpy), played through a scenario.

Goods (or work) flow along the twin's ``supplies`` relationships, from supplier to customer.
Each entity has a capacity (units per time unit), goods on hand, a lead time for its
shipments, a target stock and external demand. Time advances in steps of ``step``; in each
step, in this order:

1. what is due arrives: scenario effects, failures and repairs, shipments whose lead time
   has passed (simpy processes and a calendar of arrivals, due at or before the step);
2. **demand**: each entity's external demand for the step (x demand factors, x a seeded
   random variation when ``noise`` > 0) joins its backlog;
3. **orders**, customers before suppliers: an entity with suppliers orders up to its
   target stock + this step's work (``min(backlog, capacity x step)``) + its expected work
   rate x the inbound lead time (the pipeline), less its inventory position (on hand + in
   transit + on order). The expected rate starts at the plan (external demand passed
   upstream within capacities) and follows ``min(backlog / step, capacity)`` by
   exponential smoothing (weight 0.25), so orders do not ring. With ``inputs: any`` the
   order is split among the suppliers by their capacity now (a stopped supplier gets
   none); with ``all`` each supplier is asked for every unit. Orders join the supplier's
   backlog: unmet demand travels upstream as orders;
4. **work and shipments**, suppliers before customers: an entity processes
   ``min(capacity x step, inputs on hand, backlog / yield)`` (a source, with no suppliers,
   is limited by its capacity only), ships the good share to its backlog's customers in
   proportion to what each is owed (no more than a customer's buffer has room for), and
   keeps the rest of the backlog: shortages travel downstream as missing deliveries.
   A shipment with no lead time arrives at once (its customer can use it this step).

Capacity now = capacity x capacity factors / processing-time factors, and 0 while the
entity is failed, unavailable or out, or while anything it ``depends_on`` is. Random failures
(``mtbf``/``mttr``, exponential, drawn from a generator seeded by the run's seed and the
entity's id) stop and restart it.

Each snapshot (``0, snapshot_interval, …, duration``) records per entity the utilisation
(work done / capacity over the interval), goods on hand, backlog and throughput (good
units shipped per time unit), and the system's totals. An entity is a **bottleneck** in a
step when its utilisation is at or above ``bottleneck_threshold`` and it still has a
backlog; **starved** when it has a backlog, capacity to spare and no inputs; **down** when
its capacity is 0 with a backlog.

Scenario events apply at their ``at`` time (see :class:`EventType`), for ``duration``;
``propagate`` spreads the same event to related entities ``k`` hops away after
``k x delay``, scaled by ``multiplier ** k``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Generator
from typing import Any

import simpy
from simpy.core import URGENT

from mimir.core.limits import default_limits
from mimir.core.twin.models import (
    EventType,
    Scenario,
    ScenarioEvent,
    SimulationResult,
    Twin,
)

__all__ = [
    "MAX_RESULT_VALUES",
    "MAX_TIMELINE",
    "TwinError",
    "bounded",
    "check_size",
    "resolve_target",
    "result_points",
    "simulate",
]

#: Most timeline entries a run keeps (the rest are counted, not kept).
MAX_TIMELINE = 100_000


class TwinError(ValueError):
    """A scenario does not fit its twin (unknown target entity …)."""


#: How each event type changes its target: (kind, how). ``factor`` kinds multiply,
#: ``set`` replaces, ``once`` adds an order at the event time.
_EFFECT: dict[EventType, tuple[str, str]] = {
    EventType.resource_unavailable: ("capacity", "factor"),
    EventType.resource_capacity_change: ("capacity", "factor"),
    EventType.demand_surge: ("demand", "factor"),
    EventType.demand_drop: ("demand", "factor"),
    EventType.demand_order: ("order", "once"),
    EventType.process_delay: ("time", "factor"),
    EventType.process_failure: ("capacity", "factor"),
    EventType.process_yield: ("yield", "factor"),
    EventType.policy_target_stock: ("target_stock", "set"),
    EventType.policy_expedite: ("lead", "factor"),
    EventType.external_transport_delay: ("lead", "factor"),
    EventType.external_outage: ("capacity", "factor"),
}
_KINDS = ("capacity", "demand", "time", "yield", "lead", "target_stock")
_EPS = 1e-9
#: Weight of the newest step in an entity's expected work rate (exponential smoothing).
_SMOOTHING = 0.25


def _local(iri: str) -> str:
    for sep in ("#", "/", ":"):
        if sep in iri:
            iri = iri.rsplit(sep, 1)[-1] or iri
    return iri


def resolve_target(twin: Twin, target: str) -> str:
    """The id of the entity named ``target`` (its id, label or local name)."""
    by_id = twin.entity_index()
    if target in by_id:
        return target
    for entity in twin.entities:
        if target in (entity.label, _local(entity.id)):
            return entity.id
    raise TwinError(f"scenario event targets {target!r}, which is not an entity of the twin")


def _urgent_timeout(env: simpy.Environment, delay: float) -> simpy.Event:
    """A timeout that fires before ordinary ones due at the same time (effects before
    the step that follows them)."""
    event = env.event()
    event._ok = True
    event._value = None
    env.schedule(event, URGENT, delay)
    return event


def _topological(n: int, suppliers: list[list[int]], customers: list[list[int]]) -> list[int]:
    """Entities with every supplier before its customers (Kahn); in a cycle, the rest in
    index order (what arrives after an entity's turn waits for the next step)."""
    indegree = [len(s) for s in suppliers]
    ready = [i for i in range(n) if indegree[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    placed = [False] * n
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        placed[i] = True
        for c in customers[i]:
            indegree[c] -= 1
            if indegree[c] == 0:
                heapq.heappush(ready, c)
    order.extend(i for i in range(n) if not placed[i])
    return order


class _Flow:
    """One run: the state of every entity, indexed by position in the twin."""

    def __init__(self, twin: Twin, scenario: Scenario, seed: int) -> None:
        self.twin = twin
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(seed)
        self.env = simpy.Environment()
        self.dt = scenario.flow_step
        self.threshold = scenario.bottleneck_threshold
        ents = twin.entities
        self.ids = [e.id for e in ents]
        self.index = {e: i for i, e in enumerate(self.ids)}
        n = self.n = len(ents)
        self.entities = ents
        self.suppliers: list[list[int]] = [[] for _ in range(n)]
        self.customers: list[list[int]] = [[] for _ in range(n)]
        self.depends: list[list[int]] = [[] for _ in range(n)]
        self.outgoing: list[list[int]] = [[] for _ in range(n)]
        self.incoming: list[list[int]] = [[] for _ in range(n)]
        for rel in twin.relationships:
            a, b = self.index.get(rel.source), self.index.get(rel.target)
            if a is None or b is None or a == b:
                continue
            self.outgoing[a].append(b)
            self.incoming[b].append(a)
            role = twin.role_of(rel)
            if role == "supplies" and b not in self.customers[a]:
                self.customers[a].append(b)
                self.suppliers[b].append(a)
            elif role == "supplied_by" and a not in self.customers[b]:
                self.customers[b].append(a)
                self.suppliers[a].append(b)
            elif role == "depends_on" and b not in self.depends[a]:
                self.depends[a].append(b)
        self.order_up = _topological(n, self.suppliers, self.customers)
        #: Whether any of an entity's customers has a buffer (its room bounds shipments).
        self.buffered = [
            any(ents[c].buffer is not None for c in self.customers[i]) for i in range(n)
        ]
        self.order_down = self.order_up[::-1]
        # Factors by kind: entity -> {effect id: value}; target stock overrides (last wins).
        self.effects: dict[str, list[dict[int, float]]] = {
            k: [{} for _ in range(n)] for k in _KINDS
        }
        #: The product of each kind's factors, per entity (kept as effects come and go).
        self.fac: dict[str, list[float]] = {k: [1.0] * n for k in _KINDS}
        self.failed = [False] * n
        # Stock: ``any`` -> one pool at index 0; ``all`` -> one pool per supplier.
        self.assembly = [
            e.inputs == "all" and len(self.suppliers[i]) > 1 for i, e in enumerate(ents)
        ]
        self.on_hand: list[dict[int, float]] = []
        for i, e in enumerate(ents):
            keys = self.suppliers[i] if self.assembly[i] else [-1]
            self.on_hand.append(dict.fromkeys(keys, e.inventory))
        self.in_transit: list[dict[int, float]] = [
            dict.fromkeys(self.suppliers[i] if self.assembly[i] else [-1], 0.0) for i in range(n)
        ]
        # What entity i owes: customer index (or -1: external) -> units.
        self.backlog: list[dict[int, float]] = [{} for _ in range(n)]
        #: Units newly asked of each entity in the current step (demand and orders).
        self.asked = [0.0] * n
        #: Each entity's expected work rate (smoothed), for the pipeline it orders; it
        #: starts at the plan: external demand passed upstream, within capacities.
        self.expected: list[float | None] = list(self._plan())
        self.arrivals: list[tuple[float, int, int, int, float]] = []  # (t, seq, to, key, qty)
        self._seq = itertools.count()
        # Observations.
        self.log: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self.timeline_dropped = 0
        self.affected: set[int] = set()
        self.events_processed = 0
        self._next_effect = itertools.count()
        self.state = [
            dict.fromkeys(("bottleneck", "starved", "down", "backlog"), False) for _ in range(n)
        ]
        zeros = [0.0] * n
        self.total = {
            name: zeros[:]
            for name in (
                "demand",
                "delivered",
                "processed",
                "shipped",
                "scrap",
                "work",
                "capacity",
                "t_bottleneck",
                "t_starved",
                "t_down",
                "inventory_time",
                "peak_backlog",
            )
        }
        self.peak_util = zeros[:]
        self.ticks = 0
        # Interval accumulators (reset at each snapshot).
        self._work = zeros[:]
        self._cap = zeros[:]
        self._shipped = zeros[:]
        self._sys_demand = 0.0
        self._sys_delivered = 0.0
        self.times: list[float] = []
        self.util: list[list[float]] = [[] for _ in range(n)]
        self.inv: list[list[float]] = [[] for _ in range(n)]
        self.back: list[list[float]] = [[] for _ in range(n)]
        self.thru: list[list[float]] = [[] for _ in range(n)]
        self.system: dict[str, list[float]] = {
            k: [] for k in ("demand", "delivered", "backlog", "inventory", "fill_rate")
        }
        self.changes: list[float] = []
        self.prev_util = zeros[:]

    def _plan(self) -> list[float]:
        """Work per time unit each entity must do to meet external demand at the start
        (customers before suppliers; an ``any`` order split by the suppliers' capacity)."""
        rate = [e.demand for e in self.entities]
        for i in self.order_down:
            base = self.entities[i].capacity
            rate[i] = min(rate[i], base) if base is not None else rate[i]
            sup = self.suppliers[i]
            if not sup:
                continue
            if self.assembly[i]:
                for s in sup:
                    rate[s] += rate[i]
                continue
            caps = [self.entities[s].capacity for s in sup]
            shares = [1.0 if c is None else c for c in caps]
            total = sum(shares) or float(len(sup))
            for s, share in zip(sup, shares, strict=True):
                rate[s] += rate[i] * (share / total if sum(shares) else 1.0 / len(sup))
        return rate

    # -- observations ------------------------------------------------------------------

    def note(self, kind: str, entity: int | None, **detail: Any) -> None:
        if len(self.timeline) >= MAX_TIMELINE:
            self.timeline_dropped += 1
            return
        entry: dict[str, Any] = {"time": round(self.env.now, 9), "kind": kind}
        if entity is not None:
            entry["entity"] = self.ids[entity]
        entry.update(detail)
        self.timeline.append(entry)

    # -- factors -----------------------------------------------------------------------

    def factor(self, kind: str, i: int) -> float:
        return self.fac[kind][i]

    def _refresh(self, kind: str, i: int) -> None:
        """Recompute an entity's product of ``kind`` factors after an effect came or went."""
        values = self.effects[kind][i]
        self.fac[kind][i] = math.prod(values.values()) if values else 1.0

    def target_stock(self, i: int) -> float:
        values = self.effects["target_stock"][i]
        if values:
            return values[max(values)]  # the newest effect wins
        return self.entities[i].target_stock

    def stopped(self, i: int) -> bool:
        """Failed, at capacity factor 0, or depending (at any depth) on something that is."""
        fac = self.fac["capacity"]
        if self.failed[i] or fac[i] == 0:
            return True
        if not self.depends[i]:
            return False
        seen = {i}
        todo = list(self.depends[i])
        while todo:  # a walk, not a recursion: chains of dependencies may be long
            d = todo.pop()
            if d in seen:
                continue
            if self.failed[d] or fac[d] == 0:
                return True
            seen.add(d)
            todo.extend(self.depends[d])
        return False

    def capacity_now(self, i: int) -> float:
        """Work per time unit the entity can do now (``inf``: unbounded)."""
        if self.stopped(i):
            return 0.0
        base = self.entities[i].capacity
        if base is None:
            return math.inf
        return base * self.factor("capacity", i) / self.factor("time", i)

    def lead(self, i: int) -> float:
        return self.entities[i].lead_time * self.factor("lead", i)

    # -- scenario events ---------------------------------------------------------------

    def _neighbours(self, entity: int, direction: str) -> list[int]:
        if direction == "outgoing":
            return self.outgoing[entity]
        if direction == "incoming":
            return self.incoming[entity]
        if direction == "both":
            return self.outgoing[entity] + self.incoming[entity]
        return []

    def _hops(self, start: int, event: ScenarioEvent) -> list[tuple[int, int]]:
        """Entities the event reaches and their (shortest) hop count, breadth first."""
        seen = {start: 0}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if seen[node] >= event.max_hops:
                continue
            for nxt in self._neighbours(node, event.propagate):
                if nxt not in seen:
                    seen[nxt] = seen[node] + 1
                    queue.append(nxt)
        return sorted(seen.items(), key=lambda item: (item[1], item[0]))

    def _effect(
        self, i: int, event: ScenarioEvent, value: float, wait: float, record: dict[str, Any]
    ) -> Generator[simpy.Event, None, None]:
        yield _urgent_timeout(self.env, wait)
        kind, how = _EFFECT[event.type]
        self.affected.add(i)
        self.log.append({"time": round(self.env.now, 9), **record})
        self.note("event", i, **{k: v for k, v in record.items() if k != "entity"})
        if how == "once":
            if value > 0:
                self.backlog[i][-1] = self.backlog[i].get(-1, 0.0) + value
                self.total["demand"][i] += value
                self._sys_demand += value
            return
        effect_id = next(self._next_effect)
        self.effects[kind][i][effect_id] = value
        self._refresh(kind, i)
        if event.duration is not None:
            yield _urgent_timeout(self.env, event.duration)
            del self.effects[kind][i][effect_id]
            self._refresh(kind, i)
            self.log.append({"time": round(self.env.now, 9), **record, "ended": True})
            self.note("event_end", i, **{k: v for k, v in record.items() if k != "entity"})

    def _scenario_event(
        self, index: int, event: ScenarioEvent
    ) -> Generator[simpy.Event, None, None]:
        yield _urgent_timeout(self.env, event.at)
        self.events_processed += 1
        target = self.index[resolve_target(self.twin, event.target)]
        magnitude = event.effective_magnitude()
        _, how = _EFFECT[event.type]
        for entity, hop in self._hops(target, event):
            scale = event.multiplier**hop
            value = 1.0 + (magnitude - 1.0) * scale if how == "factor" else magnitude * scale
            record = {
                "entity": self.ids[entity],
                "type": event.type.value,
                "factor": round(value, 6),
                "hop": hop,
                "source_event": index,
            }
            self.env.process(self._effect(entity, event, value, hop * event.delay, record))

    def _failures(self, i: int) -> Generator[simpy.Event, None, None]:
        entity = self.entities[i]
        assert entity.mtbf is not None and entity.mttr is not None
        rng = random.Random(f"{self.seed}:{entity.id}")
        while True:
            yield _urgent_timeout(self.env, rng.expovariate(1.0 / entity.mtbf))
            self.failed[i] = True
            self.note("failure", i)
            yield _urgent_timeout(self.env, rng.expovariate(1.0 / entity.mttr))
            self.failed[i] = False
            self.note("repair", i)

    # -- one step ----------------------------------------------------------------------

    def _arrive(self, now: float) -> None:
        while self.arrivals and self.arrivals[0][0] <= now + _EPS:
            _, _, to, key, qty = heapq.heappop(self.arrivals)
            self.in_transit[to][key] -= qty
            self.on_hand[to][key] += qty

    def _demand(self) -> None:
        noise = self.scenario.noise
        for i, entity in enumerate(self.entities):
            if entity.demand <= 0:
                continue
            amount = entity.demand * self.factor("demand", i) * self.dt
            if noise > 0:
                amount *= max(0.0, self.rng.gauss(1.0, noise))
            if amount > 0:
                self.backlog[i][-1] = self.backlog[i].get(-1, 0.0) + amount
                self.asked[i] += amount
                self.total["demand"][i] += amount
                self._sys_demand += amount

    def _orders(self, caps: list[float]) -> None:
        dt = self.dt
        asked = self.asked
        leads = [e.lead_time * f for e, f in zip(self.entities, self.fac["lead"], strict=True)]
        for i in self.order_down:
            sup = self.suppliers[i]
            if not sup:
                continue
            cap = caps[i]
            owed = sum(self.backlog[i].values())
            work = min(owed, cap * dt)
            # Order up to the target stock, this step's work and what the pipeline needs
            # over the inbound lead time at the expected rate: the rate it is asked for work
            # (no faster than it can work), smoothed so that orders do not ring.
            rate = min(owed / dt, cap)
            expected = self.expected[i]
            expected = rate if expected is None else expected + _SMOOTHING * (rate - expected)
            self.expected[i] = expected
            wanted = self.target_stock(i) + expected * max(leads[s] for s in sup) + work
            if self.assembly[i]:
                for s in sup:
                    position = (
                        self.on_hand[i][s] + self.in_transit[i][s] + self.backlog[s].get(i, 0.0)
                    )
                    if (order := wanted - position) > _EPS:
                        self.backlog[s][i] = self.backlog[s].get(i, 0.0) + order
                        asked[s] += order
                continue
            position = self.on_hand[i][-1] + self.in_transit[i][-1]
            position += sum(self.backlog[s].get(i, 0.0) for s in sup)
            order = wanted - position
            if order <= _EPS:
                continue
            shares = [caps[s] for s in sup]
            if any(math.isinf(x) for x in shares):
                shares = [1.0 if math.isinf(x) else 0.0 for x in shares]
            total = sum(shares)
            if total <= 0:  # every supplier stopped: the order waits at each in equal parts
                shares, total = [1.0] * len(sup), float(len(sup))
            for s, share in zip(sup, shares, strict=True):
                if share > 0:
                    part = order * share / total
                    self.backlog[s][i] = self.backlog[s].get(i, 0.0) + part
                    asked[s] += part

    def _room(self, c: int) -> float:
        buffer = self.entities[c].buffer
        if buffer is None:
            return math.inf
        held = sum(self.on_hand[c].values()) + sum(self.in_transit[c].values())
        return max(0.0, buffer - held)

    def _allocate(self, i: int, good: float) -> dict[int, float]:
        """Good units to each customer owed, in proportion to what each is owed, no more
        than it is owed or has room for (what one cannot take goes to the others)."""
        owed = {c: q for c, q in self.backlog[i].items() if q > _EPS}
        if not self.buffered[i]:  # nobody's room to mind: shares of what is owed
            total = sum(owed.values())
            if good >= total - _EPS:
                return owed
            return {c: q * good / total for c, q in owed.items()}
        limit = {c: min(q, self._room(c)) if c >= 0 else q for c, q in owed.items()}
        give = dict.fromkeys(owed, 0.0)
        left = good
        open_ = [c for c in owed if limit[c] > _EPS]
        while left > _EPS and open_:
            weight = sum(owed[c] for c in open_)
            capped = []
            for c in open_:
                share = left * owed[c] / weight
                if give[c] + share >= limit[c] - _EPS:
                    capped.append(c)
            if not capped:
                for c in open_:
                    give[c] += left * owed[c] / weight
                left = 0.0
                break
            for c in capped:
                left -= limit[c] - give[c]
                give[c] = limit[c]
            open_ = [c for c in open_ if c not in capped]
        return give

    def _work_and_ship(self, caps: list[float], now: float) -> None:
        dt = self.dt
        for i in self.order_up:
            cap = caps[i]
            budget = cap * dt
            owed = sum(self.backlog[i].values())
            y = self.factor("yield", i)
            if self.suppliers[i]:
                stock = self.on_hand[i]
                available = min(stock.values()) if self.assembly[i] else stock[-1]
            else:
                available = math.inf
            need = owed / y if y > 0 else (math.inf if owed > _EPS else 0.0)
            if self.buffered[i] and y > 0:
                # Customers' buffers bound what can be shipped to them (not the external one).
                give_limit = sum(
                    min(q, self._room(c)) if c >= 0 else q for c, q in self.backlog[i].items()
                )
                need = min(need, give_limit / y)
            work = max(0.0, min(budget, available, need))
            if work > _EPS:
                for key in self.on_hand[i] if self.suppliers[i] else ():
                    self.on_hand[i][key] -= work
                good = work * y
                self.total["scrap"][i] += work - good
                give = self._allocate(i, good)
                lead = self.lead(i)
                shipped = 0.0
                for c, qty in give.items():
                    if qty <= _EPS:
                        continue
                    shipped += qty
                    left = self.backlog[i][c] - qty
                    if left > _EPS:
                        self.backlog[i][c] = left
                    else:
                        del self.backlog[i][c]
                    if c < 0:
                        self.total["delivered"][i] += qty
                        self._sys_delivered += qty
                        continue
                    key = i if self.assembly[c] else -1
                    if lead <= _EPS:
                        self.on_hand[c][key] += qty
                    else:
                        self.in_transit[c][key] += qty
                        heapq.heappush(self.arrivals, (now + lead, next(self._seq), c, key, qty))
                self.total["processed"][i] += work
                self.total["shipped"][i] += shipped
                self._shipped[i] += shipped
            else:
                work = 0.0
            self._work[i] += work
            if math.isfinite(budget):
                self._cap[i] += budget
                self.total["work"][i] += work
                self.total["capacity"][i] += budget
                u = work / budget if budget > 0 else (1.0 if owed > _EPS else 0.0)
            else:
                u = 0.0
            self.peak_util[i] = max(self.peak_util[i], u)
            left_owed = sum(self.backlog[i].values())
            has_backlog = left_owed > _EPS
            self.total["peak_backlog"][i] = max(self.total["peak_backlog"][i], left_owed)
            down = cap <= 0 and has_backlog
            # Held back by its inputs (it used all it had), or by its own capacity.
            short_of_inputs = (
                bool(self.suppliers[i]) and work < budget - _EPS and available <= work + _EPS
            )
            starved = has_backlog and not down and short_of_inputs
            bottleneck = (
                has_backlog and not down and not short_of_inputs and u >= self.threshold - _EPS
            )
            for name, value in (("bottleneck", bottleneck), ("starved", starved), ("down", down)):
                if value:
                    self.total["t_" + name][i] += dt
                if value != self.state[i][name]:
                    self.state[i][name] = value
                    self.note(name if value else name + "_end", i)
            external = self.backlog[i].get(-1, 0.0) > _EPS
            if external != self.state[i]["backlog"]:
                self.state[i]["backlog"] = external
                self.note("backlog" if external else "backlog_cleared", i)
            self.total["inventory_time"][i] += sum(self.on_hand[i].values()) * dt

    def _snapshot(self, interval: float) -> None:
        self.times.append(round(self.env.now, 9))
        inventory = 0.0
        backlog = 0.0
        for i in range(self.n):
            cap = self._cap[i]
            u = self._work[i] / cap if cap > 0 else 0.0
            if cap == 0 and self._work[i] == 0 and self.state[i]["down"]:
                u = 1.0 if interval > 0 else 0.0
            u = round(min(1.0, u), 6)
            if interval > 0:
                self.changes.append(abs(u - self.prev_util[i]))
            self.prev_util[i] = u
            self.util[i].append(u)
            stock = sum(self.on_hand[i].values())
            inventory += stock
            backlog += self.backlog[i].get(-1, 0.0)
            self.inv[i].append(round(stock, 6))
            self.back[i].append(round(sum(self.backlog[i].values()), 6))
            self.thru[i].append(round(self._shipped[i] / interval, 6) if interval > 0 else 0.0)
            self._work[i] = self._cap[i] = self._shipped[i] = 0.0
        system = self.system
        system["demand"].append(round(self._sys_demand / interval, 6) if interval > 0 else 0.0)
        system["delivered"].append(
            round(self._sys_delivered / interval, 6) if interval > 0 else 0.0
        )
        system["backlog"].append(round(backlog, 6))
        system["inventory"].append(round(inventory, 6))
        demanded = sum(self.total["demand"])
        delivered = sum(self.total["delivered"])
        system["fill_rate"].append(round(delivered / demanded, 6) if demanded > 0 else 1.0)
        self._sys_demand = self._sys_delivered = 0.0

    def _clock(self) -> Generator[simpy.Event, None, None]:
        dt = self.dt
        steps = max(1, round(self.scenario.duration / dt))
        per_snapshot = max(1, round(self.scenario.snapshot_interval / dt))
        self._snapshot(0.0)
        yield self.env.timeout(0)  # effects due at 0 (urgent) come before the first step
        for step in range(steps):
            now = self.env.now
            self._arrive(now)
            caps = [self.capacity_now(i) for i in range(self.n)]
            self.asked = [0.0] * self.n
            self._demand()
            self._orders(caps)
            self._work_and_ship(caps, now)
            self.ticks += 1
            yield self.env.timeout(dt)
            if (step + 1) % per_snapshot == 0 or step + 1 == steps:
                done = (step + 1) % per_snapshot or per_snapshot
                self._snapshot(done * dt)

    def run(self) -> None:
        for event in self.scenario.events:
            resolve_target(self.twin, event.target)  # fail before running, not midway
        for index, event in enumerate(self.scenario.events):
            if event.at < self.scenario.duration:
                self.env.process(self._scenario_event(index, event))
        for i, entity in enumerate(self.entities):
            if entity.mtbf is not None:
                self.env.process(self._failures(i))
        self.env.process(self._clock())
        self.env.run(until=self.scenario.duration + _EPS)

    # -- results -----------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        duration = self.scenario.duration
        total = self.total
        per_entity: dict[str, dict[str, Any]] = {}
        bottlenecks: list[dict[str, Any]] = []
        for i, eid in enumerate(self.ids):
            e = self.entities[i]
            cap = total["capacity"][i]
            demanded = total["demand"][i]
            stats: dict[str, Any] = {
                "label": e.label or _local(eid),
                "type": e.type,
                "avg_utilisation": round(total["work"][i] / cap, 6) if cap > 0 else 0.0,
                "peak_utilisation": round(self.peak_util[i], 6),
                "throughput": round(total["shipped"][i] / duration, 6),
                "processed": round(total["processed"][i], 6),
                "scrap": round(total["scrap"][i], 6),
                "demand": round(demanded, 6),
                "delivered": round(total["delivered"][i], 6),
                "fill_rate": round(total["delivered"][i] / demanded, 6) if demanded > 0 else None,
                "backlog": round(sum(self.backlog[i].values()), 6),
                "peak_backlog": round(total["peak_backlog"][i], 6),
                "unmet_demand": round(self.backlog[i].get(-1, 0.0), 6),
                "inventory": round(sum(self.on_hand[i].values()), 6),
                "avg_inventory": round(total["inventory_time"][i] / duration, 6),
                "time_bottleneck": round(total["t_bottleneck"][i], 6),
                "time_starved": round(total["t_starved"][i], 6),
                "time_down": round(total["t_down"][i], 6),
            }
            per_entity[eid] = stats
            if stats["time_bottleneck"] > 0:
                first = next(
                    (
                        t["time"]
                        for t in self.timeline
                        if t["kind"] == "bottleneck" and t.get("entity") == eid
                    ),
                    None,
                )
                bottlenecks.append(
                    {
                        "entity": eid,
                        "label": stats["label"],
                        "type": e.type,
                        "peak_utilisation": stats["peak_utilisation"],
                        "first_over_at": first,
                        "time_over_threshold": stats["time_bottleneck"],
                        "peak_backlog": stats["peak_backlog"],
                    }
                )
        bottlenecks.sort(key=lambda b: (-b["time_over_threshold"], -b["peak_backlog"], b["entity"]))
        demanded = sum(total["demand"])
        delivered = sum(total["delivered"])
        entity_time = self.n * duration or 1.0
        over = sum(total["t_bottleneck"]) / entity_time
        volatility = sum(self.changes) / len(self.changes) if self.changes else 0.0
        utilisations = [per_entity[e]["avg_utilisation"] for e in self.ids]
        peak_entity = max(self.ids, key=lambda x: per_entity[x]["peak_utilisation"], default=None)
        return {
            "events_processed": self.events_processed,
            "effects_applied": sum(1 for entry in self.log if not entry.get("ended")),
            "entities": self.n,
            "entities_affected": len(self.affected),
            "steps": self.ticks,
            "demand": round(demanded, 6),
            "delivered": round(delivered, 6),
            "fill_rate": round(delivered / demanded, 6) if demanded > 0 else None,
            "throughput": round(delivered / duration, 6),
            "backlog": round(sum(self.backlog[i].get(-1, 0.0) for i in range(self.n)), 6),
            "peak_backlog": round(max(self.system["backlog"], default=0.0), 6),
            "unmet_demand": round(sum(self.backlog[i].get(-1, 0.0) for i in range(self.n)), 6),
            "inventory": round(sum(sum(s.values()) for s in self.on_hand), 6),
            "in_transit": round(sum(sum(s.values()) for s in self.in_transit), 6),
            "avg_utilisation": round(sum(utilisations) / len(utilisations), 6)
            if utilisations
            else 0.0,
            "peak_utilisation": round(max(self.peak_util, default=0.0), 6),
            "peak_entity": peak_entity,
            "bottleneck_threshold": self.threshold,
            "bottlenecks": bottlenecks,
            "failures": sum(1 for t in self.timeline if t["kind"] == "failure"),
            "stability_score": round(max(0.0, min(1.0, 1.0 - over - 0.5 * volatility)), 6),
            "per_entity": per_entity,
        }


def _reduce(values: list[float], picks: list[tuple[int, int]], mean: bool) -> list[float]:
    """A value per ``(start, end)`` bucket: its last (a level) or its mean (a rate)."""
    if not mean:
        return [values[b - 1] for _, b in picks]
    return [round(sum(values[a:b]) / (b - a), 6) for a, b in picks]


def bounded(result: SimulationResult, points: int) -> SimulationResult:
    """``result`` with at most ``points`` snapshots per series: the last snapshot of each
    of ``points`` equal buckets for levels (inventory, backlog), the bucket's mean for rates
    (utilisation, throughput, system demand and deliveries). The first and last snapshot
    times are kept. ``resolution`` says what was done."""
    count = len(result.times)
    snapshots = int(result.resolution.get("snapshots", count))
    if points >= count or count <= 2:
        return result.model_copy(
            update={
                "resolution": {
                    "snapshots": snapshots,
                    "points": count,
                    "method": result.resolution.get("method", "full"),
                }
            }
        )
    points = max(2, points)
    # Point 0 is snapshot 0; the others end equal buckets of snapshots 1 .. count - 1.
    span = count - 1
    picks = [(0, 1)] + [
        (1 + (k - 1) * span // (points - 1), 1 + k * span // (points - 1)) for k in range(1, points)
    ]
    times = [result.times[b - 1] for _, b in picks]
    rates = {"throughput"}
    series = {
        metric: {e: _reduce(v, picks, metric in rates) for e, v in by_entity.items()}
        for metric, by_entity in result.series.items()
    }
    system = {
        name: _reduce(v, picks, name in ("demand", "delivered"))
        for name, v in result.system.items()
    }
    return result.model_copy(
        update={
            "times": times,
            "utilisation": {e: _reduce(v, picks, True) for e, v in result.utilisation.items()},
            "series": series,
            "system": system,
            "resolution": {"snapshots": snapshots, "points": len(times), "method": "mean"},
        }
    )


def check_size(twin: Twin, scenario: Scenario) -> None:
    """:class:`TwinError` when a run of ``scenario`` on ``twin`` would take more entity-steps
    or record more entity-snapshots than the limits allow (``MIMIR_TWIN_MAX_STEPS``,
    ``MIMIR_TWIN_MAX_SNAPSHOTS``)."""
    limits = default_limits()
    entities = len(twin.entities)
    steps = entities * max(1, round(scenario.duration / scenario.flow_step))
    if steps > limits.twin_max_steps:
        raise TwinError(
            f"this run would take {steps:,} entity-steps ({entities:,} entities), over the "
            f"limit of {limits.twin_max_steps:,} (MIMIR_TWIN_MAX_STEPS): shorten the "
            "scenario or make its step longer"
        )
    snapshots = entities * (1 + math.floor(scenario.duration / scenario.snapshot_interval))
    if snapshots > limits.twin_max_snapshots:
        raise TwinError(
            f"this run would record {snapshots:,} entity-snapshots, over the limit of "
            f"{limits.twin_max_snapshots:,} (MIMIR_TWIN_MAX_SNAPSHOTS): make "
            "snapshot_interval longer"
        )


#: Most values (entities x points x per-entity series) one bounded result carries.
MAX_RESULT_VALUES = 100_000


def result_points(requested: int, entities: int) -> int:
    """Points per series for a bounded result of a run over ``entities``: what was asked,
    no more than keeps the result under :data:`MAX_RESULT_VALUES` values, at least 2."""
    per_entity = 4 * max(1, entities)  # utilisation, inventory, backlog, throughput
    return max(2, min(requested, MAX_RESULT_VALUES // per_entity))


def simulate(twin: Twin, scenario: Scenario, seed: int | None = None) -> SimulationResult:
    """Play ``scenario`` on ``twin``; the same seed gives the same result."""
    if not twin.entities:
        raise TwinError(f"twin {twin.name!r} has no entities to simulate")
    check_size(twin, scenario)
    if seed is None:
        seed = (
            scenario.seed if scenario.seed is not None else random.SystemRandom().randrange(2**31)
        )
    started = time.perf_counter()
    flow = _Flow(twin, scenario, seed)
    flow.run()
    ids = flow.ids
    timeline = flow.timeline
    return SimulationResult(
        seed=seed,
        duration=scenario.duration,
        step=flow.dt,
        snapshot_interval=scenario.snapshot_interval,
        times=flow.times,
        utilisation=dict(zip(ids, flow.util, strict=True)),
        series={
            "inventory": dict(zip(ids, flow.inv, strict=True)),
            "backlog": dict(zip(ids, flow.back, strict=True)),
            "throughput": dict(zip(ids, flow.thru, strict=True)),
        },
        system=flow.system,
        metrics=flow.metrics(),
        events=flow.log,
        timeline=timeline,
        timeline_truncated=flow.timeline_dropped > 0,
        resolution={"snapshots": len(flow.times), "points": len(flow.times), "method": "full"},
        elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
    )
