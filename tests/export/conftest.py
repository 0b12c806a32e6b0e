"""Fixtures of the export tests (the tiny base model and adapter come from tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def export_s3(s3_server):
    """The session's embedded S3 server (tests/conftest.py) with the bucket these tests use."""
    s3_server.create_bucket("sqltune-export")
    return s3_server
