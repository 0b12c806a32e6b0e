"""An embedded S3 server (moto) on loopback, for tests, the demo and a laptop without cloud storage.

In Python::

    with EmbeddedS3() as s3:
        s3.create_bucket("sqltune")
        os.environ.update(s3.env())

From a shell (the demo and the Makefile)::

    eval "$(python -m sqltune.storage.embedded start --port 9000 --state-dir .state/s3 --bucket sqltune)"
    python -m sqltune.storage.embedded status --state-dir .state/s3
    python -m sqltune.storage.embedded stop --state-dir .state/s3

The server keeps objects in memory: they are gone when it stops.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqltune.errors import MissingDependencyError, StorageError
from sqltune.storage.client import error_code, s3_client, s3_errors

HOST = "127.0.0.1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ready(endpoint: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=timeout) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def env_for(endpoint: str) -> dict[str, str]:
    """The environment variables that point boto3, pyarrow, Ray and sqltune at ``endpoint``."""
    return {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


class EmbeddedS3:
    """A ``python -m moto.server`` subprocess on a loopback port; a context manager.

    ``port=None`` picks a free port. ``detach=True`` starts it in its own session with its log in
    ``log_path`` so it outlives this process (used by the CLI); otherwise :meth:`stop` is also
    registered to run at interpreter exit, so no server is left behind.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = HOST,
        *,
        log_path: str | os.PathLike[str] | None = None,
        detach: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.detach = detach
        self.start_timeout = start_timeout
        self.log_path = Path(log_path) if log_path else None
        self._own_log = log_path is None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise StorageError("the embedded S3 server is not started; call start() or use it as a context manager")
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """AWS_ENDPOINT_URL_S3, test credentials and region for this server."""
        return env_for(self.endpoint)

    def start(self) -> EmbeddedS3:
        if self.process is not None and self.process.poll() is None:
            return self
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                "moto[server] is not installed; install it with: pip install 'moto[server]>=5'"
            ) from exc
        attempts = 1 if self.port else 3
        last = ""
        for _ in range(attempts):
            port = self.port or free_port(self.host)
            last = self._launch(port)
            if not last:
                self.port = port
                return self
        raise StorageError(last)

    def _launch(self, port: int) -> str:
        """Start the server on ``port``; return "" on success or the reason it failed."""
        if self._own_log:
            if self.log_path is not None:
                with contextlib.suppress(OSError):
                    self.log_path.unlink()
            fd, name = tempfile.mkstemp(prefix="sqltune-moto-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        else:
            log_path = self.log_path
            log_path.parent.mkdir(parents=True, exist_ok=True)
        endpoint = f"http://{self.host}:{port}"
        if _ready(endpoint, timeout=0.5):
            return f"cannot start the embedded S3 server: something already answers on {endpoint}"
        env = dict(os.environ)
        env.pop("AWS_ENDPOINT_URL_S3", None)
        env.pop("AWS_ENDPOINT_URL", None)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=self.detach,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                self.process = None
                return f"the embedded S3 server exited at start (port {port}); its log {log_path}:\n{tail}"
            if _ready(endpoint):
                self.log_path = log_path
                if not self.detach:
                    atexit.register(self.stop)
                return ""
            time.sleep(0.1)
        self._kill()
        return f"the embedded S3 server did not answer on {endpoint} within {self.start_timeout:.0f}s; log: {log_path}"

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no error if it exists); returns ``s3://name``."""
        from sqltune.storage.uri import parse_s3_uri

        parse_s3_uri(f"s3://{name}")  # a clear message for an invalid bucket name
        client = s3_client(endpoint_url=self.endpoint, region=REGION, credentials=(ACCESS_KEY, SECRET_KEY))
        try:
            with s3_errors(f"s3://{name}", "create bucket"):
                client.create_bucket(Bucket=name)
        except StorageError as exc:
            if error_code(exc.__cause__) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return f"s3://{name}"

    def _kill(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the server and reap the process (idempotent); removes the log if it was a temp file."""
        self._kill()
        if self._own_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------ CLI


def _pid_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return b"moto.server" in cmdline


def _state(state_dir: Path) -> tuple[int | None, str | None]:
    try:
        pid = int((state_dir / "pid").read_text().strip())
        endpoint = (state_dir / "endpoint").read_text().strip()
    except (OSError, ValueError):
        return None, None
    return pid, endpoint


def _exports(endpoint: str) -> str:
    return "\n".join(f"export {k}={v}" for k, v in env_for(endpoint).items())


def _cmd_start(args: argparse.Namespace) -> int:
    state = Path(args.state_dir)
    pid, endpoint = _state(state)
    if pid and endpoint and _pid_alive(pid) and _ready(endpoint):
        print(f"# embedded S3 already running: pid {pid} at {endpoint}", file=sys.stderr)
    else:
        state.mkdir(parents=True, exist_ok=True)
        server = EmbeddedS3(port=args.port or None, host=args.host, log_path=state / "moto.log", detach=True)
        server.start()
        assert server.process is not None
        pid, endpoint = server.process.pid, server.endpoint
        (state / "pid").write_text(f"{pid}\n")
        (state / "endpoint").write_text(f"{endpoint}\n")
        (state / "env").write_text(_exports(endpoint) + "\n")
        print(f"# embedded S3 started: pid {pid} at {endpoint}, log {state / 'moto.log'}", file=sys.stderr)
    for bucket in args.bucket or []:
        server = EmbeddedS3(host=args.host)
        server.port = int(endpoint.rsplit(":", 1)[1])
        server.create_bucket(bucket)
    print(_exports(endpoint))
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    state = Path(args.state_dir)
    pid, endpoint = _state(state)
    if pid is None:
        print(f"embedded S3 is not running (no state in {state})", file=sys.stderr)
        return 0
    if _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30  # SIGKILL cannot be refused; return only once it took effect
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
    for name in ("pid", "endpoint", "env"):
        with contextlib.suppress(FileNotFoundError):
            (state / name).unlink()
    print(f"embedded S3 stopped (pid {pid}, {endpoint})", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    pid, endpoint = _state(Path(args.state_dir))
    if pid and endpoint and _pid_alive(pid) and _ready(endpoint):
        print(f"running: pid {pid} at {endpoint}")
        return 0
    print("not running")
    return 1


def _cmd_env(args: argparse.Namespace) -> int:
    pid, endpoint = _state(Path(args.state_dir))
    if not endpoint:
        print(f"embedded S3 is not running (no state in {args.state_dir})", file=sys.stderr)
        return 1
    print(_exports(endpoint))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sqltune.storage.embedded",
        description="Run an in-memory S3 server (moto) on loopback in the background.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, doc in (
        ("start", _cmd_start, "start (if not running) and print export lines for the shell"),
        ("stop", _cmd_stop, "stop the server"),
        ("status", _cmd_status, "exit 0 if running, 1 if not"),
        ("env", _cmd_env, "print the export lines of the running server"),
    ):
        p = sub.add_parser(name, help=doc)
        p.set_defaults(fn=fn)
        p.add_argument("--state-dir", default=".state/s3", help="where pid, endpoint and log live")
        if name == "start":
            p.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
            p.add_argument("--host", default=HOST, help="address to bind (default 127.0.0.1)")
            p.add_argument("--bucket", action="append", help="create this bucket (repeatable)")
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
