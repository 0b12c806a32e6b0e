"""The local Ray head of the demo and the KubeRay stand-in (LocalRay) listens on loopback only."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from sqltune.k8s.localray import LocalRay, is_loopback, listening_sockets, own_ray_processes
from sqltune.serving.config import RAY_SERVE_ENV

pytestmark = pytest.mark.ray


def _client_servers() -> set[int]:
    import psutil

    return {p.pid for p in psutil.process_iter(["cmdline"]) if "ray.util.client.server" in (p.info["cmdline"] or [])}


def test_local_ray_head_listens_on_loopback_only(tmp_path):
    before = _client_servers()
    with LocalRay(tmp_path / "ray", num_cpus=1) as ray:
        sockets = listening_sockets(own_ray_processes(ray.temp_dir))
    # Nothing of the head outlives stop(): no Ray client server is started (its process would not be found).
    assert _client_servers() <= before
    names = {name for _, _, name in sockets}
    assert "gcs_server" in names and "raylet" in names, sockets  # the head's own servers were seen
    exposed = [s for s in sockets if not is_loopback(s[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_each_local_ray_has_haproxy_files_and_ports_of_its_own(tmp_path):
    first, second = LocalRay(tmp_path / "a", num_cpus=1), LocalRay(tmp_path / "b", num_cpus=1)
    own = [k for k in first.env if k.startswith("RAY_SERVE_HAPROXY_")]
    assert own and all(first.env[k] != second.env[k] for k in own), own
    assert all(first.env[k] == v for k, v in RAY_SERVE_ENV.items())  # Ray Serve as the images run it
    assert Path(first.haproxy_dir).is_dir()
    first.stop()  # never started: its HAProxy directory goes all the same
    second.stop()
    assert not Path(first.haproxy_dir).exists() and not Path(second.haproxy_dir).exists()


def test_readiness_polling_rides_through_a_cut_answer(tmp_path):
    """A server that restarts (HAProxy reloads as Serve's replicas change) may send half a status line."""
    answers = [b"HTTP/1.1 2", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        for answer in answers:
            conn, _ = server.accept()
            conn.recv(4096)
            conn.sendall(answer)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ray = LocalRay(tmp_path / "ray", num_cpus=1)
    try:
        ray.wait_http_ready(f"http://127.0.0.1:{server.getsockname()[1]}/readyz", timeout=30)
    finally:
        ray.stop()
        server.close()
    thread.join(5)
    assert not thread.is_alive()  # both answers were asked for: the cut one did not end the wait
