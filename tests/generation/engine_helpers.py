"""Shared steps of the engine tests: arrivals timed against a running decode chunk, waiting for requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def arrive_while_a_chunk_runs(eng, later: list, ready: Callable[[], bool]) -> threading.Event:
    """Submit ``later`` right after the launch of the first decode chunk for which ``ready()`` holds: they
    arrive while that chunk runs, before its tokens are back. Returns the event set when they arrived."""
    arrived = threading.Event()
    launch = eng.runner.launch_decode

    def launch_then_arrive(*args, **kw):
        out = launch(*args, **kw)
        if not arrived.is_set() and ready():
            arrived.set()
            for r in later:
                eng.submit(r)
        return out

    eng.runner.launch_decode = launch_then_arrive
    return arrived


def wait_finished(reqs: list, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not all(r.finished for r in reqs) and time.time() < deadline:
        time.sleep(0.01)
