"""Concurrent writes of one pipeline name on a real server: creating is atomic (exactly
one 201, the others 409) and a file is never seen half-written."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import httpx
import pytest

from mimir.core.errors import PipelineExistsError
from mimir.core.pipeline.store import PipelineStore
from tests.helpers import ServerProcess

WRITERS = 20
ROUNDS = 10


def _yaml(name: str, writer: int) -> str:
    # Some kilobytes, so that a partly written file would be noticed.
    padding = f"writer {writer} " * 2000
    return (
        f"name: {name}\n"
        f"description: {padding.strip()}\n"
        "steps:\n"
        "  - name: echo\n"
        "    plugin: Debug.echo\n"
        f"    config: {{value: {writer}}}\n"
        "    output: echoed\n"
    )


async def _burst(
    base_url: str, method: str, path: str, bodies: list[dict[str, str]]
) -> list[httpx.Response]:
    """Send every body at once, one connection each."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        return list(
            await asyncio.gather(*(client.request(method, path, json=body) for body in bodies))
        )


def test_concurrent_creates_of_one_name(api_server: ServerProcess, pipelines_dir: Path) -> None:
    for round_ in range(ROUNDS):
        name = f"race-{round_}"
        bodies = [{"yaml": _yaml(name, writer)} for writer in range(WRITERS)]
        if round_ % 2:  # half the rounds name it in the request, half by the YAML's name
            bodies = [{**body, "name": name} for body in bodies]
        answers = asyncio.run(_burst(api_server.base_url, "POST", "/api/v1/pipelines", bodies))

        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201] + [409] * (WRITERS - 1), (name, statuses)
        winner = next(answer for answer in answers if answer.status_code == 201)
        for answer in answers:
            if answer.status_code == 409:
                assert answer.json()["error"].startswith(
                    f"a pipeline named {name!r} already exists"
                ), answer.text
        # The file is the winner's body, whole.
        assert (pipelines_dir / f"{name}.yaml").read_text() == winner.json()["yaml"]
        assert winner.json()["yaml"] in [body["yaml"] for body in bodies]
        assert not (pipelines_dir / f"{name}.yml").exists()
    leftovers = [path.name for path in pipelines_dir.iterdir() if path.name.startswith(".")]
    assert leftovers == [], leftovers  # no temporary file stays behind


def test_concurrent_puts_of_a_new_name(api_server: ServerProcess, pipelines_dir: Path) -> None:
    """PUT creates or replaces: one 201 (the one that created it), the others 200, and
    the file is one writer's body, whole."""
    for round_ in range(3):
        name = f"put-race-{round_}"
        bodies = [{"yaml": _yaml(name, writer)} for writer in range(WRITERS)]
        answers = asyncio.run(
            _burst(api_server.base_url, "PUT", f"/api/v1/pipelines/{name}", bodies)
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200] * (WRITERS - 1) + [201], (name, statuses)
        assert (pipelines_dir / f"{name}.yaml").read_text() in [b["yaml"] for b in bodies]


def test_create_of_a_name_taken_with_the_other_suffix(
    api_client: httpx.Client, pipelines_dir: Path
) -> None:
    (pipelines_dir / "legacy.yml").write_text(_yaml("legacy", 0))
    taken = api_client.post("/api/v1/pipelines", json={"yaml": _yaml("legacy", 1)})
    assert taken.status_code == 409 and "(legacy.yml)" in taken.json()["error"], taken.text
    assert not (pipelines_dir / "legacy.yaml").exists()
    # An update keeps the file it has.
    updated = api_client.put("/api/v1/pipelines/legacy", json={"yaml": _yaml("legacy", 2)})
    assert updated.status_code == 200 and updated.json()["file"] == "legacy.yml"
    assert (pipelines_dir / "legacy.yml").read_text() == _yaml("legacy", 2)
    assert api_client.get("/api/v1/pipelines/legacy").json()["yaml"] == _yaml("legacy", 2)


def test_create_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system without hard links the name is claimed with O_EXCL instead."""

    def no_links(*_: object, **__: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    store = PipelineStore(tmp_path)
    stored, created = store.save("solo", _yaml("solo", 1), create=True)
    assert created and (tmp_path / "solo.yaml").read_text() == stored.yaml == _yaml("solo", 1)
    with pytest.raises(PipelineExistsError):
        store.save("solo", _yaml("solo", 2), create=True)
    assert store.save("solo", _yaml("solo", 3))[1] is False
    assert (tmp_path / "solo.yaml").read_text() == _yaml("solo", 3)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["solo.yaml"]
