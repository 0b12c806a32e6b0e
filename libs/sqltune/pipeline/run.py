"""The closed loop as one job: train -> export -> evaluate -> gate -> promote.

``setup`` parses all three stage configs before anything runs (a bad evaluation preset fails before an
hour of training); ``run`` calls each stage's own ``setup``/``run`` (the code ``jobs.train``,
``jobs.export`` and ``jobs.evaluate`` run), writes gate.json beside the report, and promotes the candidate
when the gate passes. A failed gate changes nothing and raises :class:`~sqltune.pipeline.gate.GateFailed`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from sqltune.config import parse_cli
from sqltune.errors import SqltuneError
from sqltune.pipeline.config import PipelineConfig
from sqltune.pipeline.gate import GateFailed, GateResult, evaluate_gate, write_gate
from sqltune.pipeline.promote import Promotion, promote

log = logging.getLogger(__name__)


@dataclass
class PipelinePlan:
    cfg: PipelineConfig
    train: Any
    export: Any
    evaluate: Any


@dataclass
class PipelineResult:
    adapter_uri: str
    export_uri: str
    report_uri: str
    gate: GateResult
    gate_uri: str
    promotion: Promotion | None


def setup(cfg: PipelineConfig) -> PipelinePlan:
    return PipelinePlan(
        cfg, cfg.stage_config("train"), cfg.stage_config("export"), cfg.stage_config("evaluate")
    )


def gate_and_promote(
    report: dict[str, Any], report_uri: str, cfg: PipelineConfig, out=None
) -> tuple[GateResult, str, Promotion | None]:
    """Gate a published report, write gate.json beside it, promote on pass; raise GateFailed on fail."""
    out = out or sys.stdout
    result = evaluate_gate(report, cfg.gate, report_uri)
    gate_uri = write_gate(result, report_uri)
    print(result.summary(), file=out)
    print(f"gate.json written to {gate_uri}", file=out)
    if not result.passed:
        raise GateFailed(
            f"gate refused {result.inputs['candidate']['name']} of {report_uri}; serving is unchanged:\n"
            + "\n".join(f"  - {r}" for r in result.reasons)
        )
    promotion = promote(result.model_uri, cfg.promote, out=out)
    if promotion is not None:
        print(promotion.summary(), file=out)
    return result, gate_uri, promotion


def run(plan: PipelinePlan) -> PipelineResult:
    from sqltune.evaluation.run import run as eval_run
    from sqltune.evaluation.run import setup as eval_setup
    from sqltune.export.run import run as export_run
    from sqltune.export.run import setup as export_setup
    from sqltune.train.run import run as train_run
    from sqltune.train.run import setup as train_setup

    log.info("pipeline: train (%s)", plan.cfg.train_config)
    trained = train_run(train_setup(plan.train))
    print(f"adapter published to {trained.adapter_uri}")
    log.info("pipeline: export (%s)", plan.cfg.export_config)
    exported = export_run(export_setup(plan.export))
    print(exported.summary())
    log.info("pipeline: evaluate (%s)", plan.cfg.eval_config)
    evaluated = eval_run(eval_setup(plan.evaluate))
    print(evaluated.table)
    print(f"report published to {evaluated.uri}")
    result, gate_uri, promotion = gate_and_promote(evaluated.report, evaluated.uri, plan.cfg)
    return PipelineResult(
        trained.adapter_uri, exported.destination, evaluated.uri, result, gate_uri, promotion
    )


def config_path(argv: list[str]) -> str:
    """The --config argument of ``argv`` ('' without one)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return ""


def main(argv: list[str] | None = None, prog: str = "python -m jobs.pipeline") -> int:
    """``[--config FILE] [key=value ...]``: run the chain. Exit 0 gate passed (and promoted), 1 gate
    refused (serving unchanged), 2 configuration/data/storage error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = parse_cli(PipelineConfig, argv, prog=prog)
        if not cfg.presets_dir:
            cfg.presets_dir = os.path.dirname(config_path(argv)) or "."
        result = run(setup(cfg))
    except GateFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SqltuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.gate.summary())
    return 0
