"""The Ray Serve deployments' own setup (the served paths are in test_serve_api.py)."""

from __future__ import annotations

from sqltune.serving.config import RAY_SERVE_ENV
from sqltune.serving.deployments import transport_warning


def test_a_ray_without_the_grpc_transport_is_named_with_the_fix() -> None:
    text = transport_warning({})
    for key, value in RAY_SERVE_ENV.items():
        assert f"{key}={value}" in text
    assert "before Ray starts" in text
    other = {key: "0" for key in RAY_SERVE_ENV}
    assert transport_warning(other) == text  # a wrong value is as good as none


def test_a_ray_with_the_grpc_transport_gets_no_warning() -> None:
    assert transport_warning(dict(RAY_SERVE_ENV)) is None
