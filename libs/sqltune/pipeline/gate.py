"""The gate: may an evaluated artifact be served? Reads an evaluation report, writes ``gate.json`` beside it.

Checks (each configurable in :class:`~sqltune.pipeline.config.GateConfig`):

* the candidate variant ran (``status: ok``) and its execution accuracy is at least ``min_exec_accuracy``;
* it beats the baseline variant (the base model, or an http variant pointing at the model served now)
  by at least ``min_gain`` accuracy points;
* no agreement pair that includes it is flagged (adapter vs merged: the export changed behaviour);
* at most ``max_read_only_violations`` of its predictions write to the database;
* no variant of the report failed (unless ``allow_failed_variants``).

gate.json: ``{"verdict": "pass"|"fail", "passed", "reasons": [...], "checks": [{"name", "passed", "value",
"threshold", "detail"}], "thresholds": GateConfig, "inputs": {"report", "eval_name", "candidate": {...},
"baseline": {...}}, "created", "sqltune_version"}``.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqltune import __version__
from sqltune.errors import SqltuneError, StorageError
from sqltune.pipeline.config import GateConfig
from sqltune.storage import join, read_text, write_text

GATE_FILE = "gate.json"


class GateFailed(SqltuneError):
    """The gate refused the artifact; the message lists every reason (also in gate.json)."""

    exit_code = 1


@dataclass
class GateResult:
    passed: bool
    reasons: list[str]
    checks: list[dict[str, Any]]
    inputs: dict[str, Any]
    thresholds: dict[str, Any]
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def model_uri(self) -> str:
        """The candidate's model URI (what promotion serves)."""
        return str((self.inputs.get("candidate") or {}).get("model") or "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "fail",
            "passed": self.passed,
            "reasons": self.reasons,
            "checks": self.checks,
            "thresholds": self.thresholds,
            "inputs": self.inputs,
            "created": self.created,
            "sqltune_version": __version__,
        }

    def summary(self) -> str:
        if self.passed:
            return f"gate PASSED for {self.inputs['candidate']['name']} ({self.model_uri})"
        return "gate FAILED:\n" + "\n".join(f"  - {r}" for r in self.reasons)


def _variant_summary(name: str, v: dict[str, Any] | None) -> dict[str, Any]:
    if v is None:
        return {"name": name, "present": False}
    agg = v.get("aggregate") or {}
    n = agg.get("n") or 0
    rate = agg.get("read_only_violation")
    return {
        "name": name,
        "present": True,
        "status": v.get("status"),
        "model": v.get("model"),
        "error": v.get("error"),
        "n": n,
        "exec_accuracy": agg.get("exec_accuracy"),
        "exec_ci_low": agg.get("exec_ci_low"),
        "exec_ci_high": agg.get("exec_ci_high"),
        "read_only_violations": None if rate is None else int(round(rate * n)),
    }


def evaluate_gate(report: dict[str, Any], gate: GateConfig, report_uri: str = "") -> GateResult:
    """Apply ``gate`` to a report.json; never raises for a bad artifact: the reasons say what failed."""
    variants = report.get("variants") or {}
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, value: Any, threshold: Any, detail: str) -> None:
        checks.append(
            {"name": name, "passed": bool(ok), "value": value, "threshold": threshold, "detail": detail}
        )

    cand = _variant_summary(gate.candidate, variants.get(gate.candidate))
    base = _variant_summary(gate.baseline, variants.get(gate.baseline)) if gate.baseline else None
    names = ", ".join(variants) or "none"
    if not cand["present"]:
        check(
            "candidate",
            False,
            None,
            gate.candidate,
            f"variant {gate.candidate!r} is not in the report (variants: {names}); set gate.candidate",
        )
    elif cand["status"] != "ok":
        check("candidate", False, cand["status"], "ok", f"variant {gate.candidate!r} failed: {cand['error']}")
    else:
        acc = cand["exec_accuracy"]
        check(
            "min_exec_accuracy",
            acc is not None and acc >= gate.min_exec_accuracy,
            acc,
            gate.min_exec_accuracy,
            f"execution accuracy of {gate.candidate!r} is "
            + ("undefined (no example could be executed)" if acc is None else f"{acc:.1%}")
            + f"; gate.min_exec_accuracy is {gate.min_exec_accuracy:.1%}",
        )
        if base is not None:
            if not base["present"] or base["status"] != "ok" or base["exec_accuracy"] is None:
                why = (
                    "is not in the report"
                    if not base["present"]
                    else (
                        f"failed: {base['error']}" if base["status"] != "ok" else "has no execution accuracy"
                    )
                )
                check(
                    "min_gain",
                    False,
                    None,
                    gate.min_gain,
                    f"baseline variant {gate.baseline!r} {why} (variants: {names}); set gate.baseline or gate.baseline=''",
                )
            elif acc is not None:
                gain = acc - base["exec_accuracy"]
                check(
                    "min_gain",
                    gain >= gate.min_gain - 1e-12,
                    round(gain, 6),
                    gate.min_gain,
                    f"{gate.candidate!r} {acc:.1%} vs {gate.baseline!r} {base['exec_accuracy']:.1%}: "
                    f"{gain * 100:+.1f} points; gate.min_gain is {gate.min_gain * 100:+.1f} points",
                )
        ro = cand["read_only_violations"]
        check(
            "max_read_only_violations",
            (ro or 0) <= gate.max_read_only_violations,
            ro,
            gate.max_read_only_violations,
            f"{ro or 0} predictions of {gate.candidate!r} write to the database; "
            f"gate.max_read_only_violations is {gate.max_read_only_violations}",
        )
    if gate.require_agreement:
        flagged = [
            a
            for a in report.get("agreement") or []
            if a.get("flagged") and gate.candidate in (a["a"], a["b"])
        ]
        check(
            "agreement",
            not flagged,
            len(flagged),
            0,
            "; ".join(f"{a['a']} vs {a['b']} flagged: {'; '.join(a.get('reasons') or [])}" for a in flagged)
            or f"no flagged agreement pair includes {gate.candidate!r}",
        )
    if not gate.allow_failed_variants:
        failed = sorted(n for n, v in variants.items() if v.get("status") != "ok")
        check(
            "no_failed_variant",
            not failed,
            failed,
            [],
            (
                "variants failed: "
                + ", ".join(f"{n} ({variants[n].get('error')})" for n in failed)
                + "; fix them or set gate.allow_failed_variants=true"
            )
            if failed
            else "every variant ran",
        )
    reasons = [c["detail"] for c in checks if not c["passed"]]
    inputs = {
        "report": report_uri or report.get("uri", ""),
        "eval_name": report.get("eval_name"),
        "candidate": cand,
        "baseline": base,
    }
    return GateResult(
        passed=not reasons, reasons=reasons, checks=checks, inputs=inputs, thresholds=gate.to_dict()
    )


def read_report(report_uri: str) -> dict[str, Any]:
    """report.json of a published evaluation (``<output_uri>/<eval_name>``, local path or s3://)."""
    uri = join(report_uri, "report.json")
    try:
        return json.loads(read_text(uri))
    except (StorageError, FileNotFoundError) as exc:
        raise StorageError(
            f"--report {report_uri}: cannot read report.json ({exc}); pass the evaluation's "
            "<output_uri>/<eval_name>"
        ) from None
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri}: not valid JSON ({exc}); re-run the evaluation") from None


def write_gate(result: GateResult, report_uri: str) -> str:
    """Write gate.json beside report.json; returns its URI."""
    return write_text(join(report_uri, GATE_FILE), json.dumps(result.to_dict(), indent=2) + "\n")
