"""Fixtures of the export tests: the tiny base model and a trained-for-a-few-steps LoRA adapter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from adapter_fixture import build_adapter, build_tiny_base  # noqa: E402


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("tiny-base") / "base")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base, tmp_path_factory) -> Path:
    return build_adapter(tiny_base, tmp_path_factory.mktemp("runs") / "tiny-run" / "adapter")


@pytest.fixture(scope="session")
def export_s3():
    """A real moto S3 server on loopback (sqltune.storage.EmbeddedS3), with the AWS_* env pointing at it."""
    from sqltune.storage import EmbeddedS3, clear_client_cache

    mp = pytest.MonkeyPatch()
    with EmbeddedS3() as server:
        for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(key, raising=False)
        for key, value in server.env().items():
            mp.setenv(key, value)
        clear_client_cache()
        server.create_bucket("sqltune-export")
        try:
            yield server
        finally:
            mp.undo()
            clear_client_cache()
