"""A bad training config fails before Ray starts, with a message that names the problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _train(args: list[str], ray_tmp: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``python -m jobs.train`` as a user would; returns (exit code, stderr+stdout).

    ``ray_tmp`` is the job's Ray temp directory (RAY_TMPDIR): a Ray that starts leaves its session there.
    """
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    full_env["CUDA_VISIBLE_DEVICES"] = ""
    full_env["RAY_TMPDIR"] = str(ray_tmp)
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", *args], cwd=ROOT, capture_output=True, text=True, env=full_env,
        timeout=120,
    )
    return proc.returncode, proc.stderr + proc.stdout


@pytest.fixture()
def ray_tmp(tmp_path) -> Path:
    path = tmp_path / "ray-tmp"
    path.mkdir()
    return path


@pytest.fixture()
def good_args(train_base, embedded_dir, tmp_path) -> list[str]:
    return [
        "--config", str(ROOT / "jobs" / "configs" / "tiny.yaml"),
        f"model.base={train_base}", f"data.embedded_dir={embedded_dir}", f"output_uri={tmp_path / 'out'}",
    ]


def _assert_failed_before_ray(code: int, out: str, ray_tmp: Path, *needles: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out, out
    assert "Started a local Ray" not in out and "ray.init" not in out, out
    assert list(ray_tmp.iterdir()) == [], "a Ray session was started"
    for needle in needles:
        assert needle in out, (needle, out)


@pytest.mark.parametrize(
    "override, needles",
    [
        (["lora.rank=8"], ["lora.rank", "unknown key", "valid keys"]),
        (["model.mode=int3"], ["model.mode", "'int3'", "'qlora'"]),
        (["optim.lr=-1"], ["optim.lr", "below the minimum"]),
        (["scaling.num_workers=two"], ["scaling.num_workers", "not an integer"]),
        (["data.source=/nonexistent/dataset.jsonl"], ["/nonexistent/dataset.jsonl"]),
        (["model.base=/nonexistent/model"], ["/nonexistent/model"]),
        (["scaling.use_gpu=true"], ["scaling.use_gpu", "no CUDA GPU"]),
    ],
)
def test_bad_config_fails_before_ray(good_args, ray_tmp, override, needles):
    code, out = _train(good_args + override, ray_tmp)
    _assert_failed_before_ray(code, out, ray_tmp, *needles)


def test_unreachable_bucket_fails_before_ray(good_args, ray_tmp):
    env = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "SQLTUNE_S3_MAX_ATTEMPTS": "1", "SQLTUNE_S3_CONNECT_TIMEOUT": "1"}
    code, out = _train(good_args + ["output_uri=s3://sqltune-missing/runs"], ray_tmp, env)
    _assert_failed_before_ray(code, out, ray_tmp, "output_uri", "s3://sqltune-missing/runs", "127.0.0.1:9")


def test_missing_bucket_fails_before_ray(good_args, ray_tmp, s3_server):
    code, out = _train(good_args + ["output_uri=s3://no-such-bucket-here/runs"], ray_tmp, s3_server.env())
    _assert_failed_before_ray(code, out, ray_tmp, "output_uri", "no-such-bucket-here")


def test_preflight_in_process_does_not_start_ray(train_base, embedded_dir, tmp_path):
    import ray

    from sqltune.errors import DataError
    from sqltune.train.config import TrainConfig
    from sqltune.train.run import preflight

    was = ray.is_initialized()
    cfg = TrainConfig.from_dict({
        "model": {"base": str(train_base)}, "output_uri": str(tmp_path),
        "data": {"source": str(tmp_path / "missing.jsonl")},
    })
    with pytest.raises(DataError, match="missing.jsonl"):
        preflight(cfg)
    assert ray.is_initialized() == was
