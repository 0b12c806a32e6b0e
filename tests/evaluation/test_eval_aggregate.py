"""Aggregates checked against hand-computed values (fixtures/aggregate_rows.yaml), CI and agreement."""

from __future__ import annotations

import pytest
import yaml

from sqltune.evaluation.aggregate import agreement, bootstrap_ci, by_category, percentile, summarize
from sqltune.evaluation.metrics import ExampleScore

from eval_helpers import FIXTURES

DATA = yaml.safe_load((FIXTURES / "aggregate_rows.yaml").read_text())


def _score(variant: str = "v", **row) -> ExampleScore:
    base = dict(variant=variant, id="x", category=None, difficulty=None, dialect="sqlite", question="q", gold_sql="g",
                raw_output="", cleaned_sql="", cleaned=False, parseable=False, exact=False, ast_equal=False,
                exec_match=None, gold_failed=False)
    base.update(row)
    return ExampleScore(**base)


def _check(got: dict, want: dict, where: str) -> None:
    for key, value in want.items():
        if isinstance(value, dict):
            assert got[key] == value, f"{where}.{key}"
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=1e-9), f"{where}.{key}: {got[key]} != {value}"
        else:
            assert got[key] == value, f"{where}.{key}: {got[key]} != {value}"


def test_per_variant_and_per_category_aggregates_match_hand_computed():
    rows = [_score(**r) for r in DATA["rows"]]
    overall = summarize(rows, wall_s=DATA["wall_s"])
    _check(overall, DATA["expected"]["overall"], "overall")
    assert overall["exec_ci_low"] <= overall["exec_accuracy"] <= overall["exec_ci_high"]
    cats = by_category(rows)
    assert set(cats) == set(DATA["expected"]["by_category"])
    for cat, want in DATA["expected"]["by_category"].items():
        _check(cats[cat], want, cat)


def test_bootstrap_ci_is_seeded_and_sane():
    values = [1.0] * 200 + [0.0] * 200
    a = bootstrap_ci(values, samples=2000, seed=7)
    assert a == bootstrap_ci(values, samples=2000, seed=7)  # reproducible
    assert a != bootstrap_ci(values, samples=2000, seed=8)
    lo, hi = a
    # normal approximation: 0.5 +- 1.96 * sqrt(0.25 / 400) = 0.5 +- 0.049
    assert 0.44 < lo < 0.47 and 0.53 < hi < 0.56
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    assert bootstrap_ci([]) == (None, None)


def test_percentile_linear():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([0.1, 0.2, 0.3, 0.4, 0.5], 95) == pytest.approx(0.48)
    assert percentile([], 50) is None


def test_agreement_identical_share_and_accuracy_diff():
    a = [_score("adapter", id=f"e{i}", raw_output=o, exec_match=m) for i, (o, m) in
         enumerate([("SELECT 1", True), ("SELECT 2", True), ("SELECT 3", False), (" SELECT 4 ", True)])]
    b = [_score("merged", id=f"e{i}", raw_output=o, exec_match=m) for i, (o, m) in
         enumerate([("SELECT 1", True), ("SELECT 2", True), ("SELECT 9", True), ("SELECT 4", True)])]
    b.append(_score("merged", id="gold-broken", gold_failed=True, raw_output="x"))
    r = agreement("adapter", a, "merged", b, max_disagreement=0.05, max_accuracy_diff=0.02)
    assert r["n"] == 4
    assert r["identical_outputs"] == 0.75  # whitespace around an output does not count
    assert r["accuracy_a"] == 0.75 and r["accuracy_b"] == 1.0 and r["accuracy_diff"] == pytest.approx(-0.25)
    assert r["flagged"] and len(r["reasons"]) == 2 and r["differing_ids"] == ["e2"]
    same = agreement("adapter", a, "adapter2", a, max_disagreement=0.05, max_accuracy_diff=0.02)
    assert same["identical_outputs"] == 1.0 and same["accuracy_diff"] == 0.0 and not same["flagged"]


def test_repair_summary_counts_rounds_repairs_and_passes():
    """repaired: the first answer failed the checks and a later round passed them; failed outputs count as 0 rounds."""
    from sqltune.evaluation.aggregate import repair_summary
    from sqltune.evaluation.variants import Output, failed_output

    outputs = [Output("a", 1.0, repair_rounds=0, repair_passed=True),    # passed at once
               Output("b", 1.0, repair_rounds=1, repair_passed=True),    # repaired in one round
               Output("c", 1.0, repair_rounds=2, repair_passed=True),    # repaired in two
               Output("d", 1.0, repair_rounds=2, repair_passed=False),   # rounds spent, still failing
               failed_output("generation_error", "boom"),                # no output at all
               None]
    assert repair_summary(outputs, 2) == {"max_rounds": 2, "mean_rounds_used": 1.0, "examples_with_repair_rounds": 3,
                                          "repaired": 2, "passed_checks": 3}
    assert repair_summary([], 2)["mean_rounds_used"] == 0
