"""Process-wide settings the model replica applies when it starts."""

from __future__ import annotations

import sys

import pytest

from sqltune.errors import ConfigError
from sqltune.serving.config import ServeArgs
from sqltune.serving.replica import ModelServer


@pytest.fixture
def switch_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.mark.parametrize(
    ("gil_switch_ms", "expected"),
    [(0.5, 0.0005), (0, 0.004)],  # 0 keeps the process's own interval (set to 4 ms here)
)
def test_replica_sets_the_thread_switch_interval(taught_model, switch_interval, gil_switch_ms, expected):
    sys.setswitchinterval(0.004)
    args = {"model_uri": str(taught_model), "warmup": False, "gil_switch_ms": gil_switch_ms}
    server = ModelServer(ServeArgs.from_args(args))
    try:
        assert sys.getswitchinterval() == pytest.approx(expected)
    finally:
        server.shutdown()


def test_negative_switch_interval_is_refused():
    with pytest.raises(ConfigError, match="gil_switch_ms"):
        ServeArgs.from_args({"model_uri": "m", "gil_switch_ms": -1})


def test_the_replica_reports_its_start_by_part(taught_model):
    server = ModelServer(ServeArgs.from_args({"model_uri": str(taught_model), "max_batch_size": 2}))
    try:
        info = server.info()
        parts = info.startup
        assert {"weights_s", "engine_s", "compile_s", "capture_s"} <= set(parts), parts
        assert all(v >= 0 for v in parts.values()), parts
        assert parts["weights_s"] > 0 and parts["engine_s"] > 0
        assert parts["weights_s"] + parts["engine_s"] <= info.load_s + 0.02
        assert parts["compile_s"] + parts["capture_s"] <= parts["engine_s"] + 0.02
        assert parts["capture_s"] == 0  # on the CPU there are no CUDA graphs to capture
    finally:
        server.shutdown()
