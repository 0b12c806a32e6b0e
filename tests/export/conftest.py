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
def export_s3(s3_server):
    """The session's embedded S3 server (tests/conftest.py) with the bucket these tests use."""
    s3_server.create_bucket("sqltune-export")
    return s3_server
