"""``AI.anthropic`` and ``AI.ollama`` against local stand-ins that speak each wire format,
``AI.mock`` with the original platform's keys, and one step config run by every provider."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from mimir.core.outbound import default_outbound_policy
from mimir.core.plugins.builtin.ai_anthropic import AnthropicPlugin, messages_url
from mimir.core.plugins.builtin.ai_ollama import OllamaPlugin, ollama_chat_url
from tests.core.plugin_harness import Recorded, Reply, StepFailed, run_plugin, stub_server

# --------------------------------------------------------------------------- stand-ins


def _anthropic_error(status: int, kind: str, message: str) -> Reply:
    return status, {}, {"type": "error", "error": {"type": kind, "message": message}}


class AnthropicStandIn:
    """Answers ``POST /v1/messages`` as Anthropic's API does, refusing what it refuses."""

    def __init__(self) -> None:
        self.times: list[float] = []
        #: Status replies to give (in order) before answering normally.
        self.failures: list[Reply] = []

    def __call__(self, request: Recorded) -> Reply:
        self.times.append(time.monotonic())
        if (request.method, request.path) != ("POST", "/v1/messages"):
            return _anthropic_error(404, "not_found_error", f"Not found: {request.path}")
        if "x-api-key" not in request.headers:
            return _anthropic_error(401, "authentication_error", "x-api-key header is required")
        if request.headers.get("anthropic-version") != "2023-06-01":
            return _anthropic_error(400, "invalid_request_error", "anthropic-version missing")
        body = request.json()
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return _anthropic_error(400, "invalid_request_error", f"{field}: Field required")
        roles = {message["role"] for message in body["messages"]}
        if not roles <= {"user", "assistant"}:
            return _anthropic_error(
                400, "invalid_request_error", f"messages: Unexpected role {roles}"
            )
        if body.get("stream") is not False:
            return 200, {"content-type": "text/event-stream"}, "event: message_start\n\n"
        if self.failures:
            return self.failures.pop(0)
        last = body["messages"][-1]["content"]
        return (
            200,
            {},
            {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "echo: "},
                    {"type": "text", "text": last},
                ],
                "model": body["model"],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 11,
                    "cache_creation_input_tokens": 2,
                    "cache_read_input_tokens": 1,
                    "output_tokens": 5,
                },
            },
        )


class OllamaStandIn:
    """Answers ``POST /api/chat`` as ``ollama serve`` does (a stream unless told not to)."""

    def __init__(self, models: tuple[str, ...] = ("llama3.2",)) -> None:
        self.models = set(models)
        self.times: list[float] = []
        self.failures: list[Reply] = []

    def __call__(self, request: Recorded) -> Reply:
        self.times.append(time.monotonic())
        if (request.method, request.path) != ("POST", "/api/chat"):
            return 404, {}, "404 page not found"
        body = request.json()
        if body.get("model") not in self.models:
            return 404, {}, {"error": f"model '{body.get('model')}' not found"}
        if self.failures:
            return self.failures.pop(0)
        last = body["messages"][-1]["content"]
        answer = {
            "model": body["model"],
            "created_at": "2026-11-02T10:00:00.000000Z",
            "message": {"role": "assistant", "content": f"echo: {last}"},
            "done": True,
            "done_reason": "stop",
            "total_duration": 5_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": 9,
            "prompt_eval_duration": 1_000_000,
            "eval_count": 4,
            "eval_duration": 2_000_000,
        }
        if body.get("stream", True):  # Ollama streams by default: one JSON object a line
            chunk = {**answer, "done": False, "message": answer["message"]}
            lines = f"{json.dumps(chunk)}\n{json.dumps(answer)}\n"
            return 200, {"content-type": "application/x-ndjson"}, lines
        return 200, {}, answer


def _gap(times: list[float]) -> float:
    return times[1] - times[0]


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_speaks_the_messages_api(data_dir: Path) -> None:
    stand_in = AnthropicStandIn()
    with stub_server() as stub:
        stub.respond = stand_in
        out = run_plugin(
            "AI.anthropic",
            {
                "base_url": stub.base_url,
                "model": "claude-test",
                "api_key": "sk-ant-secret",
                "system": "Be brief.",
                "messages": [
                    {"role": "system", "content": "Answer in English."},
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi."},
                ],
                "prompt": "Summarise {{ topic }}",
                "input": {"rows": 3},
                "temperature": 0.2,
                "max_tokens": 50,
            },
            data_dir,
            context={"topic": "sales"},
        )
    assert out == {
        "text": 'echo: Summarise sales\n\n{"rows": 3}',
        "model": "claude-test",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19},
    }
    (request,) = stub.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == "sk-ant-secret"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert request.json() == {
        "model": "claude-test",
        "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": 'Summarise sales\n\n{"rows": 3}'},
        ],
        "stream": False,
        "system": "Be brief.\n\nAnswer in English.",
        "temperature": 0.2,
    }


def test_anthropic_reads_the_environment_and_defaults_max_tokens(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stub_server() as stub:
        stub.respond = AnthropicStandIn()
        monkeypatch.setenv("ANTHROPIC_BASE_URL", stub.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
        monkeypatch.setenv("ANTHROPIC_MODEL", "claude-env")
        out = run_plugin("AI.anthropic", {"prompt": "hi"}, data_dir)
    assert out["text"] == "echo: hi" and out["model"] == "claude-env"
    body = stub.requests[0].json()
    assert body["max_tokens"] == 1024 and "system" not in body and "temperature" not in body
    assert stub.requests[0].headers["x-api-key"] == "sk-ant-env"


def test_anthropic_error_answers_name_type_and_message_without_the_key(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with stub_server() as stub:
        stand_in = AnthropicStandIn()
        stand_in.failures = [
            _anthropic_error(400, "invalid_request_error", "prompt is too long: 210000 tokens")
        ]
        stub.respond = stand_in
        with caplog.at_level(logging.DEBUG), pytest.raises(StepFailed) as caught:
            run_plugin(
                "AI.anthropic",
                {"base_url": stub.base_url, "prompt": "x", "api_key": "sk-ant-hidden"},
                data_dir,
            )
    assert "HTTP 400: invalid_request_error: prompt is too long: 210000 tokens" in str(caught.value)
    assert len(stub.requests) == 1  # a 400 is not retried
    assert "sk-ant-hidden" not in str(caught.value) and "sk-ant-hidden" not in caplog.text


def test_anthropic_retries_429_after_retry_after_and_529_overloaded(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(AnthropicPlugin, "retry_backoff", 0.01)
    stand_in = AnthropicStandIn()
    stand_in.failures = [
        (429, {"retry-after": "0.2"}, _anthropic_error(429, "rate_limit_error", "slow down")[2]),
        _anthropic_error(529, "overloaded_error", "Overloaded"),
    ]
    with stub_server() as stub:
        stub.respond = stand_in
        with caplog.at_level(logging.WARNING):
            out = run_plugin(
                "AI.anthropic",
                {"base_url": stub.base_url, "prompt": "hi", "api_key": "k"},
                data_dir,
            )
    assert out["text"] == "echo: hi"
    assert len(stub.requests) == 3
    assert _gap(stand_in.times) >= 0.19  # waited as retry-after said
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries[0].startswith("AI.anthropic ") and "rate_limit_error: slow down" in retries[0]
    assert "retrying in 0.2s (2 retries left)" in retries[0]
    assert "HTTP 529: overloaded_error: Overloaded" in retries[1]


def test_anthropic_gives_up_on_529_after_its_retries_and_never_retries_a_spent_budget(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AnthropicPlugin, "retry_backoff", 0.01)
    config = {"prompt": "x", "api_key": "k", "max_retries": 1}
    with stub_server() as stub:
        stand_in = AnthropicStandIn()
        stand_in.failures = [_anthropic_error(529, "overloaded_error", "Overloaded")] * 5
        stub.respond = stand_in
        with pytest.raises(StepFailed, match=r"HTTP 529: .*Overloaded \(after 2 attempt\(s\)\)"):
            run_plugin("AI.anthropic", {**config, "base_url": stub.base_url}, data_dir)
    assert len(stub.requests) == 2
    with stub_server() as stub:
        spent = {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "You have reached your monthly spend limit.",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
        }
        stub.respond = lambda r: (429, {}, spent)
        with pytest.raises(StepFailed, match="monthly spend limit") as caught:
            run_plugin("AI.anthropic", {**config, "base_url": stub.base_url}, data_dir)
    assert len(stub.requests) == 1 and "attempt" not in str(caught.value)


def test_anthropic_times_out_within_the_configured_timeout(data_dir: Path) -> None:
    with stub_server() as stub:

        def stall(request: Recorded) -> Reply:
            stub.release.wait(10)
            return AnthropicStandIn()(request)

        stub.respond = stall
        started = time.monotonic()
        with pytest.raises(StepFailed, match=r"no answer within 0\.3s \(after 1 attempt\(s\)\)"):
            run_plugin(
                "AI.anthropic",
                {"base_url": stub.base_url, "prompt": "x", "timeout": 0.3, "max_retries": 0},
                data_dir,
            )
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0, elapsed


def test_anthropic_without_a_key_for_the_public_api_says_how_to_give_one(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(
        StepFailed, match=r"no API key for https://api\.anthropic\.com: set 'api_key'"
    ):
        run_plugin("AI.anthropic", {"prompt": "x"}, data_dir)


def test_anthropic_json_mode_asks_for_json_and_parses_a_fenced_reply(data_dir: Path) -> None:
    with stub_server() as stub:

        def reply(request: Recorded) -> Reply:
            assert "single JSON object" in request.json()["system"]
            text = '```json\n{"score": 4}\n```'
            return 200, {}, {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}

        stub.respond = reply
        out = run_plugin(
            "AI.anthropic",
            {
                "base_url": stub.base_url,
                "prompt": "rate",
                "api_key": "k",
                "response_format": "json",
            },
            data_dir,
        )
    assert out["json"] == {"score": 4}


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/", "https://api.anthropic.com/v1/messages"),
        ("http://proxy:8080/anthropic/v1", "http://proxy:8080/anthropic/v1/messages"),
        ("http://proxy/v1/messages", "http://proxy/v1/messages"),
    ],
)
def test_messages_url(base: str, url: str) -> None:
    assert messages_url(base) == url


# --------------------------------------------------------------------------- Ollama


def test_ollama_speaks_the_native_chat_api(data_dir: Path) -> None:
    with stub_server() as stub:
        stub.respond = OllamaStandIn()
        out = run_plugin(
            "AI.ollama",
            {
                "base_url": stub.base_url,
                "model": "llama3.2",
                "system": "Be brief.",
                "prompt": "Summarise {{ topic }}",
                "temperature": 0.1,
                "max_tokens": 64,
            },
            data_dir,
            context={"topic": "sales"},
        )
    assert out == {
        "text": "echo: Summarise sales",
        "model": "llama3.2",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
    }
    (request,) = stub.requests
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert request.json() == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Summarise sales"},
        ],
        "stream": False,
        "options": {"temperature": 0.1, "num_predict": 64},
    }


def test_ollama_reads_ollama_host_as_ollama_does(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stub_server() as stub:
        stub.respond = OllamaStandIn(models=("qwen2.5:0.5b",))
        monkeypatch.setenv("OLLAMA_HOST", stub.base_url.removeprefix("http://"))  # no scheme
        monkeypatch.setenv("OLLAMA_MODEL", "qwen2.5:0.5b")
        out = run_plugin("AI.ollama", {"prompt": "hi", "response_format": "text"}, data_dir)
    assert out["text"] == "echo: hi" and out["model"] == "qwen2.5:0.5b"
    assert "options" not in stub.requests[0].json()


def test_ollama_model_not_pulled_says_how_to_pull_it(data_dir: Path) -> None:
    with stub_server() as stub:
        stub.respond = OllamaStandIn()
        with pytest.raises(StepFailed) as caught:
            run_plugin(
                "AI.ollama",
                {"base_url": stub.base_url, "model": "mistral", "prompt": "x"},
                data_dir,
            )
    assert (
        "HTTP 404: model 'mistral' not found; pull it on the Ollama host first: ollama pull mistral"
        in str(caught.value)
    )
    assert len(stub.requests) == 1  # a 404 is not retried


def test_ollama_retries_429_after_retry_after_and_503_busy(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(OllamaPlugin, "retry_backoff", 0.01)
    stand_in = OllamaStandIn()
    stand_in.failures = [
        (429, {"retry-after": "0.2"}, {"error": "too many requests"}),
        (503, {}, {"error": "server busy, please try again.  maximum pending requests exceeded"}),
    ]
    with stub_server() as stub:
        stub.respond = stand_in
        with caplog.at_level(logging.WARNING):
            out = run_plugin("AI.ollama", {"base_url": stub.base_url, "prompt": "hi"}, data_dir)
    assert out["text"] == "echo: hi"
    assert len(stub.requests) == 3 and _gap(stand_in.times) >= 0.19
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert "HTTP 429: too many requests" in retries[0] and "HTTP 503: server busy" in retries[1]


def test_ollama_times_out_within_the_configured_timeout(data_dir: Path) -> None:
    with stub_server() as stub:

        def stall(request: Recorded) -> Reply:
            stub.release.wait(10)
            return OllamaStandIn()(request)

        stub.respond = stall
        started = time.monotonic()
        with pytest.raises(StepFailed, match=r"no answer within 0\.3s \(after 1 attempt\(s\)\)"):
            run_plugin(
                "AI.ollama",
                {"base_url": stub.base_url, "prompt": "x", "timeout": 0.3, "max_retries": 0},
                data_dir,
            )
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0, elapsed


def test_ollama_not_running_says_so(data_dir: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StepFailed, match=rf"is Ollama running at http://127\.0\.0\.1:{port}\?"):
        run_plugin(
            "AI.ollama",
            {"base_url": f"127.0.0.1:{port}", "prompt": "x", "max_retries": 0},
            data_dir,
        )


def test_ollama_json_mode_sends_format_json(data_dir: Path) -> None:
    with stub_server() as stub:

        def reply(request: Recorded) -> Reply:
            assert request.json()["format"] == "json"
            return (
                200,
                {},
                {"message": {"role": "assistant", "content": '{"ok": true}'}, "done": True},
            )

        stub.respond = reply
        out = run_plugin(
            "AI.ollama",
            {"base_url": stub.base_url, "prompt": "x", "response_format": "json"},
            data_dir,
        )
    assert out["json"] == {"ok": True} and out["finish_reason"] == "stop"
    assert out["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("localhost", "http://localhost:11434/api/chat"),
        ("10.0.0.5:8000", "http://10.0.0.5:8000/api/chat"),
        ("[::1]", "http://[::1]:11434/api/chat"),
        ("http://gpu-box:11434/", "http://gpu-box:11434/api/chat"),
        ("https://ollama.example/api", "https://ollama.example/api/chat"),
        ("http://h/ollama/api/chat", "http://h/ollama/api/chat"),
    ],
)
def test_ollama_chat_url(host: str, url: str) -> None:
    assert ollama_chat_url(host) == url


# --------------------------------------------------------------------------- mock


def test_mock_takes_the_original_platforms_chat_keys(data_dir: Path) -> None:
    config = {
        "model": "gpt-3.5-turbo",
        "messages": [
            {"role": "system", "content": "You are a summarizer."},
            {"role": "user", "content": "Please summarize: quantum computing for beginners"},
        ],
        "temperature": 0.8,
        "max_tokens": 200,
    }
    first = run_plugin("AI.mock", config, data_dir)
    again = run_plugin("AI.mock", {**config, "temperature": 0.1}, data_dir)
    other = run_plugin("AI.mock", {**config, "messages": config["messages"][1:]}, data_dir)
    assert first == again  # deterministic: temperature changes nothing
    assert first["id"] != other["id"]  # the whole conversation counts
    assert first["task"] == "complete" and first["model"] == "gpt-3.5-turbo"
    assert first["text"] == (
        f"Mock reply [{first['id']}] to: Please summarize: quantum computing for beginners"
    )
    assert first["finish_reason"] == "stop"
    assert first["usage"]["total_tokens"] == (
        first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    )


def test_mock_max_tokens_clips_the_reply(data_dir: Path) -> None:
    out = run_plugin(
        "AI.mock",
        {"prompt": "one two three four five six", "task": "complete", "max_tokens": 4},
        data_dir,
    )
    assert out["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] <= 4 and out["text"].startswith("Mock reply")


def test_mock_accepts_the_http_providers_keys_and_answers_json(data_dir: Path) -> None:
    out = run_plugin(
        "AI.mock",
        {
            "input": "Great growth!",
            "task": "sentiment",
            "api_key": "sk-ignored",
            "base_url": "http://unused.invalid",
            "timeout": 5,
            "max_retries": 0,
            "response_format": "json",
        },
        data_dir,
    )
    assert out["json"]["sentiment"]["label"] == "positive"
    assert out["json"]["text"].startswith("positive")


# --------------------------------------------------------------------------- swapping providers


def test_one_step_config_runs_on_every_provider_with_the_same_result_shape(data_dir: Path) -> None:
    config = {
        "model": "some-model",
        "api_key": "k",
        "messages": [{"role": "user", "content": "Say hi"}],
        "temperature": 0.5,
        "max_tokens": 20,
        "timeout": 5,
        "max_retries": 0,
    }
    results: dict[str, Any] = {}
    with stub_server() as anthropic, stub_server() as ollama, stub_server() as openai:
        anthropic.respond = AnthropicStandIn()
        ollama.respond = OllamaStandIn(models=("some-model",))
        openai.respond = lambda r: (
            200,
            {},
            {
                "model": "some-model",
                "choices": [{"message": {"content": "echo: Say hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            },
        )
        for plugin, stub in (("anthropic", anthropic), ("ollama", ollama), ("openai", openai)):
            results[plugin] = run_plugin(
                f"AI.{plugin}", {**config, "base_url": stub.base_url}, data_dir
            )
    results["mock"] = run_plugin("AI.mock", config, data_dir)
    for plugin, out in results.items():
        assert {"text", "model", "finish_reason", "usage"} <= set(out), plugin
        assert set(out["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}, plugin
        assert out["finish_reason"] == "stop" and out["model"] == "some-model", plugin
    assert {results[p]["text"] for p in ("anthropic", "ollama", "openai")} == {"echo: Say hi"}


@pytest.mark.parametrize("plugin", ["AI.anthropic", "AI.ollama"])
def test_providers_go_through_the_outbound_policy(
    plugin: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    with stub_server() as stub:
        stub.respond = AnthropicStandIn() if plugin == "AI.anthropic" else OllamaStandIn()
        port = stub.base_url.rsplit(":", 1)[1]
        monkeypatch.setenv("MIMIR_HTTP_DENY", f"127.0.0.0/8:{port}")
        default_outbound_policy.cache_clear()  # the policy is read once per process
        request.addfinalizer(default_outbound_policy.cache_clear)
        with pytest.raises(StepFailed, match="MIMIR_HTTP_DENY"):
            run_plugin(plugin, {"base_url": stub.base_url, "prompt": "x", "api_key": "k"}, data_dir)
        with pytest.raises(StepFailed, match="refused"):
            run_plugin(plugin, {"base_url": "http://169.254.169.254", "prompt": "x"}, data_dir)
    assert stub.requests == []  # refused before any connection
