from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sqltune.errors import IntegrityError, StorageError
from sqltune.storage import (
    FORMAT,
    delete_prefix,
    exists,
    fetch,
    fetch_cached,
    join,
    list_files,
    parse_s3_uri,
    publish,
    read_bytes,
    read_manifest,
    s3_client,
    verify,
    write_bytes,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    d = tmp_path / "model"
    (d / "tokenizer").mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(os.urandom(300_000))
    (d / "adapter_config.json").write_text(json.dumps({"r": 16}))
    (d / "tokenizer" / "tokenizer.json").write_text('{"vocab": {}}')
    (d / "empty.txt").write_bytes(b"")
    return d


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _put(uri: str, data: bytes) -> None:
    """Write raw bytes straight into the store, bypassing sqltune (to damage an artifact)."""
    write_bytes(uri, data)


def _remove(uri: str) -> None:
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        os.unlink(uri)


def test_round_trip(store, model_dir, tmp_path):
    uri = join(store, "adapter")
    m = publish(model_dir, uri, kind="lora-adapter", metadata={"base": "tiny"})
    assert m.format == FORMAT and m.kind == "lora-adapter" and len(m.files) == 4
    assert list_files(uri) == sorted([*m.files, "manifest.json"])
    on_disk = json.loads(read_bytes(join(uri, "manifest.json")))
    assert on_disk["format"] == "sqltune-artifact/1"
    assert on_disk["files"]["adapter_config.json"]["size"] == len(json.dumps({"r": 16}))
    assert set(on_disk) == {"format", "kind", "created", "files", "metadata"}

    got = fetch(uri, tmp_path / "fetched")
    expected = _tree(model_dir)
    fetched = _tree(got)
    assert fetched.pop("manifest.json")
    assert fetched == expected
    assert read_manifest(uri).digest == m.digest == read_manifest(got).digest
    assert verify(uri).files == m.files
    assert verify(got).kind == "lora-adapter"


def test_fetch_without_dest_uses_temp_or_in_place(store, model_dir):
    uri = join(store, "a")
    publish(model_dir, uri, kind="k")
    got = fetch(uri)
    if uri.startswith("s3://"):
        assert got.is_dir() and got != model_dir
    else:
        assert got == Path(uri)
    assert (got / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.parametrize("damage", ["flip", "missing", "no-manifest", "truncate"])
def test_damaged_artifact_is_refused(store, model_dir, tmp_path, damage):
    uri = join(store, "adapter")
    publish(model_dir, uri, kind="lora-adapter")
    target = join(uri, "adapter_model.safetensors")
    if damage == "flip":
        data = bytearray(read_bytes(target))
        data[1234] ^= 0x01
        _put(target, bytes(data))
        match = r"adapter_model\.safetensors in .* is corrupt: sha256"
    elif damage == "truncate":
        _put(target, read_bytes(target)[:-1])
        match = r"adapter_model\.safetensors in .* is corrupt: 299999 bytes"
    elif damage == "missing":
        _remove(join(uri, "tokenizer/tokenizer.json"))
        match = r"tokenizer/tokenizer\.json is listed in the manifest of .* but is missing"
    else:
        _remove(join(uri, "manifest.json"))
        match = r"no manifest\.json at .*adapter: the artifact is incomplete or was never published"
    with pytest.raises(IntegrityError, match=match):
        fetch(uri, tmp_path / "dest")
    with pytest.raises(IntegrityError, match=match):
        verify(uri)
    if uri.startswith("s3://"):
        # The refused fetch left nothing that looks like an artifact behind.
        assert not (tmp_path / "dest" / "manifest.json").exists()


def test_unlisted_extra_files_are_ignored(store, model_dir, tmp_path):
    uri = join(store, "a")
    publish(model_dir, uri, kind="k")
    write_bytes(join(uri, "stray.bin"), b"not part of it")
    verify(uri)
    if uri.startswith("s3://"):
        got = fetch(uri, tmp_path / "dest")
        assert not (got / "stray.bin").exists()


def test_republish_refused_then_overwrite(store, model_dir):
    uri = join(store, "a")
    publish(model_dir, uri, kind="k")
    with pytest.raises(StorageError, match="already published at .*overwrite=True"):
        publish(model_dir, uri, kind="k")
    (model_dir / "adapter_config.json").unlink()
    m = publish(model_dir, uri, kind="k2", overwrite=True)
    assert "adapter_config.json" not in m.files
    assert read_manifest(uri).kind == "k2"
    assert "adapter_config.json" not in list_files(uri)  # old files were deleted
    verify(uri)


def test_publish_aborted_by_hook_leaves_no_manifest(store, model_dir):
    uri = join(store, "a")
    seen = []

    def hook(rel, done, total):
        seen.append(rel)
        if done == 2:
            raise RuntimeError("disk quota exceeded")

    with pytest.raises(StorageError, match=r"failed after 2 of 4 files: disk quota exceeded; no manifest\.json"):
        publish(model_dir, uri, kind="k", progress=hook)
    assert len(seen) == 2
    assert not exists(join(uri, "manifest.json"))
    assert list_files(uri) == []  # best-effort cleanup removed the partial upload
    with pytest.raises(IntegrityError, match="no manifest.json"):
        fetch(uri)


def test_publish_with_file_vanishing_midway_leaves_no_manifest(store, model_dir):
    """A real I/O failure: a file listed at scan time is gone when its turn to upload comes."""
    uri = join(store, "a")

    def hook(rel, done, total):
        if done == 1:
            (model_dir / "tokenizer" / "tokenizer.json").unlink()

    with pytest.raises(StorageError, match=r"failed after \d of 4 files: .*tokenizer\.json"):
        publish(model_dir, uri, kind="k", progress=hook)
    assert not exists(join(uri, "manifest.json"))
    with pytest.raises(IntegrityError, match="no manifest.json"):
        read_manifest(uri)


def test_local_publish_in_place(model_dir):
    m = publish(model_dir, model_dir, kind="k")
    assert (model_dir / "manifest.json").is_file()
    assert fetch(model_dir) == model_dir
    assert verify(f"file://{model_dir}").digest == m.digest
    with pytest.raises(StorageError, match="already published"):
        publish(model_dir, model_dir, kind="k")
    m2 = publish(model_dir, model_dir, kind="k", overwrite=True)  # must not delete the source files
    assert m2.files == m.files


def test_invalid_manifest_is_refused(store, model_dir):
    uri = join(store, "a")
    publish(model_dir, uri, kind="k")
    data = json.loads(read_bytes(join(uri, "manifest.json")))
    data["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "size": 1}
    write_bytes(join(uri, "manifest.json"), json.dumps(data).encode())
    with pytest.raises(IntegrityError, match=r"file path '\.\./\.\./etc/passwd' must be relative"):
        fetch(uri)
    write_bytes(join(uri, "manifest.json"), b"{not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        read_manifest(uri)


def test_fetch_cached_downloads_once(s3_prefix, model_dir, tmp_path):
    uri = join(s3_prefix, "a")
    m = publish(model_dir, uri, kind="k")
    cache = tmp_path / "cache"
    first = fetch_cached(uri, cache)
    assert first == cache / m.digest
    # Remove the data (keep the manifest): a second call must not need the store's files.
    for rel in m.files:
        _remove(join(uri, rel))
    assert fetch_cached(uri, cache) == first
    assert (first / "adapter_model.safetensors").read_bytes() == (
        model_dir / "adapter_model.safetensors"
    ).read_bytes()
    # A damaged cache entry is detected (sizes) and re-fetched -- which now fails loudly, as it should.
    (first / "adapter_config.json").write_text("x")
    with pytest.raises(IntegrityError, match="missing"):
        fetch_cached(uri, cache)


def test_fetch_cached_env_default(s3_prefix, model_dir, tmp_path, monkeypatch):
    uri = join(s3_prefix, "a")
    m = publish(model_dir, uri, kind="k")
    monkeypatch.setenv("SQLTUNE_CACHE", str(tmp_path / "envcache"))
    assert fetch_cached(uri) == tmp_path / "envcache" / m.digest


def test_fetch_cached_concurrent_processes_download_once(s3_server, s3_prefix, model_dir, tmp_path):
    uri = join(s3_prefix, "a")
    m = publish(model_dir, uri, kind="k")
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
        from sqltune.storage import fetch_cached
        print(fetch_cached({uri!r}, {str(cache)!r}))
        """
    )
    env = {**os.environ, **s3_server.env()}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {o.strip() for o, _ in outs} == {str(cache / m.digest)}
    fetched = sum(e.count("sqltune.storage.artifact fetched") for _, e in outs)
    assert fetched == 1, outs
    assert sorted(p.name for p in cache.iterdir()) == [m.digest, f"{m.digest}.lock"]


def test_publish_to_bucket_root_refused(s3_prefix, model_dir):
    bucket = parse_s3_uri(s3_prefix)[0]
    with pytest.raises(StorageError, match="bucket root"):
        publish(model_dir, f"s3://{bucket}/", kind="k")


def test_delete_prefix_removes_artifact(store, model_dir):
    uri = join(store, "a")
    publish(model_dir, uri, kind="k")
    assert delete_prefix(uri) == 5
    assert not exists(uri)
