"""Alert rules and fired alerts.

- ``POST/GET /api/v1/alerts/rules``, ``GET/PUT/DELETE /api/v1/alerts/rules/{rule_id}``:
  rules (kinds ``run_failed``, ``failure_rate``, ``backlog``, ``worker_lost``,
  ``schedule_missed``; see :mod:`mimir.core.runstore.alerts`); an invalid rule is a 422
  naming the field.
- ``GET /api/v1/alerts?state=firing|resolved&rule_id=&limit=`` lists fired alerts newest
  first; ``GET /api/v1/alerts/{alert_id}``; ``POST /api/v1/alerts/{alert_id}/ack``
  acknowledges one (who: ``token``, ``local`` or the client's address).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, HTTPException, Query, Request, status

from mimir.core.runstore.alerts import Alert, AlertStore, Rule, RuleIn
from mimir.server.deps import DbDep
from mimir.server.runs.audit import actor_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


T = TypeVar("T")


async def _db(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in a thread (an unreachable database: the 503 of server/errors.py)."""
    return await asyncio.to_thread(call, *args)


def _not_found(what: str, ident: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} {ident!r}")


@router.post("/rules", response_model=Rule, status_code=status.HTTP_201_CREATED)
async def create_rule(rule: Annotated[RuleIn, Body()], db: DbDep) -> Rule:
    """Add a rule; it is evaluated from the next tick (about a second)."""
    return await _db(AlertStore(db).create_rule, rule)


@router.get("/rules", response_model=list[Rule])
async def list_rules(db: DbDep) -> list[Rule]:
    return await _db(AlertStore(db).rules)


@router.get("/rules/{rule_id}", response_model=Rule)
async def get_rule(rule_id: str, db: DbDep) -> Rule:
    found = await _db(AlertStore(db).get_rule, rule_id)
    if found is None:
        raise _not_found("alert rule", rule_id)
    return found


@router.put("/rules/{rule_id}", response_model=Rule)
async def replace_rule(rule_id: str, rule: Annotated[RuleIn, Body()], db: DbDep) -> Rule:
    """Replace a rule (a firing alert of it stays open and is judged by the new rule)."""
    found = await _db(AlertStore(db).update_rule, rule_id, rule)
    if found is None:
        raise _not_found("alert rule", rule_id)
    return found


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(rule_id: str, db: DbDep) -> None:
    """Delete a rule; its firing alert, if any, is closed without a notification."""
    if not await _db(AlertStore(db).delete_rule, rule_id):
        raise _not_found("alert rule", rule_id)


@router.get("", response_model=list[Alert])
async def list_alerts(
    db: DbDep,
    state: Literal["firing", "resolved"] | None = None,
    rule_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Alert]:
    """Fired alerts, newest first."""
    return await _db(AlertStore(db).list, state, rule_id, limit)


@router.get("/{alert_id}", response_model=Alert)
async def get_alert(alert_id: str, db: DbDep) -> Alert:
    found = await _db(AlertStore(db).get, alert_id)
    if found is None:
        raise _not_found("alert", alert_id)
    return found


@router.post("/{alert_id}/ack", response_model=Alert)
async def ack_alert(alert_id: str, request: Request, db: DbDep) -> Alert:
    """Acknowledge an alert (recording who); it keeps firing until its condition clears."""
    who: Any = actor_of(request.scope)
    found = await _db(AlertStore(db).ack, alert_id, who)
    if found is None:
        raise _not_found("alert", alert_id)
    return found
