"""The local Ray head of the demo and the KubeRay stand-in (LocalRay) listens on loopback only."""

from __future__ import annotations

import pytest

from sqltune.k8s.localray import LocalRay, is_loopback, listening_sockets, own_ray_processes

pytestmark = pytest.mark.ray


def test_local_ray_head_listens_on_loopback_only(tmp_path):
    with LocalRay(tmp_path / "ray", num_cpus=1) as ray:
        sockets = listening_sockets(own_ray_processes(ray.temp_dir))
    names = {name for _, _, name in sockets}
    assert "gcs_server" in names and "raylet" in names, sockets  # the head's own servers were seen
    exposed = [s for s in sockets if not is_loopback(s[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"
