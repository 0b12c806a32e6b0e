"""report.md's table format and report.json's redaction, from a hand-made report."""

from __future__ import annotations

from sqltune.evaluation.report import category_table, comparison_table, redact, render_markdown


def _report() -> dict:
    agg = {"n": 10, "parseable": 0.9, "exact": 0.25, "exec_accuracy": 0.4, "exec_ci_low": 0.2, "exec_ci_high": 0.6,
           "latency_p50_s": 0.12, "latency_p95_s": 1.5, "latency_mean_s": 0.3, "ast_equal": 0.3, "hybrid": 0.5,
           "rouge_l": 0.6, "hallucination": 0.1, "read_only_violation": 0.0, "cleaned": 0.1, "tokens_per_s": 12.5,
           "error_categories": {"ok": 4, "wrong_result": 6}}
    return {
        "eval_name": "t", "created": "2026-01-01T00:00:00+00:00",
        "config": {"metrics": {"confidence": 0.95}, "generation": {"batch_size": 16}},
        "dataset": {"source": "embedded", "format": "embedded", "split": "test", "n": 11, "n_total": 100,
                    "hash": "ab" * 32, "n_gold_failed": 1, "categories": {"join": 6, "window": 4}, "databases": {}},
        "variants": {
            "base": {"status": "ok", "aggregate": agg,
                     "by_category": {"join": {"exec_accuracy": 0.5}, "window": {"exec_accuracy": 0.25}}},
            "down": {"status": "failed", "error": "endpoint unreachable"},
        },
        "categories": ["join", "window"], "agreement": [], "failures": [{"variant": "down", "error": "unreachable"}],
        "gold_failures": [{"id": "x1", "category": "join", "error": "runtime: no such column"}],
        "files": {"plots": ["accuracy_vs_latency.png"]},
    }


def test_comparison_table_format():
    assert comparison_table(_report()).splitlines() == [
        "| Model | Parseable | Exact | Exec (95% CI) | p50 | p95 |",
        "|---|---:|---:|---:|---:|---:|",
        "| base | 90.0% | 25.0% | 40.0% (20.0-60.0) | 120 ms | 1.50 s |",
        "| down | failed | | | | |",
    ]


def test_category_table_and_markdown_sections():
    assert category_table(_report()).splitlines()[2:] == ["| join | 6 | 50.0% |", "| window | 4 | 25.0% |"]
    md = render_markdown(_report())
    for part in ("# Evaluation: t", "## Failed variants", "- **down**: unreachable", "## Execution accuracy per category",
                 "## Gold queries that failed", "`x1`", "![accuracy_vs_latency.png](accuracy_vs_latency.png)"):
        assert part in md, part


def test_redact_dsn_passwords():
    cfg = {"dataset": {"db": "postgresql://ro:s3cret@db.internal:5432/wh"}, "x": ["postgres://a:b@h/d", 3]}
    out = redact(cfg)
    assert out == {"dataset": {"db": "postgresql://ro:***@db.internal:5432/wh"}, "x": ["postgres://a:***@h/d", 3]}


def test_contention_note():
    r = _report()
    r["variants"]["base"]["info"] = {"device": "cpu"}
    r["variants"]["other"] = {"status": "ok", "info": {"device": "cpu"}, "aggregate": r["variants"]["base"]["aggregate"],
                              "by_category": {}}
    r["config"]["ray"] = {"max_parallel": None}
    assert "include contention" in render_markdown(r)
    r["config"]["ray"] = {"max_parallel": 1}
    assert "Variants ran one at a time." in render_markdown(r)
