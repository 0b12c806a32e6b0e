"""A pyarrow filesystem for a storage URI, e.g. for Ray Train's ``RunConfig(storage_filesystem=...)``.

``pyarrow.fs.FileSystem.from_uri("s3://...")`` honours ``AWS_ENDPOINT_URL_S3`` in recent pyarrow, but
a bare ``S3FileSystem()`` does not; this helper passes the endpoint, region, credentials and timeouts
explicitly so the same environment as boto3 (see :mod:`sqltune.storage.client`) applies everywhere.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from sqltune.errors import missing
from sqltune.storage.client import resolve_settings
from sqltune.storage.uri import is_s3, local_path, parse_s3_uri


def pyarrow_filesystem(uri: str | os.PathLike[str]):
    """Return ``(filesystem, path)`` for ``uri``: an S3FileSystem and ``bucket/key``, or a local one.

    Use as ``RunConfig(storage_path=path, storage_filesystem=fs)``.
    """
    try:
        import pyarrow.fs as pafs
    except ImportError as exc:
        raise missing("pyarrow", "train") from exc
    uri = os.fspath(uri)
    if not is_s3(uri):
        return pafs.LocalFileSystem(), str(local_path(uri).resolve())
    bucket, key = parse_s3_uri(uri)
    settings = resolve_settings()
    kwargs: dict = {
        "region": settings.region,
        "connect_timeout": settings.connect_timeout,
        # The same bound as boto3's reads: a hung endpoint fails a checkpoint upload instead of blocking it.
        "request_timeout": settings.read_timeout,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=settings.max_attempts),
    }
    if settings.endpoint_url:
        parts = urlsplit(settings.endpoint_url)
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kwargs["scheme"] = parts.scheme
        kwargs["force_virtual_addressing"] = False
    access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        kwargs["access_key"] = access
        kwargs["secret_key"] = secret
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    fs = pafs.S3FileSystem(**kwargs)
    return fs, f"{bucket}/{key}".rstrip("/")
