"""The console's Qt-free services: API client, live feed, time series, profiles, job table data.

Views import these; nothing here imports Qt, so each is testable with plain asyncio.
"""

from __future__ import annotations

from mimir.app.services.api import ApiClient, ApiError, ApiUnreachable
from mimir.app.services.events import LiveFeed, ServerEvent, SseDecoder
from mimir.app.services.jobs import JobStore
from mimir.app.services.profiles import ConnectionProfile, ProfileStore, TokenStore
from mimir.app.services.timeseries import RingSeries, SeriesSet, peak_downsample

__all__ = [
    "ApiClient",
    "ApiError",
    "ApiUnreachable",
    "ConnectionProfile",
    "JobStore",
    "LiveFeed",
    "ProfileStore",
    "RingSeries",
    "SeriesSet",
    "ServerEvent",
    "SseDecoder",
    "TokenStore",
    "peak_downsample",
]
