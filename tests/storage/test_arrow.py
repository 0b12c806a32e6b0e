"""pyarrow's S3FileSystem (what Ray Train uses for storage_path) against the embedded server."""

from __future__ import annotations

import pyarrow.fs as pafs  # the dev extra's: a missing one fails the run, it does not skip
import pytest

from sqltune.storage import join, list_files, publish, pyarrow_filesystem, read_bytes, verify, write_bytes


def test_pyarrow_filesystem_reads_and_writes(s3_prefix, tmp_path):
    write_bytes(join(s3_prefix, "from-boto.txt"), b"boto")
    fs, path = pyarrow_filesystem(s3_prefix)
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == s3_prefix.removeprefix("s3://")
    with fs.open_output_stream(f"{path}/from-arrow.txt") as out:
        out.write(b"arrow")
    with fs.open_input_stream(f"{path}/from-boto.txt") as inp:
        assert inp.read() == b"boto"
    assert read_bytes(join(s3_prefix, "from-arrow.txt")) == b"arrow"

    # What Ray Train does with a checkpoint directory: pyarrow.fs.copy_files to storage_path.
    ckpt = tmp_path / "checkpoint_000001"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "model.bin").write_bytes(b"m" * 10_000_000)  # crosses arrow's multipart part size
    (ckpt / "sub" / "state.json").write_text("{}")
    pafs.copy_files(str(ckpt), f"{path}/ckpt", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    assert list_files(join(s3_prefix, "ckpt")) == ["model.bin", "sub/state.json"]
    # ... and an artifact published by Arrow-written files round-trips through sqltune.
    publish(ckpt, join(s3_prefix, "artifact"), kind="checkpoint")
    fs_files = fs.get_file_info(pafs.FileSelector(f"{path}/artifact", recursive=True))
    assert sorted(i.base_name for i in fs_files if i.is_file) == ["manifest.json", "model.bin", "state.json"]
    verify(join(s3_prefix, "artifact"))


def test_from_uri_honours_endpoint_env(s3_prefix):
    """pyarrow.fs.FileSystem.from_uri (Ray's default when storage_filesystem is not given) reads the env."""
    write_bytes(join(s3_prefix, "x.txt"), b"x")
    fs, path = pafs.FileSystem.from_uri(s3_prefix)
    assert fs.get_file_info(f"{path}/x.txt").size == 1


def test_local_pyarrow_filesystem(tmp_path):
    fs, path = pyarrow_filesystem(str(tmp_path / "d"))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "d")
    fs2, path2 = pyarrow_filesystem(f"file://{tmp_path}")
    assert path2 == str(tmp_path)


@pytest.mark.ray
def test_ray_train_checkpoints_to_embedded_s3(s3_server, s3_prefix):
    """Ray Train (RunConfig(storage_filesystem=...)) stores a checkpoint through pyarrow_filesystem."""
    import ray
    from ray.train import Checkpoint, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(_cfg):
        import os
        import tempfile

        import ray.train

        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "w.bin"), "wb") as fh:
                fh.write(b"x" * 1000)
            ray.train.report({"loss": 1.0}, checkpoint=Checkpoint.from_directory(d))

    fs, path = pyarrow_filesystem(join(s3_prefix, "ray-results"))
    if ray.is_initialized():  # a session fixture of another package may have left one up
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": s3_server.env()})
    try:
        result = TorchTrainer(
            loop,
            scaling_config=ScalingConfig(num_workers=1),
            run_config=RunConfig(name="r1", storage_path=path, storage_filesystem=fs),
        ).fit()
    finally:
        ray.shutdown()
    assert result.checkpoint is not None
    files = list_files(join(s3_prefix, "ray-results", "r1"))
    assert any(f.startswith("checkpoint_") and f.endswith("/w.bin") for f in files), files


def test_pyarrow_filesystem_takes_the_s3_timeouts_and_attempts_from_the_env(s3_prefix, monkeypatch):
    """Ray Train's checkpoint uploads go through this filesystem: a hung endpoint fails them after
    SQLTUNE_S3_READ_TIMEOUT, as it does boto3's requests, instead of waiting a fixed minute."""
    monkeypatch.setenv("SQLTUNE_S3_READ_TIMEOUT", "7.5")
    monkeypatch.setenv("SQLTUNE_S3_CONNECT_TIMEOUT", "1.5")
    fs, _ = pyarrow_filesystem(s3_prefix)
    (options,) = fs.__reduce__()[1]
    assert options["request_timeout"] == 7.5
    assert options["connect_timeout"] == 1.5
