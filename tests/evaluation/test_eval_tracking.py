"""MLflow (a local file store) holds the evaluation: metrics, report and plots, in the training's run when it
is known, else in a run of its own; the training run gets its curves plotted."""

from __future__ import annotations

import json

import pytest

from sqltune.errors import ConfigError
from sqltune.evaluation import EvalConfig, run_evaluation
from sqltune.evaluation.run import setup

from canned_server import CannedServer
from eval_helpers import build_shop

pytestmark = pytest.mark.ray

HISTORY = [
    {"step": 10, "train_loss": 2.5, "lr": 1e-4, "tokens_per_second": 100.0},
    {"step": 20, "train_loss": 1.5, "lr": 1e-4, "tokens_per_second": 100.0},
    {"step": 20, "eval_loss": 1.7, "eval_exec_accuracy": 0.25, "eval_parseable": 0.8},
    {"step": 30, "train_loss": 1.0, "lr": 1e-4, "tokens_per_second": 100.0},
    {"step": 30, "eval_loss": 1.2, "eval_exec_accuracy": 0.5, "eval_parseable": 0.9},
]


def _artifacts(client, run_id: str, path: str = "") -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_evaluation_is_tracked_into_the_training_run(local_ray, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the test's own client reads the file store

    from sqltune.train.config import TrainConfig
    from sqltune.train.run import track

    store = tmp_path / "mlruns"
    tracking = {"backend": "file", "file_store": str(store), "experiment": "eval-test"}
    db = build_shop("sqlite", tmp_path)
    schema = "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, segment TEXT);"
    rows = [{"id": "a", "question": "Names?", "sql": "SELECT name FROM customers"},
            {"id": "b", "question": "How many?", "sql": "SELECT count(*) FROM customers"}]
    data = tmp_path / "ex.jsonl"
    data.write_text("".join(json.dumps({**r, "schema": schema, "db": db, "difficulty": "easy"}) + "\n" for r in rows))
    run_uri = str(tmp_path / "runs" / "t")

    def cfg(name: str) -> EvalConfig:
        return EvalConfig.from_dict({
            "eval_name": name, "output_uri": str(tmp_path / "out"), "run_uri": run_uri,
            "dataset": {"source": str(data), "format": "jsonl", "split": "all"},
            "variants": [{"name": "ep", "kind": "http", "url": server.url}],
            "tracking": tracking,
        })

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    with CannedServer({"Names?": "SELECT name FROM customers", "How many?": "SELECT 1"}) as server:
        # No training run yet: the evaluation gets a run of its own.
        alone = run_evaluation(cfg("alone"), progress=False).report
        assert alone["tracking"]["training_run"] is False
        own = client.get_run(alone["tracking"]["run_id"])
        assert own.info.run_name == "alone" and own.data.metrics["eval.alone.ep.exec_accuracy"] == 0.5

        # The training run of <run_uri>/adapter, with its curves; the next evaluation logs into it.
        train_cfg = TrainConfig.from_dict({"run_name": "t", "tracking": tracking})
        rid = track(train_cfg, {"history": HISTORY, "final": {"step": 30, "eval_loss": 1.2}}, f"{run_uri}/adapter")
        report = run_evaluation(cfg("tracked"), progress=False).report

    assert report["tracking"] == {"uri": store.resolve().as_uri(), "experiment_id": own.info.experiment_id,
                                  "run_id": rid, "training_run": True}
    run = client.get_run(rid)
    agg = report["variants"]["ep"]["aggregate"]
    metrics = run.data.metrics
    assert metrics["eval.tracked.ep.exec_accuracy"] == pytest.approx(agg["exec_accuracy"]) == pytest.approx(0.5)
    assert metrics["eval.tracked.ep.parseable"] == pytest.approx(1.0)
    assert metrics["eval.tracked.ep.hardness.easy.exec_accuracy"] == pytest.approx(0.5)
    assert metrics["eval.tracked.ep.peak_memory_mb"] > 0 and metrics["final_step"] == 30
    arts = _artifacts(client, rid)
    assert "plots/training_curves.png" in arts
    for name in ("report.json", "report.md", "predictions.jsonl", "accuracy_vs_latency.png", "hardness_accuracy.png",
                 "database_accuracy.png"):
        assert f"eval/tracked/{name}" in arts, (name, sorted(arts))
    (tmp_path / "dl").mkdir()
    local = client.download_artifacts(rid, "eval/tracked/report.json", str(tmp_path / "dl"))
    logged = json.loads(open(local, encoding="utf-8").read())
    assert logged["dataset"]["hash"] == report["dataset"]["hash"]


def test_unknown_tracking_run_fails_before_anything_runs(tmp_path):
    cfg = EvalConfig.from_dict({
        "eval_name": "x", "output_uri": str(tmp_path / "out"),
        "dataset": {"source": "embedded", "embedded_dir": str(tmp_path / "emb")},
        "variants": [{"name": "ep", "kind": "http", "url": "http://127.0.0.1:1"}],
        "tracking": {"backend": "file", "file_store": str(tmp_path / "mlruns"), "run_id": "0123456789abcdef"},
    })
    with pytest.raises(ConfigError, match=r"tracking: cannot use MLflow run 0123456789abcdef.*tracking.run_id"):
        setup(cfg)
