"""``sqltune pipeline``, ``sqltune gate``, ``sqltune promote``: the closed loop from the command line.

  sqltune pipeline --config jobs/configs/pipeline-tiny.yaml [key=value ...]   train -> ... -> promote
  sqltune gate --report s3://sqltune/eval/tiny [--config pipeline.yaml] [gate.*=... promote.*=...]
  sqltune promote --model-uri s3://sqltune/runs/tiny/merged --target kubernetes --dry-run

Exit codes: 0 passed / promoted, 1 the gate refused the model or promotion failed (serving unchanged),
2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqltune.config import load_config
from sqltune.errors import ConfigError
from sqltune.pipeline.config import PipelineConfig, PromoteConfig
from sqltune.pipeline.gate import GateFailed, read_report
from sqltune.pipeline.promote import promote


def register_pipeline(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="pipeline config (jobs/configs/pipeline-tiny.yaml)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="PipelineConfig overrides")
    parser.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from sqltune.pipeline.run import main

    argv = (["--config", str(args.config)] if args.config else []) + list(args.overrides)
    return main(argv, prog="sqltune pipeline")


def register_gate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", required=True, help="a published evaluation: <output_uri>/<eval_name>")
    parser.add_argument(
        "--config", type=Path, default=None, help="pipeline config whose gate/promote sections apply"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="gate.*= and promote.*= overrides")
    parser.set_defaults(func=cmd_gate)


def cmd_gate(args: argparse.Namespace) -> int:
    from sqltune.pipeline.run import gate_and_promote

    cfg = load_config(PipelineConfig, args.config, list(args.overrides))
    report = read_report(args.report)
    try:
        gate_and_promote(report, args.report.rstrip("/"), cfg)
    except GateFailed as exc:
        print(f"sqltune: {exc}", file=sys.stderr)
        return 1
    return 0


def register_promote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-uri", required=True, help="the model to serve, e.g. s3://sqltune/runs/tiny/merged"
    )
    parser.add_argument(
        "--target",
        choices=["kubernetes", "local"],
        required=True,
        help="kubernetes: patch the RayService; local: serve deploy to a Ray cluster",
    )
    parser.add_argument(
        "--rayservice", default="sqltune", help="kubernetes: RayService name (default: %(default)s)"
    )
    parser.add_argument(
        "--namespace", "-n", default="sqltune", help="kubernetes: namespace (default: %(default)s)"
    )
    parser.add_argument("--context", default=None, help="kubernetes: kubeconfig context")
    parser.add_argument("--app", default="sqltune", help="Serve application (default: %(default)s)")
    parser.add_argument("--address", default="", help="local: Ray dashboard address (http://127.0.0.1:8265)")
    parser.add_argument(
        "--from",
        dest="from_file",
        default=None,
        help="kubernetes --dry-run: read the RayService from this rendered manifest, not the cluster",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the patch / Serve config; change nothing"
    )
    parser.set_defaults(func=cmd_promote)


def cmd_promote(args: argparse.Namespace) -> int:
    if args.from_file and not args.dry_run:
        raise ConfigError("--from reads the RayService from a file: add --dry-run (a file cannot be patched)")
    cfg = PromoteConfig(
        target=args.target,
        rayservice=args.rayservice,
        namespace=args.namespace,
        context=args.context,
        app=args.app,
        address=args.address,
        dry_run=args.dry_run,
    )
    done = promote(args.model_uri, cfg, from_file=args.from_file)
    if done is not None:
        print(done.summary(), file=sys.stderr)
    return 0
