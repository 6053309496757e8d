"""The pipeline file store and request resolution, against real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mimir.core.errors import (
    PathEscapeError,
    PipelineExistsError,
    PipelineNotFoundError,
    PipelineValidationError,
)
from mimir.core.pipeline.requests import (
    InvalidPipelineRequestError,
    PipelineRequest,
    resolve_pipeline_request,
)
from mimir.core.pipeline.store import PipelineStore
from mimir.core.settings import Settings

ECHO = """\
name: echo-test
description: echoes its input
steps:
  - name: echo
    plugin: Debug.echo
    config: {value: "{{ input }}"}
    output: echoed
"""


@pytest.fixture
def store(tmp_path: Path) -> PipelineStore:
    return PipelineStore(tmp_path / "pipelines")


def test_save_list_get_delete(store: PipelineStore) -> None:
    stored, created = store.save("echo", ECHO, create=True)
    assert created and stored.file == "echo.yaml" and stored.pipeline.name == "echo-test"
    assert (store.directory / "echo.yaml").read_text() == ECHO
    [summary] = store.list()
    assert summary.as_dict() == {
        "name": "echo",
        "file": "echo.yaml",
        "pipeline_name": "echo-test",
        "description": "echoes its input",
        "steps": 1,
        "valid": True,
        "error": None,
    }
    assert store.get("echo").yaml == ECHO
    assert store.get("echo.yaml").name == "echo"
    assert store.get("echo-test").name == "echo"  # by the name the YAML declares
    with pytest.raises(PipelineExistsError, match="'echo' already exists"):
        store.save("echo", ECHO, create=True)
    _, created = store.save("echo", ECHO.replace("echoes", "repeats"))
    assert not created and store.get("echo").pipeline.description == "repeats its input"
    store.delete("echo")
    assert store.list() == []
    with pytest.raises(PipelineNotFoundError, match="no pipeline named 'echo'"):
        store.get("echo")
    with pytest.raises(PipelineNotFoundError):
        store.delete("echo")


def test_invalid_yaml_is_never_written(store: PipelineStore) -> None:
    with pytest.raises(PipelineValidationError) as info:
        store.save("bad", "name: x\nsteps:\n  - name: a\n    plugin: Debug.ech\n")
    [issue] = info.value.errors
    assert (issue.line, issue.step_index, issue.field) == (4, 1, "plugin")
    assert "Debug.echo" in issue.suggestions
    assert not (store.directory / "bad.yaml").exists()


def test_a_broken_file_is_listed_with_its_error(store: PipelineStore) -> None:
    store.directory.mkdir(parents=True)
    (store.directory / "broken.yaml").write_text("name: [unclosed\n")
    [summary] = store.list()
    assert summary.name == "broken" and not summary.as_dict()["valid"]
    assert "line" in (summary.error or "")


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 200, "a\x00b"])
def test_unsafe_names_are_refused(store: PipelineStore, name: str) -> None:
    with pytest.raises(PathEscapeError, match="invalid pipeline name"):
        store.save(name, ECHO)


def test_pipeline_file_stays_inside_the_directory(store: PipelineStore, tmp_path: Path) -> None:
    store.save("echo", ECHO)
    outside = tmp_path / "outside.yaml"
    outside.write_text(ECHO)
    assert store.resolve_file("echo.yaml") == (store.directory / "echo.yaml").resolve()
    assert store.resolve_file("echo").name == "echo.yaml"
    with pytest.raises(PathEscapeError, match=r"contains '\.\.'"):
        store.resolve_file("../outside.yaml")
    with pytest.raises(PathEscapeError, match="outside the pipelines directory"):
        store.resolve_file(str(outside))
    os.symlink(outside, store.directory / "link.yaml")
    with pytest.raises(PathEscapeError, match="symlink"):
        store.resolve_file("link.yaml")
    with pytest.raises(PipelineNotFoundError, match=r"available: echo\.yaml"):
        store.resolve_file("missing.yaml")


def test_cached_parse_follows_file_changes(store: PipelineStore) -> None:
    store.save("echo", ECHO)
    path = store.resolve_file("echo.yaml")
    first = store.load_file(path)[1]
    assert store.load_file(path)[1] is first  # cached
    path.write_text(ECHO.replace("echoes its input", "changed on disk!"))
    assert store.load_file(path)[1].description == "changed on disk!"


def test_resolve_request_each_way(store: PipelineStore, tmp_path: Path) -> None:
    store.save("echo", ECHO)
    settings = Settings(pipelines_dir=store.directory)
    by_file = resolve_pipeline_request({"pipeline_file": "echo.yaml"}, settings)
    by_name = resolve_pipeline_request(PipelineRequest(pipeline_name="echo"), store=store)
    inline = resolve_pipeline_request({"pipeline": ECHO}, store=store)
    as_dict = resolve_pipeline_request(
        {"pipeline": {"name": "d", "steps": [{"name": "s", "plugin": "Debug.echo"}]}}
    )
    assert by_file.name == by_name.name == inline.name == "echo-test"
    assert as_dict.steps[0].plugin == "Debug.echo"
    with pytest.raises(InvalidPipelineRequestError, match="none was given"):
        resolve_pipeline_request({"context": {}}, settings)
    with pytest.raises(InvalidPipelineRequestError, match="pipeline_file and pipeline_name"):
        resolve_pipeline_request({"pipeline_file": "a", "pipeline_name": "b"}, settings)


def test_inline_text_is_never_read_as_a_path(store: PipelineStore, tmp_path: Path) -> None:
    (tmp_path / "secret.yaml").write_text(ECHO)
    with pytest.raises(PipelineValidationError, match="must be a mapping"):
        resolve_pipeline_request({"pipeline": str(tmp_path / "secret.yaml")}, store=store)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_saved_files_honour_the_umask_and_keep_their_mode(store: PipelineStore) -> None:
    """Issue 13: saved pipeline files were mode 0600 (mkstemp's), unreadable to the group
    and others that a umask of 022 lets read them."""
    old = os.umask(0o022)
    try:
        store.save("echo", ECHO)
        path = store.directory / "echo.yaml"
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        store.save("private", ECHO)
        assert (store.directory / "private.yaml").stat().st_mode & 0o777 == 0o600
        path.chmod(0o664)  # an operator's choice survives a save
        store.save("echo", ECHO.replace("echoes its input", "echoes"))
        assert path.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
