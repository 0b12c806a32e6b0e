"""The boto3 S3 client factory and the translation of botocore errors into :class:`StorageError`.

Environment honoured (the standard AWS names, so the same settings reach boto3, pyarrow and Ray):

* ``AWS_ENDPOINT_URL_S3`` then ``AWS_ENDPOINT_URL``: an S3-compatible endpoint (MinIO, moto, Ceph ...).
  When set, path-style addressing is used (``http://host:port/bucket/key``).
* ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` / ``AWS_PROFILE``: the usual
  boto3 credential chain.
* ``AWS_REGION`` then ``AWS_DEFAULT_REGION``; default ``us-east-1``.
* ``SQLTUNE_S3_CONNECT_TIMEOUT`` (seconds, default 2) and ``SQLTUNE_S3_MAX_ATTEMPTS`` (default 3): an
  unreachable endpoint fails within seconds instead of boto3's default of minutes.
  ``SQLTUNE_S3_READ_TIMEOUT`` (seconds, default 60): how long a request waits on a server that accepted
  the connection but does not answer (a hung endpoint).

Checksums: boto3 >= 1.36 computes CRC checksums on every upload and validates them on download by
default, which several S3-compatible servers reject or do not return. The client is configured with
``request_checksum_calculation = response_checksum_validation = "when_required"`` where the installed
botocore supports it; sqltune verifies content itself with the sha256 in each artifact manifest.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from sqltune.errors import MissingDependencyError, StorageError

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Settings:
    """The resolved S3 connection settings (what the environment says, or explicit overrides)."""

    endpoint_url: str | None
    endpoint_source: str  # the env var the endpoint came from, "argument", or "default AWS endpoint"
    region: str
    connect_timeout: float
    max_attempts: int
    read_timeout: float = 60.0

    @property
    def endpoint_label(self) -> str:
        """The endpoint as named in error messages, e.g. ``http://127.0.0.1:9 (AWS_ENDPOINT_URL_S3)``."""
        url = self.endpoint_url or f"https://s3.{self.region}.amazonaws.com"
        return f"{url} ({self.endpoint_source})"


def _env_number(name: str, default: float, cast: type) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise StorageError(f"{name}={raw!r} is not a number; unset it or give e.g. {name}={default}") from None
    if value <= 0:
        raise StorageError(f"{name}={raw!r} must be positive")
    return value


def resolve_settings(endpoint_url: str | None = None, region: str | None = None) -> S3Settings:
    """Resolve endpoint, region, timeout and retries from arguments and the environment."""
    if endpoint_url:
        source = "argument"
    elif os.environ.get("AWS_ENDPOINT_URL_S3", "").strip():
        endpoint_url, source = os.environ["AWS_ENDPOINT_URL_S3"].strip(), "AWS_ENDPOINT_URL_S3"
    elif os.environ.get("AWS_ENDPOINT_URL", "").strip():
        endpoint_url, source = os.environ["AWS_ENDPOINT_URL"].strip(), "AWS_ENDPOINT_URL"
    else:
        endpoint_url, source = None, "default AWS endpoint"
    if endpoint_url and not endpoint_url.startswith(("http://", "https://")):
        raise StorageError(
            f"S3 endpoint {endpoint_url!r} ({source}) must start with http:// or https://, "
            "e.g. http://127.0.0.1:9000"
        )
    region = (
        region
        or os.environ.get("AWS_REGION", "").strip()
        or os.environ.get("AWS_DEFAULT_REGION", "").strip()
        or DEFAULT_REGION
    )
    return S3Settings(
        endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
        endpoint_source=source,
        region=region,
        connect_timeout=float(_env_number("SQLTUNE_S3_CONNECT_TIMEOUT", 2.0, float)),
        max_attempts=int(_env_number("SQLTUNE_S3_MAX_ATTEMPTS", 3, int)),
        read_timeout=float(_env_number("SQLTUNE_S3_READ_TIMEOUT", 60.0, float)),
    )


def _botocore_config(settings: S3Settings):  # -> botocore.config.Config
    from botocore.config import Config

    kwargs: dict = {
        "region_name": settings.region,
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "retries": {"max_attempts": settings.max_attempts, "mode": "standard"},
        "max_pool_connections": 32,
    }
    if settings.endpoint_url:
        kwargs["s3"] = {"addressing_style": "path"}
    # Added in botocore 1.36; older versions do not send the new default checksums anyway.
    if "request_checksum_calculation" in getattr(Config, "OPTION_DEFAULTS", {}):
        kwargs["request_checksum_calculation"] = "when_required"
        kwargs["response_checksum_validation"] = "when_required"
    return Config(**kwargs)


_lock = threading.Lock()


@functools.lru_cache(maxsize=16)
def _cached_client(settings: S3Settings, creds: tuple[str | None, ...], explicit: tuple[str, str] | None):
    import boto3

    session = boto3.session.Session()
    keys = {"aws_access_key_id": explicit[0], "aws_secret_access_key": explicit[1]} if explicit else {}
    return session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        config=_botocore_config(settings),
        **keys,
    )


def s3_client(
    endpoint_url: str | None = None, region: str | None = None, credentials: tuple[str, str] | None = None
):
    """A boto3 S3 client configured from the environment (see the module docstring).

    ``endpoint_url``, ``region`` and ``credentials`` (access key, secret key) override the environment.
    Clients are cached per (settings, credential env vars) and are thread-safe.
    """
    try:
        import boto3  # noqa: F401
    except ImportError as exc:  # pragma: no cover - boto3 is a core dependency
        raise MissingDependencyError("boto3 is not installed; install it with: pip install sqltune") from exc
    settings = resolve_settings(endpoint_url, region)
    creds = tuple(
        os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    )
    with _lock:
        return _cached_client(settings, creds, credentials)


def clear_client_cache() -> None:
    """Forget cached clients (e.g. after changing AWS_* variables in a long-lived process)."""
    _cached_client.cache_clear()


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError (``NoSuchKey``, ``404`` ...), else ``""``."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def s3_errors(uri: str, action: str, settings: S3Settings | None = None) -> Iterator[None]:
    """Translate botocore exceptions raised inside the block into StorageError naming URI and endpoint."""
    from botocore import exceptions as bx

    try:
        yield
    except StorageError:
        raise
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError) as exc:
        s = settings or resolve_settings()
        raise StorageError(
            f"cannot reach S3 endpoint {s.endpoint_label}: {exc}; while trying to {action} {uri}. "
            "Check the endpoint URL and that the server is running "
            "(for a local one: python -m sqltune.storage.embedded start)"
        ) from exc
    except (bx.NoCredentialsError, bx.PartialCredentialsError) as exc:
        raise StorageError(
            f"no usable AWS credentials to {action} {uri}: {exc}; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        ) from exc
    except bx.ClientError as exc:
        code = error_code(exc)
        s = settings or resolve_settings()
        if code == "NoSuchBucket":
            bucket = uri[5:].split("/", 1)[0] if uri.startswith("s3://") else uri
            raise StorageError(
                f"bucket {bucket!r} does not exist at {s.endpoint_label} (while trying to {action} {uri}); "
                "create it first, e.g. aws s3 mb s3://" + bucket
            ) from exc
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StorageError(
                f"access denied to {action} {uri} at {s.endpoint_label} ({code}); check the credentials "
                "and the bucket policy"
            ) from exc
        raise StorageError(f"S3 error {code or '?'} trying to {action} {uri} at {s.endpoint_label}: {exc}") from exc
    except bx.BotoCoreError as exc:
        s = settings or resolve_settings()
        raise StorageError(f"S3 failure trying to {action} {uri} at {s.endpoint_label}: {exc}") from exc
