"""``GET /api/v1/plugins``: names, descriptions and each config model's JSON schema."""

from __future__ import annotations

import httpx


def test_lists_plugins_with_config_schemas(api_client: httpx.Client) -> None:
    answer = api_client.get("/api/v1/plugins")
    assert answer.status_code == 200
    body = answer.json()
    plugins = {plugin["name"]: plugin for plugin in body["plugins"]}
    assert list(plugins) == sorted(plugins)
    sleep = plugins["Debug.sleep"]
    assert sleep["type"] == "Debug" and sleep["description"]
    assert sleep["config_schema"]["properties"]["seconds"]["type"] == "number"
    assert sleep["config_schema"]["required"] == ["seconds"]
    assert sleep["config_schema"]["additionalProperties"] is False
    assert "message" in plugins["Debug.fail"]["config_schema"]["properties"]
    assert body["load_errors"] == {}
