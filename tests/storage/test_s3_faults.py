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
import threading
import time
from pathlib import Path

import pytest
from ray.train import Checkpoint
from ray.train.v2._internal.execution.storage import StorageContext

from sqltune.errors import IntegrityError, StorageError
from sqltune.storage import (
    exists, fetch, join, list_files, publish, pyarrow_filesystem, read_bytes, read_manifest, verify, write_bytes,
)

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


def test_s3_stopped_mid_checkpoint_upload_fails_the_upload_and_leaves_the_complete_one(
    s3_server, s3_prefix, quick_s3, tmp_path
):
    """A training checkpoint goes to S3 the way Ray Train uploads it (its StorageContext, through the
    pyarrow filesystem the training job passes it). S3 hangs while the second checkpoint's files are going
    up: the upload fails (bounded by SQLTUNE_S3_READ_TIMEOUT) rather than hanging, so the worker's report
    fails and that checkpoint is never registered; once S3 is back the first checkpoint is whole and the
    second is visibly incomplete."""
    n_files = 60

    def make_checkpoint(step: int) -> Checkpoint:
        d = tmp_path / f"local-{step}"
        d.mkdir()
        for k in range(n_files):
            (d / f"shard-{k:03d}.bin").write_bytes(os.urandom(32_000))
        (d / "state.json").write_text(json.dumps({"step": step}))
        return Checkpoint.from_directory(str(d))

    fs, path = pyarrow_filesystem(s3_prefix)
    ctx = StorageContext(storage_path=path, experiment_dir_name="ckpt-run", storage_filesystem=fs)
    first = ctx.persist_current_checkpoint(make_checkpoint(10), "checkpoint_step10")
    first_uri = f"s3://{first.path}"
    assert len(list_files(first_uri)) == n_files + 1

    second_uri = f"s3://{ctx.build_checkpoint_path_from_name('checkpoint_step20')}"
    with s3_stopped_on_demand(s3_server) as stop:
        stopped = threading.Event()
        files_when_stopped: list[int] = []

        def stop_once_files_arrive() -> None:
            while not stopped.is_set():
                landed = list_files(second_uri)
                if landed:
                    stop()
                    files_when_stopped.append(len(landed))
                    stopped.set()
                    return
                time.sleep(0.01)

        watcher = threading.Thread(target=stop_once_files_arrive, daemon=True)
        second_ckpt = make_checkpoint(20)
        watcher.start()
        try:
            with pytest.raises(OSError):
                ctx.persist_current_checkpoint(second_ckpt, "checkpoint_step20")
        finally:
            stopped.set()
            watcher.join(10)
    # S3 stopped in the middle: some of the second checkpoint's files had landed, not all.
    assert files_when_stopped and 0 < files_when_stopped[0] < n_files + 1, files_when_stopped
    # S3 is back. The first checkpoint is whole; the second holds fewer files than it was written with.
    assert len(list_files(first_uri)) == n_files + 1
    assert json.loads(read_bytes(join(first_uri, "state.json")))["step"] == 10
    assert len(list_files(second_uri)) < n_files + 1
