"""The local KubeRay stand-in's pure parts: mounted files, path prefixes, env and Secret resolution, and the
errors of `sqltune k8s local-run` for bad input (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqltune import cli
from sqltune.errors import ConfigError
from sqltune.k8s import local
from sqltune.serving.config import RAY_SERVE_ENV


def job_objs(rendered) -> tuple[dict, list[dict]]:
    objs = rendered["cpu-dev"]
    (job,) = local.select(objs, "RayJob", ["sqltune-train-tiny"])
    return job, objs


def test_plan_writes_configmap_files_and_prefixes_only_mounted_paths(rendered, tmp_path: Path) -> None:
    job, objs = job_objs(rendered)
    secrets = {"sqltune-s3": {"AWS_ACCESS_KEY_ID": "k", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"}}
    plan = local.plan_rayjob(job, objs, tmp_path, secrets, ["train.max_steps=2"])
    cfg = tmp_path / "sqltune-train-tiny" / "etc/sqltune/configs/tiny.yaml"
    assert cfg.read_text() == (Path(__file__).resolve().parents[2] / "jobs/configs/tiny.yaml").read_text()
    assert plan.entrypoint == job["spec"]["entrypoint"]
    assert plan.argv == ["python", "-m", "jobs.train", "--config", str(cfg), "train.max_steps=2"]
    assert plan.env == {
        "RAY_USAGE_STATS_ENABLED": "0",
        **RAY_SERVE_ENV,
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
    }
    root = Path("/r")
    assert local.prefix_paths(
        ["/etc/x/a.yaml", "k=/etc/x/b", "--f=/etc/x", "/etc/xy", "/tmp/a"], ["/etc/x"], root
    ) == ["/r/etc/x/a.yaml", "k=/r/etc/x/b", "--f=/r/etc/x", "/etc/xy", "/tmp/a"]


def test_required_secret_key_missing_names_the_line_to_add(rendered) -> None:
    (svc,) = local.select(rendered["cpu-dev"], "RayService", None)
    with pytest.raises(
        local.StandInError,
        match=r"env SQLTUNE_API_TOKEN comes from Secret 'sqltune-api' key "
        r"'token'.*add the line sqltune-api.token=<value>",
    ):
        local.pod_env(svc, rendered["cpu-dev"], {})
    env = local.pod_env(svc, rendered["cpu-dev"], {"sqltune-api": {"token": "t"}})
    assert env["SQLTUNE_API_TOKEN"] == "t"  # sqltune-s3 is optional: absent is fine


def test_missing_configmap_is_an_error(rendered, tmp_path: Path) -> None:
    job, objs = job_objs(rendered)
    without = [o for o in objs if o["kind"] != "ConfigMap"]
    with pytest.raises(
        local.StandInError, match="mounts ConfigMap 'sqltune-job-configs', which is not among"
    ):
        local.plan_rayjob(job, without, tmp_path)


def test_gpu_manifests_are_refused(rendered, tmp_path: Path) -> None:
    objs = rendered["gpu"]
    (job,) = local.select(objs, "RayJob", ["sqltune-train-tiny"])
    assert local.needs_gpus(job)
    with pytest.raises(local.StandInError, match="does not emulate GPUs"):
        local.run_rayjob(job, objs, ray=None, root=tmp_path, repo=tmp_path)


def test_env_file(tmp_path: Path) -> None:
    f = tmp_path / "s.env"
    f.write_text("# S3\nsqltune-s3.AWS_ACCESS_KEY_ID=a=b\n\nsqltune-api.token=t\n")
    assert local.read_env_file(f) == {
        "sqltune-s3": {"AWS_ACCESS_KEY_ID": "a=b"},
        "sqltune-api": {"token": "t"},
    }
    assert local.read_env_file(f) == local.read_env_file(
        _write(tmp_path, local.env_file_text(local.read_env_file(f)))
    )
    f.write_text("AWS_ACCESS_KEY_ID=a\n")
    with pytest.raises(ConfigError, match=r"line 1: 'AWS_ACCESS_KEY_ID=a' is not <secret>.<key>=<value>"):
        local.read_env_file(f)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "again.env"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--job", "nope"], "no RayJob named 'nope' in the manifests"),
        (["--args", "sqltune-train-tiny=train.max_steps=2"], "expected JOB:key=value"),
        (["--args", "sqltune-serve:x=1"], "--args names 'sqltune-serve', which is not among the RayJobs run"),
        (["--env-file", "/nonexistent.env"], "--env-file /nonexistent.env: no such file"),
        (["--tiny-base"], "--tiny-base publishes the tiny base to the embedded S3: add --embedded-s3"),
        (["--induction-steps", "5"], "--induction-steps shortens the tiny base's pre-training: only with --tiny-base"),
    ],
)
def test_local_run_bad_input_exits_2_before_starting_ray(
    kubectl, tmp_path: Path, capsys, extra, message
) -> None:
    from .conftest import ROOT, kustomize

    manifests = tmp_path / "cpu-dev.yaml"
    manifests.write_text(kustomize(kubectl, ROOT / "k8s/overlays/cpu-dev"))
    code = cli.main(["k8s", "local-run", "-f", str(manifests), "--work", str(tmp_path / "w"), *extra])
    assert code == 2 and message in capsys.readouterr().err
