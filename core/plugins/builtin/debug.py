"""``Debug.*``: plugins that make slow, failing and no-op steps for tests and demos."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from mimir.core.errors import PluginError
from mimir.core.plugins.base import Plugin, PluginConfig, StepRuntime

__all__ = ["EchoPlugin", "FailPlugin", "SleepPlugin"]


class SleepConfig(PluginConfig):
    seconds: float = Field(ge=0, description="How long to sleep.")


class SleepPlugin(Plugin[SleepConfig]):
    plugin_type = "Debug"
    plugin_name = "sleep"
    description = "Sleep for `seconds` and return {slept: seconds}."
    config_model = SleepConfig

    async def run(self, config: SleepConfig, run: StepRuntime) -> Any:
        await asyncio.sleep(config.seconds)
        return {"slept": config.seconds}


class FailConfig(PluginConfig):
    message: str = Field(default="Debug.fail was asked to fail", description="Error message.")


class FailPlugin(Plugin[FailConfig]):
    plugin_type = "Debug"
    plugin_name = "fail"
    description = "Fail with `message`."
    config_model = FailConfig

    async def run(self, config: FailConfig, run: StepRuntime) -> Any:
        raise PluginError(config.message)


class EchoConfig(PluginConfig):
    value: Any = Field(default=None, description="Returned unchanged (after templating).")


class EchoPlugin(Plugin[EchoConfig]):
    plugin_type = "Debug"
    plugin_name = "echo"
    description = "Return `value` unchanged: a no-op step, or a way to reshape the context."
    config_model = EchoConfig

    async def run(self, config: EchoConfig, run: StepRuntime) -> Any:
        return config.value
