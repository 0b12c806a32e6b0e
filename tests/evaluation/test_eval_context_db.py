"""Evaluation of a gretel-format split: execution on databases built from each example's context, hybrid score."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqltune.data import load_dataset
from sqltune.evaluation import EvalConfig, run_evaluation
from sqltune.evaluation.metrics import rouge_l

from canned_server import CannedServer

pytestmark = pytest.mark.ray
GRETEL = Path(__file__).resolve().parents[1] / "train" / "fixtures" / "gretel_small.jsonl"


def test_gretel_split_reports_execution_accuracy_and_hybrid(local_ray, tmp_path):
    examples = load_dataset(GRETEL, format="gretel")[:8]
    assert all(ex.db is None for ex in examples)
    answers = {ex.question: ex.sql for ex in examples[:5]}
    # Same result, other text: counts as a match only because it is executed.
    answers[examples[1].question] = "SELECT SUM(tonnage) + 0 FROM ships WHERE 1 = 1"
    answers[examples[5].question] = "SELECT SUM(id) FROM farms"          # runs, wrong result
    answers[examples[6].question] = "SELECT region FROM farms WHERE nope > 1"  # unknown column
    answers[examples[7].question] = "DELETE FROM farms"                  # read-only violation
    data = tmp_path / "split.jsonl"
    data.write_text("".join(line + "\n" for line in GRETEL.read_text().splitlines()[:8]))
    with CannedServer(answers) as server:
        cfg = EvalConfig.from_dict({
            "eval_name": "gretel", "output_uri": str(tmp_path / "out"),
            "dataset": {"source": str(data), "format": "gretel", "split": "all"},
            "variants": [{"name": "canned", "kind": "http", "url": server.url}],
        })
        report = run_evaluation(cfg, progress=False).report
    agg = report["variants"]["canned"]["aggregate"]
    assert agg["n"] == 8 and agg["n_exec"] == 8 and agg["exec_accuracy"] == pytest.approx(5 / 8)
    partial = [0.7 * rouge_l(answers[ex.question], ex.sql) for ex in examples[5:7]]
    assert agg["hybrid"] == pytest.approx((5 + sum(partial) + 0.0) / 8)
    assert "in-memory context databases" in report["dataset"]["databases"]
    md = (tmp_path / "out" / "gretel" / "report.md").read_text()
    assert "62.5%" in md and f"{agg['hybrid']:.3f}" in md
