"""What a job asks Ray for, read from its own typed config, and whether a RayJob's cluster can place it.

Every sqltune job declares its Ray resources in its config: training in ``scaling`` (Ray Train workers),
evaluation in ``ray`` (one actor per variant), export in ``device`` (it runs in the job's driver), the
pipeline in the three configs it chains. :func:`job_demand` parses the config with the job's own config
class (so a key the job would reject fails here, at submit time) and returns a :class:`Demand`;
:func:`check_fits` compares a demand with a RayJob's ``rayClusterSpec`` and raises :class:`PlacementError`
when the job would wait forever for resources the cluster does not have.

``--workers``/``--gpus`` of ``sqltune k8s submit`` become the config keys that mean the same thing
(:func:`flag_overrides`), so the flags and the job can never disagree.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.config import Config, load_config
from sqltune.errors import ConfigError

# entry point module -> its config class (the class its main() parses with sqltune.config.parse_cli)
JOB_CONFIG_CLASSES: dict[str, str] = {
    "jobs.train": "sqltune.train.config:TrainConfig",
    "jobs.evaluate": "sqltune.evaluation.config:EvalConfig",
    "jobs.export": "sqltune.export.config:ExportConfig",
    "jobs.pipeline": "sqltune.pipeline.config:PipelineConfig",
}


class PlacementError(ConfigError):
    """A job asks Ray for resources its RayJob's worker group cannot hold (it would stay pending forever)."""


def config_class(module: str) -> type[Config]:
    if module not in JOB_CONFIG_CLASSES:
        raise ConfigError(f"unknown entry point {module!r}; sqltune jobs are {', '.join(JOB_CONFIG_CLASSES)}")
    mod, _, name = JOB_CONFIG_CLASSES[module].partition(":")
    return getattr(importlib.import_module(mod), name)


@dataclass(frozen=True)
class Demand:
    """Ray resources a job asks for: ``workers`` bundles of ``cpus``/``gpus`` that run at once, plus
    what its driver (the entrypoint process) needs."""

    workers: int = 1
    cpus: float = 1.0  # per worker bundle
    gpus: float = 0.0  # per worker bundle
    driver_gpus: float = 0.0
    driver_cpus: float = 0.0
    custom: tuple[
        str, ...
    ] = ()  # custom resources per worker (names), which a KubeRay group never advertises
    source: str = ""  # the config keys the numbers come from, for messages
    min_workers: int | None = None  # bundles that must fit at once for the job to progress (None: workers)
    cpu_fallback: float | None = (
        None  # CPUs per bundle when the cluster has no GPU (evaluation's use_gpu=auto)
    )

    @property
    def needed(self) -> int:
        return self.workers if self.min_workers is None else self.min_workers

    def merge(self, other: Demand) -> Demand:
        """The larger of two demands that run one after another (the pipeline's stages)."""
        return Demand(
            workers=max(self.workers, other.workers),
            cpus=max(self.cpus, other.cpus),
            gpus=max(self.gpus, other.gpus),
            driver_gpus=max(self.driver_gpus, other.driver_gpus),
            driver_cpus=max(self.driver_cpus, other.driver_cpus),
            custom=tuple(sorted({*self.custom, *other.custom})),
            source="; ".join(s for s in (self.source, other.source) if s),
            min_workers=max(self.needed, other.needed),
            cpu_fallback=None if self.gpus > other.gpus or other.cpu_fallback is None else other.cpu_fallback,
        )


def flag_overrides(kind: str, *, workers: int | None, gpus: int | None) -> list[str]:
    """The config overrides that ``--workers``/``--gpus`` stand for, for a job of ``kind``."""
    out: list[str] = []
    if kind == "train":
        if workers is not None:
            out.append(f"scaling.num_workers={workers}")
        if gpus is not None:
            if gpus > 1:
                raise PlacementError(
                    f"--gpus {gpus}: jobs.train gives each Ray Train worker one GPU (scaling.use_gpu=true); "
                    f"for {gpus} GPUs pass --workers {gpus} --gpus 1"
                )
            out.append(f"scaling.use_gpu={'true' if gpus else 'false'}")
    elif kind == "eval":
        if gpus is not None:
            out.append(f"ray.use_gpu={'always' if gpus else 'never'}")
    elif kind == "export":
        if workers is not None and workers != 1:
            raise PlacementError(
                f"--workers {workers}: jobs.export runs in one process (the job's driver) and starts no Ray "
                "workers; leave --workers out"
            )
        if gpus is not None:
            if gpus > 1:
                raise PlacementError(
                    f"--gpus {gpus}: jobs.export uses one device; pass --gpus 1 (device=cuda) or 0"
                )
            out.append(f"device={'cuda' if gpus else 'cpu'}")
    elif kind == "pipeline":
        if workers is not None or gpus is not None:
            raise PlacementError(
                "--workers/--gpus: a pipeline's resources come from the configs it chains; set them there "
                "(train_overrides: [scaling.num_workers=2, scaling.use_gpu=true] in the pipeline config)"
            )
    return out


def job_demand(module: str, config: str | Path, overrides: list[str] | None = None) -> Demand:
    """Parse ``config`` + ``overrides`` with the job's own config class and return what it asks Ray for."""
    cfg = load_config(config_class(module), config, list(overrides or []))
    return demand_of(module, cfg, Path(config).parent)


def demand_of(module: str, cfg: Any, config_dir: Path | None = None) -> Demand:
    if module == "jobs.train":
        s = cfg.scaling
        custom = tuple(sorted(k for k in s.resources_per_worker if k not in ("CPU", "GPU")))
        return Demand(
            workers=s.num_workers,
            cpus=s.cpus_per_worker,
            gpus=1.0 if s.use_gpu else 0.0,
            custom=custom,
            source=f"scaling: {s.num_workers} workers x {s.cpus_per_worker:g} CPU"
            + (" + 1 GPU" if s.use_gpu else ""),
        )
    if module == "jobs.evaluate":
        r = cfg.ray
        local = [v for v in cfg.variants if v.kind != "http"]
        at_once = max(1, min(len(local), r.max_parallel or len(local)))
        if r.use_gpu == "never" or not local:
            return Demand(
                workers=at_once,
                cpus=r.num_cpus_per_actor,
                min_workers=1,
                source=f"ray.num_cpus_per_actor={r.num_cpus_per_actor:g}",
            )
        # auto takes a GPU when the cluster has one; always insists: either way a GPU group must hold an actor
        # Actors beyond the cluster's room wait for a finished one: one must fit, all at once is the aim.
        return Demand(
            workers=at_once,
            cpus=1.0,
            gpus=r.num_gpus_per_actor,
            min_workers=1,
            cpu_fallback=r.num_cpus_per_actor if r.use_gpu == "auto" else None,
            source=f"ray.use_gpu={r.use_gpu}: {at_once} variant actors x {r.num_gpus_per_actor:g} GPU",
        )
    if module == "jobs.export":
        gpu = cfg.device == "cuda"
        return Demand(
            workers=1,
            cpus=1.0,
            driver_gpus=1.0 if gpu else 0.0,
            driver_cpus=0.0,
            source=f"device={cfg.device}",
        )
    if module == "jobs.pipeline":
        total = Demand(workers=0, cpus=0.0)
        for stage, sub_module in (
            ("train", "jobs.train"),
            ("export", "jobs.export"),
            ("evaluate", "jobs.evaluate"),
        ):
            sub = cfg.stage_config(stage, config_dir)
            total = total.merge(demand_of(sub_module, sub, config_dir))
        return total
    raise ConfigError(f"unknown entry point {module!r}; sqltune jobs are {', '.join(JOB_CONFIG_CLASSES)}")


def group_shape(demand: Demand, *, gpu_pod_gpus: int | None = None) -> tuple[int, int, float]:
    """(replicas, GPUs per pod, CPUs per pod) of a worker group that holds ``demand``: one pod per
    bundle that must run at once (GPUs rounded up to whole devices; evaluation: one variant actor at a
    time, ``--workers N`` runs N at once), and one GPU pod for a driver that needs a GPU."""
    per_pod_gpus = max(int(math.ceil(demand.gpus)), int(math.ceil(demand.driver_gpus)))
    if gpu_pod_gpus is not None:
        per_pod_gpus = gpu_pod_gpus
    replicas = max(1, demand.needed)
    if demand.gpus and per_pod_gpus:
        bundles_per_pod = max(1, int(per_pod_gpus // demand.gpus))
        replicas = max(1, math.ceil(demand.needed / bundles_per_pod))
    return replicas, per_pod_gpus, max(demand.cpus, demand.driver_cpus)


def _quantity_cpu(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def cluster_capacity(cluster_spec: dict[str, Any]) -> tuple[list[tuple[int, float, float]], float, float]:
    """([(replicas, cpus, gpus) per worker group], head CPUs, head GPUs) as Ray sees them: KubeRay sets
    ``num-cpus``/``num-gpus`` from the container limits unless rayStartParams set them."""

    def pod(template: dict[str, Any], params: dict[str, Any]) -> tuple[float, float]:
        res = template["spec"]["containers"][0].get("resources") or {}
        limits = res.get("limits") or res.get("requests") or {}
        cpus = float(params["num-cpus"]) if "num-cpus" in params else _quantity_cpu(limits.get("cpu", 0))
        gpus = float(params["num-gpus"]) if "num-gpus" in params else float(limits.get("nvidia.com/gpu", 0))
        return cpus, gpus

    head = cluster_spec["headGroupSpec"]
    head_cpus, head_gpus = pod(head["template"], head.get("rayStartParams") or {})
    groups = []
    for g in cluster_spec.get("workerGroupSpecs") or []:
        cpus, gpus = pod(g["template"], g.get("rayStartParams") or {})
        groups.append((int(g.get("replicas", g.get("minReplicas", 0)) or 0), cpus, gpus))
    return groups, head_cpus, head_gpus


def check_fits(demand: Demand, rayjob: dict[str, Any], where: str = "") -> None:
    """Raise :class:`PlacementError` when ``rayjob``'s cluster cannot hold ``demand`` at once."""
    name = where or f"RayJob {rayjob.get('metadata', {}).get('name', '?')}"
    spec = rayjob["spec"]
    groups, head_cpus, head_gpus = cluster_capacity(spec["rayClusterSpec"])
    if demand.custom:
        raise PlacementError(
            f"{name}: the job asks each worker for custom Ray resources {list(demand.custom)} "
            f"(scaling.resources_per_worker), which no worker group advertises; remove them (the worker pods' "
            "nodeSelector picks the hardware) or add them to the group's rayStartParams.resources"
        )
    nodes = [(cpus, gpus) for replicas, cpus, gpus in groups for _ in range(replicas)]
    nodes.append((head_cpus, head_gpus))
    if demand.cpu_fallback is not None and not any(g for _c, g in nodes):
        demand = Demand(
            workers=demand.workers,
            cpus=demand.cpu_fallback,
            min_workers=demand.min_workers,
            source=demand.source + " (no GPU in the cluster: CPU actors)",
        )
    # bundles that fit on each node at once (the head takes CPU-only bundles too, as Ray would)
    capacity = 0
    for cpus, gpus in nodes:
        by_cpu = int(cpus // demand.cpus) if demand.cpus else 10**6
        by_gpu = int(gpus // demand.gpus) if demand.gpus else 10**6
        capacity += min(by_cpu, by_gpu)
    if capacity < demand.needed:
        have = ", ".join(f"{r} x ({c:g} CPU, {g:g} GPU)" for r, c, g in groups) or "no workers"
        raise PlacementError(
            f"{name}: the job asks Ray for {demand.needed} x ({demand.cpus:g} CPU, {demand.gpus:g} GPU) at once "
            f"({demand.source}) but its worker groups hold {have} (+ head {head_cpus:g} CPU, {head_gpus:g} GPU), "
            f"room for {capacity}; it would stay pending forever. Lower the job's request or give the group more "
            "pods/GPUs (sqltune k8s submit sizes the group from the config when --workers/--gpus are left out)"
        )
    need_driver_gpus = float(spec.get("entrypointNumGpus", 0) or 0)
    if demand.driver_gpus and need_driver_gpus < demand.driver_gpus:
        raise PlacementError(
            f"{name}: the job's driver needs {demand.driver_gpus:g} GPU ({demand.source}) but "
            f"spec.entrypointNumGpus is {need_driver_gpus:g}, so it would run on the GPU-less head; "
            "set entrypointNumGpus or use device=cpu"
        )
    if need_driver_gpus and not any(g >= need_driver_gpus for r, _c, g in groups if r > 0):
        raise PlacementError(
            f"{name}: spec.entrypointNumGpus={need_driver_gpus:g} but no worker pod has that many GPUs; "
            "the driver would stay pending forever"
        )
