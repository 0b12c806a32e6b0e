"""A local Ray head driven through Ray's own CLIs (`ray start`, `ray job submit`, `serve deploy`).

Shared by `make demo` (scripts/demo.py) and the local KubeRay stand-in (:mod:`sqltune.k8s.local`), so a
job runs on a laptop the way it runs on a cluster: submitted to the head's dashboard, with token auth on.

* Ports: Ray's fixed default agent/metrics ports clash with any other Ray on the machine, so every port
  is chosen free (all at once: ports picked one after another can repeat).
* Auth: Ray 2.60's `ray start` turns token auth on by default, but the job/serve CLIs only send the token
  when ``RAY_AUTH_MODE=token`` is set, so :attr:`LocalRay.env` sets it with a token file of its own.
* Loopback only: ``--node-ip-address=127.0.0.1`` alone still leaves the GCS, the raylet and the metrics
  exporter listening on every interface (Ray resolves the loopback address to the machine's own);
  :data:`LOOPBACK_ENV` makes Ray run as the single-machine cluster it is, so every port it opens is on
  loopback (:func:`listening_sockets` shows them).
* Cleanup: `ray stop` stops every Ray of the machine; :meth:`LocalRay.stop` ends only the processes
  started with this head's ``--temp-dir`` (and their children).
"""

from __future__ import annotations

import http.client
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from sqltune.errors import ResourceError
from sqltune.serving.config import RAY_SERVE_ENV, local_serve_env

log = logging.getLogger(__name__)

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's switch for a cluster of this one machine: its node address is loopback, and so are its ports."""


def listening_sockets(procs: Sequence) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket the given processes listen on."""
    import psutil

    pids = {p.pid for p in procs}
    out = []
    for conn in psutil.net_connections("inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.NoSuchProcess:
                continue
            out.append((conn.laddr.ip, conn.laddr.port, name))
    return sorted(out)


def is_loopback(address: str) -> bool:
    return address in ("127.0.0.1", "::1", "localhost") or address.startswith(("127.", "::ffff:127."))


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (all sockets held open until every port is chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def bin_path(name: str) -> str:
    """A console script of this Python's environment (``ray``, ``serve``), else the one on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def auth_token_file(work: Path) -> Path:
    """A Ray auth token file under ``work`` (created once, readable by the owner only)."""
    path = Path(work) / "ray_auth_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def own_ray_processes(temp_dir: str, markers: tuple[str, ...] = ()) -> list:
    """Processes started with ``temp_dir`` on their command line (or one of ``markers`` as an argument), and
    their descendants (not this one)."""
    import psutil

    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if any(temp_dir in part for part in cmdline) or any(m in cmdline for m in markers):
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
    return list(procs.values())


def stop_own_ray(temp_dir: str, timeout: float = 20.0, markers: tuple[str, ...] = ()) -> int:
    """Terminate (then kill) the processes of the Ray head started with ``temp_dir`` (and those with one of
    ``markers`` as an argument); returns how many."""
    import psutil

    procs = own_ray_processes(temp_dir, markers)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


class LocalRay:
    """One local Ray head (``ray start --head``) on 127.0.0.1, addressed through its dashboard."""

    def __init__(
        self,
        work: Path,
        *,
        temp_dir: str | None = None,
        num_cpus: int = 4,
        port: int | None = None,
        dashboard_port: int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        start_attempts: int = 2,
    ) -> None:
        self.work = Path(work)
        # short: Ray puts unix sockets under it (107-byte limit)
        self.temp_dir = temp_dir or f"/tmp/sqltune-ray-{secrets.token_hex(3)}"
        self.num_cpus = num_cpus
        self.port = port
        self.dashboard_port = dashboard_port
        self.gcs_port: int | None = None  # the head's GCS port once started
        self.cwd = cwd
        self.start_attempts = start_attempts
        self.env = dict(os.environ if env is None else env)
        self.env["PATH"] = f"{Path(sys.executable).parent}:{self.env.get('PATH', '')}"
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.update(LOOPBACK_ENV)
        for k, v in local_serve_env().items():
            if k in RAY_SERVE_ENV:  # as in the images and manifests; a caller's own value wins
                self.env.setdefault(k, v)
            else:  # this cluster's own HAProxy files and ports, never another cluster's
                self.env[k] = v
        self.env["RAY_AUTH_MODE"] = "token"
        self.env["RAY_AUTH_TOKEN_PATH"] = str(auth_token_file(self.work))
        self.haproxy_dir = self.env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]
        self.started = False

    @property
    def address(self) -> str:
        """The dashboard address (``ray job``/``serve`` CLIs' ``--address``)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def run(
        self, cmd: Sequence[str], *, check: bool = True, capture: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        log.info("$ %s", " ".join(cmd))
        out = subprocess.run(
            list(cmd),
            env=self.env,
            cwd=self.cwd,
            text=True,
            capture_output=capture,
            check=False,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise ResourceError(
                f"`{' '.join(cmd[:3])} ...` failed ({out.returncode}):\n{out.stdout}{out.stderr}"
            )
        return out

    # ------------------------------------------------------------------------------------------- life

    def start(self) -> LocalRay:
        stop_own_ray(self.temp_dir)  # leftovers of an interrupted run with the same temp dir
        self.started = True  # from here on, a failure still stops whatever part of the head came up
        out = None
        for attempt in range(1, self.start_attempts + 1):
            agent, grpc, metrics, runtime_env, gcs, dash, client = free_ports(7)
            port = self.port or gcs
            dashboard = self.dashboard_port or dash
            out = self.run(
                [
                    bin_path("ray"),
                    "start",
                    "--head",
                    f"--temp-dir={self.temp_dir}",
                    "--node-ip-address=127.0.0.1",
                    f"--port={port}",
                    f"--dashboard-port={dashboard}",
                    "--dashboard-host=127.0.0.1",
                    f"--num-cpus={self.num_cpus}",
                    "--disable-usage-stats",
                    f"--dashboard-agent-listen-port={agent}",
                    f"--dashboard-agent-grpc-port={grpc}",
                    f"--metrics-export-port={metrics}",
                    f"--runtime-env-agent-port={runtime_env}",
                    f"--ray-client-server-port={client}",
                ],
                check=False,
            )
            if out.returncode == 0:
                self.dashboard_port = dashboard
                self.gcs_port = port
                self.env["RAY_ADDRESS"] = self.address
                return self
            # a port taken between choosing and binding it, or a raylet that did not register within Ray's
            # 30 s on a busy machine: start again from nothing
            log.warning(
                "ray start failed (attempt %d): %s", attempt, (out.stderr or out.stdout).strip()[-500:]
            )
            stop_own_ray(self.temp_dir)
        raise ResourceError(
            f"ray start failed {self.start_attempts} times:\n"
            f"{out.stdout if out else ''}{out.stderr if out else ''}"
        )

    def stop(self) -> None:
        if not self.started:
            shutil.rmtree(self.haproxy_dir, ignore_errors=True)  # made with this object, used or not
            return
        if self.dashboard_port:
            self.run([bin_path("serve"), "shutdown", "-y", "-a", self.address], check=False, timeout=120)
        # The Ray client server's command line has no --temp-dir, only the head's address.
        markers = (f"--address=127.0.0.1:{self.gcs_port}",) if self.gcs_port else ()
        n = stop_own_ray(self.temp_dir, markers=markers)
        n += stop_own_ray(self.haproxy_dir)  # HAProxy's command line names its files, not the temp dir
        shutil.rmtree(self.haproxy_dir, ignore_errors=True)
        if n:
            log.info("stopped the local Ray head %s (%d processes)", self.temp_dir, n)
        self.started = False

    def __enter__(self) -> LocalRay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------- jobs

    def submit(
        self,
        argv: Sequence[str],
        *,
        submission_id: str,
        runtime_env_json: str | None = None,
        working_dir: str | None = None,
        entrypoint_num_cpus: float = 0,
        entrypoint_num_gpus: float = 0,
        follow: bool = True,
        timeout: float | None = None,
        log_file: Path | None = None,
        stream: bool = False,
    ) -> tuple[str, str]:
        """`ray job submit` ``argv``; with ``follow``, stream its logs until it ends and return
        (status, logs). Retries while the freshly started head's job agent is not up yet."""
        cmd = [
            bin_path("ray"),
            "job",
            "submit",
            "--address",
            self.address,
            "--submission-id",
            submission_id,
            "--no-wait",
        ]
        if working_dir:
            cmd += ["--working-dir", working_dir]
        if runtime_env_json:
            cmd += ["--runtime-env-json", runtime_env_json]
        if entrypoint_num_cpus:
            cmd += ["--entrypoint-num-cpus", f"{entrypoint_num_cpus:g}"]
        if entrypoint_num_gpus:
            cmd += ["--entrypoint-num-gpus", f"{entrypoint_num_gpus:g}"]
        cmd += ["--", *argv]
        for attempt in range(12):
            out = self.run(cmd, check=False)
            if out.returncode == 0:
                break
            if "No available agent" not in (out.stdout + out.stderr) or attempt == 11:
                raise ResourceError(f"ray job submit failed:\n{out.stdout}{out.stderr}")
            time.sleep(5)
        if not follow:
            return "PENDING", ""
        return self.wait(submission_id, timeout=timeout, log_file=log_file, stream=stream)

    def wait(
        self,
        submission_id: str,
        *,
        timeout: float | None = None,
        log_file: Path | None = None,
        stream: bool = False,
    ) -> tuple[str, str]:
        """Follow a job's logs until it ends (printed as they come with ``stream``, else returned);
        (SUCCEEDED | FAILED | STOPPED, logs)."""
        address = ["--address", self.address]
        try:
            logs = self.run(
                [bin_path("ray"), "job", "logs", *address, "--follow", submission_id],
                check=False,
                timeout=timeout,
                capture=not stream,
            )
            text = (logs.stdout or "") + (logs.stderr or "")
        except subprocess.TimeoutExpired as exc:
            self.run([bin_path("ray"), "job", "stop", *address, submission_id], check=False)
            text = f"{exc.stdout or ''}{exc.stderr or ''}\n[stopped after {timeout:g} s]"
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.write_text(text)
        status = self.run([bin_path("ray"), "job", "status", *address, submission_id], check=False)
        said = (status.stdout + status.stderr).lower()
        for state in TERMINAL:
            if f"{state.lower()}" in said:
                return state, text
        return "UNKNOWN", text + said

    # ------------------------------------------------------------------------------------------- serve

    def serve_deploy(self, config_path: Path) -> None:
        self.run([bin_path("serve"), "deploy", str(config_path), "-a", self.address])

    def wait_http_ready(self, url: str, timeout: float = 300.0) -> None:
        """Poll ``url`` until it answers 200; fail early when Serve reports DEPLOY_FAILED."""
        deadline = time.monotonic() + timeout
        last_status = 0.0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            # A server still starting may drop or cut a connection: HAProxy reloads (a new process takes
            # the port) each time Serve's replicas change, so a poll can get half an answer.
            except (urllib.error.URLError, http.client.HTTPException, OSError):
                pass
            if time.monotonic() - last_status > 15:
                last_status = time.monotonic()
                status = self.run([bin_path("serve"), "status", "-a", self.address], check=False).stdout
                if "DEPLOY_FAILED" in status:
                    raise ResourceError(f"serve deploy failed:\n{status}")
            time.sleep(2)
        raise ResourceError(
            f"{url} did not answer 200 within {timeout:g} s; see `serve status -a {self.address}`"
        )
