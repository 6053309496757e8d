"""Shared plumbing of the knowledge routes (ontologies, kg, twins): their stores as
dependencies, and a route class that turns the ontology and twin errors into the API's
JSON error answers (404 unknown, 409 taken, 422 bad RDF/SPARQL/scenario, 403 a SERVICE or
LOAD the federation policy refuses, 504 time limit, 502/503 store unreachable).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from mimir.core.ontology import (
    EndpointError,
    FederationRefusedError,
    OntologyError,
    OntologyExistsError,
    OntologyNotFoundError,
    OntologyStore,
    QueryTimeoutError,
    RdfParseError,
    SparqlError,
    UnsupportedFormatError,
    open_ontology_store,
)
from mimir.core.ontology.federation import request_id_var
from mimir.core.twin import TwinError, TwinNotFoundError, TwinStore
from mimir.server.deps import SettingsDep
from mimir.server.errors import error_response

__all__ = [
    "KnowledgeRoute",
    "OntologyStoreDep",
    "TwinStoreDep",
    "get_ontology_store",
    "get_twin_store",
]

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[Exception], int]] = [
    (OntologyNotFoundError, 404),
    (TwinNotFoundError, 404),
    (OntologyExistsError, 409),
    (QueryTimeoutError, 504),
    (FederationRefusedError, 403),
    (RdfParseError, 422),
    (SparqlError, 400),
    (UnsupportedFormatError, 415),
    (EndpointError, 503),
    (TwinError, 422),
    (OntologyError, 400),
]


def _answer(exc: Exception) -> Response | None:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            detail = None
            if isinstance(exc, RdfParseError):
                detail = {"line": exc.line, "column": exc.column}
            elif isinstance(exc, FederationRefusedError):
                detail = exc.detail
            return error_response(status, str(exc), detail)
    return None


class KnowledgeRoute(APIRoute):
    """An ``APIRoute`` whose handler answers ontology and twin errors as JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            # The request id reaches the store's log lines (SERVICE/LOAD decisions).
            token = request_id_var.set(getattr(request.state, "request_id", None))
            try:
                return await handler(request)
            except (OntologyError, TwinError, TwinNotFoundError) as exc:
                answer = _answer(exc)
                if answer is None:
                    raise
                logger.info(
                    "%s %s -> %d: %s", request.method, request.url.path, answer.status_code, exc
                )
                return answer
            finally:
                request_id_var.reset(token)

        return route


async def get_ontology_store(settings: SettingsDep) -> OntologyStore:
    """The process's ontology store (opened on first use, in a thread: it touches disk)."""
    return await asyncio.to_thread(open_ontology_store, settings)


_TWIN_STORES: dict[str, TwinStore] = {}


async def get_twin_store(settings: SettingsDep) -> TwinStore:
    """The twin store of the data directory."""
    key = str(settings.data_dir)
    store = _TWIN_STORES.get(key)
    if store is None:
        store = await asyncio.to_thread(TwinStore.in_data_dir, settings.data_dir)
        _TWIN_STORES[key] = store
    return store


OntologyStoreDep = Annotated[OntologyStore, Depends(get_ontology_store)]
TwinStoreDep = Annotated[TwinStore, Depends(get_twin_store)]
