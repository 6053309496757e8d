"""``AI.mock`` (deterministic) and ``AI.openai`` against a local chat-completions server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from mimir.core.errors import PipelineValidationError
from mimir.core.plugins.builtin.ai import OpenAIPlugin, chat_url
from mimir.core.plugins.registry import default_registry
from tests.core.plugin_harness import Recorded, StepFailed, run_plugin, stub_server

# --------------------------------------------------------------------------- mock


def test_mock_is_deterministic_and_varies_with_the_prompt(data_dir: Path) -> None:
    first = run_plugin(
        "AI.mock", {"prompt": "Tell me about {{ x }}", "task": "complete"}, data_dir, {"x": "Redis"}
    )
    again = run_plugin("AI.mock", {"prompt": "Tell me about Redis", "task": "complete"}, data_dir)
    other = run_plugin("AI.mock", {"prompt": "Tell me about Qt", "task": "complete"}, data_dir)
    assert first == again
    assert first["id"] != other["id"]
    assert first["text"] == f"Mock reply [{first['id']}] to: Tell me about Redis"
    assert first["usage"]["total_tokens"] == (
        first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    )


def test_mock_summarize_clips_to_max_words_and_skips_markdown(data_dir: Path) -> None:
    text = "# Title\n\nFirst sentence here. Second one follows! Third is long and goes on."
    out = run_plugin("AI.mock", {"input": text, "max_words": 5}, data_dir)
    assert out["task"] == "summarize"
    assert out["text"] == "First sentence here. Second one …"
    assert out["stats"]["words"] == len(text.split())


def test_mock_sentiment_reads_the_tone(data_dir: Path) -> None:
    good = run_plugin(
        "AI.mock", {"input": "Great growth, record profit!", "task": "sentiment"}, data_dir
    )
    bad = run_plugin(
        "AI.mock", {"input": "A terrible loss and slow delays.", "task": "sentiment"}, data_dir
    )
    flat = run_plugin(
        "AI.mock", {"input": "The meeting is on Tuesday.", "task": "sentiment"}, data_dir
    )
    assert (good["sentiment"]["label"], bad["sentiment"]["label"]) == ("positive", "negative")
    assert flat["sentiment"] == {"label": "neutral", "score": 0.0, "positive": 0, "negative": 0}


def test_mock_classify_prefers_labels_in_the_text_else_a_stable_pick(data_dir: Path) -> None:
    labels = ["finance", "sports", "weather"]
    hit = run_plugin(
        "AI.mock", {"input": "Sports news: sports!", "task": "classify", "labels": labels}, data_dir
    )
    assert hit["label"] == "sports"
    picks = {
        run_plugin("AI.mock", {"input": "zzz", "task": "classify", "labels": labels}, data_dir)[
            "label"
        ]
        for _ in range(3)
    }
    assert len(picks) == 1 and picks <= set(labels)


def test_mock_config_errors_are_caught_at_validation(data_dir: Path) -> None:
    with pytest.raises(PipelineValidationError, match="task 'classify' needs 'labels'"):
        run_plugin("AI.mock", {"input": "x", "task": "classify"}, data_dir)
    with pytest.raises(PipelineValidationError, match="give 'prompt' or 'input'"):
        run_plugin("AI.mock", {"task": "summarize"}, data_dir)


# --------------------------------------------------------------------------- OpenAI


def _completion(request: Recorded) -> tuple[int, dict[str, str], Any]:
    body = request.json()
    last = body["messages"][-1]["content"]
    return (
        200,
        {},
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"echo: {last}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        },
    )


def test_openai_speaks_chat_completions(data_dir: Path) -> None:
    with stub_server() as stub:
        stub.respond = _completion
        out = run_plugin(
            "AI.openai",
            {
                "base_url": f"{stub.base_url}/v1",
                "model": "tiny",
                "api_key": "sk-test-secret",
                "system": "Be brief.",
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
        "model": "tiny",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    (request,) = stub.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test-secret"
    assert request.json() == {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": 'Summarise sales\n\n{"rows": 3}'},
        ],
        "temperature": 0.2,
        "max_tokens": 50,
    }


def test_openai_takes_url_key_and_model_from_the_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stub_server() as stub:
        stub.respond = _completion
        monkeypatch.setenv("MIMIR_AI_BASE_URL", stub.base_url)  # bare host: /v1 is added
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
        monkeypatch.setenv("MIMIR_AI_MODEL", "env-model")
        out = run_plugin("AI.openai", {"prompt": "hi"}, data_dir)
    assert out["text"] == "echo: hi" and out["model"] == "env-model"
    assert stub.requests[0].path == "/v1/chat/completions"
    assert stub.requests[0].headers["authorization"] == "Bearer sk-from-env"


def test_openai_json_mode_parses_the_reply(data_dir: Path) -> None:
    with stub_server() as stub:

        def reply(request: Recorded) -> tuple[int, dict[str, str], Any]:
            assert request.json()["response_format"] == {"type": "json_object"}
            return 200, {}, {"choices": [{"message": {"content": '{"score": 4}'}}]}

        stub.respond = reply
        out = run_plugin(
            "AI.openai",
            {"base_url": stub.base_url, "prompt": "rate", "response_format": "json"},
            data_dir,
        )
    assert out["json"] == {"score": 4}


def test_openai_retries_503_then_succeeds(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(OpenAIPlugin, "retry_backoff", 0.01)
    with stub_server() as stub:

        def flaky(request: Recorded) -> tuple[int, dict[str, str], Any]:
            if len(stub.requests) < 3:
                return 503, {}, {"error": {"message": "overloaded"}}
            return _completion(request)

        stub.respond = flaky
        with caplog.at_level(logging.DEBUG):
            out = run_plugin(
                "AI.openai",
                {"base_url": stub.base_url, "prompt": "hi", "api_key": "sk-never-logged"},
                data_dir,
            )
    assert out["text"] == "echo: hi"
    assert len(stub.requests) == 3
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 and "HTTP 503: overloaded" in retries[0]
    assert "1 retry left" in retries[1]
    assert "sk-never-logged" not in caplog.text


def test_openai_error_answers_are_reported_without_the_key(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with stub_server() as stub:
        stub.respond = lambda r: (401, {}, {"error": {"message": "Incorrect API key provided"}})
        with caplog.at_level(logging.DEBUG), pytest.raises(StepFailed) as caught:
            run_plugin(
                "AI.openai",
                {"base_url": stub.base_url, "prompt": "hi", "api_key": "sk-secret-401"},
                data_dir,
            )
    assert "HTTP 401: Incorrect API key provided" in str(caught.value)
    assert len(stub.requests) == 1  # a 401 is not retried
    assert "sk-secret-401" not in str(caught.value)
    assert "sk-secret-401" not in caplog.text


def test_openai_gives_up_after_its_retries(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OpenAIPlugin, "retry_backoff", 0.01)
    with stub_server() as stub:
        stub.respond = lambda r: (500, {}, "boom")
        with pytest.raises(StepFailed, match=r"HTTP 500: boom \(after 2 attempt\(s\)\)"):
            run_plugin(
                "AI.openai", {"base_url": stub.base_url, "prompt": "x", "max_retries": 1}, data_dir
            )
    assert len(stub.requests) == 2


def test_openai_timeout_and_malformed_answers(data_dir: Path) -> None:
    with stub_server() as stub:

        def slow(request: Recorded) -> tuple[int, dict[str, str], Any]:
            stub.release.wait(10)
            return _completion(request)

        stub.respond = slow
        with pytest.raises(StepFailed, match=r"no answer within 0\.2s \(after 1 attempt\(s\)\)"):
            run_plugin(
                "AI.openai",
                {"base_url": stub.base_url, "prompt": "x", "timeout": 0.2, "max_retries": 0},
                data_dir,
            )
    with stub_server() as stub:
        stub.respond = lambda r: (200, {}, {"choices": []})
        with pytest.raises(StepFailed, match=r"unexpected answer \(no choices\[0\]\.message"):
            run_plugin("AI.openai", {"base_url": stub.base_url, "prompt": "x"}, data_dir)


def test_openai_without_a_key_for_the_public_endpoint_says_how_to_give_one(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MIMIR_AI_BASE_URL", "OPENAI_BASE_URL", "MIMIR_AI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(
        StepFailed, match=r"no API key for https://api\.openai\.com/v1: set 'api_key'"
    ):
        run_plugin("AI.openai", {"prompt": "x"}, data_dir)


def test_openai_key_is_hidden_in_the_parsed_config() -> None:
    plugin = default_registry().get("AI.openai")
    config = plugin.config_model.model_validate({"prompt": "x", "api_key": "sk-hidden"})
    assert "sk-hidden" not in repr(config) and "sk-hidden" not in str(config.model_dump())


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h:1", "http://h:1/v1/chat/completions"),
        ("http://h:1/", "http://h:1/v1/chat/completions"),
        ("https://api.example/v1", "https://api.example/v1/chat/completions"),
        ("http://h/openai/v1/chat/completions", "http://h/openai/v1/chat/completions"),
    ],
)
def test_chat_url(base: str, url: str) -> None:
    assert chat_url(base) == url
