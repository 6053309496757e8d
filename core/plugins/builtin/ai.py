"""``AI.*``: a deterministic mock model, and any OpenAI-compatible chat endpoint.

``AI.mock`` answers the same prompt with the same reply, offline, so demos and tests
are reproducible. ``AI.openai`` calls ``POST {base_url}/chat/completions`` of OpenAI or
any server that speaks its protocol (vLLM, llama.cpp, Ollama, LiteLLM …). The API key
comes from the step config or the environment and is never logged nor returned.

:class:`ChatConfig` and :class:`HttpChatPlugin` are what every HTTP provider shares (the
config keys, the request/retry loop, the result shape ``{text, model, finish_reason,
usage: {prompt_tokens, completion_tokens, total_tokens}}``); ``AI.anthropic``
(:mod:`.ai_anthropic`) and ``AI.ollama`` (:mod:`.ai_ollama`) build on them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, SecretStr, model_validator

from mimir.core.errors import PluginError
from mimir.core.plugins.base import Plugin, PluginConfig, StepRuntime

if TYPE_CHECKING:  # httpx is imported where used: loading the registry must not load it
    import httpx

__all__ = [
    "ChatConfig",
    "ChatMessage",
    "HttpChatPlugin",
    "MockAIPlugin",
    "OpenAIPlugin",
    "chat_messages",
    "error_message",
    "first_env",
    "parse_json_reply",
    "usage",
]

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


class ChatMessage(PluginConfig):
    role: Literal["system", "user", "assistant"]
    content: str


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` every ``AI.*`` plugin reports, whatever its provider calls the counts."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ChatConfig(PluginConfig):
    """The config keys every chat model plugin takes, so a step can switch providers by
    changing only its ``plugin``. Providers override the descriptions (defaults, env)."""

    prompt: str | None = Field(default=None, description="The user message.")
    input: Any = Field(default=None, description="Data appended to the user message.")
    system: str | None = Field(default=None, description="A system message.")
    messages: list[ChatMessage] = Field(
        default_factory=list, description="Earlier messages, sent before the prompt."
    )
    model: str | None = Field(default=None, description="Model name.")
    base_url: str | None = Field(default=None, description="API base URL.")
    api_key: SecretStr | None = Field(default=None, description="API key.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0, description="Longest reply, in tokens.")
    timeout: float = Field(default=60.0, gt=0, le=3600, description="Seconds per attempt.")
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries after 429/5xx answers or lost connections."
    )
    response_format: Literal["text", "json"] = Field(
        default="text", description="'json' asks for a JSON object and parses the reply."
    )

    @model_validator(mode="after")
    def _needs_message(self) -> ChatConfig:
        if self.prompt is None and self.input is None and not self.messages:
            raise ValueError("give 'prompt', 'input' or 'messages'")
        return self


def chat_messages(config: ChatConfig) -> list[dict[str, str]]:
    """``system``, then ``messages``, then ``prompt`` + ``input`` as the last user message."""
    messages: list[dict[str, str]] = []
    if config.system:
        messages.append({"role": "system", "content": config.system})
    messages += [m.model_dump() for m in config.messages]
    user = _prompt_text(config.prompt, config.input)
    if user:
        messages.append({"role": "user", "content": user})
    return messages


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


class MockAIConfig(ChatConfig):
    """Takes every key the HTTP providers take (``messages``, ``model``, ``temperature``,
    ``max_tokens`` … as the original platform's mock did), plus its own ``task``."""

    prompt: str | None = Field(default=None, description="The instruction or question.")
    input: Any = Field(default=None, description="Data the prompt is about (any value).")
    task: MockTask | None = Field(
        default=None,
        description="summarize, sentiment, classify or complete (default: summarize; "
        "complete when only 'messages' are given).",
    )
    labels: list[str] = Field(
        default_factory=list, description="Labels to choose from (task: classify)."
    )
    max_words: int = Field(default=40, ge=1, le=1000, description="Longest summary, in words.")
    model: str | None = Field(default=None, description="Name reported as 'model' (mock).")
    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Accepted; the mock is deterministic."
    )
    max_tokens: int | None = Field(
        default=None, gt=0, description="Clips the reply (finish_reason 'length')."
    )
    base_url: str | None = Field(default=None, description="Accepted and ignored (offline).")
    api_key: SecretStr | None = Field(default=None, description="Accepted and ignored.")

    @model_validator(mode="after")
    def _needs_message(self) -> MockAIConfig:  # replaces ChatConfig's check
        if self.prompt is None and self.input is None and not self.messages:
            raise ValueError("give 'prompt' or 'input' (or both), or 'messages'")
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


def _clip_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut to at most ``max_tokens`` (as :func:`_tokens` counts); was it cut?"""
    if _tokens(text) <= max_tokens:
        return text, False
    words = text.split()
    while words and _tokens(" ".join(words)) > max_tokens:
        words.pop()
    return " ".join(words), True


def mock_reply(config: MockAIConfig) -> dict[str, Any]:
    """The mock model's answer: same config in, same answer out."""
    text = _prompt_text(config.prompt, config.input)
    history = [m for m in chat_messages(config) if m["content"]]
    only_messages = config.prompt is None and config.input is None
    if only_messages:  # a chat: its last user message is what the reply is about
        said = [m["content"] for m in history if m["role"] == "user"]
        subject = said[-1] if said else ""
    else:
        subject = _as_text(config.input) or (config.prompt or "")
    task = config.task or ("complete" if only_messages else "summarize")
    seed = f"{task}\0{text}"
    if config.system or config.messages:
        seed += "\0" + json.dumps(history, ensure_ascii=False)
    digest = hashlib.sha256(seed.encode()).digest()
    reply_id = digest.hex()[:12]
    result: dict[str, Any] = {"task": task, "model": config.model or "mock"}
    if task == "summarize":
        words = len(subject.split())
        sentences = len([s for s in _SENTENCE.split(subject.strip()) if s.strip()])
        reply = (
            _summarize(subject, config.max_words) if subject.strip() else "(nothing to summarise)"
        )
        result["text"] = reply
        result["stats"] = {"words": words, "sentences": sentences, "characters": len(subject)}
    elif task == "sentiment":
        sentiment = _sentiment(subject)
        result["text"] = f"{sentiment['label']} (score {sentiment['score']:+.2f})"
        result["sentiment"] = sentiment
    elif task == "classify":
        label = _classify(subject, config.labels, digest)
        result["text"] = label
        result["label"] = label
    else:
        opening = " ".join(subject.split()[:12])
        result["text"] = f"Mock reply [{reply_id}] to: {opening}"
    clipped = False
    if config.max_tokens is not None:
        result["text"], clipped = _clip_tokens(result["text"], config.max_tokens)
    if config.response_format == "json":
        answer = {"task": task, "text": result["text"]}
        answer.update({k: result[k] for k in ("label", "sentiment") if k in result})
        result["json"] = answer
        result["text"] = json.dumps(answer, ensure_ascii=False)
    result["id"] = reply_id
    result["finish_reason"] = "length" if clipped else "stop"
    prompt_text = "\n\n".join(m["content"] for m in history) or text
    result["usage"] = usage(_tokens(prompt_text), _tokens(result["text"]))
    return result


class MockAIPlugin(Plugin[MockAIConfig]):
    plugin_type = "AI"
    plugin_name = "mock"
    description = "Deterministic offline model: summarize, sentiment, classify or complete."
    config_model = MockAIConfig

    async def run(self, config: MockAIConfig, run: StepRuntime) -> Any:
        return mock_reply(config)


# --------------------------------------------------------------------------- HTTP providers

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: Longest ``retry-after`` honoured, in seconds (a longer one is cut to this).
_MAX_RETRY_AFTER = 30.0
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)

ChatConfigT = TypeVar("ChatConfigT", bound=ChatConfig)


def first_env(names: tuple[str, ...]) -> str | None:
    """The value of the first of ``names`` set (and not empty) in the environment."""
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def error_message(response: httpx.Response) -> str:
    """An error answer's message: ``{"error": {"message"}}``, ``{"error": "…"}`` or the text."""
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


def parse_json_reply(url: str, text: str) -> Any:
    """The model's reply as JSON (a Markdown code fence around it is allowed)."""
    fenced = _FENCE.match(text)
    try:
        return json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as exc:
        raise PluginError(f"{url}: the model's reply is not JSON: {exc.msg}") from None


class HttpChatPlugin(Plugin[ChatConfigT]):
    """Base of the ``AI.*`` plugins that ask a model over HTTP: one request/retry loop.

    Each attempt has the config's ``timeout``; an answer in :attr:`retry_status`, a lost
    connection or a timeout is retried up to ``max_retries`` times, after the answer's
    ``retry-after`` (at most 30 s) or an exponential backoff, each retry logged with what
    remains. Every request goes through the outbound policy. Subclasses build the body,
    read the answer and may say more about errors (:meth:`describe_error`).
    """

    #: Seconds before the first retry; doubles with each further one.
    retry_backoff: float = 0.5
    #: Answers worth another attempt.
    retry_status: frozenset[int] = _RETRY_STATUS

    def describe_error(self, response: httpx.Response, body: dict[str, Any]) -> str:
        """What an error answer says went wrong (``body`` is the request's)."""
        return error_message(response)

    def is_retryable(self, response: httpx.Response) -> bool:
        """Whether an error answer is worth another attempt."""
        return response.status_code in self.retry_status

    def connect_hint(self, url: str) -> str:
        """Added to the error when ``url`` cannot be reached at all."""
        return ""

    async def post_json(
        self, url: str, body: dict[str, Any], headers: dict[str, str], config: ChatConfig
    ) -> dict[str, Any]:
        """POST ``body`` as JSON to ``url``; the answer's JSON object, or :class:`PluginError`."""
        import httpx

        from mimir.core.outbound import default_outbound_policy

        attempts = config.max_retries + 1
        async with default_outbound_policy().client(url, timeout=config.timeout) as client:
            for attempt in range(1, attempts + 1):
                retry_after: float | None = None
                try:
                    response = await client.post(url, json=body, headers=headers)
                except httpx.TimeoutException:
                    problem = f"no answer within {config.timeout:g}s"
                except httpx.TransportError as exc:
                    problem = f"{type(exc).__name__}: {exc}{self.connect_hint(url)}"
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
                    problem = f"HTTP {response.status_code}: {self.describe_error(response, body)}"
                    if not self.is_retryable(response):
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
                    "%s %s: %s; retrying in %.1fs (%d retr%s left)",
                    self.full_name(),
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
        return min(max(float(raw), 0.0), _MAX_RETRY_AFTER) if raw is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- OpenAI

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
#: Environment variables read when the config leaves a value out, first one set wins.
BASE_URL_ENV = ("MIMIR_AI_BASE_URL", "OPENAI_BASE_URL")
API_KEY_ENV = ("MIMIR_AI_API_KEY", "OPENAI_API_KEY")
MODEL_ENV = ("MIMIR_AI_MODEL", "OPENAI_MODEL")


class OpenAIConfig(ChatConfig):
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


def chat_url(base_url: str) -> str:
    """``{base_url}/chat/completions``; a bare ``http://host:port`` gets ``/v1`` added."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if re.fullmatch(r"https?://[^/]+", base):
        base += "/v1"
    return f"{base}/chat/completions"


class OpenAIPlugin(HttpChatPlugin[OpenAIConfig]):
    plugin_type = "AI"
    plugin_name = "openai"
    description = "Ask any OpenAI-compatible chat-completions endpoint; returns text and usage."
    config_model = OpenAIConfig

    async def run(self, config: OpenAIConfig, run: StepRuntime) -> Any:
        base_url = config.base_url or first_env(BASE_URL_ENV) or DEFAULT_BASE_URL
        model = config.model or first_env(MODEL_ENV) or DEFAULT_MODEL
        key = config.api_key.get_secret_value() if config.api_key else first_env(API_KEY_ENV)
        url = chat_url(base_url)
        if not key and base_url.rstrip("/") == DEFAULT_BASE_URL:
            raise PluginError(
                f"no API key for {DEFAULT_BASE_URL}: set 'api_key' in the step config "
                f"(e.g. api_key: ${{{API_KEY_ENV[1]}}}) or ${API_KEY_ENV[0]} / ${API_KEY_ENV[1]}"
            )
        body: dict[str, Any] = {"model": model, "messages": chat_messages(config)}
        if config.temperature is not None:
            body["temperature"] = config.temperature
        if config.max_tokens is not None:
            body["max_tokens"] = config.max_tokens
        if config.response_format == "json":
            body["response_format"] = {"type": "json_object"}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        data = await self.post_json(url, body, headers, config)
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
            result["json"] = parse_json_reply(url, text)
        return result
