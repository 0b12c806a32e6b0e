"""Fixtures of the evaluation tests: the shop database on every engine, the tiny model + adapter, Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from eval_helpers import build_shop  # noqa: E402


@pytest.fixture(params=["sqlite", "duckdb", "postgres"])
def shop_db(request, tmp_path) -> tuple[str, str]:
    """(engine, db) for the shop database, on each of the three engines."""
    engine = request.param
    if engine == "postgres":
        return engine, build_shop(engine, request.getfixturevalue("postgres_db"))
    return engine, build_shop(engine, tmp_path)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster (loopback, 4 logical CPUs, no dashboard) for the module; shut down afterwards."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
