"""Storage URIs: local paths (plain or ``file://``) and ``s3://bucket/prefix``.

Every function here is pure string handling; nothing touches the network or the disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqltune.errors import StorageError

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_FIX = "write it as s3://BUCKET/PREFIX, e.g. s3://sqltune-artifacts/runs/run-1"


def is_s3(uri: str | os.PathLike[str]) -> bool:
    """True if ``uri`` is meant as an S3 URI (starts with ``s3:``, any case), even a malformed one.

    Malformed S3 URIs count as S3 so that :func:`parse_s3_uri` rejects them with a message, instead of
    them being silently treated as a relative local directory named ``s3:``.
    """
    return isinstance(uri, str) and uri[:3].lower() == "s3:"


def is_local(uri: str | os.PathLike[str]) -> bool:
    """True for a plain path or a ``file://`` URI."""
    if not isinstance(uri, str):
        return True
    m = _SCHEME_RE.match(uri)
    if m is None or uri.startswith("file://"):
        return True
    # A Windows drive letter ("C:\\x") is a path, not a scheme.
    return len(m.group(1)) == 1 and not is_s3(uri)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key/prefix`` into ``(bucket, key)``; the key has no leading slash.

    Raises :class:`StorageError` naming the URI and the fix for anything malformed: a missing
    ``//``, a missing or invalid bucket name, an upper-case scheme, whitespace or control characters.
    """
    if not isinstance(uri, str):
        raise StorageError(f"S3 URI must be a string, got {type(uri).__name__} {uri!r}; {_FIX}")
    if not uri.startswith("s3://"):
        if uri[:5].lower() == "s3://":
            raise StorageError(f"malformed S3 URI {uri!r}: the scheme must be lower-case 's3://'; {_FIX}")
        if uri[:3].lower() == "s3:":
            raise StorageError(f"malformed S3 URI {uri!r}: expected 's3://' (two slashes); {_FIX}")
        raise StorageError(f"not an S3 URI: {uri!r}; {_FIX}")
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"malformed S3 URI {uri!r}: the bucket name is missing; {_FIX}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in uri):
        raise StorageError(f"malformed S3 URI {uri!r}: it contains whitespace or control characters; {_FIX}")
    if not _BUCKET_RE.match(bucket) or ".." in bucket or _IP_RE.match(bucket):
        if len(bucket) < 3 or len(bucket) > 63:
            why = f"bucket names are 3 to 63 characters long, {bucket!r} has {len(bucket)}"
        elif _IP_RE.match(bucket):
            why = f"bucket {bucket!r} is formatted like an IP address"
        else:
            why = (
                f"bucket {bucket!r} may contain only lower-case letters, digits, '.' and '-', "
                "and must begin and end with a letter or digit"
            )
        raise StorageError(f"malformed S3 URI {uri!r}: {why}; {_FIX}")
    if "//" in key or key.startswith("/"):
        raise StorageError(f"malformed S3 URI {uri!r}: the key contains an empty path segment '//'; {_FIX}")
    return bucket, key


def local_path(uri: str | os.PathLike[str]) -> Path:
    """The :class:`Path` of a local URI (plain path or ``file://``); StorageError for other schemes."""
    if not isinstance(uri, str):
        return Path(uri)
    if is_s3(uri):
        raise StorageError(f"{uri!r} is an S3 URI, not a local path")
    if uri.startswith("file://"):
        rest = uri[len("file://"):]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        if not rest.startswith("/"):
            raise StorageError(
                f"malformed file URI {uri!r}: file URIs must be absolute (file:///abs/path); "
                "use a plain path for a relative one"
            )
        return Path(rest)
    if not is_local(uri):
        scheme = _SCHEME_RE.match(uri).group(1)  # type: ignore[union-attr]
        raise StorageError(
            f"unsupported storage URI {uri!r}: scheme {scheme!r} is not supported; "
            "use a local path, file:///abs/path or s3://BUCKET/PREFIX"
        )
    return Path(uri)


def check_uri(uri: str | os.PathLike[str]) -> None:
    """Raise :class:`StorageError` if ``uri`` is neither a valid S3 URI nor a local path."""
    if is_s3(uri):
        parse_s3_uri(str(uri))
    else:
        local_path(uri)


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a URI with ``/``; works for S3 URIs, ``file://`` URIs and local paths."""
    base = os.fspath(uri)
    clean = [p.strip("/") for p in parts if p and p.strip("/")]
    if is_s3(base):
        parse_s3_uri(base)
        if not clean:
            return base
        return base.rstrip("/") + "/" + "/".join(clean)
    local_path(base)
    if not clean:
        return base
    if base.startswith("file://"):
        return base.rstrip("/") + "/" + "/".join(clean)
    return os.path.join(base, *clean)


def s3_uri(bucket: str, key: str = "") -> str:
    """Build ``s3://bucket/key``."""
    return f"s3://{bucket}/{key.lstrip('/')}" if key else f"s3://{bucket}"
