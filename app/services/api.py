"""The console's HTTP client for the Mimir API: one :class:`httpx.AsyncClient`, typed calls.

Exceptions::

    ApiError                 the server answered with an error, or could not be reached
     └── ApiUnreachable      no answer at all (connection refused, timeout, DNS …)

``str(err)`` is the server's own message (``{"error": "..."}``) so views can show it as is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from mimir.core.tls import TlsError, api_verify, describe_http_error

__all__ = ["DEFAULT_TIMEOUT", "POLL_HEADERS", "ApiClient", "ApiError", "ApiUnreachable"]

logger = logging.getLogger(__name__)

#: Every call has a deadline; long-poll calls pass their own.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)

#: Marks the console's periodic reads: the server logs them at DEBUG when they succeed,
#: so a console left open does not fill the server's log with its own polling.
POLL_HEADERS = {"X-Mimir-Poll": "1"}


class ApiError(Exception):
    """A call failed; ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(self, message: str, status: int = 0, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class ApiUnreachable(ApiError):
    """The server did not answer (refused, timed out, unknown host)."""


def _seg(value: str) -> str:
    """``value`` as one path segment."""
    return quote(value, safe="")


def _message_of(response: httpx.Response) -> tuple[str, Any]:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:300] or response.reason_phrase or f"HTTP {response.status_code}"), None
    if isinstance(body, dict):
        message = body.get("error") or body.get("message") or body.get("detail")
        if isinstance(message, list):  # FastAPI's default 422 shape
            message = "; ".join(str(item.get("msg", item)) for item in message)
        return str(message or f"HTTP {response.status_code}"), body.get("detail")
    return f"HTTP {response.status_code}", body


class ApiClient:
    """Typed calls to one Mimir server. Create once, ``await aclose()`` at shutdown.

    ``transport`` is the seam tests may use; the console and its tests use a real server.
    ``https://`` servers are verified against the default CAs, or ``ca_file`` (the
    profile's CA file; else ``$MIMIR_CA_FILE``) besides them.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_file: str | None = None,
    ) -> None:
        self._token = token or None
        self._timeout = timeout
        self._transport = transport
        self._retired: list[httpx.AsyncClient] = []
        self._client = self._make_client(base_url, ca_file)

    def _make_client(self, base_url: str, ca_file: str | None) -> httpx.AsyncClient:
        self._ca_file = ca_file or None
        #: Why calls cannot be made (a CA file that cannot be loaded), else ``None``.
        self._tls_problem: str | None = None
        try:
            verify = api_verify(ca_file)
        except TlsError as exc:
            self._tls_problem = str(exc)
            verify = True
        return httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=self._timeout,
            transport=self._transport,
            headers=self._auth_headers(),
            verify=verify,
        )

    # ---------------------------------------------------------------- plumbing

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    @property
    def base_url(self) -> str:
        return str(self._client.base_url).rstrip("/")

    def configure(
        self, base_url: str, token: str | None = None, ca_file: str | None = None
    ) -> None:
        """Point the same client at another server (a profile switch)."""
        self._token = token or None
        if (ca_file or None) != self._ca_file:  # TLS settings are fixed per httpx client
            self._retired.append(self._client)
            self._client = self._make_client(base_url, ca_file)
            return
        self._client.base_url = httpx.URL(base_url.rstrip("/"))
        self._client.headers.pop("Authorization", None)
        self._client.headers.update(self._auth_headers())

    async def aclose(self) -> None:
        for client in self._retired:
            await client.aclose()
        self._retired.clear()
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One call; the decoded JSON body (``None`` for 204), else :class:`ApiError`."""
        kwargs: dict[str, Any] = {"json": json, "params": params}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if headers:
            kwargs["headers"] = headers
        if self._tls_problem:
            raise ApiUnreachable(f"cannot reach {self.base_url}: {self._tls_problem}")
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiUnreachable(f"{self.base_url} did not answer {method} {path} in time") from exc
        except httpx.HTTPError as exc:
            raise ApiUnreachable(describe_http_error(exc, self.base_url)) from exc
        if response.status_code >= 400:
            message, detail = _message_of(response)
            raise ApiError(message, response.status_code, detail)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(f"{method} {path}: the server's answer is not JSON", 502) from exc

    async def stream_lines(self, path: str, *, read_timeout: float = 15.0) -> AsyncIterator[str]:
        """The lines of a streamed answer (server-sent events); :class:`ApiError` on failure."""
        timeout = httpx.Timeout(DEFAULT_TIMEOUT.connect or 3.0, read=read_timeout)
        try:
            async with self._client.stream("GET", path, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    message, detail = _message_of(response)
                    raise ApiError(message, response.status_code, detail)
                async for line in response.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise ApiUnreachable(f"event stream from {self.base_url} broke: {exc}") from exc

    async def stream_bytes(self, path: str, *, read_timeout: float = 60.0) -> AsyncIterator[bytes]:
        """A file's bytes as they arrive (a download); :class:`ApiError` on failure."""
        timeout = httpx.Timeout(DEFAULT_TIMEOUT.connect or 3.0, read=read_timeout)
        try:
            async with self._client.stream("GET", path, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    message, detail = _message_of(response)
                    raise ApiError(message, response.status_code, detail)
                async for chunk in response.aiter_bytes(65536):
                    yield chunk
        except httpx.HTTPError as exc:
            raise ApiUnreachable(f"download from {self.base_url} broke: {exc}") from exc

    # ---------------------------------------------------------------- health, plugins

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/health", timeout=3.0)

    async def plugins(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/v1/plugins"))["plugins"]

    # ---------------------------------------------------------------- pipelines

    async def list_pipelines(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/v1/pipelines"))["pipelines"]

    async def get_pipeline(self, name: str) -> dict[str, Any]:
        """``{name, file, yaml, pipeline}``."""
        return await self.request("GET", f"/api/v1/pipelines/{name}")

    async def save_pipeline(self, name: str, yaml_text: str) -> dict[str, Any]:
        return await self.request("PUT", f"/api/v1/pipelines/{name}", json={"yaml": yaml_text})

    async def delete_pipeline(self, name: str) -> None:
        await self.request("DELETE", f"/api/v1/pipelines/{name}")

    async def validate_pipeline(self, yaml_text: str) -> dict[str, Any]:
        """``{valid, errors: [{message, line, column, step_index, step_name, field}]}``."""
        return await self.request("POST", "/api/v1/pipelines/validate", json={"yaml": yaml_text})

    async def execute_pipeline(
        self,
        *,
        name: str | None = None,
        pipeline: dict[str, Any] | str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float = 300.0,
    ) -> dict[str, Any]:
        """Run now; the PipelineResult (``success, error, context, steps, duration_ms``)."""
        body: dict[str, Any] = {"context": context or {}}
        if pipeline is not None:
            body["pipeline"] = pipeline
        else:
            body["pipeline_name"] = name
        return await self.request("POST", "/api/v1/pipelines/execute", json=body, timeout=timeout)

    # ---------------------------------------------------------------- queue

    async def enqueue(
        self,
        *,
        name: str | None = None,
        pipeline: dict[str, Any] | str | None = None,
        context: dict[str, Any] | None = None,
        priority: str = "normal",
        count: int = 1,
        concurrency: int = 16,
        **options: Any,
    ) -> list[str]:
        """Enqueue ``count`` jobs of one pipeline; their ids, in order."""
        if count < 1:
            raise ApiError("count must be at least 1", 400)
        body: dict[str, Any] = {"context": context or {}, "priority": priority, **options}
        if pipeline is not None:
            body["pipeline"] = pipeline
        else:
            body["pipeline_name"] = name
        limit = asyncio.Semaphore(concurrency)

        async def one() -> str:
            async with limit:
                answer = await self.request("POST", "/api/v1/queue/pipelines/enqueue", json=body)
                return str(answer["job_id"])

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def list_jobs(
        self, status: str | None = None, *, offset: int = 0, limit: int = 200
    ) -> dict[str, Any]:
        """``{jobs: [record…], total, offset, limit}``, newest first."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status:
            params["status"] = status
        return await self.request("GET", "/api/v1/queue/jobs", params=params, headers=POLL_HEADERS)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/v1/queue/jobs/{job_id}")

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/api/v1/queue/jobs/{job_id}/cancel")

    async def dead_letter(self, *, limit: int = 1000) -> dict[str, Any]:
        """``{entries: [{entry_id, job_id, status, error, at, job}], total, …}``, newest first."""
        answer = await self.request(
            "GET", "/api/v1/queue/dead-letter", params={"limit": limit}, headers=POLL_HEADERS
        )
        return answer if isinstance(answer, dict) else {"entries": list(answer or []), "total": 0}

    async def retry_dead(self, job_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/api/v1/queue/dead-letter/{job_id}/retry")

    async def delete_dead(self, job_id: str) -> None:
        """Remove a failed or dead job for good."""
        await self.request("DELETE", f"/api/v1/queue/dead-letter/{job_id}")

    async def queue_status(self) -> dict[str, Any]:
        return await self.request("GET", "/api/v1/queue/status", timeout=5.0, headers=POLL_HEADERS)

    async def workers(self) -> list[dict[str, Any]]:
        answer = await self.request("GET", "/api/v1/workers", timeout=5.0, headers=POLL_HEADERS)
        return answer["workers"]

    async def control_worker(self, worker_id: str, action: str) -> dict[str, Any]:
        """Ask one worker to ``drain`` (finish its jobs, take no more, exit) or ``stop``
        (hand its jobs back, exit): ``{worker_id, action}``; 404 for an unknown worker."""
        if action not in ("drain", "stop"):
            raise ValueError(f"unknown worker action {action!r}")
        return await self.request("POST", f"/api/v1/workers/{quote(worker_id, safe='')}/{action}")

    # ---------------------------------------------------------------- pools, autoscaler

    async def pools(self) -> dict[str, dict[str, Any]]:
        """Per pool: ``queues``, ``replicas: {wanted, running}``, ``queued``, ``running``,
        ``oldest_age_s``, ``jobs_per_sec`` (``GET /api/v1/pools``)."""
        answer = await self.request("GET", "/api/v1/pools", timeout=5.0, headers=POLL_HEADERS)
        pools = answer.get("pools", answer) if isinstance(answer, dict) else answer
        if isinstance(pools, list):  # a list of pools, each with its name
            return {str(p.get("name", "")): p for p in pools if isinstance(p, dict)}
        return {str(k): v for k, v in (pools or {}).items() if isinstance(v, dict)}

    async def autoscaler(self) -> dict[str, Any]:
        """``{enabled, reason, leader, period, pools: {name: {policy, min, max, replicas,
        figures, last_change}}, decisions: [...]}`` (``GET /api/v1/autoscaler``)."""
        return await self.request("GET", "/api/v1/autoscaler", timeout=5.0, headers=POLL_HEADERS)

    async def set_pool_policy(self, pool: str, policy: dict[str, Any]) -> dict[str, Any]:
        """Replace a pool's autoscaling policy (its fields and ``min``/``max``); 422 names
        the field that is wrong."""
        path = f"/api/v1/autoscaler/pools/{quote(pool, safe='')}"
        return await self.request("PUT", path, json=policy)

    # ---------------------------------------------------------------- knowledge graph

    async def kg_query(self, query: str) -> dict[str, Any]:
        """A SPARQL query; the server's answer (``{vars, rows}`` or SPARQL JSON results)."""
        return await self.request("POST", "/api/v1/kg/query", json={"query": query}, timeout=60.0)

    async def upload_ontology(
        self, name: str, document: str, media_type: str = "text/turtle"
    ) -> dict[str, Any]:
        """Upload an ontology document (Turtle by default) under ``name``."""
        try:
            response = await self._client.post(
                "/api/v1/ontologies",
                params={"name": name},
                content=document.encode(),
                headers={"Content-Type": media_type},
            )
        except httpx.HTTPError as exc:
            raise ApiUnreachable(f"cannot reach {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            message, detail = _message_of(response)
            raise ApiError(message, response.status_code, detail)
        return response.json()

    async def list_twins(self) -> list[dict[str, Any]]:
        answer = await self.request("GET", "/api/v1/twins")
        return list(answer.get("twins", []) if isinstance(answer, dict) else answer)

    async def create_twin(self, name: str, ontology_id: str) -> dict[str, Any]:
        body = {"name": name, "ontology_id": ontology_id}
        return await self.request("POST", "/api/v1/twins", json=body)

    async def list_scenarios(self, twin_id: str) -> list[dict[str, Any]]:
        answer = await self.request("GET", f"/api/v1/twins/{twin_id}/scenarios")
        return list(answer.get("scenarios", []))

    async def add_scenario(self, twin_id: str, scenario: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", f"/api/v1/twins/{twin_id}/scenarios", json=scenario)

    async def run_twin(
        self,
        twin_id: str,
        scenario_id: str,
        *,
        wait: bool = True,
        seed: int | None = None,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """Simulate; with ``wait`` the finished run record (``result.times``,
        ``result.utilisation`` per entity), else the queued run."""
        body: dict[str, Any] = {"scenario_id": scenario_id, "wait": wait}
        if seed is not None:
            body["seed"] = seed
        return await self.request(
            "POST", f"/api/v1/twins/{_seg(twin_id)}/runs", json=body, timeout=timeout
        )

    async def get_twin(self, twin_id: str) -> dict[str, Any]:
        """A twin with its ``entities`` and ``relationships``."""
        return await self.request("GET", f"/api/v1/twins/{_seg(twin_id)}")

    async def list_runs(self, twin_id: str) -> list[dict[str, Any]]:
        """The twin's runs, oldest first, without their results (a ``summary`` when the
        server gives one)."""
        answer = await self.request(
            "GET", f"/api/v1/twins/{_seg(twin_id)}/runs", headers=POLL_HEADERS
        )
        return list(answer.get("runs", []) if isinstance(answer, dict) else answer or [])

    async def get_run(self, twin_id: str, run_id: str, *, points: int = 200) -> dict[str, Any]:
        """A run with its result bounded to ``points`` snapshots a series."""
        return await self.request(
            "GET",
            f"/api/v1/twins/{_seg(twin_id)}/runs/{_seg(run_id)}",
            params={"points": points},
            timeout=60.0,
        )

    async def compare_runs(self, twin_id: str, run_a: str, run_b: str) -> dict[str, Any]:
        """``{runs: [a, b], system: {metric: {a, b, delta, delta_pct}}, entities: {id:
        {label, metric: {a, b, delta}}}}``; 409 names a run that has not succeeded."""
        return await self.request(
            "GET",
            f"/api/v1/twins/{_seg(twin_id)}/compare",
            params={"runs": f"{run_a},{run_b}"},
            timeout=60.0,
        )

    async def start_whatif(
        self,
        twin_id: str,
        scenario_id: str,
        changes: list[dict[str, Any]],
        *,
        seeds: int | list[int] = 10,
        priority: str | None = None,
    ) -> dict[str, Any]:
        """Queue a what-if batch (base and variant for each seed): ``{batch_id, runs, …}``."""
        body: dict[str, Any] = {"scenario_id": scenario_id, "changes": changes, "seeds": seeds}
        if priority:
            body["priority"] = priority
        return await self.request("POST", f"/api/v1/twins/{_seg(twin_id)}/whatif", json=body)

    async def get_whatif(self, twin_id: str, batch_id: str) -> dict[str, Any]:
        """``{status, done, total, failed, base, variant, delta: {metric: {mean, p5, p95}},
        bottlenecks: [{entity, label, base_share, variant_share, mean_time}], runs}``."""
        return await self.request(
            "GET",
            f"/api/v1/twins/{_seg(twin_id)}/whatif/{_seg(batch_id)}",
            headers=POLL_HEADERS,
        )

    async def list_whatifs(self, twin_id: str) -> list[dict[str, Any]]:
        answer = await self.request("GET", f"/api/v1/twins/{_seg(twin_id)}/whatif")
        if isinstance(answer, dict):
            return list(answer.get("batches") or answer.get("whatifs") or [])
        return list(answer or [])

    async def has_kg(self) -> bool:
        """True when the server offers the knowledge-graph API."""
        try:
            await self.kg_query("SELECT * WHERE { ?s ?p ?o } LIMIT 1")
        except ApiUnreachable:
            raise  # unknown yet: ask again once the server answers
        except ApiError as exc:
            if exc.status in (404, 405):
                return False
            return exc.status != 0 and exc.status < 500
        return True
