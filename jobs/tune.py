"""Hyper-parameter sweep entry point: Ray Tune over training runs; the best config becomes a preset and
its adapter is published.

    ray job submit --working-dir . -- python -m jobs.tune --config jobs/configs/tune-tiny.yaml [key=value ...]
    python -m jobs.tune --config jobs/configs/tune-tiny.yaml [key=value ...]     # a local Ray starts

Thin on purpose: the typed config is parsed here, the work is in :mod:`sqltune.tune.run`.
Exit status: 0 on success, 2 on a configuration/data/storage error or a sweep where no trial completed
(message, no traceback), 1 on anything unexpected.
"""

from __future__ import annotations

import sys

from sqltune.config import parse_cli
from sqltune.errors import SqltuneError
from sqltune.log import setup_logging
from sqltune.tune.config import TuneConfig


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        cfg = parse_cli(TuneConfig, argv, prog="python -m jobs.tune")
        from sqltune.tune.run import run, setup

        result = run(setup(cfg))
    except SqltuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.table)
    print(f"best: {result.best['run_name']} ({cfg.metric} {result.best['metric']:.4f})")
    print(f"results published to {result.results_uri}; best adapter published to {result.adapter_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
