"""How a trial's Ray Train reports reach Ray Tune.

Ray's ``TuneReportCallback`` hands every Ray Train report to the trial as a Tune result, key for key. A
training run's reports carry ``done`` (true on its last report), and ``done`` is Tune's own result key: Tune
reads a true ``done`` as "this trial is over" and stops the trial right there, before the training run
returns, so its adapter would never be published and the trial never counted as completed. Here the key
reaches Tune as ``train_done``; Tune ends a trial when its function returns, or when ASHA stops it.
"""

from __future__ import annotations

from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

# Result keys Tune reserves for itself (ray.tune.result): a training metric of that name is renamed.
RESERVED = ("done", "should_checkpoint", "training_iteration", "trial_id", "config", "time_total_s")


def tune_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A training report as a Tune result: Tune's reserved keys get a ``train_`` prefix."""
    return {(f"train_{k}" if k in RESERVED else k): v for k, v in metrics.items()}


class TrainToTuneCallback(TuneReportCallback):
    """``TuneReportCallback`` that renames Tune's reserved keys (see the module's doc)."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        super().after_report(run_context, [tune_metrics(m) for m in metrics], checkpoint)


__all__ = ["RESERVED", "TrainToTuneCallback", "tune_metrics"]
