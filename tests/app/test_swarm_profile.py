"""The console's "Docker Swarm" profile: the profile dialog's checkbox (real widgets,
offscreen), the token it requires, and the Swarm backend the profile then drives.

Nothing here reaches an engine: building a backend connects to nothing. The backend's
behaviour on a real swarm is tested in tests/swarm.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("qasync")

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from mimir.app.cluster.selection import create_backend
from mimir.app.cluster.swarm_backend import SwarmBackend
from mimir.app.services.profiles import ConnectionProfile
from mimir.app.ui.profile_dialog import ProfileDialog


def test_the_dialog_makes_a_docker_swarm_profile_only_with_a_token(qtbot: Any) -> None:
    dialog = ProfileDialog(None, None, secure_tokens=False, taken_names=set())
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.kind_combo.setCurrentIndex(dialog.kind_combo.findData("local_processes"))
    qtbot.waitUntil(lambda: not dialog.swarm_box.isVisible(), timeout=2000)
    dialog.kind_combo.setCurrentIndex(dialog.kind_combo.findData("local_docker"))
    qtbot.waitUntil(dialog.swarm_box.isVisible, timeout=2000)
    qtbot.keyClicks(dialog.name_edit, "swarm here")
    assert not dialog.swarm_box.isChecked()
    dialog.swarm_box.click()
    dialog.port_spin.setValue(18080)

    QTest.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(dialog.problems_label.isVisible, timeout=2000)
    assert "Docker Swarm cluster needs a token" in dialog.problems_label.text()
    assert "moby#32299" in dialog.problems_label.text()

    qtbot.keyClicks(dialog.token_edit, "tok")
    QTest.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=2000)
    profile = dialog.profile()
    assert (profile.kind, profile.swarm, profile.backend) == ("local_docker", True, "swarm")
    assert profile.api_url == "http://127.0.0.1:18080"

    # Stored and read back, then the dialog shows it ticked.
    again = ConnectionProfile.from_dict(profile.__dict__)
    assert again == profile
    editor = ProfileDialog(None, again, secure_tokens=False, taken_names=set())
    qtbot.addWidget(editor)
    assert editor.swarm_box.isChecked()


def test_the_tunnel_choice_does_not_claim_a_swarm_exposes_nothing(qtbot: Any) -> None:
    profile = ConnectionProfile(
        "lab swarm", "remote_docker", api_url="http://10.0.0.5:8080",
        docker_host="ssh://ops@lab", swarm=True,
    )  # fmt: skip
    dialog = ProfileDialog(None, profile, secure_tokens=False, taken_names=set())
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.tunnel_radio.isChecked()
    assert "Swarm publishes the port anyway" in dialog.tunnel_radio.text()
    assert "token" in dialog.tunnel_radio.toolTip()
    dialog.swarm_box.click()  # a plain Docker engine: the tunnel exposes nothing
    qtbot.waitUntil(lambda: "nothing is exposed" in dialog.tunnel_radio.text(), timeout=2000)


def test_a_remote_swarm_profile_drives_the_swarm_backend() -> None:
    profile = ConnectionProfile(
        "lab swarm", "remote_docker", api_url="http://10.0.0.5:18080",
        docker_host="ssh://ops@lab", swarm=True,
    )  # fmt: skip
    assert profile.problems("tok") == []
    assert any("needs a token" in p for p in profile.problems(None))
    docker_profile = profile.docker_profile("tok")
    assert docker_profile.backend == "swarm"
    backend = create_backend(profile.backend or "", "lab", profile=docker_profile)
    try:
        assert isinstance(backend, SwarmBackend)
        assert backend.backend == "swarm" and backend.api_token == "tok"
    finally:
        backend.close()
    plain = ConnectionProfile("lab", "remote_docker", docker_host="ssh://ops@lab")
    assert plain.backend == "docker" and plain.docker_profile().backend is None
    with pytest.raises(ValueError, match="Docker Swarm needs a Docker engine"):
        ConnectionProfile("api", "remote_api", swarm=True).validate()
