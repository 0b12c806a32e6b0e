"""File operations that work the same for local paths and ``s3://`` URIs.

Jobs receive an ``output_uri`` that may be either; they call these functions and never branch on it.
Local writes are atomic (a temporary file in the same directory, then ``os.replace``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqltune.errors import NotFoundError, StorageError
from sqltune.storage.client import error_code, s3_client, s3_errors
from sqltune.storage.uri import is_s3, local_path, parse_s3_uri

PathOrUri = str | os.PathLike[str]

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNKSIZE = 8 * 1024 * 1024


def transfer_config():
    """The boto3 TransferConfig used for uploads/downloads: 8 MiB multipart parts, 8 threads."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=MULTIPART_CHUNKSIZE,
        max_concurrency=8,
        use_threads=True,
    )


def _s(uri: PathOrUri) -> str:
    return os.fspath(uri)


def _atomic_write_local(dest: Path, writer: Callable[[Path], None]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def upload_file(local: PathOrUri, uri: PathOrUri) -> str:
    """Copy the local file ``local`` to ``uri`` (S3 object or local path); multipart above 8 MiB."""
    src = Path(local)
    if not src.is_file():
        raise StorageError(f"cannot upload {src}: no such file")
    target = _s(uri)
    if is_s3(target):
        bucket, key = parse_s3_uri(target)
        if not key or key.endswith("/"):
            raise StorageError(f"cannot upload {src} to {target}: the URI names a prefix, not an object key")
        with s3_errors(target, "upload to"):
            s3_client().upload_file(str(src), bucket, key, Config=transfer_config())
        return target
    dest = local_path(target)
    if dest.resolve() != src.resolve():
        _atomic_write_local(dest, lambda tmp: shutil.copyfile(src, tmp))
    return target


def _not_found(source: str) -> NotFoundError:
    what = "object" if is_s3(source) else "file"
    return NotFoundError(f"no {what} at {source}: check the URI, or run the step that writes it first")


def download_file(uri: PathOrUri, local: PathOrUri) -> Path:
    """Copy the object/file at ``uri`` to the local path ``local`` (atomically); returns that path."""
    source = _s(uri)
    dest = Path(local)
    if is_s3(source):
        bucket, key = parse_s3_uri(source)
        client = s3_client()

        def fetch(tmp: Path) -> None:
            from botocore.exceptions import ClientError

            try:
                with s3_errors(source, "download"):
                    client.download_file(bucket, key, str(tmp), Config=transfer_config())
            except StorageError as exc:
                if isinstance(exc.__cause__, ClientError) and error_code(exc.__cause__) in (
                    "404", "NoSuchKey", "NotFound"
                ):
                    raise _not_found(source) from None
                raise

        _atomic_write_local(dest, fetch)
        return dest
    src = local_path(source)
    if not src.is_file():
        raise _not_found(source)
    if src.resolve() != dest.resolve():
        _atomic_write_local(dest, lambda tmp: shutil.copyfile(src, tmp))
    return dest


def read_bytes(uri: PathOrUri) -> bytes:
    """The content of the object/file at ``uri``; NotFoundError (a FileNotFoundError) if there is none."""
    source = _s(uri)
    if is_s3(source):
        bucket, key = parse_s3_uri(source)
        client = s3_client()
        try:
            with s3_errors(source, "read"):
                return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except StorageError as exc:
            # Only S3's own NoSuchKey: a bare 404 may come from something that is not S3 at all.
            if error_code(exc.__cause__) == "NoSuchKey":
                raise _not_found(source) from None
            raise
    path = local_path(source)
    if not path.is_file():
        raise _not_found(source)
    return path.read_bytes()


def read_text(uri: PathOrUri, encoding: str = "utf-8") -> str:
    """The decoded content of the object/file at ``uri``."""
    return read_bytes(uri).decode(encoding)


def write_bytes(uri: PathOrUri, data: bytes) -> str:
    """Write ``data`` to ``uri`` (a single PUT on S3, an atomic replace locally)."""
    target = _s(uri)
    if is_s3(target):
        bucket, key = parse_s3_uri(target)
        if not key or key.endswith("/"):
            raise StorageError(f"cannot write to {target}: the URI names a prefix, not an object key")
        with s3_errors(target, "write"):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return target
    _atomic_write_local(local_path(target), lambda tmp: tmp.write_bytes(data))
    return target


def write_text(uri: PathOrUri, text: str, encoding: str = "utf-8") -> str:
    """Write ``text`` to ``uri``."""
    return write_bytes(uri, text.encode(encoding))


def _object_exists(bucket: str, key: str, uri: str) -> bool:
    client = s3_client()
    try:
        with s3_errors(uri, "check"):
            client.head_object(Bucket=bucket, Key=key)
        return True
    except StorageError as exc:
        if error_code(exc.__cause__) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def exists(uri: PathOrUri) -> bool:
    """True if a file/object is at ``uri``, or (like a directory) anything is under ``uri/``."""
    target = _s(uri)
    if is_s3(target):
        bucket, key = parse_s3_uri(target)
        if key and not key.endswith("/") and _object_exists(bucket, key, target):
            return True
        prefix = key.rstrip("/") + "/" if key else ""
        with s3_errors(target, "list"):
            resp = s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return resp.get("KeyCount", 0) > 0
    return local_path(target).exists()


def _iter_keys(bucket: str, prefix: str, uri: str):
    paginator = s3_client().get_paginator("list_objects_v2")
    with s3_errors(uri, "list"):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj


def list_files(uri_prefix: PathOrUri) -> list[str]:
    """Sorted relative paths (with ``/``) of every file/object under the directory/prefix ``uri_prefix``.

    The prefix is a directory: ``s3://b/run1`` lists ``s3://b/run1/...`` but not ``s3://b/run10/...``.
    A missing prefix lists as ``[]``.
    """
    target = _s(uri_prefix)
    if is_s3(target):
        bucket, key = parse_s3_uri(target)
        prefix = key.rstrip("/") + "/" if key else ""
        rels = [obj["Key"][len(prefix):] for obj in _iter_keys(bucket, prefix, target)]
        return sorted(r for r in rels if r and not r.endswith("/"))
    root = local_path(target)
    if not root.is_dir():
        return []
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            out.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(out)


def delete_objects(bucket: str, keys: list[str], uri: str) -> None:
    """Delete S3 keys in batches of 1000; StorageError naming the first key that could not be deleted."""
    client = s3_client()
    for i in range(0, len(keys), 1000):
        batch = keys[i:i + 1000]
        with s3_errors(uri, "delete under"):
            resp = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        errors = resp.get("Errors") or []
        if errors:
            first = errors[0]
            raise StorageError(
                f"could not delete s3://{bucket}/{first.get('Key')} ({first.get('Code')}: "
                f"{first.get('Message')}) and {len(errors) - 1} more under {uri}"
            )


def delete_prefix(uri: PathOrUri) -> int:
    """Delete everything under the directory/prefix ``uri`` (and the file/object at ``uri`` itself).

    Returns the number of files/objects deleted. Refuses a whole bucket or filesystem root.
    """
    target = _s(uri)
    if is_s3(target):
        bucket, key = parse_s3_uri(target)
        if not key.strip("/"):
            raise StorageError(f"refusing to delete a whole bucket ({target}); name a prefix under it")
        prefix = key.rstrip("/") + "/"
        keys = [obj["Key"] for obj in _iter_keys(bucket, prefix, target)]
        if not key.endswith("/") and _object_exists(bucket, key, target):
            keys.append(key)
        delete_objects(bucket, keys, target)
        return len(keys)
    path = local_path(target)
    if path.resolve() == Path(path.resolve().anchor):
        raise StorageError(f"refusing to delete a filesystem root ({target})")
    if path.is_dir() and not path.is_symlink():
        n = sum(len(files) for _d, _s2, files in os.walk(path))
        shutil.rmtree(path)
        return n
    if path.exists() or path.is_symlink():
        path.unlink()
        return 1
    return 0
