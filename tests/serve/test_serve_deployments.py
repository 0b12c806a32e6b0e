"""The Ray Serve deployments' own setup (the served paths are in test_serve_api.py)."""

from __future__ import annotations

import time

import pytest

from sqltune.serving.config import RAY_SERVE_ENV
from sqltune.serving.deployments import grpc_transport, hop_timing, transport_warning
from sqltune.serving.metrics import server_timing
from sqltune.serving.protocol import Completion, Rejection, Timing


def test_a_ray_outside_the_high_throughput_mode_is_named_with_the_fix() -> None:
    text = transport_warning({})
    for key, value in RAY_SERVE_ENV.items():
        assert f"{key}={value}" in text
    assert "before Ray starts" in text
    other = {key: "0" for key in RAY_SERVE_ENV}
    assert transport_warning(other) == text  # a wrong value is as good as none


def test_a_ray_in_the_high_throughput_mode_gets_no_warning() -> None:
    assert transport_warning(dict(RAY_SERVE_ENV)) is None


def test_only_the_missing_settings_are_named() -> None:
    text = transport_warning({**RAY_SERVE_ENV, "RAY_SERVE_ENABLE_HA_PROXY": "0"})
    assert "RAY_SERVE_ENABLE_HA_PROXY=1" in text
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in text


@pytest.mark.parametrize(
    ("environ", "grpc"),
    [
        (dict(RAY_SERVE_ENV), True),
        ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, True),  # Ray turns gRPC on in this mode
        ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0"}, False),
        ({"RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"}, True),
        ({"RAY_SERVE_USE_GRPC_BY_DEFAULT": "true"}, False),  # Ray reads only "1"
        ({}, False),
    ],
)
def test_the_ingress_knows_which_transport_ray_uses(environ: dict, grpc: bool) -> None:
    assert grpc_transport(environ) is grpc


def _completion(timing: Timing) -> Completion:
    return Completion("SELECT 1", "stop", 10, 3, "m", timing=timing)


def test_the_hop_is_split_into_its_two_legs() -> None:
    now = time.time()
    # Called 50 ms ago; the replica handled it for 30 ms and finished 5 ms ago: 15 ms went forward.
    done = hop_timing(_completion(Timing(handler_ms=30.0, handler_end_unix=now - 0.005)), now - 0.050)
    assert done.timing.return_ms == pytest.approx(5.0, abs=2.0)
    assert done.timing.forward_ms == pytest.approx(15.0, abs=2.0)
    assert done.timing.handler_ms == 30.0 and done.text == "SELECT 1"
    header = server_timing(done.timing, 0.060)
    assert f"fwd;dur={done.timing.forward_ms}, ret;dur={done.timing.return_ms}" in header


def test_answers_without_a_replica_clock_are_left_alone() -> None:
    plain = _completion(Timing(handler_ms=30.0))
    assert hop_timing(plain, time.time()) is plain
    assert "fwd" not in server_timing(plain.timing, 0.060)  # an in-process backend: no hop to split
    refused = Rejection(400, "messages", "bad")
    assert hop_timing(refused, time.time()) is refused
