"""Constants shared by the sqltune.sql tests (a module with a unique name, importable from test files)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# t(a, b) plus a few typed tables for execution_match.
ROWS_T = [(1, "x"), (2, "y"), (3, None)]

# A liveness bound, not a timing check: far above every timeout under test, it only turns a query that
# never returns (an engine whose own deadline is gone) into a failure instead of a hung test run.
HANG_LIMIT_S = 120.0

T = TypeVar("T")


def run_bounded(fn: Callable[[], T], what: str, limit_s: float = HANG_LIMIT_S) -> T:
    """Return ``fn()``, run in a worker thread; fail the test if it has not returned after ``limit_s``."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(limit_s)
    if worker.is_alive():
        pytest.fail(f"{what} never returned: the engine's own deadline did not stop it")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
