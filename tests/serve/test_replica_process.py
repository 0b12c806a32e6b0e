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


def test_replica_sets_the_thread_switch_interval(taught_model, switch_interval):
    args = {"model_uri": str(taught_model), "warmup": False, "gil_switch_ms": 0.5}
    server = ModelServer(ServeArgs.from_args(args))
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        server.shutdown()


def test_zero_keeps_pythons_switch_interval(taught_model, switch_interval):
    sys.setswitchinterval(0.004)
    args = {"model_uri": str(taught_model), "warmup": False, "gil_switch_ms": 0}
    server = ModelServer(ServeArgs.from_args(args))
    try:
        assert sys.getswitchinterval() == pytest.approx(0.004)
    finally:
        server.shutdown()


def test_negative_switch_interval_is_refused():
    with pytest.raises(ConfigError, match="gil_switch_ms"):
        ServeArgs.from_args({"model_uri": "m", "gil_switch_ms": -1})
