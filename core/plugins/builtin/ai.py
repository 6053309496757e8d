"""``AI.*``: a deterministic mock model, and any OpenAI-compatible chat endpoint.

``AI.mock`` answers the same prompt with the same reply, offline, so demos and tests
are reproducible. ``AI.openai`` calls ``POST {base_url}/chat/completions`` of OpenAI or
any server that speaks its protocol (vLLM, llama.cpp, Ollama, LiteLLM …). The API key
comes from the step config or the environment and is never logged nor returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, model_validator

from mimir.core.errors import PluginError
from mimir.core.plugins.base import Plugin, PluginConfig, RunContext

if TYPE_CHECKING:  # httpx is imported where used: loading the registry must not load it
    import httpx

__all__ = ["MockAIPlugin", "OpenAIPlugin"]

logger = logging.getLogger(__name__)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _prompt_text(prompt: str | None, input_value: Any) -> str:
    parts = [p for p in (prompt or "", _as_text(input_value)) if p.strip()]
    return "\n\n".join(parts)


def _tokens(text: str) -> int:
    # A rough, stable count (about what a BPE tokenizer gives for English).
    return max(1, round(len(re.findall(r"\w+|[^\w\s]", text)) * 1.3)) if text else 0


# --------------------------------------------------------------------------- mock

_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# Small sentiment lexicons: enough for a stable, plausible mock.
_POSITIVE_WORDS = (
    "good great excellent positive happy love like best growth up gain gains profit win "
    "success successful strong improve improved improvement increase increased record "
    "benefit pleased wonderful amazing fast reliable"
)
_NEGATIVE_WORDS = (
    "bad poor terrible negative sad hate dislike worst decline down loss losses fail failed "
    "failure weak drop dropped decrease decreased risk problem problems slow broken angry "
    "delay delayed crash bug"
)
_POSITIVE = frozenset(_POSITIVE_WORDS.split())
_NEGATIVE = frozenset(_NEGATIVE_WORDS.split())

MockTask = Literal["summarize", "sentiment", "classify", "complete"]


class MockAIConfig(PluginConfig):
    prompt: str | None = Field(default=None, description="The instruction or question.")
    input: Any = Field(default=None, description="Data the prompt is about (any value).")
    task: MockTask = Field(
        default="summarize", description="summarize, sentiment, classify or complete."
    )
    labels: list[str] = Field(
        default_factory=list, description="Labels to choose from (task: classify)."
    )
    max_words: int = Field(default=40, ge=1, le=1000, description="Longest summary, in words.")

    @model_validator(mode="after")
    def _needs_text(self) -> MockAIConfig:
        if self.prompt is None and self.input is None:
            raise ValueError("give 'prompt' or 'input' (or both)")
        if self.task == "classify" and not self.labels:
            raise ValueError("task 'classify' needs 'labels' to choose from")
        return self


_MARKDOWN_HEADING = re.compile(r"^ {0,3}#{1,6}\s.*$", re.MULTILINE)
_MARKDOWN_MARKER = re.compile(r"^\s{0,3}(?:[-*+]\s+|>\s?|\d+[.)]\s+)", re.MULTILINE)


def _plain(text: str) -> str:
    """``text`` without Markdown headings and list/quote markers, on one line."""
    text = _MARKDOWN_MARKER.sub("", _MARKDOWN_HEADING.sub("", text))
    return " ".join(text.split())


def _summarize(text: str, max_words: int) -> str:
    text = _plain(text)
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    words: list[str] = []
    for sentence in sentences:
        words.extend(sentence.split())
        if len(words) >= max_words:
            break
    clipped = words[:max_words]
    summary = " ".join(clipped)
    if len(clipped) < len(text.split()):
        summary = summary.rstrip(".,;:") + " …"
    return summary


def _sentiment(text: str) -> dict[str, Any]:
    words = [w.lower() for w in _WORD.findall(text)]
    positive = sum(w in _POSITIVE for w in words)
    negative = sum(w in _NEGATIVE for w in words)
    score = 0.0 if positive + negative == 0 else (positive - negative) / (positive + negative)
    label = "positive" if score > 0.1 else "negative" if score < -0.1 else "neutral"
    return {"label": label, "score": round(score, 3), "positive": positive, "negative": negative}


def _classify(text: str, labels: list[str], digest: bytes) -> str:
    lowered = text.lower()
    hits = {label: lowered.count(label.lower()) for label in labels}
    best = max(hits.values())
    if best > 0:
        return next(label for label in labels if hits[label] == best)
    return labels[digest[0] % len(labels)]  # no evidence: a stable pick


def mock_reply(config: MockAIConfig) -> dict[str, Any]:
    """The mock model's answer: same config in, same answer out."""
    text = _prompt_text(config.prompt, config.input)
    subject = _as_text(config.input) or (config.prompt or "")
    digest = hashlib.sha256(f"{config.task}\0{text}".encode()).digest()
    reply_id = digest.hex()[:12]
    result: dict[str, Any] = {"task": config.task, "model": "mock"}
    if config.task == "summarize":
        words = len(subject.split())
        sentences = len([s for s in _SENTENCE.split(subject.strip()) if s.strip()])
        reply = (
            _summarize(subject, config.max_words) if subject.strip() else "(nothing to summarise)"
        )
        result["text"] = reply
        result["stats"] = {"words": words, "sentences": sentences, "characters": len(subject)}
    elif config.task == "sentiment":
        sentiment = _sentiment(subject)
        result["text"] = f"{sentiment['label']} (score {sentiment['score']:+.2f})"
        result["sentiment"] = sentiment
    elif config.task == "classify":
        label = _classify(subject, config.labels, digest)
        result["text"] = label
        result["label"] = label
    else:
        opening = " ".join(subject.split()[:12])
        result["text"] = f"Mock reply [{reply_id}] to: {opening}"
    result["id"] = reply_id
    prompt_tokens = _tokens(text)
    completion_tokens = _tokens(result["text"])
    result["usage"] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return result


class MockAIPlugin(Plugin[MockAIConfig]):
    plugin_type = "AI"
    plugin_name = "mock"
    description = "Deterministic offline model: summarize, sentiment, classify or complete."
    config_model = MockAIConfig

    async def run(self, config: MockAIConfig, run: RunContext) -> Any:
        return mock_reply(config)


# --------------------------------------------------------------------------- OpenAI

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
#: Environment variables read when the config leaves a value out, first one set wins.
BASE_URL_ENV = ("MIMIR_AI_BASE_URL", "OPENAI_BASE_URL")
API_KEY_ENV = ("MIMIR_AI_API_KEY", "OPENAI_API_KEY")
MODEL_ENV = ("MIMIR_AI_MODEL", "OPENAI_MODEL")
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class ChatMessage(PluginConfig):
    role: Literal["system", "user", "assistant"]
    content: str


class OpenAIConfig(PluginConfig):
    prompt: str | None = Field(default=None, description="The user message.")
    input: Any = Field(default=None, description="Data appended to the user message.")
    system: str | None = Field(default=None, description="A system message.")
    messages: list[ChatMessage] = Field(
        default_factory=list, description="Earlier messages, sent before the prompt."
    )
    model: str | None = Field(
        default=None, description=f"Model name (else ${MODEL_ENV[0]}, then {DEFAULT_MODEL})."
    )
    base_url: str | None = Field(
        default=None,
        description=f"API base URL (else ${BASE_URL_ENV[0]} / ${BASE_URL_ENV[1]}, "
        f"then {DEFAULT_BASE_URL}).",
    )
    api_key: SecretStr | None = Field(
        default=None, description=f"API key (else ${API_KEY_ENV[0]} / ${API_KEY_ENV[1]})."
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout: float = Field(default=60.0, gt=0, le=3600, description="Seconds per attempt.")
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries after 429/5xx answers or lost connections."
    )
    response_format: Literal["text", "json"] = Field(
        default="text", description="'json' asks for a JSON object and parses the reply."
    )

    @model_validator(mode="after")
    def _needs_message(self) -> OpenAIConfig:
        if self.prompt is None and self.input is None and not self.messages:
            raise ValueError("give 'prompt', 'input' or 'messages'")
        return self


def _first_env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def chat_url(base_url: str) -> str:
    """``{base_url}/chat/completions``; a bare ``http://host:port`` gets ``/v1`` added."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if re.fullmatch(r"https?://[^/]+", base):
        base += "/v1"
    return f"{base}/chat/completions"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
    except ValueError:
        pass
    return response.text[:300]


class OpenAIPlugin(Plugin[OpenAIConfig]):
    plugin_type = "AI"
    plugin_name = "openai"
    description = "Ask any OpenAI-compatible chat-completions endpoint; returns text and usage."
    config_model = OpenAIConfig

    #: Seconds before the first retry; doubles with each further one.
    retry_backoff: float = 0.5

    async def run(self, config: OpenAIConfig, run: RunContext) -> Any:
        base_url = config.base_url or _first_env(BASE_URL_ENV) or DEFAULT_BASE_URL
        model = config.model or _first_env(MODEL_ENV) or DEFAULT_MODEL
        key = config.api_key.get_secret_value() if config.api_key else _first_env(API_KEY_ENV)
        url = chat_url(base_url)
        if not key and base_url.rstrip("/") == DEFAULT_BASE_URL:
            raise PluginError(
                f"no API key for {DEFAULT_BASE_URL}: set 'api_key' in the step config "
                f"(e.g. api_key: ${{{API_KEY_ENV[1]}}}) or ${API_KEY_ENV[0]} / ${API_KEY_ENV[1]}"
            )
        messages: list[dict[str, str]] = []
        if config.system:
            messages.append({"role": "system", "content": config.system})
        messages += [m.model_dump() for m in config.messages]
        user = _prompt_text(config.prompt, config.input)
        if user:
            messages.append({"role": "user", "content": user})
        body: dict[str, Any] = {"model": model, "messages": messages}
        if config.temperature is not None:
            body["temperature"] = config.temperature
        if config.max_tokens is not None:
            body["max_tokens"] = config.max_tokens
        if config.response_format == "json":
            body["response_format"] = {"type": "json_object"}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        data = await self._post(url, body, headers, config)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise PluginError(f"{url}: unexpected answer (no choices[0].message.content)") from None
        result: dict[str, Any] = {
            "text": text,
            "model": data.get("model", model),
            "finish_reason": choice.get("finish_reason"),
            "usage": data.get("usage") or {},
        }
        if config.response_format == "json":
            try:
                result["json"] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PluginError(f"{url}: the model's reply is not JSON: {exc.msg}") from None
        return result

    async def _post(
        self, url: str, body: dict[str, Any], headers: dict[str, str], config: OpenAIConfig
    ) -> dict[str, Any]:
        import httpx

        from mimir.core.outbound import default_outbound_policy

        attempts = config.max_retries + 1
        hooks = default_outbound_policy().event_hooks(url)
        async with httpx.AsyncClient(timeout=config.timeout, event_hooks=hooks) as client:
            for attempt in range(1, attempts + 1):
                retry_after: float | None = None
                try:
                    response = await client.post(url, json=body, headers=headers)
                except httpx.TimeoutException:
                    problem = f"no answer within {config.timeout:g}s"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                else:
                    if response.is_success:
                        try:
                            data = response.json()
                        except ValueError:
                            raise PluginError(f"{url}: the answer is not JSON") from None
                        if not isinstance(data, dict):
                            raise PluginError(f"{url}: the answer is not a JSON object")
                        return data
                    problem = f"HTTP {response.status_code}: {_error_message(response)}"
                    if response.status_code not in _RETRY_STATUS:
                        raise PluginError(f"{url}: {problem}")
                    retry_after = _retry_after(response)
                if attempt == attempts:
                    raise PluginError(f"{url}: {problem} (after {attempts} attempt(s))")
                delay = (
                    retry_after
                    if retry_after is not None
                    else self.retry_backoff * 2 ** (attempt - 1)
                )
                logger.warning(
                    "AI.openai %s: %s; retrying in %.1fs (%d retr%s left)",
                    url,
                    problem,
                    delay,
                    attempts - attempt,
                    "y" if attempts - attempt == 1 else "ies",
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return min(float(raw), 30.0) if raw is not None else None
    except ValueError:
        return None
