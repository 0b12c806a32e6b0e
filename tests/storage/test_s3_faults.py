"""S3 going away in the middle of a publish, and damaged bytes at fetch: nothing half-published is ever
visible, a second publish completes, every file of an artifact is checked and named.

The outage is the embedded S3 server (moto, on 127.0.0.1) stopped with SIGSTOP: it keeps its objects but
answers nothing (a hung endpoint: connections are accepted, no reply comes) until SIGCONT starts it
again. A killed moto would lose every object, which no real store does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from sqltune.errors import IntegrityError, StorageError
from sqltune.storage import exists, fetch, join, publish, read_bytes, read_manifest, verify, write_bytes

FILES = {
    "adapter_model.safetensors": os.urandom(200_000),
    "adapter_config.json": json.dumps({"r": 8}).encode(),
    "tokenizer/tokenizer.json": b'{"vocab": {}}',
    "tokenizer/tokenizer_config.json": b"{}",
    "prompt_template.json": b'{"name": "default"}',
    "sqltune_artifact.json": b'{"kind": "adapter"}',
}


@pytest.fixture()
def adapter_dir(tmp_path) -> Path:
    d = tmp_path / "adapter"
    for rel, data in FILES.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


@pytest.fixture()
def quick_s3(monkeypatch):
    """Requests to a hung server give up after 2 s, one attempt (instead of 60 s, three)."""
    monkeypatch.setenv("SQLTUNE_S3_READ_TIMEOUT", "2")
    monkeypatch.setenv("SQLTUNE_S3_MAX_ATTEMPTS", "1")


@contextlib.contextmanager
def s3_stopped_on_demand(server):
    """Yields ``stop()``; the server is started again (SIGCONT) when the block ends, whatever happens."""
    pid = server.process.pid
    stopped = []

    def stop() -> None:
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)

    try:
        yield stop
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)


def test_s3_stopped_mid_publish_leaves_no_manifest_and_publishing_again_completes(
    s3_server, s3_prefix, adapter_dir, quick_s3, tmp_path
):
    uri = join(s3_prefix, "runs", "r1", "adapter")
    total = len(FILES)
    with s3_stopped_on_demand(s3_server) as stop:

        def stop_after_two(_rel: str, done: int, _total: int) -> None:
            if done == 2:
                stop()

        with pytest.raises(StorageError, match=rf"failed after 2 of {total} files: .*no manifest\.json was written"):
            publish(adapter_dir, uri, kind="lora-adapter", progress=stop_after_two)
    # The server is back: whatever of the upload it took in, there is no manifest, so no artifact.
    assert not exists(join(uri, "manifest.json"))
    with pytest.raises(IntegrityError, match="no manifest.json at .*: the artifact is incomplete or was never published"):
        fetch(uri, tmp_path / "half")
    assert not (tmp_path / "half").exists()

    manifest = publish(adapter_dir, uri, kind="lora-adapter")
    assert sorted(manifest.files) == sorted(FILES)
    got = fetch(uri, tmp_path / "whole")
    for rel, data in FILES.items():
        assert (got / rel).read_bytes() == data


def test_s3_stopped_while_the_manifest_is_written_gives_no_or_a_complete_artifact(
    s3_server, s3_prefix, adapter_dir, quick_s3, tmp_path
):
    """The last request of a publish is the manifest; if S3 hangs on it, the manifest may still land once
    S3 answers again, and then it vouches for files that are all there."""
    uri = join(s3_prefix, "runs", "r2", "adapter")
    with s3_stopped_on_demand(s3_server) as stop:

        def stop_before_manifest(_rel: str, done: int, total: int) -> None:
            if done == total:
                stop()

        with pytest.raises(StorageError):
            publish(adapter_dir, uri, kind="lora-adapter", progress=stop_before_manifest)
    if exists(join(uri, "manifest.json")):
        verify(uri)  # complete: every listed file present with its sha256
        assert sorted(read_manifest(uri).files) == sorted(FILES)
    else:
        with pytest.raises(IntegrityError, match="no manifest.json"):
            fetch(uri, tmp_path / "dest")


@pytest.mark.parametrize("rel", sorted(FILES))
def test_a_flipped_byte_in_any_file_is_refused_at_fetch_naming_it(s3_prefix, adapter_dir, tmp_path, rel):
    uri = join(s3_prefix, "flip", "adapter")
    publish(adapter_dir, uri, kind="lora-adapter")
    target = join(uri, rel)
    data = bytearray(read_bytes(target))
    data[len(data) // 2] ^= 0x01
    write_bytes(target, bytes(data))
    with pytest.raises(IntegrityError, match=rf"^{rel} in .* is corrupt: sha256"):
        fetch(uri, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    with pytest.raises(IntegrityError, match=rf"^{rel} in .* is corrupt"):
        verify(uri)
