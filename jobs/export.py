"""Export entry point: merge an adapter and publish merged, int8, NF4 and adapter artifacts.

    ray job submit --working-dir . -- python -m jobs.export --config jobs/configs/export-tiny.yaml [key=value ...]
    python -m jobs.export --config jobs/configs/export-tiny.yaml adapter=s3://sqltune/runs/tiny/adapter

Thin on purpose: the typed config is parsed here, the work is in :mod:`sqltune.export`.
"""

from __future__ import annotations

import sys

from sqltune.config import parse_cli
from sqltune.errors import SqltuneError
from sqltune.log import setup_logging


def main(argv: list[str] | None = None) -> int:
    from sqltune.export import ExportConfig
    from sqltune.export.run import run, setup

    setup_logging()
    try:
        cfg = parse_cli(ExportConfig, argv, prog="python -m jobs.export")
        result = run(setup(cfg))
    except SqltuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
