"""Aggregates over scored examples: per variant, per category, confidence intervals, agreement.

Denominators: every aggregate counts only examples whose gold query ran (``gold_failed`` examples are
reported separately and never counted against a model). Execution accuracy counts examples that have a
database (``n_exec``); the other rates count all scored examples (``n``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from sqltune.evaluation.metrics import ERROR_CATEGORIES, ExampleScore


def _rate(values: Sequence[bool]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation (numpy's default), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def bootstrap_ci(values: Sequence[float], *, samples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (seeded, so reproducible)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(samples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def counted(scores: Sequence[ExampleScore]) -> list[ExampleScore]:
    """The scores that count: gold query ran."""
    return [s for s in scores if not s.gold_failed]


def summarize(scores: Sequence[ExampleScore], *, wall_s: float | None = None, bootstrap_samples: int = 1000,
              bootstrap_seed: int = 0, confidence: float = 0.95, with_ci: bool = True) -> dict[str, Any]:
    """Rates and timings of a list of scores (one variant, or one variant's category)."""
    rows = counted(scores)
    execd = [s for s in rows if s.exec_match is not None]
    exec_values = [1.0 if s.exec_match else 0.0 for s in execd]
    out: dict[str, Any] = {
        "n": len(rows),
        "n_exec": len(execd),
        "n_gold_failed": len(scores) - len(rows),
        "parseable": _rate([s.parseable for s in rows]),
        "parseable_sqlglot": _rate([s.parseable_sqlglot for s in rows]),
        "parseable_engine_checked": _rate([s.parseable_engine is not None for s in rows]),
        "exact": _rate([s.exact for s in rows]),
        "ast_equal": _rate([s.ast_equal for s in rows]),
        "exec_accuracy": _rate([bool(v) for v in exec_values]),
        "hybrid": _mean([s.hybrid for s in rows]),
        "rouge_l": _mean([s.rouge_l for s in rows]),
        "cleaned": _rate([s.cleaned for s in rows]),
        "hallucination": _rate([s.hallucinated for s in rows]),
        "unknown_table": _rate([bool(s.unknown_tables) for s in rows]),
        "unknown_column": _rate([bool(s.unknown_columns) for s in rows]),
        "read_only_violation": _rate([s.read_only_violation for s in rows]),
        "n_failed": sum(1 for s in rows if s.failed),
        "multiple_statements": _rate([bool(s.extra_statements) for s in rows]),
    }
    if with_ci:
        lo, hi = bootstrap_ci(exec_values, samples=bootstrap_samples, seed=bootstrap_seed, confidence=confidence)
        out["exec_ci_low"], out["exec_ci_high"] = lo, hi
        out["confidence"] = confidence
        lat = [s.latency_s for s in rows]
        out["latency_mean_s"] = _mean(lat)
        out["latency_p50_s"] = percentile(lat, 50)
        out["latency_p95_s"] = percentile(lat, 95)
        toks = [s.output_tokens for s in rows if s.output_tokens is not None]
        out["output_tokens_total"] = int(sum(toks)) if toks else None
        out["output_tokens_mean"] = _mean(toks)
        out["generation_wall_s"] = wall_s
        out["tokens_per_s"] = (sum(toks) / wall_s) if toks and wall_s else None
    cats = Counter(s.error_category for s in rows)
    out["error_categories"] = {"ok": cats.get(None, 0), **{c: cats[c] for c in ERROR_CATEGORIES if cats.get(c)}}
    for c in sorted(k for k in cats if k is not None and k not in ERROR_CATEGORIES):
        out["error_categories"][c] = cats[c]
    return out


def too_many_failed(scores: Sequence[ExampleScore], max_fraction: float) -> str | None:
    """Why a variant counts as failed for its failed examples (more than ``max_fraction`` of them), or None."""
    n = len(scores)
    failed = [s for s in scores if s.failed]
    if not n or len(failed) <= max_fraction * n:
        return None
    cats = Counter(s.error_category for s in failed)
    first = failed[0].error or ""
    return (f"{len(failed)} of {n} examples failed ({len(failed) / n:.0%} > max_failed_fraction={max_fraction:g}): "
            + ", ".join(f"{c} {k}" for c, k in cats.most_common()) + f"; first: {first[:200]}")


def by_category(scores: Sequence[ExampleScore]) -> dict[str, dict[str, Any]]:
    """Per-category rates (no CI or timing: categories are small)."""
    groups: dict[str, list[ExampleScore]] = {}
    for s in scores:
        groups.setdefault(s.category or "uncategorized", []).append(s)
    return {cat: summarize(groups[cat], with_ci=False) for cat in sorted(groups)}


def repair_summary(outputs: Sequence[Any], max_rounds: int) -> dict[str, Any]:
    """What a ``repair_rounds`` variant's loop did, from its outputs (``repair_rounds``, ``repair_passed``).

    ``examples_with_repair_rounds``: the first answer failed the loop's checks; ``repaired``: of those, the
    ones whose final SQL passed them (passing the checks is not being correct: compare the execution match
    with the same model without repair for that); ``passed_checks``: every example whose final SQL passed.
    """
    done = [o for o in outputs if o is not None]
    used = [o.repair_rounds or 0 for o in done]
    return {"max_rounds": max_rounds, "mean_rounds_used": sum(used) / max(1, len(used)),
            "examples_with_repair_rounds": sum(1 for u in used if u),
            "repaired": sum(1 for o in done if o.repair_rounds and o.repair_passed),
            "passed_checks": sum(1 for o in done if o.repair_passed)}


def agreement(a_name: str, a: Sequence[ExampleScore], b_name: str, b: Sequence[ExampleScore], *,
              max_disagreement: float, max_accuracy_diff: float) -> dict[str, Any]:
    """How far two variants that should be identical (adapter vs merged) differ, flagged over thresholds.

    Compared on the examples both scored (gold failures excluded): the share of byte-identical outputs
    (after stripping surrounding whitespace), the share with identical cleaned SQL, and the difference of
    execution accuracy (or of AST equivalence where there is no database).
    """
    by_id_b = {s.id: s for s in counted(b)}
    pairs = [(s, by_id_b[s.id]) for s in counted(a) if s.id in by_id_b]
    n = len(pairs)
    identical = sum(x.raw_output.strip() == y.raw_output.strip() for x, y in pairs)
    same_sql = sum(x.cleaned_sql == y.cleaned_sql for x, y in pairs)

    def acc(items: list[ExampleScore]) -> float | None:
        vals = [(s.exec_match if s.exec_match is not None else s.ast_equal) for s in items]
        return _rate(vals)

    acc_a, acc_b = acc([x for x, _ in pairs]), acc([y for _, y in pairs])
    diff = (acc_a - acc_b) if acc_a is not None and acc_b is not None else None
    identical_share = identical / n if n else None
    disagreement = 1.0 - identical_share if identical_share is not None else None
    reasons = []
    if disagreement is not None and disagreement > max_disagreement:
        reasons.append(f"{disagreement:.1%} of outputs differ (threshold {max_disagreement:.1%})")
    if diff is not None and abs(diff) > max_accuracy_diff:
        reasons.append(f"accuracy differs by {diff:+.1%} (threshold {max_accuracy_diff:.1%})")
    return {
        "a": a_name, "b": b_name, "n": n,
        "identical_outputs": identical_share,
        "identical_sql": same_sql / n if n else None,
        "disagreement": disagreement,
        "accuracy_a": acc_a, "accuracy_b": acc_b, "accuracy_diff": diff,
        "flagged": bool(reasons), "reasons": reasons,
        "differing_ids": [x.id for x, y in pairs if x.raw_output.strip() != y.raw_output.strip()][:50],
    }
