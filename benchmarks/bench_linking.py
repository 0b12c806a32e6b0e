"""Table recall of schema linking (sqltune.agent.linking) on Spider dev and on the embedded set.

For every question, the tables its gold query reads are compared with the tables linking keeps:

- recall: share of gold tables kept (micro: over all gold tables), and the share of questions whose
  gold tables are all kept ("all kept");
- kept: mean share of the schema's tables kept (lower is a smaller prompt);
- under a token budget: the same, with linking forced to fit a share of each schema's own size
  (``--budget-shares``, approximate token count): how well the ranking orders tables when not all fit.

Spider has no database files here, so it is lexical/schema matching only; the embedded set also gets
value matching from its SQLite warehouse. No model is involved; CPU seconds.

    python benchmarks/bench_linking.py --spider /path/to/spider --out benchmarks/results/linking.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))


def _score(rows: list[tuple[list[str], list[str], int]]) -> dict[str, float]:
    gold_total = sum(len(g) for g, _, _ in rows)
    hit = sum(len(set(g) & set(k)) for g, k, _ in rows)
    all_kept = sum(1 for g, k, _ in rows if set(g) <= set(k))
    kept_share = sum(len(k) / n for _, k, n in rows if n) / max(1, len(rows))
    return {
        "questions": len(rows),
        "table_recall": round(hit / gold_total, 4) if gold_total else 0.0,
        "all_gold_kept": round(all_kept / len(rows), 4) if rows else 0.0,
        "mean_kept_share": round(kept_share, 4),
        "mean_tables": round(sum(n for _, _, n in rows) / max(1, len(rows)), 2),
    }


def run_set(items, shares: list[float]) -> dict:
    """items: (question, ddl, gold_tables, values or None)."""
    import math

    from sqltune.agent.linking import link_schema
    from sqltune.data.schema import approx_token_count

    out = {}
    for share in [None, *shares]:
        rows = []
        t0 = time.perf_counter()
        for question, ddl, gold, values in items:
            budget = None if share is None else math.ceil(share * approx_token_count(ddl))
            res = link_schema(question, ddl, values=values, max_tokens=budget, reason="budget")
            rows.append((gold, [t.lower() for t in res.tables], res.total_tables))
        stats = _score(rows)
        stats["ms_per_question"] = round((time.perf_counter() - t0) * 1000 / max(1, len(rows)), 3)
        out["no_budget" if share is None else f"budget_{int(share * 100)}pct"] = stats
    return out


def spider_items(root: Path) -> list:
    from sqltune.agent.linking import gold_tables
    from sqltune.data.schema import ddl_from_tables_json

    tables = {e["db_id"]: ddl_from_tables_json(e) for e in json.loads((root / "tables.json").read_text())}
    items = []
    for ex in json.loads((root / "dev.json").read_text()):
        gold = gold_tables(ex["query"], "sqlite")
        if gold:
            items.append((ex["question"], tables[ex["db_id"]], gold, None))
    return items


def embedded_items(work: Path) -> list:
    from sqltune.agent.linking import sample_values
    from sqltune.data.embedded import build_embedded
    from sqltune.data.schema import ddl_from_database

    ds = build_embedded(work, seed=0)
    ddl = ddl_from_database(ds.sqlite_path, style="compact")
    values = sample_values(str(ds.sqlite_path))
    items = []
    for ex in ds.examples:
        gold = sorted(t.lower() for t in ex.extra.get("tables", []))
        if gold:
            items.append((ex.question, ddl, gold, values))
    return items, [(q, d, g, None) for q, d, g, _ in items]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spider", type=Path, help="folder with Spider's dev.json and tables.json")
    ap.add_argument("--budget-shares", type=float, nargs="*", default=[0.5])
    ap.add_argument("--work", type=Path, default=Path("/tmp/sqltune-bench-linking"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    result: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "command": "python benchmarks/bench_linking.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sets": {},
    }
    if args.spider:
        result["sets"]["spider_dev"] = run_set(spider_items(args.spider), args.budget_shares)
    with_values, without_values = embedded_items(args.work)
    result["sets"]["embedded"] = run_set(with_values, args.budget_shares)
    result["sets"]["embedded_no_values"] = run_set(without_values, args.budget_shares)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
