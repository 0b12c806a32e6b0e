"""Storage for sqltune: local paths and ``s3://`` URIs, verified artifacts, an embedded S3 server.

* URIs: :func:`parse_s3_uri`, :func:`is_s3`, :func:`join`.
* Files (local or S3 alike): :func:`upload_file`, :func:`download_file`, :func:`read_bytes`,
  :func:`write_bytes`, :func:`read_text`, :func:`write_text`, :func:`exists`, :func:`list_files`,
  :func:`delete_prefix`.
* Artifacts (a directory + ``manifest.json`` of sha256s, written last): :func:`publish`, :func:`fetch`,
  :func:`fetch_cached`, :func:`read_manifest`, :func:`verify`.
* :class:`EmbeddedS3`: a moto S3 server on loopback; :func:`s3_client`; :func:`pyarrow_filesystem`.
"""

from __future__ import annotations

from sqltune.errors import IntegrityError, NotFoundError, StorageError
from sqltune.storage.arrow import pyarrow_filesystem
from sqltune.storage.artifact import (
    FORMAT,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    default_cache_dir,
    fetch,
    fetch_cached,
    hash_file,
    publish,
    read_manifest,
    verify,
)
from sqltune.storage.client import S3Settings, clear_client_cache, resolve_settings, s3_client
from sqltune.storage.files import (
    delete_prefix,
    download_file,
    exists,
    list_files,
    read_bytes,
    read_text,
    upload_file,
    write_bytes,
    write_text,
)
from sqltune.storage.uri import is_s3, join, local_path, parse_s3_uri


def __getattr__(name: str):
    # Imported lazily so that ``python -m sqltune.storage.embedded`` does not import itself twice.
    if name == "EmbeddedS3":
        from sqltune.storage.embedded import EmbeddedS3

        return EmbeddedS3
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "EmbeddedS3",
    "FileEntry",
    "IntegrityError",
    "Manifest",
    "NotFoundError",
    "S3Settings",
    "StorageError",
    "clear_client_cache",
    "default_cache_dir",
    "delete_prefix",
    "download_file",
    "exists",
    "fetch",
    "fetch_cached",
    "hash_file",
    "is_s3",
    "join",
    "list_files",
    "local_path",
    "parse_s3_uri",
    "publish",
    "pyarrow_filesystem",
    "read_bytes",
    "read_manifest",
    "read_text",
    "resolve_settings",
    "s3_client",
    "upload_file",
    "verify",
    "write_bytes",
    "write_text",
]
