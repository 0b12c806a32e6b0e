"""Evaluation entry point: score model variants on a dataset split and publish the report.

    ray job submit --working-dir . -- python -m jobs.evaluate --config jobs/configs/eval-tiny.yaml [key=value ...]
    python -m jobs.evaluate --config jobs/configs/eval-tiny.yaml dataset.limit=50

Exit status: 0 when the report was published; 2 for a configuration/data/storage error (message, no
traceback); 3 when the report was published but every variant failed (or any did, with
fail_on_variant_error=true). Thin on purpose: the work is in :mod:`sqltune.evaluation`.
"""

from __future__ import annotations

import sys

from sqltune.config import parse_cli
from sqltune.errors import SqltuneError
from sqltune.log import setup_logging


def main(argv: list[str] | None = None) -> int:
    from sqltune.evaluation import EvalConfig
    from sqltune.evaluation.run import run, setup

    setup_logging()
    try:
        cfg = parse_cli(EvalConfig, argv, prog="python -m jobs.evaluate")
        result = run(setup(cfg))
    except SqltuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    excluded = result.report["dataset"]["excluded_missing_databases"]
    if excluded["n_examples"]:
        print(f"{excluded['n_examples']} examples EXCLUDED: their databases are missing or unreadable "
              f"(dataset.exclude_missing_databases=true): "
              + ", ".join(d["database"] for d in excluded["databases"]))
    print(result.table)
    for name in result.failed:
        v = result.report["variants"][name]
        print(f"variant {name} FAILED ({v.get('failure') or 'failed'}): {v['error']}")
    for pair in result.report["agreement"]:
        if pair["flagged"]:
            print(f"agreement {pair['a']} vs {pair['b']} FLAGGED: {'; '.join(pair['reasons'])}")
    print(f"\nreport published to {result.uri} (report.json, report.md, predictions.jsonl, plots)")
    if result.failed and (result.all_failed or cfg.fail_on_variant_error):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
