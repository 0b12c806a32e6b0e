"""`sqltune k8s` without a cluster: dry runs, bad input, status mapping, the command registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sqltune import cli
from sqltune.errors import ConfigError
from sqltune.k8s import builders as b
from sqltune.k8s.cluster import exit_code_for
from sqltune.k8s.validate import validate_objects
from sqltune.k8s.versions import CPU_IMAGE, GPU_IMAGE

from .conftest import ROOT

GPU_PRESET = ROOT / "jobs" / "configs" / "qwen2.5-3b-qlora.yaml"  # scaling: 1 worker, use_gpu: true


@pytest.fixture()
def train_cfg(tmp_path: Path) -> Path:
    """A real training preset (one GPU worker) under another name and run_name."""
    p = tmp_path / "qwen-lora.yaml"
    data = yaml.safe_load(GPU_PRESET.read_text())
    data["run_name"] = "My_Run_01"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_submit_dry_run_train(capsys, train_cfg: Path, crd_dir) -> None:
    code, out, err = run(capsys, "k8s", "submit", "--config", str(train_cfg), "--dry-run", "--workers", "2",
                         "lora.r=32")
    assert code == 0, err
    cm, job = docs(out)
    assert cm["kind"] == "ConfigMap" and job["kind"] == "RayJob"
    assert cm["data"] == {train_cfg.name: train_cfg.read_text()}
    name = job["metadata"]["name"]
    assert name.startswith("sqltune-train-my-run-01-") and len(name) <= b.MAX_RAYJOB_NAME
    assert cm["metadata"]["name"] == f"{name}-config"
    spec = job["spec"]
    assert spec["entrypoint"] == (
        f"python -m jobs.train --config /etc/sqltune/configs/{train_cfg.name} lora.r=32 scaling.num_workers=2"
    )
    group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 2  # one pod per Ray Train worker, each with its GPU (scaling.use_gpu)
    c = group["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"][b.GPU_RESOURCE] == 1 and c["image"] == GPU_IMAGE
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "job-config", "configMap": {"name": cm["metadata"]["name"]}} in head["volumes"]
    assert job["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sqltune"
    assert validate_objects([cm, job], str(crd_dir)) == []


def test_submit_dry_run_flags_override_config(capsys, train_cfg: Path, crd_dir) -> None:
    code, out, _ = run(
        capsys, "k8s", "submit", "--config", str(train_cfg), "--dry-run", "--gpus", "0", "--workers", "3",
        "--name", "tiny-cpu", "--namespace", "dev", "--retries", "2", "--deadline", "7200",
    )
    assert code == 0
    _, job = docs(out)
    spec = job["spec"]
    assert job["metadata"] == {**job["metadata"], "name": "tiny-cpu", "namespace": "dev"}
    assert spec["entrypoint"].endswith("scaling.num_workers=3 scaling.use_gpu=false")
    assert spec["backoffLimit"] == 2 and spec["activeDeadlineSeconds"] == 7200
    group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 3 and group["groupName"] == "cpu-workers"
    pod = group["template"]["spec"]
    assert b.GPU_RESOURCE not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod and pod["containers"][0]["image"] == CPU_IMAGE
    assert validate_objects([job], str(crd_dir)) == []


@pytest.mark.parametrize(
    ("stem", "module", "gpus"),
    [("eval-tiny", "jobs.evaluate", 1), ("export-tiny", "jobs.export", 0), ("tiny", "jobs.train", 0),
     ("export-qwen2.5-3b", "jobs.export", 1), ("qwen2.5-3b-qlora", "jobs.train", 1)],
)
def test_submit_dry_run_infers_kind(capsys, crd_dir, stem: str, module: str, gpus: int) -> None:
    cfg = ROOT / "jobs" / "configs" / f"{stem}.yaml"
    code, out, _ = run(capsys, "k8s", "submit", "--config", str(cfg), "--dry-run")
    assert code == 0
    _, job = docs(out)
    assert job["spec"]["entrypoint"].startswith(f"python -m {module} --config /etc/sqltune/configs/{stem}.yaml")
    limits = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    assert limits["limits"].get(b.GPU_RESOURCE, 0) == gpus
    assert validate_objects([job], str(crd_dir)) == []


# tiny-base builds the tiny model; tune-* sweeps run through `ray job submit`, not as RayJobs
JOB_PRESETS = [p for p in sorted((ROOT / "jobs" / "configs").glob("*.yaml"))
               if p.name != "tiny-base.yaml" and not p.name.startswith("tune-")]


def test_submit_refuses_a_sweep_preset_with_the_command_to_use(capsys) -> None:
    code, out, err = run(capsys, "k8s", "submit", "--config", str(ROOT / "jobs/configs/tune-tiny.yaml"), "--dry-run")
    assert code == 2 and "python -m jobs.tune --config" in err and not out


@pytest.mark.parametrize("config", JOB_PRESETS, ids=lambda p: p.name)
def test_submit_dry_run_every_preset(capsys, crd_dir, config: Path) -> None:
    code, out, err = run(capsys, "k8s", "submit", "--config", str(config), "--dry-run")
    assert code == 0, err
    assert validate_objects(docs(out), str(crd_dir)) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "does/not/exist.yaml"], "no such file"),
        (["--config", "{cfg}", "--name", "Bad_Name"], "invalid --name"),
        (["--config", "{cfg}", "--name", "x" * 48], "invalid --name"),
        (["--config", "{cfg}", "noequals"], "not key=value"),
        (["--config", "{list}"], "expected a mapping"),
        (["--config", "{cfg}", "--gpus", "-1"], "must be >= 0"),
        (["--config", "{cfg}", "--kind", "deploy"], "invalid choice"),
        (["--config", "{cfg}", "--gpus", "2"], "--gpus 2: jobs.train gives each Ray Train worker one GPU"),
        (["--config", "{cfg}", "ray.num_workers=2"], "ray: unknown key"),
        (["--config", "{cfg}", "scaling.num_workers=0"], "num_workers: 0 is below the minimum 1"),
        (["--config", "{cfg}", "--kind", "eval"], "is not a valid jobs.evaluate config"),
    ],
)
def test_submit_bad_input_exits_2(capsys, train_cfg: Path, tmp_path: Path, argv, message) -> None:
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    argv = [a.format(cfg=train_cfg, list=lst) for a in argv]
    code, _, err = run(capsys, "k8s", "submit", "--dry-run", *argv)
    assert code == 2
    assert message in err


def test_serve_dry_run(capsys, crd_dir) -> None:
    code, out, _ = run(capsys, "k8s", "serve", "--model-uri", "s3://bucket/runs/qwen/merged", "--dry-run")
    assert code == 0
    (svc,) = docs(out)
    assert svc["kind"] == "RayService" and svc["metadata"]["name"] == "sqltune"
    serve = yaml.safe_load(svc["spec"]["serveConfigV2"])
    src = yaml.safe_load((ROOT / "serve/config.yaml").read_text())
    assert serve["applications"][0]["args"]["model_uri"] == "s3://bucket/runs/qwen/merged"
    # everything else comes from serve/config.yaml untouched (except the model's num_gpus)
    src["applications"][0]["args"]["model_uri"] = "s3://bucket/runs/qwen/merged"
    src["applications"][0]["deployments"][0]["ray_actor_options"]["num_gpus"] = 1
    assert serve == src
    assert validate_objects([svc], str(crd_dir)) == []


def test_serve_dry_run_cpu(capsys, crd_dir) -> None:
    code, out, _ = run(capsys, "k8s", "serve", "--model-uri", "s3://b/m", "--gpus", "0", "--dry-run")
    assert code == 0
    (svc,) = docs(out)
    serve = yaml.safe_load(svc["spec"]["serveConfigV2"])
    assert serve["applications"][0]["deployments"][0]["ray_actor_options"]["num_gpus"] == 0
    worker = svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["image"] == CPU_IMAGE and "tolerations" not in worker
    assert validate_objects([svc], str(crd_dir)) == []


def test_render_serve_config(capsys) -> None:
    code, out, _ = run(capsys, "k8s", "render-serve-config", "--model-uri", "s3://b/m")
    assert code == 0
    got = yaml.safe_load(out)
    src = yaml.safe_load((ROOT / "serve/config.yaml").read_text())
    src["applications"][0]["args"]["model_uri"] = "s3://b/m"
    assert got == src
    code, _, err = run(capsys, "k8s", "render-serve-config", "--serve-config", "/nonexistent.yaml")
    assert code == 2 and "does not exist" in err


def test_validate_command(capsys, tmp_path: Path, crd_dir) -> None:
    good = ROOT / "k8s/base/rayservice.yaml"
    code, _, err = run(capsys, "k8s", "validate", str(good), "--crds", str(crd_dir))
    assert code == 0 and "0 errors" in err
    bad = tmp_path / "bad.yaml"
    obj = yaml.safe_load(good.read_text())
    obj["spec"]["upgradeStrategy"]["type"] = "Rolling"
    bad.write_text(yaml.safe_dump(obj))
    code, _, err = run(capsys, "k8s", "validate", str(bad), "--crds", str(crd_dir))
    assert code == 1 and "Rolling" in err


@pytest.mark.parametrize(
    ("job", "deployment", "code"),
    [
        ("SUCCEEDED", "Complete", 0),
        ("FAILED", "Complete", 1),
        ("FAILED", "Failed", 1),
        ("", "Failed", 1),  # submitter failure, deadline exceeded
        ("STOPPED", "Complete", 3),
        ("", "Suspended", 3),
        ("", "ValidationFailed", 2),
        ("RUNNING", "Running", None),
        ("FAILED", "Retrying", None),  # backoffLimit: a new attempt follows
        ("PENDING", "Initializing", None),
        (None, None, None),
    ],
)
def test_exit_code_for_status(job, deployment, code) -> None:
    assert exit_code_for(job, deployment) == code


def test_dry_run_never_imports_kubernetes(train_cfg: Path) -> None:
    code = (
        "import sys; from sqltune.cli import main; "
        f"rc = main(['k8s', 'submit', '--config', {str(train_cfg)!r}, '--dry-run']); "
        "rc |= main(['k8s', 'serve', '--model-uri', 's3://b/m', '--dry-run']); "
        "assert 'kubernetes' not in sys.modules, 'kubernetes imported'; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr


def test_console_script_entry_point() -> None:
    exe = Path(sys.executable).with_name("sqltune")
    out = subprocess.run([str(exe), "k8s", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    for sub in ("submit", "list", "serve", "render-serve-config", "generate", "validate"):
        assert sub in out.stdout


def test_registry_only_imports_the_command_run(monkeypatch, capsys) -> None:
    monkeypatch.setitem(cli.COMMANDS, "broken", ("sqltune.does_not_exist:register", "never imported"))
    code, out, _ = run(capsys, "k8s", "render-serve-config")
    assert code == 0 and "applications" in out
    with pytest.raises(ModuleNotFoundError):
        cli.main(["broken"])


def test_registry_register_command(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    cli.register_command("hello", "tests.k8s.test_cli:_register_hello", "Say hello.")
    code, out, _ = run(capsys, "hello", "--who", "k8s")
    assert code == 0 and out == "hello k8s\n"
    code, out, _ = run(capsys, "k8s")
    assert code == 2
    with pytest.raises(ConfigError, match=r"'bad': target must be 'module:function'.*got 'no_colon'"):
        cli.register_command("bad", "no_colon", "Never registered.")


def _register_hello(parser) -> None:
    parser.add_argument("--who", default="world")
    parser.set_defaults(func=lambda a: print(f"hello {a.who}") or 0)
