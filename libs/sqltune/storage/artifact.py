"""Artifacts: a directory of files plus ``manifest.json`` listing each file's sha256 and size.

The manifest is written last, so its presence means the artifact is complete::

    {
      "format": "sqltune-artifact/1",
      "kind": "lora-adapter",
      "created": "2025-01-01T12:00:00+00:00",
      "files": {"adapter_model.safetensors": {"sha256": "ab12...", "size": 1234}},
      "metadata": {"base_model": "Qwen/Qwen2.5-0.5B-Instruct"}
    }

:func:`publish` uploads (or copies) every file under its final name, then the manifest;
:func:`fetch` downloads and checks every file against it; :func:`fetch_cached` does that once per node.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqltune.errors import IntegrityError, StorageError
from sqltune.storage import files as _files
from sqltune.storage.client import error_code, s3_client, s3_errors
from sqltune.storage.uri import is_s3, join, local_path, parse_s3_uri

log = logging.getLogger(__name__)

FORMAT = "sqltune-artifact/1"
MANIFEST_NAME = "manifest.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024

ProgressHook = Callable[[str, int, int], None]
"""Called as ``hook(relpath, done, total)`` after each file is stored; an exception aborts the publish."""


@dataclass(frozen=True)
class FileEntry:
    """One file of an artifact: its sha256 (hex) and size in bytes."""

    sha256: str
    size: int


@dataclass
class Manifest:
    """The content of ``manifest.json``."""

    kind: str
    files: dict[str, FileEntry]
    metadata: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "kind": self.kind,
            "created": self.created,
            "files": {k: {"sha256": v.sha256, "size": v.size} for k, v in sorted(self.files.items())},
            "metadata": self.metadata,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON form: identifies this exact artifact (used as the cache key)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.files.values())

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        """Validate and build; IntegrityError naming ``source`` and the bad field."""

        def bad(why: str) -> IntegrityError:
            return IntegrityError(f"invalid manifest at {source}: {why}")

        if not isinstance(data, dict):
            raise bad(f"expected a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != FORMAT:
            raise bad(f"format is {fmt!r}, this sqltune reads {FORMAT!r} (upgrade sqltune for newer formats)")
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind:
            raise bad("'kind' must be a non-empty string")
        raw_files = data.get("files")
        if not isinstance(raw_files, dict):
            raise bad("'files' must be an object mapping relative paths to {sha256, size}")
        entries: dict[str, FileEntry] = {}
        for rel, entry in raw_files.items():
            _check_relpath(rel, source)
            if not isinstance(entry, dict):
                raise bad(f"entry {rel!r} must be an object with sha256 and size")
            digest, size = entry.get("sha256"), entry.get("size")
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise bad(f"entry {rel!r} has sha256 {digest!r}, expected 64 lower-case hex digits")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise bad(f"entry {rel!r} has size {size!r}, expected a non-negative integer")
            entries[rel] = FileEntry(digest, size)
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            raise bad("'metadata' must be an object")
        created = data.get("created", "")
        if not isinstance(created, str):
            raise bad("'created' must be an ISO-8601 string")
        return cls(kind=kind, files=entries, metadata=metadata, created=created, format=fmt)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"invalid manifest at {source}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, source)


def _check_relpath(rel: Any, source: str) -> None:
    p = PurePosixPath(rel) if isinstance(rel, str) else None
    if (
        p is None
        or not rel
        or rel.startswith("/")
        or "\\" in rel
        or any(part in ("", ".", "..") for part in rel.split("/"))
        or rel == MANIFEST_NAME
    ):
        raise IntegrityError(
            f"invalid manifest at {source}: file path {rel!r} must be relative, use '/', and not contain "
            f"'.', '..' or be {MANIFEST_NAME!r}"
        )


def hash_file(path: str | os.PathLike[str]) -> FileEntry:
    """sha256 and size of a local file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return FileEntry(h.hexdigest(), size)


def scan_dir(local_dir: str | os.PathLike[str]) -> dict[str, FileEntry]:
    """Hash every file under ``local_dir`` (recursively), except a top-level manifest.json."""
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"cannot publish {root}: not a directory")
    out: dict[str, FileEntry] = {}
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if rel == MANIFEST_NAME:
                continue
            out[rel] = hash_file(path)
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _manifest_uri(uri: str) -> str:
    return uri if uri.rstrip("/").endswith("/" + MANIFEST_NAME) else join(uri, MANIFEST_NAME)


def _root_uri(uri: str) -> str:
    u = uri.rstrip("/")
    return u[: -len(MANIFEST_NAME) - 1] if u.endswith("/" + MANIFEST_NAME) else uri


# --------------------------------------------------------------------------------------------- publish


def publish(
    local_dir: str | os.PathLike[str],
    uri: str | os.PathLike[str],
    *,
    kind: str,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: ProgressHook | None = None,
) -> Manifest:
    """Publish the directory ``local_dir`` as an artifact at ``uri`` (``s3://bucket/prefix`` or a path).

    Refuses if an artifact (a manifest) is already there unless ``overwrite``; then the old manifest is
    deleted first and its files after. Every file is stored under its final name, the manifest last, so
    a publish that fails midway leaves no manifest (and the stored files are removed, best effort).
    ``progress(relpath, done, total)`` is called after each file; if it raises, the publish is aborted.
    """
    uri = os.fspath(uri)
    if not isinstance(kind, str) or not kind.strip():
        raise StorageError("publish needs kind=..., a non-empty string such as 'lora-adapter'")
    meta = dict(metadata or {})
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"artifact metadata for {uri} is not JSON-serialisable: {exc}") from exc
    entries = scan_dir(local_dir)
    manifest = Manifest(kind=kind, files=entries, metadata=meta, created=_now())
    if is_s3(uri):
        _publish_s3(Path(local_dir), uri, manifest, overwrite, progress)
    else:
        _publish_local(Path(local_dir), uri, manifest, overwrite, progress)
    log.info("published %s (%d files, %d bytes) to %s", kind, len(entries), manifest.total_size, uri)
    return manifest


def _already(uri: str) -> StorageError:
    return StorageError(
        f"an artifact is already published at {uri} (it has a {MANIFEST_NAME}); "
        "pass overwrite=True (--overwrite) to replace it, or publish to a new URI"
    )


def _failed(src: Path, uri: str, done: int, total: int, exc: BaseException) -> StorageError:
    return StorageError(
        f"publishing {src} to {uri} failed after {done} of {total} files: {exc}; no {MANIFEST_NAME} was "
        "written, so nothing incomplete will be fetched. Fix the cause and publish again"
    )


def _publish_s3(src: Path, uri: str, manifest: Manifest, overwrite: bool, progress: ProgressHook | None) -> None:
    bucket, key = parse_s3_uri(uri)
    if not key.strip("/"):
        raise StorageError(f"cannot publish to a bucket root ({uri}); give a prefix, e.g. {join(uri, 'my-run')}")
    m_uri = _manifest_uri(uri)
    if _files.exists(m_uri):
        if not overwrite:
            raise _already(uri)
        # Manifest first, so a reader never sees the old manifest over half-replaced files.
        with s3_errors(m_uri, "delete"):
            s3_client().delete_object(Bucket=bucket, Key=parse_s3_uri(m_uri)[1])
        _files.delete_prefix(uri)
    total = len(manifest.files)
    stored: list[str] = []
    try:
        for rel in sorted(manifest.files):
            target = join(uri, rel)
            _files.upload_file(src / rel, target)
            stored.append(parse_s3_uri(target)[1])
            if progress is not None:
                progress(rel, len(stored), total)
        _files.write_bytes(m_uri, manifest.to_json().encode())
    except BaseException as exc:
        try:
            _files.delete_objects(bucket, stored, uri)
        except Exception as cleanup_exc:  # noqa: BLE001 - best effort; the original error matters
            log.warning("could not remove the partial upload under %s: %s", uri, cleanup_exc)
        if isinstance(exc, Exception):
            raise _failed(src, uri, len(stored), total, exc) from exc
        raise


def _publish_local(
    src: Path, uri: str, manifest: Manifest, overwrite: bool, progress: ProgressHook | None
) -> None:
    dest = local_path(uri)
    src_r, dest_r = src.resolve(), dest.resolve()
    in_place = src_r == dest_r
    if not in_place and (dest_r in src_r.parents or src_r in dest_r.parents):
        raise StorageError(f"cannot publish {src} to {uri}: one directory is inside the other")
    m_path = dest / MANIFEST_NAME
    if m_path.exists():
        if not overwrite:
            raise _already(uri)
        m_path.unlink()
        if not in_place:
            shutil.rmtree(dest)
    if dest.exists() and not dest.is_dir():
        raise StorageError(f"cannot publish to {uri}: it exists and is not a directory")
    created = not dest.exists()
    total = len(manifest.files)
    stored: list[Path] = []
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for done, rel in enumerate(sorted(manifest.files), start=1):
            if not in_place:
                _files.upload_file(src / rel, dest / rel)
                stored.append(dest / rel)
            if progress is not None:
                progress(rel, done, total)
        _files.write_bytes(str(m_path), manifest.to_json().encode())
    except BaseException as exc:
        for path in stored:
            with contextlib.suppress(OSError):
                path.unlink()
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, Exception):
            raise _failed(src, uri, len(stored), total, exc) from exc
        raise


# ------------------------------------------------------------------------------------- read / verify


def read_manifest(uri: str | os.PathLike[str]) -> Manifest:
    """Read and validate the manifest of the artifact at ``uri`` (its root, or its manifest.json)."""
    uri = os.fspath(uri)
    m_uri = _manifest_uri(uri)
    try:
        raw = _files.read_bytes(m_uri)
    except FileNotFoundError:
        raise IntegrityError(
            f"no {MANIFEST_NAME} at {_root_uri(uri)}: the artifact is incomplete or was never published"
        ) from None
    return Manifest.from_json(raw, m_uri)


def _verify_local(root: Path, manifest: Manifest, label: str, *, hashes: bool = True) -> None:
    for rel, entry in sorted(manifest.files.items()):
        path = root / rel
        if not path.is_file():
            raise IntegrityError(f"{rel} is listed in the manifest of {label} but is missing")
        size = path.stat().st_size
        if size != entry.size:
            raise IntegrityError(
                f"{rel} in {label} is corrupt: {size} bytes, the manifest says {entry.size}"
            )
        if hashes:
            actual = hash_file(path).sha256
            if actual != entry.sha256:
                raise IntegrityError(
                    f"{rel} in {label} is corrupt: sha256 {actual}, the manifest says {entry.sha256}"
                )


def _verify_s3(uri: str, manifest: Manifest) -> None:
    client = s3_client()
    for rel, entry in sorted(manifest.files.items()):
        obj_uri = join(uri, rel)
        bucket, key = parse_s3_uri(obj_uri)
        h = hashlib.sha256()
        size = 0
        try:
            with s3_errors(obj_uri, "read"):
                body = client.get_object(Bucket=bucket, Key=key)["Body"]
                for chunk in iter(lambda: body.read(_CHUNK), b""):
                    h.update(chunk)
                    size += len(chunk)
        except StorageError as exc:
            if error_code(exc.__cause__) == "NoSuchKey":
                raise IntegrityError(f"{rel} is listed in the manifest of {uri} but is missing") from None
            raise
        if size != entry.size:
            raise IntegrityError(f"{rel} in {uri} is corrupt: {size} bytes, the manifest says {entry.size}")
        if h.hexdigest() != entry.sha256:
            raise IntegrityError(
                f"{rel} in {uri} is corrupt: sha256 {h.hexdigest()}, the manifest says {entry.sha256}"
            )


def verify(uri_or_dir: str | os.PathLike[str]) -> Manifest:
    """Check every file of the artifact (local or on S3, streamed) against its manifest; return it."""
    uri = _root_uri(os.fspath(uri_or_dir))
    manifest = read_manifest(uri)
    if is_s3(uri):
        _verify_s3(uri, manifest)
    else:
        _verify_local(local_path(uri), manifest, uri)
    return manifest


# -------------------------------------------------------------------------------------------- fetch


def fetch(
    uri: str | os.PathLike[str], dest_dir: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> Path:
    """Fetch the artifact at ``uri`` into ``dest_dir`` and return the local directory.

    S3: downloads every listed file (unlisted extras are ignored) into ``dest_dir`` (a new temporary
    directory if None), checks sizes and, with ``verify``, sha256s, then writes manifest.json last.
    Local: verifies in place and returns the directory (or copies the listed files into ``dest_dir``).
    Raises IntegrityError naming the file on a mismatch or a missing file, or if there is no manifest.
    """
    uri = _root_uri(os.fspath(uri))
    manifest = read_manifest(uri)
    return _fetch_with_manifest(uri, manifest, dest_dir, verify)


def _fetch_with_manifest(
    uri: str, manifest: Manifest, dest_dir: str | os.PathLike[str] | None, verify: bool
) -> Path:
    if not is_s3(uri):
        src = local_path(uri)
        if dest_dir is None or Path(dest_dir).resolve() == src.resolve():
            _verify_local(src, manifest, uri, hashes=verify)
            return src
    dest = Path(dest_dir) if dest_dir is not None else Path(tempfile.mkdtemp(prefix="sqltune-artifact-"))
    created = dest_dir is None or not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (dest / MANIFEST_NAME).unlink()  # a stale manifest must not vouch for half-replaced files

    def get(rel: str) -> None:
        try:
            _files.download_file(join(uri, rel), dest / rel)
        except FileNotFoundError:
            raise IntegrityError(f"{rel} is listed in the manifest of {uri} but is missing") from None

    try:
        rels = sorted(manifest.files)
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(rels)))) as pool:
            for fut in [pool.submit(get, rel) for rel in rels]:
                fut.result()
        _verify_local(dest, manifest, uri, hashes=verify)
        _files.write_bytes(str(dest / MANIFEST_NAME), manifest.to_json().encode())
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    log.info("fetched %s (%d files) to %s", uri, len(rels), dest)
    return dest


def default_cache_dir() -> Path:
    """``$SQLTUNE_CACHE`` or ``~/.cache/sqltune/artifacts``."""
    env = os.environ.get("SQLTUNE_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sqltune" / "artifacts"


def fetch_cached(
    uri: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> Path:
    """Fetch the artifact at ``uri`` into the node's cache, once, and return the cached directory.

    The cache entry is ``<cache_dir>/<manifest digest>``, so a re-published artifact gets a new entry.
    Concurrent callers (threads or processes) serialise on an fcntl lock per entry; the first downloads
    and verifies into a temporary directory and renames it into place, the others reuse it. A hit only
    re-checks file sizes. Local artifacts are verified in place and returned without copying.
    """
    uri = _root_uri(os.fspath(uri))
    manifest = read_manifest(uri)
    if not is_s3(uri):
        return _fetch_with_manifest(uri, manifest, None, verify)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    digest = manifest.digest
    target = root / digest
    with open(root / f"{digest}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process fetching %s into %s", uri, target)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (target / MANIFEST_NAME).is_file():
                try:
                    _verify_local(target, manifest, str(target), hashes=False)
                    return target
                except IntegrityError as exc:
                    log.warning("cached artifact %s is damaged (%s); fetching it again", target, exc)
                    shutil.rmtree(target, ignore_errors=True)
            elif target.exists():
                shutil.rmtree(target, ignore_errors=True)
            for stale in root.glob(f".{digest}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.partial-", dir=root))
            try:
                _fetch_with_manifest(uri, manifest, tmp, verify)
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return target
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
