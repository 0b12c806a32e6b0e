"""Training entry point: QLoRA/LoRA/full fine-tuning as a Ray Train job; the adapter is published to S3.

    ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/tiny.yaml [key=value ...]
    python -m jobs.train --config jobs/configs/tiny.yaml [key=value ...]     # a local Ray starts

Thin on purpose: the typed config is parsed here, the work is in :mod:`sqltune.train.run`.
Exit status: 0 on success, 2 on a configuration/data/storage/resource error (message, no traceback),
1 on anything unexpected.
"""

from __future__ import annotations

import sys

from sqltune.config import parse_cli
from sqltune.errors import SqltuneError
from sqltune.log import setup_logging
from sqltune.train.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        cfg = parse_cli(TrainConfig, argv, prog="python -m jobs.train")
        from sqltune.train.run import run, setup

        result = run(setup(cfg))
    except SqltuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"adapter published to {result.adapter_uri}")
    print(result.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
