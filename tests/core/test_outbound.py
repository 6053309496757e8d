"""The outbound HTTP policy of plugins: entries, built-in denials, allow and deny lists."""

from __future__ import annotations

import asyncio

import pytest

from mimir.core.errors import OutboundRefusedError
from mimir.core.outbound import OutboundPolicy, OutboundRule
from mimir.core.settings import Settings


def policy(**env: str) -> OutboundPolicy:
    return OutboundPolicy.from_settings(Settings.from_env({"MIMIR_PORT": "8080", **env}))


def allowed(p: OutboundPolicy, url: str) -> bool:
    try:
        asyncio.run(p.check(url))
    except OutboundRefusedError:
        return False
    return True


@pytest.mark.parametrize(
    ("entry", "host", "network", "port"),
    [
        ("api.example.com", "api.example.com", None, None),
        ("API.Example.com.:8443", "api.example.com", None, 8443),
        ("*.example.com", "*.example.com", None, None),
        ("10.0.0.0/8", None, "10.0.0.0/8", None),
        ("10.0.0.0/8:443", None, "10.0.0.0/8", 443),
        ("::1", None, "::1/128", None),
        ("[::1]:8080", None, "::1/128", 8080),
    ],
)
def test_entries_parse(entry: str, host: str | None, network: str | None, port: int | None) -> None:
    rule = OutboundRule.parse(entry)
    assert rule.host == host
    assert (str(rule.network) if rule.network else None) == network
    assert rule.port == port


@pytest.mark.parametrize("entry", ["", "a b", "host:99999", "host:x", "user@host"])
def test_bad_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        OutboundRule.parse(entry)


def test_a_bad_setting_names_its_variable() -> None:
    with pytest.raises(ValueError, match="MIMIR_HTTP_DENY"):
        policy(MIMIR_HTTP_DENY="ok.example, bad:port")


def test_builtin_denials() -> None:
    p = policy(REDIS_URL="redis://10.1.2.3:6380/0")
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/",
        "http://127.0.0.1:8080/health",
        "http://127.9.9.9:8080/",
        "http://[::1]:8080/",
        "http://0.0.0.0:8080/",
        "http://127.0.0.1:6379/",
        "http://10.1.2.3:6380/",
    ):
        assert not allowed(p, url), url
    for url in ("http://127.0.0.1:8081/", "http://10.1.2.3:80/", "https://192.0.2.1/"):
        assert allowed(p, url), url


def test_only_http_and_https_with_a_host() -> None:
    p = policy()
    assert not allowed(p, "ftp://192.0.2.1/")
    assert not allowed(p, "file:///etc/passwd")
    assert not allowed(p, "http:///path")


def test_allow_list_restricts_and_deny_wins() -> None:
    p = policy(
        MIMIR_HTTP_ALLOW="*.example.com, 192.0.2.0/24:443",
        MIMIR_HTTP_DENY="bad.example.com, 192.0.2.7",
    )
    assert allowed(p, "https://192.0.2.1/")
    assert not allowed(p, "http://192.0.2.1/")  # port 80 is not in the allowlist
    assert not allowed(p, "https://192.0.2.7/")  # denied
    assert not allowed(p, "https://198.51.100.1/")
    assert not allowed(p, "https://bad.example.com/")
    assert not allowed(p, "https://example.org/")


def test_a_redirect_may_not_change_the_scheme() -> None:
    hooks = policy().event_hooks("https://192.0.2.1/start")
    hook = hooks["request"][0]

    class Request:
        url = "http://192.0.2.1/downgraded"

    with pytest.raises(OutboundRefusedError, match="may not change the scheme"):
        asyncio.run(hook(Request()))  # type: ignore[operator]
