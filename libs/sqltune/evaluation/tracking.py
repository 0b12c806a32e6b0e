"""MLflow tracking shared by training and evaluation: the client, the training curves, the evaluation's run.

- :func:`mlflow_client`: the client for a tracking config (``auto``: MLflow when ``MLFLOW_TRACKING_URI`` is set;
  ``file``: a local file store; ``none``), or None. mlflow (``pip install 'sqltune[tracking]'``) is imported
  only when tracking is on.
- :func:`plot_training_curves`: loss (train and validation) and validation accuracy against the step, from a
  training run's metric history; training logs the PNG into its run's artifacts.
- :func:`track_evaluation`: the evaluation's metrics, report and plots into the training's run when it is
  known (``tracking.run_id``, else the run tagged ``sqltune.adapter_uri`` with an adapter the evaluation
  scores or ``<run_uri>/adapter``), else into a run of its own named after ``eval_name``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from sqltune.errors import ConfigError, missing

log = logging.getLogger(__name__)

__all__ = ["mlflow_client", "plot_training_curves", "resolve_eval_run", "track_evaluation"]

TRAINING_CURVES = "training_curves.png"
_METRIC_KEYS = ("exec_accuracy", "exec_ci_low", "exec_ci_high", "parseable", "parseable_sqlglot", "exact",
                "ast_equal", "hybrid", "rouge_l", "hallucination", "read_only_violation", "multiple_statements",
                "n", "n_exec", "n_failed", "latency_p50_s", "latency_p95_s", "tokens_per_s", "peak_memory_mb")


def mlflow_client(backend: str, file_store: str) -> tuple[Any, str] | None:
    """(MlflowClient, tracking URI) for ``backend`` (auto | mlflow | file | none), or None when tracking is off."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if backend == "none" or (backend == "auto" and not uri):
        return None
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise missing("mlflow", "tracking") from exc
    if backend == "file":
        # MLflow 3 keeps the file store only behind this opt-in; mlflow-skinny has no SQL backend.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = Path(file_store).expanduser().resolve().as_uri()
    elif not uri:
        raise ConfigError("tracking.backend=mlflow needs MLFLOW_TRACKING_URI in the environment (or use "
                          "tracking.backend=file with tracking.file_store=<dir>)")
    return MlflowClient(tracking_uri=uri), uri


def _experiment_id(client: Any, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name)


def plot_training_curves(history: list[dict[str, Any]], path: Path) -> bool:
    """Loss (train, validation) and validation execution accuracy/parseable against the step; False when the
    history has nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(int(p["step"]), float(p[key])) for p in history if isinstance(p.get(key), (int, float))]
        return [s for s, _ in pts], [v for _, v in pts]

    losses = {k: series(k) for k in ("train_loss", "eval_loss")}
    accs = {k: series(k) for k in ("eval_exec_accuracy", "eval_parseable")}
    if not any(xs for xs, _ in losses.values()):
        return False
    has_acc = any(xs for xs, _ in accs.values())
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6.4, 4.2), squeeze=False)
    ax = axes[0][0]
    for key, (xs, ys) in losses.items():
        if xs:
            ax.plot(xs, ys, marker="o" if key == "eval_loss" else None, markersize=3, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if has_acc:
        ax = axes[0][1]
        for key, (xs, ys) in accs.items():
            if xs:
                ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel("%")
        ax.set_ylim(-5, 105)
        ax.set_title("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def resolve_eval_run(cfg: Any) -> dict[str, Any] | None:
    """The MLflow run the evaluation logs into: ``{"uri", "experiment_id", "run_id", "training_run"}``, or None
    when tracking is off. Creates the evaluation's own run when no training run is known."""
    t = cfg.tracking
    found = mlflow_client(t.backend, t.file_store)
    if found is None:
        return None
    client, uri = found
    if t.run_id:
        run = client.get_run(t.run_id)  # raises for an unknown id: the config names a run that is not there
        return {"uri": uri, "experiment_id": run.info.experiment_id, "run_id": t.run_id, "training_run": True}
    exp_id = _experiment_id(client, t.experiment)
    adapters = [v.model for v in cfg.variants if v.kind == "adapter" and v.model]
    if cfg.run_uri:
        adapters.append(cfg.run_uri.rstrip("/") + "/adapter")
    for adapter in dict.fromkeys(adapters):
        quoted = adapter.replace("'", "\\'")
        runs = client.search_runs([exp_id], filter_string=f"tags.`sqltune.adapter_uri` = '{quoted}'",
                                  max_results=1, order_by=["attributes.start_time DESC"])
        if runs:
            return {"uri": uri, "experiment_id": exp_id, "run_id": runs[0].info.run_id, "training_run": True}
    run = client.create_run(exp_id, run_name=cfg.eval_name, tags={"sqltune.eval_name": cfg.eval_name})
    return {"uri": uri, "experiment_id": exp_id, "run_id": run.info.run_id, "training_run": False}


def track_evaluation(cfg: Any, report: dict[str, Any], stage: Path, target: dict[str, Any]) -> None:
    """Log every scored variant's metrics (``eval.<eval_name>.<variant>.<metric>``, per hardness too), and the
    staged report folder (report.json, report.md, predictions.jsonl, plots) under ``eval/<eval_name>/``."""
    client, _ = mlflow_client(cfg.tracking.backend, cfg.tracking.file_store)
    rid = target["run_id"]
    prefix = f"eval.{_key(cfg.eval_name)}"
    for name, v in report["variants"].items():
        agg = v.get("aggregate")
        if not agg:
            continue
        for key in _METRIC_KEYS:
            value = agg.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                client.log_metric(rid, f"{prefix}.{_key(name)}.{key}", float(value))
        for level, cat in (v.get("by_hardness") or {}).items():
            if cat.get("exec_accuracy") is not None:
                client.log_metric(rid, f"{prefix}.{_key(name)}.hardness.{_key(level)}.exec_accuracy",
                                  float(cat["exec_accuracy"]))
    client.set_tag(rid, f"sqltune.eval.{_key(cfg.eval_name)}", report.get("uri", ""))
    client.log_artifacts(rid, str(stage), artifact_path=f"eval/{_key(cfg.eval_name)}")
    if not target["training_run"]:
        client.set_terminated(rid)
    log.info("evaluation tracked in MLflow at %s (run %s%s)", target["uri"], rid,
             ", the training's run" if target["training_run"] else "")
