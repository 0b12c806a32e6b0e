"""The Ray Serve deployments' own setup (the served paths are in test_serve_api.py)."""

from __future__ import annotations

import pytest

from sqltune.serving.config import RAY_SERVE_ENV
from sqltune.serving.deployments import grpc_transport, transport_warning


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
