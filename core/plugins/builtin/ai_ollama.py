"""``AI.ollama``: a local or remote Ollama server's native API (``POST {base}/api/chat``).

Ollama also speaks OpenAI's protocol (``AI.openai`` with ``base_url:
http://host:11434/v1``); the native API adds its own options (``num_predict``, JSON
``format``), counts and clearer errors. The host comes from the config or
``$OLLAMA_HOST`` read as Ollama reads it (``host``, ``host:port``, ``http://host:port``;
no scheme means ``http`` and port 11434). A model that is not pulled yet is a 404 whose
message says how to pull it. The request/retry loop and the result shape are
:class:`~mimir.core.plugins.builtin.ai.HttpChatPlugin`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

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

__all__ = ["OllamaConfig", "OllamaPlugin", "ollama_chat_url"]

DEFAULT_PORT = 11434
DEFAULT_BASE_URL = f"http://localhost:{DEFAULT_PORT}"
DEFAULT_MODEL = "llama3.2"
BASE_URL_ENV = ("OLLAMA_HOST",)
MODEL_ENV = ("OLLAMA_MODEL",)
API_KEY_ENV = ("OLLAMA_API_KEY",)


class OllamaConfig(ChatConfig):
    model: str | None = Field(
        default=None, description=f"Model name (else ${MODEL_ENV[0]}, then {DEFAULT_MODEL})."
    )
    base_url: str | None = Field(
        default=None,
        description=f"Ollama server (else ${BASE_URL_ENV[0]}, then {DEFAULT_BASE_URL}).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description=f"Bearer token for a server behind a proxy or ollama.com "
        f"(else ${API_KEY_ENV[0]}; none by default).",
    )
    # A local model may first have to load, then generate on a CPU: allow for it.
    timeout: float = Field(default=300.0, gt=0, le=3600, description="Seconds per attempt.")


def ollama_chat_url(base_url: str) -> str:
    """``{base}/api/chat``, where a base without a scheme is ``http`` and port 11434."""
    base = base_url.strip().rstrip("/")
    if "://" not in base:
        parts = urlsplit(f"http://{base}")
        host = parts.hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        base = f"http://{host}:{parts.port or DEFAULT_PORT}{parts.path.rstrip('/')}"
    if base.endswith("/api/chat"):
        return base
    if base.endswith("/api"):
        return f"{base}/chat"
    return f"{base}/api/chat"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class OllamaPlugin(HttpChatPlugin[OllamaConfig]):
    plugin_type = "AI"
    plugin_name = "ollama"
    description = "Ask an Ollama server (native /api/chat); returns text and usage like AI.openai."
    config_model = OllamaConfig

    def describe_error(self, response: httpx.Response, body: dict[str, Any]) -> str:
        message = error_message(response)
        if response.status_code == 404:
            if "model" in message.lower() and "not found" in message.lower():
                model = body.get("model")
                return f"{message}; pull it on the Ollama host first: ollama pull {model}"
            return f"{message} (is {_origin(str(response.request.url))} an Ollama server?)"
        return message

    def connect_hint(self, url: str) -> str:
        return f" (is Ollama running at {_origin(url)}? start it with 'ollama serve')"

    async def run(self, config: OllamaConfig, run: StepRuntime) -> Any:
        base_url = config.base_url or first_env(BASE_URL_ENV) or DEFAULT_BASE_URL
        model = config.model or first_env(MODEL_ENV) or DEFAULT_MODEL
        key = config.api_key.get_secret_value() if config.api_key else first_env(API_KEY_ENV)
        url = ollama_chat_url(base_url)
        body: dict[str, Any] = {"model": model, "messages": chat_messages(config), "stream": False}
        options: dict[str, Any] = {}
        if config.temperature is not None:
            options["temperature"] = config.temperature
        if config.max_tokens is not None:
            options["num_predict"] = config.max_tokens
        if options:
            body["options"] = options
        if config.response_format == "json":
            body["format"] = "json"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        data = await self.post_json(url, body, headers, config)
        if data.get("error"):
            raise PluginError(f"{url}: {str(data['error'])[:300]}")
        message = data.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise PluginError(f"{url}: unexpected answer (no message.content)")
        text = message["content"]
        result: dict[str, Any] = {
            "text": text,
            "model": data.get("model", model),
            "finish_reason": data.get("done_reason") or ("stop" if data.get("done") else None),
            "usage": usage(
                int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0)
            ),
        }
        if config.response_format == "json":
            result["json"] = parse_json_reply(url, text)
        return result
