"""``AI.anthropic``: Anthropic's Messages API (``POST {base_url}/v1/messages``).

Its wire format differs from OpenAI's: the key goes in ``x-api-key`` with an
``anthropic-version`` header, ``max_tokens`` is required, the system prompt is a
top-level field rather than a message, the reply is a list of content blocks, and an
overloaded API answers 529. The request/retry loop and the result shape are
:class:`~mimir.core.plugins.builtin.ai.HttpChatPlugin`'s, so a step switches between
``AI.openai``, ``AI.anthropic``, ``AI.ollama`` and ``AI.mock`` by its ``plugin`` alone.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr

from mimir.core.errors import PluginError
from mimir.core.plugins.base import StepRuntime
from mimir.core.plugins.builtin.ai import (
    ChatConfig,
    HttpChatPlugin,
    chat_messages,
    error_message,
    first_env,
    parse_json_reply,
    usage,
)

if TYPE_CHECKING:  # httpx is imported where used: loading the registry must not load it
    import httpx

__all__ = ["AnthropicConfig", "AnthropicPlugin", "messages_url"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-haiku-4-5"
DEFAULT_MAX_TOKENS = 1024
API_VERSION = "2023-06-01"
BASE_URL_ENV = ("ANTHROPIC_BASE_URL",)
API_KEY_ENV = ("ANTHROPIC_API_KEY",)
MODEL_ENV = ("ANTHROPIC_MODEL",)
#: 529 is Anthropic's "overloaded"; 408/429/5xx as for every provider.
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
#: Anthropic's stop reasons in the OpenAI vocabulary every ``AI.*`` result uses.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_JSON_INSTRUCTION = "Answer with a single JSON object and nothing else."


class AnthropicConfig(ChatConfig):
    model: str | None = Field(
        default=None, description=f"Model name (else ${MODEL_ENV[0]}, then {DEFAULT_MODEL})."
    )
    base_url: str | None = Field(
        default=None,
        description=f"API base URL (else ${BASE_URL_ENV[0]}, then {DEFAULT_BASE_URL}).",
    )
    api_key: SecretStr | None = Field(
        default=None, description=f"API key (else ${API_KEY_ENV[0]})."
    )
    temperature: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int = Field(
        default=DEFAULT_MAX_TOKENS,
        gt=0,
        description="Longest reply, in tokens (required by the API).",
    )


def messages_url(base_url: str) -> str:
    """``{base_url}/v1/messages``; a base that already ends in ``/v1`` or the path is kept."""
    base = base_url.rstrip("/")
    if base.endswith("/v1/messages"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return f"{base}/messages"


class AnthropicPlugin(HttpChatPlugin[AnthropicConfig]):
    plugin_type = "AI"
    plugin_name = "anthropic"
    description = "Ask Anthropic's Messages API (Claude); returns text and usage like AI.openai."
    config_model = AnthropicConfig
    retry_status = _RETRY_STATUS

    def describe_error(self, response: httpx.Response, body: dict[str, Any]) -> str:
        """``{type: error, error: {type, message}}`` → ``overloaded_error: Overloaded``."""
        message = error_message(response)
        kind = _error_field(response, "type")
        return f"{kind}: {message}" if kind and kind not in message else message

    def is_retryable(self, response: httpx.Response) -> bool:
        # A spent monthly budget is a 429 too, but waiting seconds will not help.
        if _error_field(response, "details", "error_code") == "enforced_spend_limit_reached":
            return False
        return super().is_retryable(response)

    async def run(self, config: AnthropicConfig, run: StepRuntime) -> Any:
        base_url = config.base_url or first_env(BASE_URL_ENV) or DEFAULT_BASE_URL
        model = config.model or first_env(MODEL_ENV) or DEFAULT_MODEL
        key = config.api_key.get_secret_value() if config.api_key else first_env(API_KEY_ENV)
        url = messages_url(base_url)
        if not key and base_url.rstrip("/") in (DEFAULT_BASE_URL, f"{DEFAULT_BASE_URL}/v1"):
            raise PluginError(
                f"no API key for {DEFAULT_BASE_URL}: set 'api_key' in the step config "
                f"(e.g. api_key: ${{{API_KEY_ENV[0]}}}) or ${API_KEY_ENV[0]}"
            )
        # The system prompt is a top-level field: system messages from 'messages' join it.
        system: list[str] = []
        messages: list[dict[str, str]] = []
        for message in chat_messages(config):
            if message["role"] == "system":
                system.append(message["content"])
            else:
                messages.append(message)
        if config.response_format == "json":
            system.append(_JSON_INSTRUCTION)
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": config.max_tokens,
            "messages": messages,
            "stream": False,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if config.temperature is not None:
            body["temperature"] = config.temperature
        headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
        if key:
            headers["x-api-key"] = key
        data = await self.post_json(url, body, headers, config)
        content = data.get("content")
        if not isinstance(content, list):
            raise PluginError(f"{url}: unexpected answer (no 'content' list)")
        text = "".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
        usage_data = data.get("usage")
        counts: dict[str, Any] = usage_data if isinstance(usage_data, dict) else {}
        # input_tokens leaves out what was written to or read from the prompt cache.
        prompt_tokens = sum(
            int(counts.get(name) or 0)
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        stop_reason = data.get("stop_reason")
        result: dict[str, Any] = {
            "text": text,
            "model": data.get("model", model),
            "finish_reason": (
                _FINISH_REASONS.get(stop_reason, stop_reason)
                if isinstance(stop_reason, str)
                else stop_reason
            ),
            "usage": usage(prompt_tokens, int(counts.get("output_tokens") or 0)),
        }
        if config.response_format == "json":
            result["json"] = parse_json_reply(url, text)
        return result


def _error_field(response: httpx.Response, *path: str) -> str | None:
    """``error.<path>`` of an Anthropic error answer, if it is there and a string."""
    try:
        node: Any = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, str) and re.fullmatch(r"[\w.-]{1,80}", node) else None
