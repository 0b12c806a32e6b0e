"""The sweep's driver: check the space, run stage 1 (ASHA) and stage 2 with Ray Tune, publish the best.

Each trial is a whole ``jobs.train`` run (:func:`sqltune.train.run.run`): preflight, a Ray Train
``TorchTrainer`` whose reports reach Tune through :class:`sqltune.tune.report.TrainToTuneCallback` (so ASHA
sees every evaluation), and the adapter published under ``<output_uri>/<name>/trials/<run_name>/adapter``;
a last report after the publish marks the trial completed. After the stages:

* ``<output_uri>/<name>/results/``: ``results.json`` (every trial: stage, parameters, status, the metric at
  its last report, steps, adapter), ``results.md`` (the same as a table, best first) and ``best.yaml``
  (the best trial's whole training config, a preset with its launch command in the header);
* ``<output_uri>/<name>/adapter/``: the best trial's adapter, published as an artifact;
* ``preset_path`` (optional): ``best.yaml`` written there too.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.config import merge_mappings, read_yaml
from sqltune.errors import ConfigError, SqltuneError
from sqltune.tune.config import StageSettings, TuneConfig, domain_values, parse_domain

log = logging.getLogger("sqltune.tune")


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    best: dict[str, Any]
    results_uri: str
    adapter_uri: str
    preset_yaml: str
    table: str


# -------------------------------------------------------------------------------------- trial configs


def _dotted(values: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 1e-3}`` -> ``{"optim": {"lr": 1e-3}}`` (values kept as they are, not re-parsed)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):  # a nested spelling (from key=value overrides) may mix with dotted keys
            value = _dotted(value)
        for part in reversed(key.split(".")):
            value = {part: value}
        out = merge_mappings(out, value)
    return out


def trial_dict(cfg: TuneConfig, params: dict[str, Any], stage: StageSettings, run_name: str) -> dict[str, Any]:
    """The training config (as a dict) of one trial: preset, sweep overrides, stage budget, sampled values."""
    from sqltune.storage import join

    data = read_yaml(cfg.base_config)
    data = merge_mappings(data, _dotted(cfg.overrides))
    budget: dict[str, Any] = {
        "data.max_train_examples": stage.max_train_examples,
        "eval.interval": stage.eval_interval,
        "checkpoint.interval": stage.eval_interval,
        "run_name": run_name,
        "output_uri": join(cfg.output_uri, cfg.name, "trials"),
        "overwrite": True,
        "resume": False,
    }
    if stage.max_steps is not None:
        budget["train.max_steps"] = stage.max_steps
    if cfg.metric == "eval_exec_accuracy" and data.get("method", "sft") == "sft":
        budget["eval.exec_accuracy"] = True
    data = merge_mappings(data, _dotted(budget))
    return merge_mappings(data, _dotted(params))


def trial_config(cfg: TuneConfig, params: dict[str, Any], stage: StageSettings, run_name: str):
    from sqltune.train.config import TrainConfig

    return TrainConfig.from_dict(trial_dict(cfg, params, stage, run_name))


def check_space(cfg: TuneConfig) -> None:
    """Every key of the space is a training config field and every value of its domain is valid there."""
    try:
        trial_config(cfg, {}, cfg.stage1, f"{cfg.name}-check")
    except ConfigError as exc:
        raise ConfigError(f"base_config/overrides of the sweep: {exc}") from None
    for key, spec in cfg.space.items():
        for value in domain_values(key, spec):
            try:
                trial_config(cfg, {key: value}, cfg.stage1, f"{cfg.name}-check")
            except ConfigError as exc:
                raise ConfigError(f"space.{key}: {exc}") from None


def _domains(cfg: TuneConfig) -> dict[str, Any]:
    from ray import tune

    out = {}
    for key, spec in cfg.space.items():
        kind, args = parse_domain(key, spec)
        out[key] = {"choice": lambda a: tune.choice(a), "uniform": lambda a: tune.uniform(*a),
                    "loguniform": lambda a: tune.loguniform(*a)}[kind](args)
    return out


# ---------------------------------------------------------------------------------------------- trial


def _trial(config: dict[str, Any]) -> None:
    """One Tune trial: a whole training run whose Ray Train reports reach Tune."""
    import ray.tune

    from sqltune.train.config import TrainConfig
    from sqltune.train.run import run, setup
    from sqltune.tune.report import TrainToTuneCallback, tune_metrics

    ctx = ray.tune.get_context()
    tcfg = TrainConfig.from_dict(config["train"])
    tcfg = type(tcfg).from_dict({**tcfg.to_dict(), "run_name": f"{tcfg.run_name}-{ctx.get_trial_id()}"})
    result = run(setup(tcfg), callbacks=[TrainToTuneCallback()])
    final = {k: v for k, v in result.metrics["final"].items()
             if isinstance(v, (int, float)) and v is not None}
    # Reported after the adapter is published: this result is what marks the trial completed.
    ray.tune.report({**tune_metrics(final), "adapter_uri": result.adapter_uri, "run_name": tcfg.run_name,
                     "completed": 1})


# ---------------------------------------------------------------------------------------------- stages


def _ray_init(cfg: TuneConfig) -> bool:
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in os.environ if k.startswith(("AWS_", "SQLTUNE_", "HF_", "MLFLOW_"))}
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=cfg.local_num_cpus, include_dashboard=False,
                 runtime_env={"env_vars": env}, log_to_driver=True)
    return True


def _run_stage(cfg: TuneConfig, stage_name: str, stage: StageSettings, param_space: Any, num_samples: int,
               asha: bool) -> list[dict[str, Any]]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    short = "s1" if stage_name == "stage1" else "s2"
    base = trial_dict(cfg, {}, stage, f"{cfg.name}-{short}")

    def space_with_train(params: Any) -> dict[str, Any]:
        return {"params": params, "train": base}

    scheduler = None
    if asha:
        reports = math.ceil((stage.max_steps or 1000) / stage.eval_interval) + 1
        # max_t only places the rungs: a trial's own step budget ends it (stop_last_trials=False), so ASHA
        # never stops a trial for reaching max_t while it still has to publish its adapter.
        scheduler = ASHAScheduler(
            time_attr="training_iteration", max_t=max(reports, cfg.asha.grace_period + 1),
            grace_period=cfg.asha.grace_period, reduction_factor=cfg.asha.reduction_factor, stop_last_trials=False,
        )
    work = Path(cfg.work_dir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    tuner = tune.Tuner(
        # A trial's own process only waits on its Ray Train run, whose workers reserve the CPUs/GPUs.
        tune.with_resources(_TrialWithParams, {"CPU": 0.01}),
        param_space=space_with_train(param_space),
        tune_config=tune.TuneConfig(
            metric=cfg.metric, mode=cfg.mode(), scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=cfg.max_concurrent,
            search_alg=BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent),
        ),
        run_config=tune.RunConfig(name=f"{cfg.name}-{stage_name}-{int(time.time())}", storage_path=str(work),
                                  verbose=0),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    log.info("%s: %d trials in %.0fs", stage_name, len(grid), time.perf_counter() - t0)
    rows = []
    for res in grid:
        m = dict(res.metrics or {})
        status = "completed" if m.get("completed") else ("failed" if res.error else "stopped early")
        rows.append({
            "stage": stage_name, "trial": m.get("trial_id"),
            "params": dict((res.config or {}).get("params") or {}), "status": status,
            "metric": m.get(cfg.metric), "eval_loss": m.get("eval_loss"), "eval_reward": m.get("eval_reward"),
            "eval_exec_accuracy": m.get("eval_exec_accuracy"), "step": m.get("step"),
            "reports": m.get("training_iteration"), "adapter_uri": m.get("adapter_uri"),
            "run_name": m.get("run_name"), "error": str(res.error).splitlines()[-1][:300] if res.error else None,
        })
    return rows


def _TrialWithParams(config: dict[str, Any]) -> None:  # noqa: N802 - Tune shows this name per trial
    """Merge the sampled parameters into the stage's training config, then run the trial."""
    train = merge_mappings(config["train"], _dotted(config["params"]))
    _trial({"train": train})


def _rank(cfg: TuneConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sign = 1 if cfg.mode() == "min" else -1
    scored = [r for r in rows if isinstance(r["metric"], (int, float)) and math.isfinite(r["metric"])]
    return sorted(scored, key=lambda r: (r["status"] != "completed", sign * r["metric"]))


# ------------------------------------------------------------------------------------------- outputs


def results_table(cfg: TuneConfig, rows: list[dict[str, Any]]) -> str:
    keys = list(cfg.space)
    head = ["stage", "status", cfg.metric, "step", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ranked = _rank(cfg, rows)
    for r in ranked + [r for r in rows if r not in ranked]:
        metric = f"{r['metric']:.4f}" if isinstance(r["metric"], (int, float)) else "n/a"
        vals = [f"{r['params'].get(k):.4g}" if isinstance(r["params"].get(k), float) else str(r["params"].get(k))
                for k in keys]
        lines.append("| " + " | ".join([r["stage"], r["status"], metric, str(r["step"]), *vals]) + " |")
    return "\n".join(lines)


def best_preset(cfg: TuneConfig, best: dict[str, Any], train_dict: dict[str, Any]) -> str:
    import yaml

    from sqltune.train.config import TrainConfig

    tcfg = TrainConfig.from_dict({**train_dict, "run_name": f"{cfg.name}-best", "overwrite": False})
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
    name = Path(cfg.preset_path).name if cfg.preset_path else f"{cfg.name}-best.yaml"
    header = [
        f"# Best configuration of the sweep {cfg.name!r} ({best['stage']}, {cfg.metric} "
        f"{best['metric']:.4f} at step {best['step']}): {params}.",
        f"# Written by python -m jobs.tune --config <sweep>; its adapter is at {best['adapter_uri']}.",
        "# The trial's data and step budget are kept; raise data.max_train_examples / train.max_steps for a full run.",
        "#",
        f"#   ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/{name}",
        f"#   python -m jobs.train --config jobs/configs/{name}",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(tcfg.to_dict(), sort_keys=False)


def _publish(cfg: TuneConfig, rows: list[dict[str, Any]], best: dict[str, Any], preset: str, table: str
             ) -> tuple[str, str]:
    from sqltune import storage

    results_uri = storage.join(cfg.output_uri, cfg.name, "results")
    adapter_uri = storage.join(cfg.output_uri, cfg.name, "adapter")
    tmp = Path(tempfile.mkdtemp(prefix="sqltune-tune-"))
    try:
        out = tmp / "results"
        out.mkdir()
        (out / "results.json").write_text(json.dumps(
            {"name": cfg.name, "metric": cfg.metric, "mode": cfg.mode(), "config": cfg.to_dict(), "best": best,
             "trials": rows}, indent=2, default=str) + "\n")
        (out / "results.md").write_text(f"# Sweep {cfg.name}\n\nRanked by {cfg.metric} ({cfg.mode()}).\n\n{table}\n")
        (out / "best.yaml").write_text(preset)
        adapter_local = storage.fetch(best["adapter_uri"], tmp / "adapter")
        storage.publish(adapter_local, adapter_uri, kind="adapter", overwrite=cfg.overwrite,
                        metadata={"sweep": cfg.name, "trial": best["run_name"], cfg.metric: best["metric"]})
        storage.publish(out, results_uri, kind="sweep-results", overwrite=cfg.overwrite,
                        metadata={"sweep": cfg.name, "best": best["run_name"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if cfg.preset_path:
        Path(cfg.preset_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.preset_path).write_text(preset)
    return results_uri, adapter_uri


# ---------------------------------------------------------------------------------------------- run


def setup(cfg: TuneConfig) -> TuneConfig:
    """Checks that need no Ray: the preset, the space, the output place."""
    from sqltune import storage
    from sqltune.train.run import _check_writable

    check_space(cfg)
    _check_writable(cfg.output_uri, "output_uri")
    for sub in ("results", "adapter"):
        uri = storage.join(cfg.output_uri, cfg.name, sub)
        if storage.exists(storage.join(uri, storage.MANIFEST_NAME)) and not cfg.overwrite:
            raise ConfigError(f"name: sweep {cfg.name!r} already published {uri}; choose another name or pass "
                              "overwrite=true")
    return cfg


def run(cfg: TuneConfig) -> SweepResult:
    """Stage 1 (sampled configurations on a subset, ASHA), stage 2 (top-k on more data), publish the best."""
    import ray
    from ray import tune

    started = _ray_init(cfg)
    try:
        rows = _run_stage(cfg, "stage1", cfg.stage1, _domains(cfg), cfg.num_samples, cfg.asha.enabled)
        ranked = _rank(cfg, rows)
        if cfg.stage2.top_k and ranked:
            top = [r["params"] for r in ranked[: cfg.stage2.top_k]]
            rows += _run_stage(cfg, "stage2", cfg.stage2, tune.grid_search(top), 1, False)
    finally:
        if started:
            ray.shutdown()
    stage = "stage2" if any(r["stage"] == "stage2" for r in rows) else "stage1"
    finished = [r for r in _rank(cfg, [r for r in rows if r["stage"] == stage]) if r["status"] == "completed"]
    if not finished:
        errors = "; ".join(sorted({r["error"] for r in rows if r["error"]}))[:800]
        raise SqltuneError(f"sweep {cfg.name!r}: no {stage} trial completed ({len(rows)} trials"
                           + (f"; errors: {errors}" if errors else "") + ")")
    best = finished[0]
    settings = cfg.stage2 if stage == "stage2" else cfg.stage1
    train = trial_dict(cfg, best["params"], settings, best["run_name"])
    preset = best_preset(cfg, best, train)
    table = results_table(cfg, rows)
    results_uri, adapter_uri = _publish(cfg, rows, best, preset, table)
    return SweepResult(rows, best, results_uri, adapter_uri, preset, table)


__all__ = ["SweepResult", "check_space", "results_table", "run", "setup", "trial_config"]
