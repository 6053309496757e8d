"""The pipelines API of a real server process, over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx

SEED_BODY = '{"pipeline_file": "test_pipeline.yaml", "context": {"input": "test data"}}'

ECHO_YAML = """\
name: echo
description: echo the input
steps:
  - name: echo
    plugin: Debug.echo
    config: {value: "{{ input }}"}
    output: echoed
"""

FAILING_YAML = """\
name: failing
steps:
  - name: first
    plugin: Debug.echo
    config: {value: 1}
    output: one
  - name: boom
    plugin: Debug.fail
    config: {message: "disk on fire"}
  - name: never
    plugin: Debug.echo
"""


def test_the_seeds_execute_call_verbatim(api_client: httpx.Client) -> None:
    answer = api_client.post(
        "/api/v1/pipelines/execute",
        content=SEED_BODY,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["success"] is True and result["error"] is None
    assert result["pipeline"] == "test-pipeline"
    assert result["context"]["input"] == "test data"
    assert result["context"]["echoed"] == "test data"
    assert [step["status"] for step in result["steps"]] == ["succeeded"] * len(result["steps"])
    assert {"name", "plugin", "status", "duration_ms", "error"} <= set(result["steps"][0])
    assert result["executed_at"].endswith("Z") and result["duration_ms"] >= 0


def test_execute_by_name_and_inline(api_client: httpx.Client, pipelines_dir: Path) -> None:
    (pipelines_dir / "echo.yaml").write_text(ECHO_YAML)
    context = {"input": [1, 2, 3]}
    by_name = api_client.post(
        "/api/v1/pipelines/execute", json={"pipeline_name": "echo", "context": context}
    )
    by_file_stem = api_client.post(
        "/api/v1/pipelines/execute", json={"pipeline_file": "echo", "context": context}
    )
    inline_yaml = api_client.post(
        "/api/v1/pipelines/execute", json={"pipeline": ECHO_YAML, "context": context}
    )
    inline_dict = api_client.post(
        "/api/v1/pipelines/execute",
        json={
            "pipeline": {
                "name": "inline",
                "steps": [
                    {
                        "name": "e",
                        "plugin": "Debug.echo",
                        "config": {"value": "{{ input }}"},
                        "output": "echoed",
                    }
                ],
            },
            "context": context,
        },
    )
    for answer in (by_name, by_file_stem, inline_yaml, inline_dict):
        assert answer.status_code == 200, answer.text
        assert answer.json()["context"]["echoed"] == [1, 2, 3]  # a list stays a list


def test_a_failing_step_is_a_result_not_a_server_error(
    api_client: httpx.Client, pipelines_dir: Path
) -> None:
    (pipelines_dir / "failing.yaml").write_text(FAILING_YAML)
    answer = api_client.post("/api/v1/pipelines/execute", json={"pipeline_file": "failing.yaml"})
    assert answer.status_code == 200
    result = answer.json()
    assert result["success"] is False
    assert "boom" in result["error"] and "disk on fire" in result["error"]
    assert [s["status"] for s in result["steps"]] == ["succeeded", "failed"]
    assert result["steps"][1]["error"] == "disk on fire"


def test_crud(api_client: httpx.Client, pipelines_dir: Path) -> None:
    created = api_client.post("/api/v1/pipelines", json={"yaml": ECHO_YAML})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "echo" and created.json()["file"] == "echo.yaml"
    assert (pipelines_dir / "echo.yaml").read_text() == ECHO_YAML

    again = api_client.post("/api/v1/pipelines", json={"yaml": ECHO_YAML})
    assert again.status_code == 409 and "already exists" in again.json()["error"]

    listed = api_client.get("/api/v1/pipelines").json()["pipelines"]
    by_name = {p["name"]: p for p in listed}
    assert {"echo", "test_pipeline"} <= set(by_name)
    assert by_name["echo"] == {
        "name": "echo",
        "file": "echo.yaml",
        "pipeline_name": "echo",
        "description": "echo the input",
        "steps": 1,
        "valid": True,
        "error": None,
    }

    got = api_client.get("/api/v1/pipelines/echo").json()
    assert got["yaml"] == ECHO_YAML and got["pipeline"]["steps"][0]["plugin"] == "Debug.echo"

    changed = ECHO_YAML.replace("echo the input", "changed")
    replaced = api_client.put("/api/v1/pipelines/echo", json={"yaml": changed})
    assert replaced.status_code == 200 and replaced.json()["pipeline"]["description"] == "changed"
    new = api_client.put("/api/v1/pipelines/other", json={"yaml": ECHO_YAML})
    assert new.status_code == 201 and (pipelines_dir / "other.yaml").exists()

    bad = api_client.put("/api/v1/pipelines/echo", json={"yaml": "name: x\nsteps: []\n"})
    assert bad.status_code == 422
    assert (pipelines_dir / "echo.yaml").read_text() == changed  # nothing written

    assert api_client.delete("/api/v1/pipelines/echo").status_code == 204
    assert not (pipelines_dir / "echo.yaml").exists()
    gone = api_client.get("/api/v1/pipelines/echo")
    assert gone.status_code == 404 and "no pipeline named 'echo'" in gone.json()["error"]
    assert api_client.delete("/api/v1/pipelines/echo").status_code == 404

    (pipelines_dir / "broken.yaml").write_text("name: broken\nsteps:\n  - name: a\n")
    broken = api_client.get("/api/v1/pipelines/broken")
    assert broken.status_code == 200  # an editor can still load it to fix it
    assert broken.json()["valid"] is False and broken.json()["pipeline"] is None
    assert broken.json()["yaml"].startswith("name: broken")
    assert broken.json()["errors"][0]["field"] == "plugin"
    assert broken.json()["errors"][0]["line"] == 3

    unsafe = api_client.put("/api/v1/pipelines/..evil", json={"yaml": ECHO_YAML})
    assert unsafe.status_code == 400 and "invalid pipeline name" in unsafe.json()["error"]


def test_validate_names_line_column_step_and_field(api_client: httpx.Client) -> None:
    ok = api_client.post("/api/v1/pipelines/validate", json={"yaml": ECHO_YAML}).json()
    assert ok["valid"] is True and ok["errors"] == [] and ok["pipeline"]["name"] == "echo"

    yaml_error = api_client.post(
        "/api/v1/pipelines/validate", json={"yaml": "name: x\nsteps:\n  - name: [a\n"}
    ).json()
    assert yaml_error["valid"] is False
    [issue] = yaml_error["errors"]
    assert issue["line"] is not None and issue["column"] is not None
    assert "invalid YAML" in issue["message"]

    bad_field = ECHO_YAML.replace("    output: echoed", "    outptu: echoed")
    schema_error = api_client.post(
        "/api/v1/pipelines/validate", params={"strict": "true"}, json={"yaml": bad_field}
    ).json()
    [issue] = schema_error["errors"]
    assert (issue["line"], issue["step_index"], issue["step_name"]) == (7, 1, "echo")
    assert issue["field"] == "outptu" and issue["suggestions"] == ["output"]
    # Without ?strict=true an unknown field is ignored, as the original platform did, and
    # the answer says so.
    lenient = api_client.post("/api/v1/pipelines/validate", json={"yaml": bad_field}).json()
    assert lenient["valid"] is True
    [warning] = lenient["warnings"]
    assert (warning["line"], warning["field"], warning["suggestions"]) == (7, "outptu", ["output"])

    empty = api_client.post("/api/v1/pipelines/validate", json={})
    assert empty.status_code == 422 and "exactly one of 'yaml'" in empty.json()["error"]


def test_unknown_plugin_names_the_step_and_suggests(api_client: httpx.Client) -> None:
    body = {"pipeline": ECHO_YAML.replace("Debug.echo", "Debug.ecoh")}
    answer = api_client.post("/api/v1/pipelines/execute", json=body)
    assert answer.status_code == 422
    error = answer.json()
    assert "step 1 'echo'" in error["error"] and "Debug.ecoh" in error["error"]
    [issue] = error["detail"]["issues"]
    assert issue["field"] == "plugin" and issue["step_name"] == "echo" and issue["line"] == 5
    assert "Debug.echo" in issue["suggestions"]


def test_bad_requests_are_4xx_json(api_client: httpx.Client) -> None:
    execute = "/api/v1/pipelines/execute"
    malformed = api_client.post(
        execute, content=b'{"pipeline_file": ', headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"].startswith("malformed JSON body")

    nothing = api_client.post(execute, json={"context": {}})
    assert nothing.status_code == 422
    assert "give exactly one of pipeline_file, pipeline_name or pipeline" in nothing.json()["error"]

    both = api_client.post(execute, json={"pipeline_file": "a.yaml", "pipeline_name": "a"})
    assert both.status_code == 422 and "pipeline_file and pipeline_name" in both.json()["error"]

    wrong_type = api_client.post(
        execute, json={"pipeline_file": "test_pipeline.yaml", "context": "text"}
    )
    assert wrong_type.status_code == 422
    assert (
        wrong_type.json()["error"] == "invalid request: context: Input should be a valid dictionary"
    )

    typo = api_client.post(execute, json={"pipline_file": "test_pipeline.yaml"})
    assert typo.status_code == 422 and "pipline_file: unknown field" in typo.json()["error"]

    missing = api_client.post("/api/v1/pipelines", json={})
    assert missing.status_code == 422
    assert missing.json()["error"] == "invalid request: yaml: required field is missing"

    form = api_client.post(execute, content=SEED_BODY, headers={"Content-Type": "text/plain"})
    assert form.status_code == 422 and "application/json" in form.json()["error"]

    for answer in (malformed, nothing, both, wrong_type, typo, missing, form):
        assert answer.headers["content-type"] == "application/json"
        assert "Traceback" not in answer.text


def test_unknown_pipeline_is_404(api_client: httpx.Client) -> None:
    by_file = api_client.post("/api/v1/pipelines/execute", json={"pipeline_file": "nope.yaml"})
    assert by_file.status_code == 404
    assert "'nope.yaml' not found" in by_file.json()["error"]
    assert "test_pipeline.yaml" in by_file.json()["error"]  # lists what exists
    by_name = api_client.post("/api/v1/pipelines/execute", json={"pipeline_name": "nope"})
    assert by_name.status_code == 404 and "no pipeline named 'nope'" in by_name.json()["error"]
    route = api_client.get("/api/v1/nothing-here")
    assert route.status_code == 404 and route.json()["error"].startswith("no such endpoint")


def test_pipeline_file_cannot_leave_the_pipelines_dir(
    api_client: httpx.Client, pipelines_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text(ECHO_YAML)
    (pipelines_dir / "link.yaml").symlink_to(outside)
    for file, reason in [
        ("../outside.yaml", "contains '..'"),
        (str(outside), "outside the pipelines directory"),
        ("link.yaml", "symlink"),
    ]:
        answer = api_client.post("/api/v1/pipelines/execute", json={"pipeline_file": file})
        assert answer.status_code == 400, (file, answer.text)
        assert reason in answer.json()["error"]
    # Inline YAML text that looks like a path is YAML, never a file to read.
    inline = api_client.post("/api/v1/pipelines/execute", json={"pipeline": str(outside)})
    assert inline.status_code == 422 and "must be a mapping" in inline.json()["error"]


def test_an_oversized_body_is_413(api_client: httpx.Client) -> None:
    huge = b'{"pipeline_file": "test_pipeline.yaml", "context": {"blob": "' + b"x" * (17 << 20)
    answer = api_client.post(
        "/api/v1/pipelines/execute",
        content=huge + b'"}}',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.json()["error"] == (
        "request body larger than 16777216 bytes (limit MIMIR_MAX_BODY_BYTES)"
    )
    # The server is fine afterwards.
    assert api_client.get("/health").status_code == 200
