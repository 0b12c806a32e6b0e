from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sqltune.errors import StorageError

from sqltune.storage import EmbeddedS3, clear_client_cache, read_bytes, write_bytes
from sqltune.storage.embedded import _pid_alive, _ready


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sqltune.storage.embedded", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )


def test_embedded_server_starts_serves_and_stops(monkeypatch):
    with EmbeddedS3() as s3:
        assert s3.endpoint.startswith("http://127.0.0.1:")
        env = s3.env()
        assert env["AWS_ENDPOINT_URL_S3"] == s3.endpoint
        assert env["AWS_ACCESS_KEY_ID"] == "testing" and env["AWS_DEFAULT_REGION"] == "us-east-1"
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        clear_client_cache()
        assert s3.create_bucket("own-bucket") == "s3://own-bucket"
        s3.create_bucket("own-bucket")  # idempotent
        write_bytes("s3://own-bucket/x", b"1")
        assert read_bytes("s3://own-bucket/x") == b"1"
        proc = s3.process
        assert proc is not None
        endpoint = s3.endpoint
    assert proc.poll() is not None, "server process must be gone after the with-block"
    assert not _ready(endpoint)
    clear_client_cache()


def test_cli_start_status_stop(tmp_path):
    state = tmp_path / "s3state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = _cli("start", "--state-dir", str(state), "--bucket", "demo-bucket", env=env)
    assert out.returncode == 0, out.stderr
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines() if line.startswith("export ")
        )
        endpoint = exports["AWS_ENDPOINT_URL_S3"]
        assert endpoint == (state / "endpoint").read_text().strip()
        pid = int((state / "pid").read_text())
        assert _pid_alive(pid) and _ready(endpoint)
        # The daemon outlives the CLI process and keeps state across client processes.
        code = (
            "from sqltune.storage import write_bytes, read_bytes; write_bytes('s3://demo-bucket/k', b'v'); "
            "print(read_bytes('s3://demo-bucket/k').decode())"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **exports},
                           timeout=60)
        assert r.stdout.strip() == "v", r.stderr
        # start again is idempotent: same server
        again = _cli("start", "--state-dir", str(state), env=env)
        assert again.returncode == 0 and endpoint in again.stdout
        assert int((state / "pid").read_text()) == pid
        status = _cli("status", "--state-dir", str(state))
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        stop = _cli("stop", "--state-dir", str(state))
    assert stop.returncode == 0, stop.stderr
    assert not _pid_alive(pid), "stop returned with the server still running"
    status = _cli("status", "--state-dir", str(state))
    assert status.returncode == 1 and "not running" in status.stdout


def test_start_on_busy_port_fails_clearly(s3_server):
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    with pytest.raises(StorageError, match="already answers"):
        EmbeddedS3(port=port).start()
