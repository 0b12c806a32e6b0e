"""The evaluation report: report.json (schema below), report.md, PNG plots and predictions.jsonl.

report.json (``schema_version`` 1)::

    {
      "schema_version": 1,
      "eval_name": str, "created": ISO-8601 UTC, "sqltune_version": str, "uri": where it was published,
      "config": the resolved EvalConfig (DSN passwords redacted),
      "dataset": {"source", "format", "split", "n", "n_total", "hash", "dialects": {dialect: n},
                  "categories": {category: n}, "n_gold_failed",
                  "gold_flagged": {"n", "examples": [{"id", "parseable", "read_only", "unknown_tables",
                                   "unknown_columns"}]}  (gold queries the static checks flag; should be 0),
                  "databases": {name: {"engine", "sha256_before", "sha256_after", "unchanged"}},
                  "excluded_missing_databases": {"n_examples", "databases": [{"database", "reason", "n_examples"}]}},
      "scoring": {"statements": "all"|"first", "max_failed_fraction", "isolation", "sandbox_worker_kills"},
      "variants": {name: {"kind", "model", "url", "prompt_mode", "status": "ok"|"failed", "error",
                          "failure": null|"could_not_start"|"aborted"|"too_many_failed_examples",
                          "info": {load_s, device, artifact_kind, peak_memory_mb, ...}, "elapsed_s",
                          "aggregate": AGG, "by_category": {category: CAT}, "by_hardness": {level: CAT},
                          "by_database": {db: CAT}}},
      "categories": [category, ...],
      "per_category": {category: {variant: exec accuracy or null}},
      "hardness_counts": {level: n}, "per_hardness": {level: {variant: exec accuracy or null}},
      "database_counts": {db: n}, "per_database": {db: {variant: exec accuracy or null}},
      "tracking": null | {"uri", "experiment_id", "run_id", "training_run"},
      "agreement": [{"a", "b", "n", "identical_outputs", "identical_sql", "disagreement", "accuracy_a",
                     "accuracy_b", "accuracy_diff", "flagged", "reasons", "differing_ids"}],
      "gold_failures": [{"id", "category", "gold_sql", "error"}],
      "failures": [{"variant", "error"}],
      "files": {"report_md", "predictions", "plots": [...]}
    }

AGG (rates are shares in [0, 1] over ``n`` scored examples; exec over ``n_exec``; null when undefined):
``n, n_exec, n_gold_failed, n_failed, parseable (engine where a database exists), parseable_sqlglot,
parseable_engine_checked, multiple_statements, exact, ast_equal, exec_accuracy, exec_ci_low, exec_ci_high,
confidence, hybrid, rouge_l, cleaned, hallucination, unknown_table, unknown_column, read_only_violation,
latency_mean_s, latency_p50_s, latency_p95_s, output_tokens_total, output_tokens_mean, generation_wall_s,
tokens_per_s, peak_memory_mb, error_categories {ok, wrong_result, syntax, ...: count}``. CAT is AGG without the CI,
latency and token fields.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from sqltune.evaluation.breakdown import group_table, plot_group

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PLOTS = ("accuracy_vs_latency.png", "category_accuracy.png", "error_categories.png")
"""Always written; hardness_accuracy.png and database_accuracy.png follow when the report has those groups."""
OUTCOME_COLORS = {
    "ok": "#2ca02c", "wrong_result": "#ff7f0e", "syntax": "#d62728", "unknown_identifier": "#9467bd",
    "not_read_only": "#000000", "runtime": "#8c564b", "timeout": "#e377c2", "too_many_rows": "#bcbd22",
    "empty_output": "#7f7f7f", "multiple_statements": "#17becf", "http_error": "#aec7e8", "http_timeout": "#ffbb78",
    "generation_error": "#c5b0d5",
}
_DSN_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]+):[^@\s]+@")


def redact(value: Any) -> Any:
    """Remove passwords from DSNs anywhere in a JSON-like value."""
    if isinstance(value, str):
        return _DSN_PASSWORD.sub(r"\1:***@", value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def dataset_hash(examples: list[Any]) -> str:
    """sha256 over the scored examples' identity and content (id, question, schema, gold SQL, dialect,
    evidence, category), in order; database locations are left out (they differ between machines)."""
    h = hashlib.sha256()
    for ex in examples:
        row = [ex.id, ex.question, ex.schema, ex.sql, ex.dialect, ex.evidence, ex.category]
        h.update(json.dumps(row, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _secs(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def _exec_cell(agg: dict[str, Any]) -> str:
    acc = agg.get("exec_accuracy")
    if acc is None:
        return "n/a"
    lo, hi = agg.get("exec_ci_low"), agg.get("exec_ci_high")
    if lo is None or hi is None:
        return _pct(acc)
    return f"{_pct(acc)} ({100 * lo:.1f}-{100 * hi:.1f})"


def comparison_table(report: dict[str, Any]) -> str:
    """The headline table: ``Model | Parseable | Exact | Exec (95% CI) | p50 | p95``."""
    conf = report["config"]["metrics"]["confidence"]
    lines = [
        f"| Model | Parseable | Exact | Exec ({conf:.0%} CI) | p50 | p95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, v in report["variants"].items():
        if v["status"] != "ok":
            lines.append(f"| {name} | failed | | | | |")
            continue
        a = v["aggregate"]
        lines.append(
            f"| {name} | {_pct(a['parseable'])} | {_pct(a['exact'])} | {_exec_cell(a)} | "
            f"{_secs(a['latency_p50_s'])} | {_secs(a['latency_p95_s'])} |"
        )
    return "\n".join(lines)


def category_table(report: dict[str, Any]) -> str:
    """Execution accuracy per category (rows) and variant (columns), with the category's n."""
    names = [n for n, v in report["variants"].items() if v["status"] == "ok"]
    if not names:
        return "_no variant finished_"
    lines = ["| Category | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for cat in report["categories"]:
        n = report["dataset"]["categories"].get(cat, 0)
        cells = []
        for name in names:
            c = report["variants"][name]["by_category"].get(cat)
            cells.append(_pct(c["exec_accuracy"] if c else None))
        lines.append(f"| {cat} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(report: dict[str, Any]) -> str:
    lines = [
        "| Model | Parseable (sqlglot) | AST equiv. | Hybrid | ROUGE-L | Hallucination | Read-only viol. | Cleaned | Failed | Latency mean "
        "| Tokens/s | Peak memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in report["variants"].items():
        if "aggregate" not in v:
            continue
        a = v["aggregate"]
        tps = "n/a" if a.get("tokens_per_s") is None else f"{a['tokens_per_s']:.1f}"
        mem = "n/a" if a.get("peak_memory_mb") is None else f"{a['peak_memory_mb']:.0f} MiB"
        lines.append(
            f"| {name} | {_pct(a.get('parseable_sqlglot'))} | {_pct(a['ast_equal'])} | {a['hybrid']:.3f} | {a['rouge_l']:.3f} | {_pct(a['hallucination'])} | "
            f"{_pct(a['read_only_violation'])} | {_pct(a['cleaned'])} | {a.get('n_failed', 0)} | "
            f"{_secs(a['latency_mean_s'])} | {tps} | {mem} |"
        )
    return "\n".join(lines)


def error_table(report: dict[str, Any]) -> str:
    names = [n for n, v in report["variants"].items() if v["status"] == "ok"]
    cats: list[str] = []
    for n in names:
        for c in report["variants"][n]["aggregate"]["error_categories"]:
            if c not in cats:
                cats.append(c)
    if not names:
        return ""
    lines = ["| Outcome | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(str(report["variants"][n]["aggregate"]["error_categories"].get(c, 0))
                                             for n in names) + " |")
    return "\n".join(lines)


def _parallel_note(report: dict[str, Any]) -> str:
    ray_cfg = report["config"].get("ray", {})
    n = len(report["variants"])
    par = ray_cfg.get("max_parallel") or n
    on_cpu = sum(1 for v in report["variants"].values() if (v.get("info") or {}).get("device") == "cpu")
    if par > 1 and on_cpu > 1:
        return (f"Variants ran {min(par, n)} at a time (one Ray actor each) and {on_cpu} of them on CPUs: where they "
                "shared cores, latencies include contention between them (ray.max_parallel=1 gives uncontended "
                "timings).")
    return "Variants ran one at a time." if par == 1 and n > 1 else ""


FAILURE_TEXT = {
    "could_not_start": "could not start",
    "aborted": "stopped before the end",
    "too_many_failed_examples": "too many failed examples; its scores are below and in predictions.jsonl",
}


def _headline_notes(report: dict[str, Any]) -> list[str]:
    """What changed what is counted: databases left out, the statements mode, failed examples."""
    ds = report["dataset"]
    notes = []
    excluded = ds.get("excluded_missing_databases") or {}
    if excluded.get("n_examples"):
        dbs = ", ".join(f"`{d['database']}` ({d['n_examples']})" for d in excluded["databases"][:20])
        notes.append(f"**{excluded['n_examples']} examples excluded: their databases are missing or unreadable** "
                     f"(dataset.exclude_missing_databases=true): {dbs}. Every rate below is over the "
                     f"{ds['n']} examples left.")
    scoring = report.get("scoring") or {}
    if scoring.get("statements") == "first":
        notes.append("**Only the first statement of each output is scored** (metrics.statements=first); the "
                     "official evaluators score output holding more than one statement as wrong.")
    for name, v in report["variants"].items():
        n_failed = (v.get("aggregate") or {}).get("n_failed")
        if n_failed:
            notes.append(f"Variant {name}: {n_failed} examples got no output (HTTP error, timeout or generation "
                         "error) and count as wrong (see Outcomes).")
    return [" ".join(notes), ""] if notes else []


def render_markdown(report: dict[str, Any]) -> str:
    ds = report["dataset"]
    out = [
        f"# Evaluation: {report['eval_name']}",
        "",
        f"Dataset `{ds['source']}` ({ds['format']}), split `{ds['split']}`: {ds['n']} examples scored "
        f"(of {ds['n_total']}), dataset hash `{ds['hash'][:16]}`. "
        f"Gold queries that failed: {ds['n_gold_failed']} (reported below, not counted against any model). "
        f"Created {report['created']}.",
        "",
        *_headline_notes(report),
        comparison_table(report),
        "",
        "Parseable: the engine's compiler accepts the cleaned output (SQLite/DuckDB EXPLAIN, PostgreSQL PREPARE) "
        "where the example has a database, else it parses in the dataset's dialect (sqlglot; its figure for every "
        "example is under More metrics). Exact: identical after normalization. "
        "Exec: same result as the gold query on the example's database, run in the read-only sandbox, with a "
        f"seeded bootstrap {report['config']['metrics']['confidence']:.0%} interval. p50/p95: per-example latency "
        f"(local variants: the wall time of the batch of {report['config']['generation']['batch_size']} the example "
        "was decoded in; http: the request). "
        + _parallel_note(report),
        "",
    ]
    flagged = (ds.get("gold_flagged") or {}).get("n", 0)
    if flagged:
        out += [f"**Note:** the static checks flag {flagged} gold queries themselves (unparseable, not read-only, or "
                "naming tables/columns missing from the example's schema); hallucination and read-only rates are "
                "approximate for this dataset (ids in report.json, dataset.gold_flagged).", ""]
    if report["failures"]:
        out += ["## Failed variants", ""]
        out += [f"- **{f['variant']}**" + (f" ({FAILURE_TEXT[f['failure']]})" if f.get("failure") in FAILURE_TEXT
                                           else "") + f": {f['error']}" for f in report["failures"]]
        out.append("")
    out += ["## Execution accuracy per category", "", category_table(report), ""]
    if "hardness_counts" in report:
        out += ["## Execution accuracy per hardness", "", group_table(report, "hardness"), ""]
        out += ["## Execution accuracy per database", "", group_table(report, "database"), ""]
    out += ["## More metrics", "", detail_table(report), ""]
    out += ["## Outcomes (error categories)", "", error_table(report), ""]
    if report["agreement"]:
        out += ["## Agreement between variants that should be identical", "",
                "| Pair | n | Identical outputs | Accuracy diff | Flagged |", "|---|---:|---:|---:|---|"]
        for a in report["agreement"]:
            diff = "n/a" if a["accuracy_diff"] is None else f"{100 * a['accuracy_diff']:+.1f} pts"
            flag = ("**yes**: " + "; ".join(a["reasons"])) if a["flagged"] else "no"
            out.append(f"| {a['a']} vs {a['b']} | {a['n']} | {_pct(a['identical_outputs'])} | {diff} | {flag} |")
        out.append("")
    if report["gold_failures"]:
        out += ["## Gold queries that failed (excluded from every denominator)", ""]
        for g in report["gold_failures"][:50]:
            out.append(f"- `{g['id']}` ({g['category']}): {g['error']}")
        out.append("")
    dbs = ds.get("databases") or {}
    if dbs:
        out += ["## Databases", ""]
        for name, d in dbs.items():
            if d.get("sha256_before"):
                state = "unchanged" if d["unchanged"] else "**CHANGED**"
                out.append(f"- `{name}` ({d['engine']}): sha256 `{d['sha256_before'][:16]}` before and after: {state}")
            else:
                out.append(f"- `{name}` ({d['engine']}): {d.get('note', '')}")
        out.append("")
    plots = report["files"].get("plots") or []
    if plots:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(out)


def write_plots(report: dict[str, Any], out_dir: Path) -> list[str]:
    """accuracy vs latency, per-category execution accuracy, error categories (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = {n: v for n, v in report["variants"].items() if v["status"] == "ok"}
    if not ok:
        return []
    written = []

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, v in ok.items():
        a = v["aggregate"]
        acc = a["exec_accuracy"] if a["exec_accuracy"] is not None else a["ast_equal"]
        x = a["latency_p50_s"] or 0.0
        yerr = None
        if a.get("exec_ci_low") is not None and a["exec_accuracy"] is not None:
            yerr = [[100 * (acc - a["exec_ci_low"])], [100 * (a["exec_ci_high"] - acc)]]
        ax.errorbar([x], [100 * (acc or 0.0)], yerr=yerr, fmt="o", capsize=4, label=name)
        ax.annotate(name, (x, 100 * (acc or 0.0)), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("p50 latency per example (s)")
    ax.set_ylabel("execution accuracy (%)")
    ax.set_ylim(-5, 105)
    ax.set_title(f"{report['eval_name']}: accuracy vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[0], dpi=110)
    plt.close(fig)
    written.append(PLOTS[0])

    cats = report["categories"]
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.4, 0.35 * len(cats) * max(1, len(ok)) + 2.5)), 4.6))
    width = 0.8 / max(1, len(ok))
    for i, (name, v) in enumerate(ok.items()):
        vals = []
        for c in cats:
            cc = v["by_category"].get(c)
            vals.append(100 * (cc["exec_accuracy"] or 0.0) if cc and cc["exec_accuracy"] is not None else 0.0)
        ax.bar([j + i * width for j in range(len(cats))], vals, width=width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cats))])
    ax.set_xticklabels(cats, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("execution accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("execution accuracy per category")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[1], dpi=110)
    plt.close(fig)
    written.append(PLOTS[1])

    outcomes: list[str] = []
    for v in ok.values():
        for c in v["aggregate"]["error_categories"]:
            if c not in outcomes:
                outcomes.append(c)
    fig, ax = plt.subplots(figsize=(6.8, 0.6 * len(ok) + 1.8))
    names = list(ok)
    left = [0.0] * len(names)
    for c in outcomes:
        shares = []
        for n in names:
            a = ok[n]["aggregate"]
            shares.append(100 * a["error_categories"].get(c, 0) / a["n"] if a["n"] else 0.0)
        ax.barh(names, shares, left=left, label=c, color=OUTCOME_COLORS.get(c))
        left = [lft + s for lft, s in zip(left, shares)]
    ax.set_xlabel("share of examples (%)")
    ax.set_xlim(0, 100)
    ax.set_title("outcomes by error category")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[2], dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(PLOTS[2])
    for group in ("hardness", "database"):
        name = f"{group}_accuracy.png"
        if f"{group}_counts" in report and plot_group(report, group, out_dir / name):
            written.append(name)
    return written


def write_report(report: dict[str, Any], predictions: list[dict[str, Any]], out_dir: str | Path, *,
                 plots: bool = True) -> Path:
    """Write report.json, report.md, predictions.jsonl and the plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report["files"] = {"report_md": "report.md", "predictions": "predictions.jsonl", "plots": []}
    if plots:
        try:
            report["files"]["plots"] = write_plots(report, out)
        except ImportError as exc:
            log.warning("matplotlib is missing (%s); the report has no plots: pip install 'sqltune[eval]'", exc)
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for row in predictions:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True, default=str) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
