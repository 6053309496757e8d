"""The Swarm service specs (app/cluster/swarm_spec.py) and the stack file: no engine needed."""

from __future__ import annotations

from mimir.app.cluster.swarm_spec import swarm_worker_hostname
from mimir.app.cluster.topology import API_TOKEN_FILE, REDIS_PASSWORD_FILE, SECRETS_DIR


def test_secret_files_live_in_the_secrets_dir() -> None:
    assert f"{SECRETS_DIR}/mimir_api_token" == API_TOKEN_FILE
    assert f"{SECRETS_DIR}/mimir_redis_password" == REDIS_PASSWORD_FILE


def test_worker_hostname_is_unique_per_task() -> None:
    assert swarm_worker_hostname("slow") == "slow-{{.Task.Slot}}-{{.Task.ID}}"
