"""A Ray head of the test's own (`ray start --head` with its own temp dir, free ports and auth token) for
`ray job submit`, and the tiny model the RL tests train: built from the gretel-format fixture's prompts."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GRETEL = Path(__file__).parent / "fixtures" / "gretel_small.jsonl"
TINY = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)


def build_gretel_base(out: Path) -> Path:
    from sqltune.data import load_dataset
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model
    from sqltune.prompts import build_messages

    texts: list[str] = []
    for ex in load_dataset(GRETEL, format="gretel"):
        texts.extend(m["content"] for m in build_messages(ex.question, ex.schema, dialect=ex.dialect))
        texts.append(ex.sql)
    return build_tiny_model(out, TinyModelConfig(**TINY), corpus=texts * 3)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


class RayHead:
    """``with RayHead() as head: head.submit("jobs.train", [...])``: a local head only this test uses."""

    def __init__(self, num_cpus: int = 2):
        self.temp = Path(tempfile.mkdtemp(prefix="sqrl-", dir="/tmp"))  # short: Ray puts unix sockets under it
        self.num_cpus = num_cpus
        token = self.temp / "token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            PYTHONPATH=f"{ROOT}:{ROOT / 'libs'}", PYTHONUNBUFFERED="1",
            RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
        )

    def __enter__(self) -> "RayHead":
        # Ray waits 30 s for a new raylet to register; on an overloaded machine that can run out: start again.
        for attempt in range(4):
            gcs, dash, agent, grpc, metrics, runtime_env, client = free_ports(7)
            out = subprocess.run(
                [_bin("ray"), "start", "--head", f"--temp-dir={self.temp}", "--node-ip-address=127.0.0.1",
                 f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                 f"--num-cpus={self.num_cpus}", "--disable-usage-stats", f"--ray-client-server-port={client}",
                 f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
                 f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"],
                env=self.env, cwd=ROOT, capture_output=True, text=True,
            )
            if out.returncode == 0:
                self.address = f"http://127.0.0.1:{dash}"
                return self
            self.stop()
            time.sleep(5)
        raise RuntimeError(f"ray start failed four times:\n{out.stdout}{out.stderr}")

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.temp, ignore_errors=True)

    def submit(self, module: str, args: list[str], timeout: float = 400) -> str:
        """Submit ``python -m module args`` with ``--working-dir .``, follow it; returns its logs. Raises
        unless it SUCCEEDED."""
        job_id = f"sqltune-test-{int(time.time() * 1000)}"
        cmd = [_bin("ray"), "job", "submit", "--address", self.address, "--submission-id", job_id, "--no-wait",
               "--working-dir", ".", "--", "python", "-m", module, *args]
        for attempt in range(24):
            out = subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True, text=True)
            if out.returncode == 0:
                break
            if "No available agent" not in out.stdout + out.stderr or attempt == 23:
                raise RuntimeError(f"ray job submit failed:\n{out.stdout}{out.stderr}")
            time.sleep(2.5)
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            st = subprocess.run([_bin("ray"), "job", "status", "--address", self.address, job_id], env=self.env,
                                cwd=ROOT, capture_output=True, text=True)
            status = (st.stdout + st.stderr).lower()
            if any(w in status for w in ("succeeded", "failed", "stopped")):
                break
            time.sleep(2)
        logs = subprocess.run([_bin("ray"), "job", "logs", "--address", self.address, job_id], env=self.env,
                              cwd=ROOT, capture_output=True, text=True).stdout
        if "succeeded" not in status:
            raise RuntimeError(f"job {module} {args} did not succeed ({status.strip()[-200:]}):\n{logs[-4000:]}")
        return logs

    def stop(self) -> None:
        """Stop the processes of this head only (started with its temp dir, and their children)."""
        import psutil

        roots = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(str(self.temp) in part for part in (proc.info["cmdline"] or [])):
                    roots.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        procs = {p.pid: p for p in roots}
        for root in roots:
            try:
                procs.update({c.pid: c for c in root.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        procs.pop(os.getpid(), None)
        for p in procs.values():
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(list(procs.values()), timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
