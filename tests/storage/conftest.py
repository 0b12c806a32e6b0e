"""Fixtures for the storage tests: a real moto S3 server on loopback, never a mocked boto3."""

from __future__ import annotations

import uuid

import pytest

from sqltune.storage import EmbeddedS3, clear_client_cache

TEST_BUCKET = "sqltune-test"


@pytest.fixture(scope="session")
def s3_server():
    """An EmbeddedS3 (moto subprocess on 127.0.0.1) for the session; the AWS_* env points at it.

    Yields the server (``.endpoint``, ``.env()``, ``.create_bucket()``); stopped at the end.
    """
    mp = pytest.MonkeyPatch()
    with EmbeddedS3() as server:
        for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(key, raising=False)
        for key, value in server.env().items():
            mp.setenv(key, value)
        clear_client_cache()
        try:
            yield server
        finally:
            mp.undo()
            clear_client_cache()


@pytest.fixture()
def s3_prefix(s3_server) -> str:
    """A fresh ``s3://sqltune-test/<random>`` prefix on the embedded server."""
    s3_server.create_bucket(TEST_BUCKET)
    return f"s3://{TEST_BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> str:
    """A fresh root URI on each backend: a local directory, then an S3 prefix."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_prefix")
