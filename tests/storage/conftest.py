"""Fixtures for the storage tests: a real moto S3 server on loopback, never a mocked boto3."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> str:
    """A fresh root URI on each backend: a local directory, then an S3 prefix."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_prefix")
