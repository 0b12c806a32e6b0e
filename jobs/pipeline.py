"""Pipeline entry point: train -> export -> evaluate -> gate -> promote, as one job.

    ray job submit --working-dir . -- python -m jobs.pipeline --config jobs/configs/pipeline-tiny.yaml [key=value ...]
    sqltune pipeline --config jobs/configs/pipeline-tiny.yaml gate.min_exec_accuracy=0.5

The chained presets are named in the pipeline config, relative to its folder. Exit status: 0 when the
gate passed (and the model was promoted, if promote.target is set); 1 when the gate refused the model
(gate.json beside the report lists the reasons; serving is unchanged); 2 on a configuration, data or
storage error. Thin on purpose: the work is in :mod:`sqltune.pipeline.run`.
"""

from __future__ import annotations

import sys

from sqltune.log import setup_logging


def main(argv: list[str] | None = None) -> int:
    from sqltune.pipeline.run import main as pipeline_main

    setup_logging()
    return pipeline_main(argv, prog="python -m jobs.pipeline")


if __name__ == "__main__":
    sys.exit(main())
