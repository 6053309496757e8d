"""The stores of the knowledge routes (ontologies, kg, twins) as dependencies.

Their errors become HTTP answers in :mod:`mimir.server.errors`, like every other error.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends

from mimir.core.ontology import OntologyStore, open_ontology_store
from mimir.core.twin import TwinStore
from mimir.server.deps import SettingsDep

__all__ = [
    "OntologyStoreDep",
    "TwinStoreDep",
    "get_ontology_store",
    "get_twin_store",
]


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
