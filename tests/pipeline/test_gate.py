"""The gate: thresholds over an evaluation report, gate.json beside it, and `sqltune gate` exit codes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from sqltune import cli
from sqltune.pipeline.config import GateConfig, PipelineConfig
from sqltune.pipeline.gate import evaluate_gate

ROOT = Path(__file__).resolve().parents[2]


def variant(acc: float | None, *, status: str = "ok", ro: float = 0.0, n: int = 40, model: str = "") -> dict:
    return {
        "kind": "merged",
        "model": model,
        "status": status,
        "error": None if status == "ok" else "boom",
        "aggregate": {
            "n": n,
            "exec_accuracy": acc,
            "exec_ci_low": None,
            "exec_ci_high": None,
            "read_only_violation": ro,
        },
    }


REPORT = {
    "eval_name": "tiny-candidate",
    "variants": {
        "base": variant(0.10, model="s3://sqltune/models/tiny-base"),
        "adapter": variant(0.64, model="s3://sqltune/runs/tiny-candidate/adapter"),
        "merged": variant(0.65, model="s3://sqltune/runs/tiny-candidate/merged"),
    },
    "agreement": [{"a": "adapter", "b": "merged", "flagged": False, "reasons": []}],
}


def test_pass_records_inputs_thresholds_and_model() -> None:
    result = evaluate_gate(REPORT, GateConfig(min_exec_accuracy=0.6, min_gain=0.5), "s3://sqltune/eval/x")
    assert result.passed and result.reasons == []
    assert result.model_uri == "s3://sqltune/runs/tiny-candidate/merged"
    out = result.to_dict()
    assert out["verdict"] == "pass" and out["thresholds"]["min_exec_accuracy"] == 0.6
    assert (
        out["inputs"]["candidate"]["exec_accuracy"] == 0.65
        and out["inputs"]["baseline"]["exec_accuracy"] == 0.10
    )
    assert {c["name"] for c in out["checks"]} == {
        "min_exec_accuracy",
        "min_gain",
        "max_read_only_violations",
        "agreement",
        "no_failed_variant",
    }


@pytest.mark.parametrize(
    ("change", "gate", "reason"),
    [
        (
            None,
            {"min_exec_accuracy": 0.7},
            r"execution accuracy of 'merged' is 65\.0%; gate.min_exec_accuracy is 70\.0%",
        ),
        (
            None,
            {"min_gain": 0.6},
            r"'merged' 65\.0% vs 'base' 10\.0%: \+55\.0 points; gate.min_gain is \+60\.0 points",
        ),
        (
            lambda r: r["agreement"][0].update(flagged=True, reasons=["20% of outputs differ"]),
            {},
            "adapter vs merged flagged: 20% of outputs differ",
        ),
        (
            lambda r: r["variants"]["merged"]["aggregate"].update(read_only_violation=0.05),
            {},
            "2 predictions of 'merged' write to the database; gate.max_read_only_violations is 0",
        ),
        (
            lambda r: r["variants"]["adapter"].update(status="failed", error="OOM"),
            {},
            r"variants failed: adapter \(OOM\); fix them or set gate.allow_failed_variants=true",
        ),
        (
            lambda r: r["variants"]["merged"].update(status="failed", error="no weights"),
            {},
            "variant 'merged' failed: no weights",
        ),
        (
            None,
            {"candidate": "int8"},
            r"variant 'int8' is not in the report \(variants: base, adapter, merged\)",
        ),
        (None, {"baseline": "served"}, "baseline variant 'served' is not in the report"),
        (
            lambda r: r["variants"]["merged"]["aggregate"].update(exec_accuracy=None),
            {},
            r"is undefined \(no example could be executed\)",
        ),
    ],
)
def test_each_check_fails_with_its_reason(change, gate: dict, reason: str) -> None:
    import re

    report = copy.deepcopy(REPORT)
    if change:
        change(report)
    result = evaluate_gate(report, GateConfig(**gate))
    assert not result.passed
    assert any(re.search(reason, r) for r in result.reasons), result.reasons


def test_allowances() -> None:
    report = copy.deepcopy(REPORT)
    report["variants"]["adapter"].update(status="failed", error="OOM")
    report["agreement"][0].update(flagged=True, reasons=["x"])
    assert evaluate_gate(
        report, GateConfig(allow_failed_variants=True, require_agreement=False, baseline="")
    ).passed


def test_gate_command_writes_gate_json_and_exits_1_on_fail(tmp_path: Path, capsys) -> None:
    report_dir = tmp_path / "eval" / "tiny-candidate"
    report_dir.mkdir(parents=True)
    (report_dir / "report.json").write_text(json.dumps(REPORT))
    code = cli.main(
        [
            "gate",
            "--report",
            str(report_dir),
            "--config",
            str(ROOT / "jobs/configs/pipeline-tiny.yaml"),
            "gate.min_exec_accuracy=0.9",
            "promote.target=none",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "serving is unchanged" in err and "gate.min_exec_accuracy is 90.0%" in err
    gate = json.loads((report_dir / "gate.json").read_text())
    assert gate["verdict"] == "fail" and gate["thresholds"]["min_exec_accuracy"] == 0.9
    assert gate["reasons"] and gate["inputs"]["report"] == str(report_dir)

    code = cli.main(
        [
            "gate",
            "--report",
            str(report_dir),
            "--config",
            str(ROOT / "jobs/configs/pipeline-tiny.yaml"),
            "promote.target=none",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads((report_dir / "gate.json").read_text())["verdict"] == "pass"


def test_gate_command_bad_input(tmp_path: Path, capsys) -> None:
    code = cli.main(["gate", "--report", str(tmp_path / "nope")])
    assert code == 2 and "cannot read report.json" in capsys.readouterr().err
    code = cli.main(["gate", "--report", str(tmp_path), "gate.min_gian=0.1"])
    assert code == 2 and "did you mean 'min_gain'" in capsys.readouterr().err


def test_pipeline_preset_resolves_its_stages() -> None:
    from sqltune.config import load_config

    cfg = load_config(PipelineConfig, ROOT / "jobs/configs/pipeline-tiny.yaml")
    train = cfg.stage_config("train", ROOT / "jobs/configs")
    export = cfg.stage_config("export", ROOT / "jobs/configs")
    evaluate = cfg.stage_config("evaluate", ROOT / "jobs/configs")
    assert train.run_name == "tiny-candidate"
    assert export.adapter == "s3://sqltune/runs/tiny-candidate/adapter"
    assert export.destination() == "s3://sqltune/runs/tiny-candidate"
    assert evaluate.run_uri == "s3://sqltune/runs/tiny-candidate" and evaluate.eval_name == "tiny-candidate"
    merged = [v for v in evaluate.variants if v.name == "merged"][0]
    assert merged.model == "s3://sqltune/runs/tiny-candidate/merged"
