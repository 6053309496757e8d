"""(being written: see server/runs/__init__.py)"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["start"]


async def start(app: Any) -> list[asyncio.Task[None]]:
    return []
