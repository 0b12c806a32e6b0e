"""The training job's driver: check everything, start (or join) Ray, run the TorchTrainer, publish.

Order of work, so that mistakes cost seconds, not a cluster allocation:

1. :func:`preflight` (no Ray yet): the config is already typed and validated; the dataset is loaded and
   split (an unreadable source or a malformed record fails here, naming it); the base model is found
   (local ``config.json``, or the ``manifest.json`` of an ``s3://`` artifact); the output and checkpoint
   storage are writable (an unreachable endpoint or missing bucket fails here); an adapter already
   published at the output place is refused unless ``overwrite``; ``use_gpu`` on a machine that would
   start a local Ray without a GPU fails here.
2. Ray: joins ``scaling.ray_address`` / ``RAY_ADDRESS`` (``ray job submit`` sets it) or starts a local
   Ray; the cluster's CPUs/GPUs are checked against the request before any worker starts.
3. ``TorchTrainer(...).fit()`` with ``RunConfig(name=run_name, storage_path=...)``: Ray Train V2 resumes
   a run of the same name from its latest checkpoint by itself (the worker function restores model,
   optimizer, scheduler and data position); ``FailureConfig(max_failures)`` restarts the worker group
   after a worker dies, from the latest checkpoint.
4. The chosen checkpoint (last or best) becomes the artifact at ``<output_uri>/<run_name>/adapter/``:
   PEFT adapter files, tokenizer, ``config.yaml``, ``prompt_template.json``, ``sqltune_artifact.json``,
   ``metrics.json``, published atomically with ``manifest.json`` last. A failed run publishes nothing.
5. Tracking: MLflow (``MLFLOW_TRACKING_URI``, or a local file store) gets the params, the metric history
   and the final numbers; ``metrics.json`` holds the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune.data.spec import load_examples
from sqltune.errors import ConfigError, DataError, ModelError, ResourceError, SqltuneError, StorageError
from sqltune.train.config import TrainConfig

log = logging.getLogger("sqltune.train")


@dataclass
class Prepared:
    """What the preflight found: the split examples and resolved locations."""

    cfg: TrainConfig
    train: list[Any]
    validation: list[Any]
    test_size: int
    storage_uri: str
    adapter_uri: str
    resuming: bool
    dataset_info: dict[str, Any] = field(default_factory=dict)
    pairs: list[dict[str, Any]] | None = None
    """method=dpo with dpo.pairs_file: the checked preference pairs (else None: built by the workers)."""


@dataclass
class RunResult:
    adapter_uri: str
    metrics: dict[str, Any]
    wall_seconds: float
    summary: str


# ---------------------------------------------------------------------------------------- preflight


def load_splits(cfg: TrainConfig) -> tuple[list[Any], list[Any], list[Any], dict[str, Any]]:
    """Load ``cfg.data.source`` and split it deterministically (the same split evaluation uses)."""
    d = cfg.data
    examples = load_examples(d)
    where = str(d.embedded_folder()) if d.is_embedded else d.source
    if not examples:
        raise DataError(f"data.source {d.source!r}: the dataset is empty")
    splits = d.partition(examples)
    train, val, test = list(splits.train), list(splits.validation), list(splits.test)
    if d.max_train_examples:
        train = train[: d.max_train_examples]
    if d.max_validation_examples:
        val = val[: d.max_validation_examples]
    if not train:
        raise DataError(f"data.source {d.source!r}: the training split is empty (split_ratios {d.split_ratios})")
    originals = len(train)
    if d.augment_copies:
        from sqltune.train.augment import augment_examples

        train = augment_examples(train, d.augment_copies, seed=d.split_seed)
    info = {"source": d.source, "resolved": where, "examples": len(examples), "train": len(train),
            "train_original": originals, "validation": len(val), "test": len(test)}
    return train, val, test, info


def _check_base_model(uri: str) -> None:
    from sqltune.storage import is_s3, join, read_manifest

    if is_s3(uri):
        try:
            read_manifest(uri)
        except StorageError as exc:
            raise ModelError(f"model.base {uri!r}: not a published artifact ({exc})") from None
        return
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.base {uri!r}: the directory has no config.json (not a transformers model)")
        return
    from sqltune.models.loading import resolve_source

    resolve_source(uri)  # raises for paths that are neither a directory nor an org/name hub id
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(f"model.base {uri!r}: not a local directory and HF_HUB_OFFLINE=1 forbids the hub")
    del join


def _check_writable(uri: str, what: str) -> None:
    """Write and delete a probe object, so a bad endpoint, bucket or credential fails now."""
    from sqltune import storage

    probe = storage.join(uri, f".sqltune-probe-{os.getpid()}-{int(time.time() * 1000)}")
    try:
        storage.write_bytes(probe, b"ok")
        if storage.is_s3(probe):
            bucket, key = storage.parse_s3_uri(probe)
            from sqltune.storage.files import delete_objects

            delete_objects(bucket, [key], probe)
        else:
            Path(storage.local_path(probe)).unlink(missing_ok=True)
    except StorageError as exc:
        raise StorageError(f"{what} {uri!r} is not writable: {exc}") from None
    except OSError as exc:
        raise StorageError(f"{what} {uri!r} is not writable: {exc}") from None


def _run_exists(storage_uri: str, run_name: str) -> bool:
    from sqltune import storage

    return storage.exists(storage.join(storage_uri, run_name, "checkpoint_manager_snapshot.json"))


def _starts_local_ray(cfg: TrainConfig) -> bool:
    try:
        import ray

        if ray.is_initialized():
            return False
    except ImportError:
        pass
    return not (cfg.scaling.ray_address or os.environ.get("RAY_ADDRESS"))


def _local_gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        return 0


def preflight(cfg: TrainConfig) -> Prepared:
    """Every check that can fail without Ray; raises a SqltuneError naming the problem."""
    from sqltune import storage

    t0 = time.perf_counter()
    if cfg.scaling.use_gpu and _starts_local_ray(cfg) and _local_gpu_count() < 1:
        raise ResourceError(
            "scaling.use_gpu=true but this machine has no CUDA GPU and no Ray cluster address is set "
            "(scaling.ray_address / RAY_ADDRESS); set scaling.use_gpu=false or submit to a cluster with GPUs"
        )
    if cfg.eval.exec_accuracy:
        try:
            from sqltune.sql import analyze, execution_match  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"eval.exec_accuracy=true needs sqltune.sql.execution_match: {exc}") from None
    if cfg.tracking.backend == "mlflow" or (cfg.tracking.backend == "auto" and os.environ.get("MLFLOW_TRACKING_URI")):
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError(
                "tracking: MLflow is requested (MLFLOW_TRACKING_URI is set or tracking.backend=mlflow) but mlflow "
                "is not installed; pip install 'sqltune[tracking]' or set tracking.backend=none"
            ) from None
    _check_base_model(cfg.model.base)
    if cfg.model.init_adapter:
        from sqltune.train.prefs import check_init_adapter

        check_init_adapter(cfg)
    train, val, test, info = load_splits(cfg)
    pairs = None
    if cfg.method == "dpo" and cfg.dpo.pairs_file:
        from sqltune.train.prefs import load_pairs

        pairs, info["pairs"] = load_pairs(cfg.dpo.pairs_file, cfg.dpo)
    adapter_uri = cfg.adapter_uri()
    storage_uri = cfg.storage_uri()
    _check_writable(cfg.output_uri, "output_uri")
    if storage_uri != cfg.output_uri:
        _check_writable(storage_uri, "checkpoint.storage_uri")
    if storage.exists(storage.join(adapter_uri, storage.MANIFEST_NAME)) and not cfg.overwrite:
        raise StorageError(
            f"an adapter is already published at {adapter_uri} (run {cfg.run_name!r} finished); "
            "choose another run_name, or pass overwrite=true to train again and replace it"
        )
    resuming = _run_exists(storage_uri, cfg.run_name)
    if resuming and not cfg.resume:
        raise ConfigError(
            f"resume=false but run {cfg.run_name!r} already has checkpoints at {storage.join(storage_uri, cfg.run_name)}; "
            "choose another run_name or set resume=true"
        )
    log.info(
        "preflight ok in %.1fs: %d train / %d validation / %d test examples from %s; base %s; output %s",
        time.perf_counter() - t0, len(train), len(val), len(test), info["resolved"], cfg.model.base, adapter_uri,
    )
    return Prepared(cfg, train, val, len(test), storage_uri, adapter_uri, resuming, info, pairs)


# ---------------------------------------------------------------------------------------------- ray


def _ray_init(cfg: TrainConfig) -> bool:
    """Join or start Ray; returns True when this call started it (and should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.scaling.ray_address or os.environ.get("RAY_ADDRESS")
    # Workers need the same S3 endpoint/credentials and cache settings as the driver.
    env_keys = [k for k in os.environ if k.startswith(("AWS_", "SQLTUNE_", "HF_", "MLFLOW_"))]
    runtime_env = {"env_vars": {k: os.environ[k] for k in env_keys}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        # address="local": start a new local Ray even if some other cluster runs on this machine
        # (ray.init() alone would join the latest `ray start` cluster).
        ray.init(
            address="local", num_cpus=cfg.scaling.local_num_cpus, include_dashboard=None, dashboard_host="127.0.0.1",
            runtime_env=runtime_env,
            log_to_driver=True,
        )
    return True


def _check_cluster(cfg: TrainConfig) -> None:
    import ray

    res = ray.cluster_resources()
    s = cfg.scaling
    need_cpu = s.num_workers * s.cpus_per_worker
    if res.get("CPU", 0) < need_cpu:
        raise ResourceError(
            f"scaling: {s.num_workers} workers x {s.cpus_per_worker} CPUs = {need_cpu} CPUs, but the Ray cluster "
            f"has {res.get('CPU', 0):g}; lower scaling.num_workers / cpus_per_worker"
        )
    if s.use_gpu and res.get("GPU", 0) < s.num_workers:
        raise ResourceError(
            f"scaling.use_gpu=true with {s.num_workers} workers, but the Ray cluster has {res.get('GPU', 0):g} GPUs; "
            "set scaling.use_gpu=false, lower num_workers, or add GPU nodes"
        )
    for name, amount in s.resources_per_worker.items():
        if res.get(name, 0) < amount * s.num_workers:
            raise ResourceError(f"scaling.resources_per_worker: the cluster has no {amount * s.num_workers:g} {name!r}")


def build_trainer(prep: Prepared, callbacks: list[Any] | None = None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from sqltune.storage import pyarrow_filesystem
    from sqltune.train.worker import train_loop_per_worker

    cfg = prep.cfg
    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **s.resources_per_worker}
    if s.use_gpu:
        resources["GPU"] = 1
    fs, path = pyarrow_filesystem(prep.storage_uri)
    score, order = cfg.score()
    payload = {
        "config": cfg.to_dict(),
        "train": [ex.to_dict() for ex in prep.train],
        "validation": [ex.to_dict() for ex in prep.validation],
        "pairs": prep.pairs,
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=payload,
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.run_name,
            storage_path=path,
            storage_filesystem=fs,
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.checkpoint.num_to_keep,
                checkpoint_score_attribute=score,
                checkpoint_score_order=order,
            ),
        ),
    )


# ------------------------------------------------------------------------------------------ publish


def _choose_checkpoint(cfg: TrainConfig, result: Any):
    if cfg.checkpoint.select == "best" and result.best_checkpoints:
        score, order = cfg.score()
        pick = max if order == "max" else min
        ckpt, metrics = pick(result.best_checkpoints, key=lambda cm: (cm[1].get(score, 0), cm[1].get("step", 0)))
        return ckpt, metrics
    return result.checkpoint, result.metrics


def assemble_artifact(cfg: TrainConfig, prep: Prepared, ckpt_dir: Path, out: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Lay out the adapter artifact in ``out`` from a checkpoint directory; returns metrics.json's content."""
    from sqltune.models.loading import write_artifact_info
    from sqltune.train.loop import MODEL_SUBDIR, STATE_JSON

    model_dir = ckpt_dir / MODEL_SUBDIR
    if not model_dir.is_dir():
        raise StorageError(f"checkpoint {ckpt_dir} has no {MODEL_SUBDIR}/ directory; it was not written by sqltune")
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    state = json.loads((ckpt_dir / STATE_JSON).read_text())
    (out / "config.yaml").write_text(cfg.to_yaml())
    cfg.prompt_template().save(out)
    final = {k: state.get(k) for k in (
        "step", "total_steps", "tokens", "target_tokens", "train_seconds", "tokens_per_second", "eval_loss",
        "eval_exec_accuracy", "eval_parseable", "optimizer", "world_size", "train_examples",
        "validation_examples", "dropped_examples", "trainable_params", "total_params",
    )}
    final.update({k: state[k] for k in ("eval_reward", "eval_hybrid", "train_reward", "pairs") if k in state})
    final["method"] = cfg.method
    final["train_loss"] = (state.get("metrics") or {}).get("train_loss")
    metrics = {
        "run_name": cfg.run_name,
        "base_model": cfg.model.base,
        "mode": cfg.model.mode,
        "method": cfg.method,
        "init_adapter": cfg.model.init_adapter,
        "final": final,
        "resumed_from": state.get("resumed_from", []),
        "history": state.get("history", []),
        "dataset": prep.dataset_info,
        **extra,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    write_artifact_info(
        out,
        kind="adapter" if cfg.model.mode != "full" else "merged",
        base_model=cfg.model.base,
        precision={"qlora": "nf4", "lora": "bf16", "full": "fp32"}[cfg.model.mode],
        run_name=cfg.run_name,
        config=cfg.to_dict(),
        metrics=final,
    )
    return metrics


# ------------------------------------------------------------------------------------------ tracking


def track(cfg: TrainConfig, metrics: dict[str, Any], adapter_uri: str) -> str | None:
    """Log params, the metric history, the final numbers and the training curves (plots/training_curves.png)
    to MLflow; returns the run id or None. The run is tagged ``sqltune.adapter_uri``, so an evaluation of
    this adapter logs into it."""
    from sqltune.evaluation.tracking import TRAINING_CURVES, mlflow_client, plot_training_curves

    found = mlflow_client(cfg.tracking.backend, cfg.tracking.file_store)
    if found is None:
        return None
    client, uri = found
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(cfg.tracking.experiment)
    run = client.create_run(exp_id, run_name=cfg.run_name, tags={"sqltune.adapter_uri": adapter_uri})
    rid = run.info.run_id
    flat = _flatten(cfg.to_dict())
    for k, v in list(flat.items())[:400]:
        client.log_param(rid, k, str(v)[:500])
    for point in metrics.get("history", []):
        step = int(point.get("step", 0))
        for k, v in point.items():
            if k != "step" and isinstance(v, (int, float)):
                client.log_metric(rid, k, float(v), step=step)
    for k, v in metrics.get("final", {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            client.log_metric(rid, f"final_{k}", float(v))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if plot_training_curves(metrics.get("history", []), Path(tmp) / TRAINING_CURVES):
                client.log_artifact(rid, str(Path(tmp) / TRAINING_CURVES), artifact_path="plots")
        except ImportError as exc:  # matplotlib is in the eval extra
            log.warning("no training curves in MLflow (%s): pip install 'sqltune[eval]'", exc)
    client.set_terminated(rid)
    log.info("tracked in MLflow at %s (experiment %s, run %s)", uri, cfg.tracking.experiment, rid)
    return rid


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---------------------------------------------------------------------------------------------- run


def setup(cfg: TrainConfig) -> Prepared:
    """Preflight (no Ray). Entry points call ``setup`` then :func:`run`."""
    return preflight(_absolute_local_paths(cfg))


def _absolute_local_paths(cfg: TrainConfig) -> TrainConfig:
    """Relative local paths made absolute: Ray Train workers run in another working directory, where a
    relative dataset or model path (and the relative database paths derived from it) would not resolve."""
    def absolute(value: str) -> str:
        if value and "://" not in value and Path(value).exists() and not Path(value).is_absolute():
            return str(Path(value).resolve())
        return value

    data = dataclasses.replace(cfg.data, source=absolute(cfg.data.source),
                               databases_dir=cfg.data.databases_dir and absolute(cfg.data.databases_dir))
    model = dataclasses.replace(cfg.model, base=absolute(cfg.model.base))
    return dataclasses.replace(cfg, data=data, model=model, output_uri=absolute(cfg.output_uri))


def run(prep: Prepared, callbacks: list[Any] | None = None) -> RunResult:
    """Start/join Ray, train, publish; raises SqltuneError (nothing published) if the run fails.
    ``callbacks``: Ray Train callbacks (a Tune trial passes Tune's report callback)."""
    import ray
    from ray.train import CheckpointConfig  # noqa: F401 - import error surfaces before workers start

    from sqltune import storage

    cfg = prep.cfg
    t0 = time.perf_counter()
    started = _ray_init(cfg)
    try:
        _check_cluster(cfg)
        if prep.resuming:
            log.info("run %s has checkpoints in %s: resuming from the latest one", cfg.run_name, prep.storage_uri)
        trainer = build_trainer(prep, callbacks)
        try:
            result = trainer.fit()
        except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in several types
            raise SqltuneError(
                f"training run {cfg.run_name!r} failed: {_root_cause(exc)}; nothing was published at "
                f"{prep.adapter_uri}. Its checkpoints stay in {storage.join(prep.storage_uri, cfg.run_name)}: "
                "submit again with the same run_name to resume"
            ) from exc
        if getattr(result, "error", None):
            raise SqltuneError(f"training run {cfg.run_name!r} failed: {result.error}; nothing was published")
        ckpt, ckpt_metrics = _choose_checkpoint(cfg, result)
        if ckpt is None:
            raise SqltuneError(f"training run {cfg.run_name!r} reported no checkpoint; nothing was published")
        tmp = Path(tempfile.mkdtemp(prefix="sqltune-publish-"))
        try:
            ckpt_dir = Path(ckpt.to_directory(str(tmp / "ckpt")))
            out = tmp / "adapter"
            out.mkdir()
            wall = time.perf_counter() - t0
            metrics = assemble_artifact(
                cfg, prep, ckpt_dir, out,
                {"selected_checkpoint": {"select": cfg.checkpoint.select, "step": ckpt_metrics.get("step"),
                                         "path": ckpt.path},
                 "wall_seconds": round(wall, 1), "adapter_uri": prep.adapter_uri},
            )
            storage.publish(
                out, prep.adapter_uri, kind="adapter" if cfg.model.mode != "full" else "merged",
                metadata={"base_model": cfg.model.base, "run_name": cfg.run_name, "mode": cfg.model.mode},
                overwrite=cfg.overwrite,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            track(cfg, metrics, prep.adapter_uri)
        except Exception as exc:  # noqa: BLE001 - tracking must not fail a finished run
            log.warning("MLflow tracking failed (the adapter is published): %s", exc)
    finally:
        if started:
            ray.shutdown()
    f = metrics["final"]
    acc = f.get("eval_exec_accuracy")
    summary = (
        f"run {cfg.run_name} ({cfg.method}): {f.get('step')} steps, train loss {_fmt(f.get('train_loss'))}, eval loss "
        f"{_fmt(f.get('eval_loss'))}" + (f", exec acc {acc:.3f}" if acc is not None else "")
        + (f", validation reward {f['eval_reward']:.3f}" if f.get("eval_reward") is not None else "")
        + f", {_fmt(f.get('tokens_per_second'), '.0f')} tok/s, {wall:.0f}s"
        + (f", resumed at step(s) {metrics['resumed_from']}" if metrics["resumed_from"] else "")
    )
    return RunResult(prep.adapter_uri, metrics, wall, summary)


def _fmt(v: Any, spec: str = ".4f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "n/a"


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None and seen.__cause__ is not seen:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return (text[-1] if text else type(seen).__name__)[:500]


def train(cfg: TrainConfig) -> RunResult:
    """Library entry: preflight + run."""
    return run(setup(cfg))


__all__ = ["Prepared", "RunResult", "preflight", "run", "setup", "train"]
