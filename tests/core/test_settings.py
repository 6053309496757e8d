"""Settings read from the environment: a value out of range stops the process with the
variable's name, never a traceback later."""

from __future__ import annotations

import pytest

from mimir.core.settings import Settings


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0", "must be over 0 and at most 5 seconds, got 0"),  # Redis's "block for ever"
        ("6", "must be over 0 and at most 5 seconds, got 6"),
        ("-1", "must be 0 or more seconds"),
        ("soon", "must be a number of seconds, got 'soon'"),
    ],
)
def test_worker_block_out_of_range_is_refused(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match="MIMIR_WORKER_BLOCK") as caught:
        Settings.from_env({"MIMIR_WORKER_BLOCK": raw})
    assert message in str(caught.value)


def test_worker_block_defaults_to_a_second_and_takes_fractions() -> None:
    assert Settings.from_env({}).worker_block == 1.0
    assert Settings.from_env({"MIMIR_WORKER_BLOCK": "0.5"}).worker_block == 0.5
