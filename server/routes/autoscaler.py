"""The autoscaler and the pools: ``GET /api/v1/autoscaler``, ``PUT
/api/v1/autoscaler/pools/{pool}``, ``GET /api/v1/pools`` (see :mod:`mimir.server.autoscaler`).

A policy written with ``PUT`` is stored in Redis: every server shows it and the acting
one uses it from its next evaluation. The body is a whole policy (its fields' defaults
for those left out) and, optionally, the pool's ``min`` and ``max`` (left out:
unchanged; ``max: null``: as many as the cluster allows). An unknown pool is a 404
(``detail``: ``[{field: pool, message}]``, the message naming the cluster's pools); an
invalid policy a 422 naming its field (``max`` below ``min``, ``target_backlog`` not
above 0 ...).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from mimir.core.pools import AutoscalePolicy, PoolSpec, default_cluster
from mimir.core.queue.client import redis_errors
from mimir.server.autoscaler import Autoscaler, AutoscalerView, PoolList, PoolView
from mimir.server.deps import RedisDep
from mimir.server.errors import error_response

__all__ = ["PolicyBody", "router"]

router = APIRouter(tags=["autoscaler"])


async def get_autoscaler(request: Request, redis: RedisDep) -> Autoscaler:
    """The server's autoscaler (made by the lifespan; one of this request's own without)."""
    autoscaler: Autoscaler | None = getattr(request.app.state, "autoscaler", None)
    if autoscaler is None:
        autoscaler = Autoscaler(request.app.state.settings, redis)
    return autoscaler


AutoscalerDep = Annotated[Autoscaler, Depends(get_autoscaler)]


class PolicyBody(AutoscalePolicy):
    """A pool's autoscaling policy, and optionally its replica bounds."""

    min: int | None = Field(None, ge=0, le=1000)
    max: int | None = Field(None, ge=0, le=1000)


def _invalid(field: str, message: str) -> JSONResponse:
    return error_response(
        422, f"invalid request: {field}: {message}", [{"field": field, "message": message}]
    )


@router.get("/api/v1/autoscaler", response_model=AutoscalerView)
async def autoscaler_state(autoscaler: AutoscalerDep) -> AutoscalerView:
    """Whether autoscaling is on (and why not), which server acts (its lease), each pool's
    policy, replicas and figures, and the latest decisions (newest first)."""
    async with redis_errors("read the autoscaler"):
        return await autoscaler.view()


@router.put(
    "/api/v1/autoscaler/pools/{pool}",
    response_model=PoolView,
    responses={
        404: {"description": "No such pool (`detail`: the field `pool` and the known pools)."},
        422: {"description": "Invalid policy: `detail` names the field."},
    },
)
async def put_policy(pool: str, body: PolicyBody, autoscaler: AutoscalerDep) -> Any:
    """Replace the autoscaling policy (and ``min``/``max``) of a pool."""
    async with redis_errors("change the pool's policy"):
        pools = await autoscaler.pools()
        current = pools.get(pool)
        if current is None:
            known = ", ".join(pools) or "none"
            message = f"unknown pool {pool!r}; this cluster has {known}"
            return error_response(404, message, [{"field": "pool", "message": message}])
        data = current.model_dump()
        sent = body.model_fields_set
        for bound in ("min", "max"):
            if bound in sent:
                data[bound] = getattr(body, bound)
        data["autoscale"] = body.model_dump(exclude={"min", "max"})
        try:
            updated = PoolSpec.model_validate(data)
        except ValidationError as exc:
            message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            first = re.split(r"[ :(]", message, maxsplit=1)[0]
            return _invalid(first if first in PoolSpec.model_fields else "body", message)
        declared = (autoscaler.cluster or default_cluster()).pools.get(pool)
        if (
            declared is not None
            and declared.max is not None
            and (updated.max is None or updated.max > declared.max)
        ):
            # The backends refuse more workers than the cluster file declares: a policy
            # above it would only make failing scale commands.
            return _invalid(
                "max",
                f"{updated.max if updated.max is not None else 'no max'} is above this pool's "
                f"max in the cluster file ({declared.max}): change the file and run "
                "`mimir cluster up --file` again to allow more",
            )
        await autoscaler.set_policy(pool, updated)
        view = await autoscaler.view()
    return view.pools[pool]


@router.get("/api/v1/pools", response_model=PoolList)
async def list_pools(autoscaler: AutoscalerDep) -> PoolList:
    """Each pool: its queues, replicas wanted and running, jobs waiting and running, the
    oldest waiting job's age and the jobs a second its workers end."""
    async with redis_errors("read the pools"):
        return await autoscaler.pool_list()
