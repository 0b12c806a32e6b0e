"""One source of truth: every command a manifest or `sqltune k8s submit` gives a job parses with that
job's own main(), from the real preset files, and its worker group holds what the job asks Ray for."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from sqltune import cli
from sqltune.k8s import placement as pl
from sqltune.k8s.local import plan_rayjob

from .conftest import OVERLAYS, ROOT
from .jobparse import parse_with_job

PRESETS = sorted((ROOT / "jobs" / "configs").glob("*.yaml"))
# tiny-base builds the tiny model, no job; tune-* sweeps run through `ray job submit`, not as RayJobs
JOB_PRESETS = [p for p in PRESETS if p.name != "tiny-base.yaml" and not p.name.startswith("tune-")]
WORKERS = [None, 1, 2]
GPUS = [None, 0, 1, 2]


def _config_dir(argv: list[str]) -> Path:
    return Path(argv[argv.index("--config") + 1]).parent


def run_and_check(monkeypatch, rayjob: dict, objs: list[dict], root: Path):
    """Materialize the RayJob's mounts, parse its entrypoint with the job's main(), check placement."""
    plan = plan_rayjob(rayjob, objs, root)
    cfg = parse_with_job(monkeypatch, plan.argv)
    module = plan.argv[2]
    pl.check_fits(pl.demand_of(module, cfg, _config_dir(plan.argv)), rayjob)
    return module, cfg


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_rayjob_parses_and_fits(monkeypatch, tmp_path: Path, rendered, overlay: str) -> None:
    objs = rendered[overlay]
    jobs = [o for o in objs if o["kind"] == "RayJob"]
    assert jobs
    for job in jobs:
        module, cfg = run_and_check(monkeypatch, job, objs, tmp_path / overlay)
        assert type(cfg).__name__ == pl.JOB_CONFIG_CLASSES[module].split(":")[1]


def _expected_error(kind: str, workers, gpus) -> str | None:
    if kind == "train" and gpus is not None and gpus > 1:
        return "jobs.train gives each Ray Train worker one GPU"
    if kind == "export" and workers is not None and workers != 1:
        return "jobs.export runs in one process"
    if kind == "export" and gpus is not None and gpus > 1:
        return "jobs.export uses one device"
    if kind == "pipeline" and (workers is not None or gpus is not None):
        return "a pipeline's resources come from the configs it chains"
    return None


@pytest.mark.parametrize("preset", JOB_PRESETS, ids=lambda p: p.name)
def test_every_preset_and_flag_combination_parses(monkeypatch, capsys, tmp_path: Path, preset: Path) -> None:
    from sqltune.k8s.cli import infer_kind

    kind = infer_kind(preset)
    for n, (workers, gpus) in enumerate(itertools.product(WORKERS, GPUS)):
        flags = (["--workers", str(workers)] if workers is not None else []) + (
            ["--gpus", str(gpus)] if gpus is not None else []
        )
        code = cli.main(["k8s", "submit", "--config", str(preset), "--dry-run", "--name", "t", *flags])
        out = capsys.readouterr()
        expected = _expected_error(kind, workers, gpus)
        if expected:
            assert code == 2 and expected in out.err, (flags, out.err)
            continue
        assert code == 0, (flags, out.err)
        objs = [o for o in yaml.safe_load_all(out.out) if o]
        (job,) = [o for o in objs if o["kind"] == "RayJob"]
        module, cfg = run_and_check(monkeypatch, job, objs, tmp_path / str(n))
        group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
        pod_gpus = group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)
        if kind == "train":
            if workers is not None:
                assert cfg.scaling.num_workers == workers
            if gpus is not None:
                assert cfg.scaling.use_gpu is bool(gpus)
            # one pod per Ray Train worker, a GPU on each when the job asks for GPUs
            assert group["replicas"] == cfg.scaling.num_workers
            assert pod_gpus == (1 if cfg.scaling.use_gpu else 0)
        elif kind == "eval":
            if gpus is not None:
                assert cfg.ray.use_gpu == ("always" if gpus else "never")
                assert pod_gpus == gpus
            assert group["replicas"] == (workers or 1)
        elif kind == "export":
            if gpus is not None:
                assert cfg.device == ("cuda" if gpus else "cpu")
            assert job["spec"].get("entrypointNumGpus", 0) == (1 if cfg.device == "cuda" else 0)
            assert pod_gpus == (1 if cfg.device == "cuda" else 0)


def test_tiny_preset_asks_for_two_cpu_workers_and_gets_them(capsys) -> None:
    code = cli.main(["k8s", "submit", "--config", str(ROOT / "jobs/configs/tiny.yaml"), "--dry-run"])
    out = capsys.readouterr()
    assert code == 0, out.err
    job = [o for o in yaml.safe_load_all(out.out) if o and o["kind"] == "RayJob"][0]
    assert job["spec"]["entrypoint"] == "python -m jobs.train --config /etc/sqltune/configs/tiny.yaml"
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 2 and group["groupName"] == "cpu-workers"
    assert "nvidia.com/gpu" not in group["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_model_config_is_not_a_job(capsys) -> None:
    code = cli.main(["k8s", "submit", "--config", str(ROOT / "jobs/configs/tiny-base.yaml"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert "is not a valid jobs.train config" in err and "vocab_size: unknown key" in err


def test_unknown_key_fails_at_submit_not_in_the_cluster(capsys) -> None:
    code = cli.main(
        ["k8s", "submit", "--config", str(ROOT / "jobs/configs/tiny.yaml"), "--dry-run", "ray.num_workers=1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "ray: unknown key" in err and "scaling" in err


def test_group_that_cannot_hold_the_job_is_an_error() -> None:
    demand = pl.Demand(workers=2, cpus=1, gpus=1, source="scaling: 2 workers x 1 CPU + 1 GPU")
    job = yaml.safe_load((ROOT / "k8s/base/rayjob-train.yaml").read_text())  # one 1-GPU worker
    with pytest.raises(
        pl.PlacementError, match=r"asks Ray for 2 x \(1 CPU, 1 GPU\).*room for 1.*pending forever"
    ):
        pl.check_fits(demand, job)
    with pytest.raises(pl.PlacementError, match="custom Ray resources.*resources_per_worker"):
        pl.check_fits(pl.Demand(workers=1, custom=("accelerator_type:H100",)), job)
    with pytest.raises(pl.PlacementError, match="entrypointNumGpus is 0"):
        pl.check_fits(pl.Demand(workers=1, driver_gpus=1, source="device=cuda"), job)
