"""The standard tables beside the per-category one: execution accuracy per hardness and per database.

Hardness is the example's ``difficulty``: Spider's official levels (easy, medium, hard, extra; computed by
the loader as Spider's evaluator does) or BIRD's (simple, moderate, challenging); ``unknown`` when the
dataset has none. The database is ``extra.db_id`` (Spider, BIRD), else the database file's name, else the
DSN's database; examples without one are grouped as ``(none)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqltune.evaluation.aggregate import summarize
from sqltune.evaluation.metrics import ExampleScore

__all__ = ["GROUPS", "database_of", "group_aggregates", "group_counts", "group_table", "hardness_of",
           "plot_group"]

HARDNESS_ORDER = ("easy", "medium", "hard", "extra", "simple", "moderate", "challenging")
GROUPS = {"hardness": "by_hardness", "database": "by_database"}
"""Group name -> the key of a variant's entry in report.json holding that group's aggregates."""


def hardness_of(ex: Any) -> str:
    return str(ex.difficulty).lower() if ex.difficulty else "unknown"


def database_of(ex: Any) -> str:
    db_id = (ex.extra or {}).get("db_id")
    if db_id:
        return str(db_id)
    if not ex.db:
        return "(none)"
    if "://" in ex.db:
        return urlparse(ex.db).path.lstrip("/") or "(server)"
    return Path(ex.db).stem or os.path.basename(ex.db)


_KEY = {"hardness": hardness_of, "database": database_of}


def _ordered(names: set[str], group: str) -> list[str]:
    if group == "hardness":
        known = [h for h in HARDNESS_ORDER if h in names]
        return known + sorted(names - set(known))
    return sorted(names)


def group_aggregates(rows: Sequence[ExampleScore], examples: Sequence[Any]) -> dict[str, Any]:
    """``{"by_hardness": {level: CAT}, "by_database": {db: CAT}}`` for one variant (rows align with examples)."""
    out: dict[str, Any] = {}
    for group, key in GROUPS.items():
        buckets: dict[str, list[ExampleScore]] = {}
        for ex, row in zip(examples, rows):
            buckets.setdefault(_KEY[group](ex), []).append(row)
        out[key] = {name: summarize(buckets[name], with_ci=False) for name in _ordered(set(buckets), group)}
    return out


def group_counts(examples: Sequence[Any], gold_failed_ids: set[str], variants: dict[str, Any]) -> dict[str, Any]:
    """Top-level report fields: each group's names and counted examples, and exec accuracy per variant."""
    out: dict[str, Any] = {}
    for group, key in GROUPS.items():
        counts: dict[str, int] = {}
        for ex in examples:
            name = _KEY[group](ex)
            counts.setdefault(name, 0)
            if ex.id not in gold_failed_ids:
                counts[name] += 1
        names = _ordered(set(counts), group)
        out[f"{group}_counts"] = {name: counts[name] for name in names}
        out[f"per_{group}"] = {
            name: {v: (e[key].get(name, {}).get("exec_accuracy") if key in e else None)
                   for v, e in variants.items()} for name in names}
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def group_table(report: dict[str, Any], group: str) -> str:
    """Execution accuracy per ``group`` (hardness or database; rows) and scored variant (columns), with n."""
    key = GROUPS[group]
    names = [n for n, v in report["variants"].items() if key in v]
    if not names:
        return "_no variant was scored_"
    title = group.capitalize()
    lines = [f"| {title} | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for name, n in report[f"{group}_counts"].items():
        cells = []
        for v in names:
            agg = report["variants"][v][key].get(name)
            acc = None if agg is None else (agg["exec_accuracy"] if agg["exec_accuracy"] is not None
                                            else agg["ast_equal"])
            cells.append(_pct(acc))
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_group(report: dict[str, Any], group: str, path: Path) -> bool:
    """A grouped bar chart of execution accuracy per ``group`` and variant; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = GROUPS[group]
    ok = {n: v for n, v in report["variants"].items() if key in v}
    names = list(report[f"{group}_counts"])
    if not ok or not names:
        return False
    fig, ax = plt.subplots(figsize=(min(18.0, max(6.4, 0.3 * len(names) * max(1, len(ok)) + 2.5)), 4.6))
    width = 0.8 / len(ok)
    for i, (variant, v) in enumerate(ok.items()):
        vals = []
        for name in names:
            agg = v[key].get(name)
            acc = None if agg is None else (agg["exec_accuracy"] if agg["exec_accuracy"] is not None
                                            else agg["ast_equal"])
            vals.append(100 * (acc or 0.0))
        ax.bar([j + i * width for j in range(len(names))], vals, width=width, label=variant)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels([f"{n}\n(n={report[f'{group}_counts'][n]})" if group == "hardness" else n for n in names],
                       rotation=0 if group == "hardness" else 45, ha="center" if group == "hardness" else "right",
                       fontsize=8)
    ax.set_ylabel("execution accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"execution accuracy per {group}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
