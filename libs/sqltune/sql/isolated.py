"""Killable execution: SQLite/DuckDB queries run in a pool of worker processes.

The in-process guards (SQLite's progress handler, DuckDB's interrupt) act between the engine's steps, so one
long builtin call (``instr`` over a 40 MB string, a huge ``printf``) runs past them. In a worker process
the caller waits ``timeout_s`` plus a grace period; a worker that has not answered by then is killed
(SIGKILL) and replaced, and the query's result is a ``timeout``. Workers are fresh interpreters
(``python -m sqltune.sql.isolated``: no fork beside threads, no re-import of the caller's main module),
started once and reused, so a query costs one round trip through a pipe; the overhead is measured
by ``benchmarks/sandbox_pool.py`` (docs/evaluation.md has the figure).

    with SandboxPool(workers=2) as pool:
        execute(sql, db="x.sqlite", timeout_s=5, pool=pool)

The pool is thread-safe: callers share its workers through a queue of idle ones. PostgreSQL never goes
through it (its server enforces ``statement_timeout`` itself).
"""

from __future__ import annotations

import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
from typing import Any

from sqltune.errors import SQLError
from sqltune.sql.result import ExecResult

__all__ = ["SandboxPool"]

_HEADER = struct.Struct("!I")
STARTUP_TIMEOUT_S = 120.0  # a worker's interpreter start and imports, on a loaded machine


def _send(fh: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HEADER.pack(len(data)) + data)
    fh.flush()


def _read_exactly(fh: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = fh.read(n - len(buf))
        if not chunk:
            raise EOFError("the worker closed its pipe")
        buf += chunk
    return buf


def _recv(fh: Any) -> Any:
    (n,) = _HEADER.unpack(_read_exactly(fh, _HEADER.size))
    return pickle.loads(_read_exactly(fh, n))


def _serve() -> None:
    """A worker's loop (``python -m sqltune.sql.isolated``): run each request with the engine's own sandbox
    and send the result back on the original stdout."""
    from sqltune.sql.execute import _run_unchecked  # the worker's one job

    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    sys.stdout = sys.stderr  # nothing else may write into the result pipe
    _send(out, "ready")  # imports done: from here on, a query's time is its own
    while True:
        try:
            msg = _recv(inp)
        except EOFError:
            return
        if msg is None:
            return
        sql, db, engine, timeout_s, max_rows = msg
        try:
            res = _run_unchecked(sql, db=db, engine=engine, timeout_s=timeout_s, max_rows=max_rows)
        except Exception as exc:  # noqa: BLE001 - e.g. a missing file: the caller gets it as a result
            res = ExecResult(error=f"{type(exc).__name__}: {exc}", category="runtime", engine=engine)
        _send(out, res)


class SandboxPool:
    """``workers`` processes executing SQLite/DuckDB queries; one stuck past its timeout is killed."""

    def __init__(self, workers: int = 2, *, grace_s: float = 1.0):
        if workers < 1:
            raise SQLError(f"SandboxPool: workers must be >= 1, got {workers}")
        self.grace_s = grace_s
        self.workers = workers
        self.kills = 0  # workers killed at a timeout (a long builtin call), for reports and tests
        self._idle: queue.Queue = queue.Queue()
        self._all: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(workers):
            self._idle.put(self._spawn())

    def _spawn(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "sqltune.sql.isolated"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        proc.sqltune_ready = False  # set once its "ready" arrived (see _wait_ready)
        with self._lock:
            self._all.append(proc)
        return proc

    @staticmethod
    def _wait_ready(proc: subprocess.Popen) -> None:
        """Wait for a new worker's imports, so its start-up never counts against a query's timeout."""
        if proc.sqltune_ready:
            return
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT_S)
        if not ready or _recv(proc.stdout) != "ready":
            raise EOFError(f"the worker did not start within {STARTUP_TIMEOUT_S:g}s")
        proc.sqltune_ready = True

    def _discard(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for fh in (proc.stdin, proc.stdout):
            try:
                fh.close()
            except OSError:
                pass
        with self._lock:
            if proc in self._all:
                self._all.remove(proc)

    def run(self, sql: str, *, db: Any, engine: str, timeout_s: float, max_rows: int) -> ExecResult:
        """Run ``sql`` unchecked (the caller did the static checks) in a worker; see the module docstring."""
        if self._closed:
            raise SQLError("SandboxPool: used after close()")
        proc = self._idle.get()
        try:
            self._wait_ready(proc)
            _send(proc.stdin, (sql, str(db), engine, timeout_s, max_rows))
            ready, _, _ = select.select([proc.stdout], [], [], timeout_s + self.grace_s)
            if ready:
                res = _recv(proc.stdout)
                self._idle.put(proc)
                return res
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            self._discard(proc)
            self._idle.put(self._spawn())
            return ExecResult(error=f"the sandbox worker process died ({type(exc).__name__}, exit code "
                                    f"{proc.returncode})", category="runtime", engine=engine)
        # No answer: the worker is inside one call the engine's interrupt cannot stop.
        self._discard(proc)
        self.kills += 1
        self._idle.put(self._spawn())
        return ExecResult(error=f"timed out after {timeout_s:g}s (one call ran past the engine's interrupt; its "
                                "worker process was killed)", category="timeout", engine=engine)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._all)
        for proc in workers:
            try:
                _send(proc.stdin, None)
            except OSError:
                pass
        for proc in workers:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            self._discard(proc)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


if __name__ == "__main__":
    _serve()
