"""Which role each route needs: :data:`ROUTE_ROLES`, the one place to read.

Every ``(method, path template)`` the app serves is listed here; a route missing from the
table needs ``admin`` (default deny), and ``tests/server/test_roles.py`` fails for it.
``HEAD`` needs what ``GET`` needs; ``OPTIONS`` and paths no route serves (404, 405) need
``viewer`` (any valid key). :data:`PUBLIC` routes need no key at all.

- ``viewer``: reads (``GET``) and the ``POST`` calls that only read: validating a
  pipeline, a knowledge-graph query, a schedule preview.
- ``operator``: runs work and operates it: execute and enqueue, cancel, retry, dead
  letters, worker drain/stop, schedules and triggers, alert rules and acks, twin runs,
  scenarios and what-ifs, pool scaling, the diagnostics.
- ``admin``: everything, and alone: pipeline definitions (create/update/delete: they are
  code that workers run), ontologies and knowledge-graph writes, twin definitions, the
  audit log, backups and restore, API keys.
"""

from __future__ import annotations

from mimir.core.runstore.keys import Role

__all__ = ["PUBLIC", "ROUTE_ROLES", "Role", "required_role"]

#: Routes that need no key (liveness, webhook deliveries carry their trigger's secret).
PUBLIC = frozenset({("GET", "/health"), ("GET", "/ready"), ("POST", "/api/v1/hooks/{trigger_id}")})

V, OP, A = Role.viewer, Role.operator, Role.admin

ROUTE_ROLES: dict[tuple[str, str], Role] = {
    # The API's own description.
    ("GET", "/openapi.json"): V,
    ("GET", "/docs"): V,
    ("GET", "/docs/oauth2-redirect"): V,
    ("GET", "/redoc"): V,
    ("GET", "/metrics"): V,
    ("GET", "/api/v1/events"): V,
    ("GET", "/api/v1/diagnostics"): OP,
    ("GET", "/api/v1/plugins"): V,
    # Pipelines: definitions are admin's, running them operator's.
    ("GET", "/api/v1/pipelines"): V,
    ("GET", "/api/v1/pipelines/{name}"): V,
    ("POST", "/api/v1/pipelines/validate"): V,
    ("POST", "/api/v1/pipelines/execute"): OP,
    ("POST", "/api/v1/pipelines"): A,
    ("PUT", "/api/v1/pipelines/{name}"): A,
    ("DELETE", "/api/v1/pipelines/{name}"): A,
    # The queue and the workers.
    ("GET", "/api/v1/queue/status"): V,
    ("GET", "/api/v1/queue/jobs"): V,
    ("GET", "/api/v1/queue/jobs/{job_id}"): V,
    ("GET", "/api/v1/queue/jobs/{job_id}/wait"): V,
    ("GET", "/api/v1/queue/dead-letter"): V,
    ("POST", "/api/v1/queue/pipelines/enqueue"): OP,
    ("POST", "/api/v1/queue/digital-twins/enqueue"): OP,
    ("POST", "/api/v1/queue/jobs/{job_id}/cancel"): OP,
    ("POST", "/api/v1/queue/dead-letter/{job_id}/retry"): OP,
    ("DELETE", "/api/v1/queue/dead-letter/{job_id}"): OP,
    ("GET", "/api/v1/workers"): V,
    ("POST", "/api/v1/workers/{worker_id}/drain"): OP,
    ("POST", "/api/v1/workers/{worker_id}/stop"): OP,
    ("GET", "/api/v1/pools"): V,
    ("GET", "/api/v1/autoscaler"): V,
    ("PUT", "/api/v1/autoscaler/pools/{pool}"): OP,
    # Ontologies and the knowledge graph: reads for all, writes admin's.
    ("GET", "/api/v1/ontologies"): V,
    ("GET", "/api/v1/ontologies/{ontology_id}"): V,
    ("GET", "/api/v1/ontologies/{ontology_id}/stats"): V,
    ("GET", "/api/v1/ontologies/{ontology_id}/export"): V,
    ("POST", "/api/v1/ontologies"): A,
    ("DELETE", "/api/v1/ontologies/{ontology_id}"): A,
    ("POST", "/api/v1/kg/query"): V,
    ("GET", "/api/v1/kg/subgraph"): V,
    ("GET", "/api/v1/kg/sparql"): V,
    ("POST", "/api/v1/kg/sparql"): A,  # the SPARQL protocol's POST carries updates too
    ("POST", "/api/v1/kg/update"): A,
    # Digital twins: definitions admin's, runs operator's.
    ("GET", "/api/v1/twins"): V,
    ("GET", "/api/v1/twins/{twin_id}"): V,
    ("GET", "/api/v1/twins/{twin_id}/scenarios"): V,
    ("GET", "/api/v1/twins/{twin_id}/scenarios/{scenario_id}"): V,
    ("GET", "/api/v1/twins/{twin_id}/runs"): V,
    ("GET", "/api/v1/twins/{twin_id}/runs/{run_id}"): V,
    ("GET", "/api/v1/twins/{twin_id}/runs/{run_id}/series"): V,
    ("GET", "/api/v1/twins/{twin_id}/runs/{run_id}/timeline"): V,
    ("GET", "/api/v1/twins/{twin_id}/compare"): V,
    ("GET", "/api/v1/twins/{twin_id}/whatif"): V,
    ("GET", "/api/v1/twins/{twin_id}/whatif/{batch_id}"): V,
    ("POST", "/api/v1/twins"): A,
    ("DELETE", "/api/v1/twins/{twin_id}"): A,
    ("POST", "/api/v1/twins/{twin_id}/sync"): OP,
    ("POST", "/api/v1/twins/{twin_id}/scenarios"): OP,
    ("POST", "/api/v1/twins/{twin_id}/runs"): OP,
    ("POST", "/api/v1/twins/{twin_id}/whatif"): OP,
    # The run history.
    ("GET", "/api/v1/runs"): V,
    ("GET", "/api/v1/runs/export"): V,
    ("GET", "/api/v1/runs/stats"): V,
    ("GET", "/api/v1/runs/status"): V,
    ("GET", "/api/v1/runs/{job_id}"): V,
    ("GET", "/api/v1/runs/{job_id}/logs"): V,
    ("GET", "/api/v1/runs/{job_id}/artifacts"): V,
    ("GET", "/api/v1/runs/{job_id}/artifacts/{name}"): V,
    # Schedules and triggers.
    ("GET", "/api/v1/schedules"): V,
    ("GET", "/api/v1/schedules/{schedule_id}"): V,
    ("GET", "/api/v1/schedules/{schedule_id}/runs"): V,
    ("POST", "/api/v1/schedules/preview"): V,
    ("POST", "/api/v1/schedules"): OP,
    ("PUT", "/api/v1/schedules/{schedule_id}"): OP,
    ("DELETE", "/api/v1/schedules/{schedule_id}"): OP,
    ("POST", "/api/v1/schedules/{schedule_id}/pause"): OP,
    ("POST", "/api/v1/schedules/{schedule_id}/resume"): OP,
    ("POST", "/api/v1/schedules/{schedule_id}/run-now"): OP,
    ("GET", "/api/v1/triggers"): V,
    ("GET", "/api/v1/triggers/{trigger_id}"): V,
    ("POST", "/api/v1/triggers"): OP,
    ("POST", "/api/v1/triggers/{trigger_id}/secret"): OP,
    ("DELETE", "/api/v1/triggers/{trigger_id}"): OP,
    # Alerts.
    ("GET", "/api/v1/alerts/rules"): V,
    ("GET", "/api/v1/alerts/rules/{rule_id}"): V,
    ("GET", "/api/v1/alerts"): V,
    ("GET", "/api/v1/alerts/{alert_id}"): V,
    ("POST", "/api/v1/alerts/rules"): OP,
    ("PUT", "/api/v1/alerts/rules/{rule_id}"): OP,
    ("DELETE", "/api/v1/alerts/rules/{rule_id}"): OP,
    ("POST", "/api/v1/alerts/{alert_id}/ack"): OP,
    # Administration.
    ("GET", "/api/v1/audit"): A,
    ("GET", "/api/v1/admin/backups"): A,
    ("GET", "/api/v1/admin/backups/{name}"): A,
    ("GET", "/api/v1/admin/backups/tasks/{task_id}"): A,
    ("POST", "/api/v1/admin/backups"): A,
    ("DELETE", "/api/v1/admin/backups/{name}"): A,
    ("POST", "/api/v1/admin/restore/reconcile"): A,
    ("GET", "/api/v1/keys"): A,
    ("POST", "/api/v1/keys"): A,
    ("DELETE", "/api/v1/keys/{key_id}"): A,
}


def required_role(method: str, template: str | None) -> Role | None:
    """The role ``method`` on the route ``template`` needs (``None``: no key needed);
    ``template`` is ``None`` when no route serves the path."""
    if method == "HEAD":
        method = "GET"
    if template is None or method == "OPTIONS":
        return Role.viewer
    if (method, template) in PUBLIC:
        return None
    return ROUTE_ROLES.get((method, template), Role.admin)
