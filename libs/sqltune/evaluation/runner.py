"""Runs every variant in parallel as a Ray actor and streams its generations back to the driver.

One actor per variant: a GPU actor (``num_gpus``) for local models when the cluster has GPUs, else a CPU
actor (``num_cpus`` from the config, also its torch thread count); http variants get a small CPU share.
The driver submits batches to every actor, waits on whatever finishes first (a tqdm bar counts
predictions), and hands each finished batch to ``on_batch`` (the scorer) at once. A variant whose model
fails to load or whose endpoint is down (``could_not_start``), or whose actor dies (``aborted``), is
recorded as failed with its error; its actor is killed and the other variants carry on. A batch that
raises only fails its own examples (``generation_error``); the variant goes on. An actor is killed as soon as its variant is done, so
its resources go to variants still waiting for a slot.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqltune.errors import ResourceError
from sqltune.evaluation.config import EvalConfig, VariantConfig
from sqltune.evaluation.variants import Output, failed_output
from sqltune.log import setup_logging

log = logging.getLogger(__name__)


class VariantWorker:
    """The body of a variant's Ray actor (wrapped with ``ray.remote`` by :func:`run_variants`)."""

    def __init__(self, variant: dict[str, Any], *, threads: int | None = None, use_gpu: bool = False,
                 token: str | None = None, engine_slots: int = 0):
        warnings.filterwarnings("ignore")  # bitsandbytes/transformers warn on every CPU int8 matmul
        setup_logging(logging.WARNING, chatty_level=logging.ERROR)  # this actor process's entry point
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        cfg = VariantConfig.from_dict(variant)
        if cfg.kind != "http":
            import torch
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no per-actor "Loading weights" bars in the job log
            if threads:
                torch.set_num_threads(max(1, threads))
        from sqltune.evaluation.variants import make_variant

        self.variant = make_variant(cfg, device="cuda" if use_gpu else "cpu", token=token, engine_slots=engine_slots)

    def load(self) -> dict[str, Any]:
        info = self.variant.load()
        info["pid"] = os.getpid()
        try:
            import ray

            info["node"] = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - informative only
            pass
        return info

    def generate(self, start: int, items: list[dict[str, Any]],
                 max_new_tokens: int) -> tuple[int, list[Output], float, float | None]:
        t0 = time.perf_counter()
        outs = self.variant.generate(items, max_new_tokens)
        return start, outs, time.perf_counter() - t0, peak_memory_mb()


def peak_memory_mb() -> float | None:
    """Peak memory of this process so far: the GPU's peak allocation when torch uses CUDA here, else the
    process's peak resident set size (MiB)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except OSError:
        return None


@dataclass
class VariantRun:
    """What happened to one variant."""

    name: str
    status: str = "pending"  # ok | failed
    error: str | None = None
    failure: str | None = None  # could_not_start | aborted (set with status failed)
    info: dict[str, Any] = field(default_factory=dict)
    outputs: list[Output | None] = field(default_factory=list)
    wall_s: float = 0.0  # sum of batch wall times: the time spent generating
    elapsed_s: float = 0.0  # from submission to the last batch (includes waiting for resources and loading)


def init_ray(cfg: EvalConfig) -> bool:
    """Connect to the configured/submitting cluster, or start a local Ray. Returns True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
    if address:
        kwargs["address"] = address
    else:
        kwargs["include_dashboard"] = False
        if cfg.ray.local_num_cpus:
            kwargs["num_cpus"] = cfg.ray.local_num_cpus
    ray.init(**kwargs)
    return True


def _gpus_available() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def actor_options(cfg: EvalConfig, variant: VariantConfig, gpus: float) -> tuple[dict[str, Any], bool, int | None]:
    """Ray options of a variant's actor, whether it uses a GPU, and its torch thread count."""
    if variant.kind == "http":
        return {"num_cpus": cfg.ray.http_num_cpus, "num_gpus": 0}, False, None
    use_gpu = cfg.ray.use_gpu == "always" or (cfg.ray.use_gpu == "auto" and gpus > 0)
    if use_gpu:
        return {"num_cpus": 1, "num_gpus": cfg.ray.num_gpus_per_actor}, True, None
    threads = max(1, int(round(cfg.ray.num_cpus_per_actor)))
    return {"num_cpus": cfg.ray.num_cpus_per_actor, "num_gpus": 0}, False, threads


def _short(exc: BaseException) -> str:
    """The useful line of an exception raised inside an actor (Ray wraps it with a traceback)."""
    import ray

    cause = exc
    if isinstance(exc, ray.exceptions.RayTaskError):
        inner = getattr(exc, "cause", None)
        if inner is not None:
            cause = inner
    if isinstance(cause, ray.exceptions.RayActorError):
        return f"the variant's actor died: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}"
    text = str(cause).strip().splitlines()
    msg = text[-1] if text and isinstance(cause, ray.exceptions.RayTaskError) else (text[0] if text else "")
    return f"{type(cause).__name__}: {msg}" if msg else type(cause).__name__


def _actor_died(exc: BaseException) -> bool:
    import ray

    return isinstance(exc, ray.exceptions.RayActorError) or isinstance(
        getattr(exc, "cause", None), ray.exceptions.RayActorError)


def run_variants(
    cfg: EvalConfig,
    items: list[dict[str, Any]],
    *,
    on_batch: Callable[[str, int, list[Output]], None] | None = None,
    tokens: dict[str, str | None] | None = None,
    progress: bool = True,
) -> dict[str, VariantRun]:
    """Generate for every item with every variant; returns each variant's run (ok or failed)."""
    import ray
    from tqdm.auto import tqdm

    started_ray = init_ray(cfg)
    try:
        gpus = _gpus_available()
        if cfg.ray.use_gpu == "always" and gpus <= 0 and any(v.kind != "http" for v in cfg.variants):
            raise ResourceError("ray.use_gpu=always but the Ray cluster has no GPU; set ray.use_gpu=auto or never")
        n = len(items)
        bs = cfg.generation.batch_size
        runs = {v.name: VariantRun(v.name, outputs=[None] * n) for v in cfg.variants}
        actors: dict[str, Any] = {}
        pending: dict[Any, tuple[str, str]] = {}  # ref -> (variant, "load"|"gen")
        batch_start: dict[Any, int] = {}  # gen ref -> index of its first item
        submitted_at: dict[str, float] = {}
        remaining: dict[str, int] = {}
        bar = tqdm(total=n * len(cfg.variants), desc="evaluating", unit="pred", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)

        def fail(name: str, error: str) -> None:
            run = runs[name]
            if run.status == "failed":
                return
            run.status, run.error = "failed", error
            run.failure = "aborted" if "load_s" in run.info else "could_not_start"
            log.error("variant %s failed: %s", name, error)
            bar.update(sum(o is None for o in run.outputs))
            for ref in [r for r, (v, _) in pending.items() if v == name]:
                del pending[ref]
            actor = actors.pop(name, None)
            if actor is not None:
                ray.kill(actor, no_restart=True)
            start_next()

        queue = list(cfg.variants)
        limit = cfg.ray.max_parallel or len(queue)

        def start_next() -> None:
            """Start variants until ``ray.max_parallel`` are running (all of them by default)."""
            while queue and len(actors) < limit:
                v = queue.pop(0)
                opts, use_gpu, threads = actor_options(cfg, v, gpus)
                token = (tokens or {}).get(v.name)
                actor_cls = ray.remote(max_restarts=0, max_task_retries=0, **opts)(VariantWorker)
                actor = actor_cls.remote(v.to_dict(), threads=threads, use_gpu=use_gpu, token=token,
                                         engine_slots=bs if cfg.generation.engine else 0)
                actors[v.name] = actor
                pending[actor.load.remote()] = (v.name, "load")
                submitted_at[v.name] = time.perf_counter()
                runs[v.name].info["resources"] = opts

        start_next()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            now = time.perf_counter()
            for name, t0 in submitted_at.items():
                run = runs[name]
                if run.status == "pending" and "load_s" not in run.info and now - t0 > cfg.ray.load_timeout_s:
                    fail(name, f"not loaded after {cfg.ray.load_timeout_s:.0f}s (no free resources for "
                               f"{run.info.get('resources')}, or a slow download)")
            if not done or done[0] not in pending:
                continue
            ref = done[0]
            name, what = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - any failure of a variant is reported, never fatal
                if what != "gen" or _actor_died(exc):
                    fail(name, _short(exc))
                    continue
                # A batch that raised: its examples are recorded as failed; the variant goes on.
                start = batch_start[ref]
                size = min(bs, n - start)
                result = (start, [failed_output("generation_error", _short(exc)) for _ in range(size)], 0.0, None)
            run = runs[name]
            if run.status == "failed":
                continue
            if what == "load":
                run.info.update(result)
                log.info("variant %s loaded in %.1fs on %s", name, result.get("load_s", 0.0), result.get("device"))
                remaining[name] = 0
                for start in range(0, n, bs):
                    gen_ref = actors[name].generate.remote(start, items[start:start + bs],
                                                           cfg.generation.max_new_tokens)
                    pending[gen_ref], batch_start[gen_ref] = (name, "gen"), start
                    remaining[name] += 1
                if n == 0:
                    remaining[name] = 0
            else:
                start, outs, wall, peak = result
                run.wall_s += wall
                if peak is not None:
                    run.info["peak_memory_mb"] = max(peak, run.info.get("peak_memory_mb") or 0.0)
                for i, out in enumerate(outs):
                    run.outputs[start + i] = out
                bar.update(len(outs))
                if on_batch is not None:
                    try:
                        on_batch(name, start, outs)
                    except Exception as exc:  # noqa: BLE001
                        fail(name, f"scoring failed: {type(exc).__name__}: {exc}")
                        continue
                remaining[name] -= 1
            if remaining.get(name) == 0 and run.status == "pending":
                run.status = "ok"
                run.elapsed_s = time.perf_counter() - submitted_at[name]
                actor = actors.pop(name, None)
                if actor is not None:
                    ray.kill(actor, no_restart=True)  # free its slot for variants still waiting
                start_next()
        bar.close()
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
        return runs
    finally:
        if started_ray:
            ray.shutdown()
