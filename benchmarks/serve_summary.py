"""Means over repeated ``bench_serve.py`` runs of the Ray Serve HTTP path, grouped by one workload setting.

    python benchmarks/serve_summary.py --by ray_transport RUN.json [RUN.json ...] --out SUMMARY.json

For each value of ``workload[--by]`` it prints and writes the mean (and each run's value) of the headline
HTTP result's single-request p50, tokens/s per concurrency level, and the per-request Server-Timing split
(replica, ingress hop, outside the app). Runs on a shared machine vary: compare settings over several
runs, interleaved, not one run each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HEADLINE = "sqltune via Ray Serve HTTP"


def headline(report: dict) -> dict:
    """The first HTTP result of a run (its headline: single-request latency and every level)."""
    for name, result in report.get("results", {}).items():
        if name.startswith(HEADLINE) and "[" not in name and "throughput" in result:
            return result
    raise SystemExit(f"no Ray Serve HTTP result in run {report.get('command', '?')!r}")


def figures(result: dict) -> dict[str, float]:
    """The numbers compared between runs, flat: p50, and per level tokens/s and the timing split."""
    out = {"p50_single_ms": result["latency_s"]["p50"] * 1000} if result.get("latency_s") else {}
    for level, rec in result["throughput"].items():
        out[f"tokens_per_s_at_{level}"] = rec["tokens_per_s"]
        for part, ms in (rec.get("server_timing_mean_ms") or {}).items():
            out[f"{part}_at_{level}"] = ms
    return out


def summarize(paths: list[Path], by: str) -> dict:
    groups: dict[str, dict[str, list[float]]] = {}
    files: dict[str, list[str]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        key = str(report.get("workload", {}).get(by))
        files.setdefault(key, []).append(path.name)
        for name, value in figures(headline(report)).items():
            groups.setdefault(key, {}).setdefault(name, []).append(value)
    return {
        "by": by,
        "groups": {
            key: {
                "runs": files[key],
                "mean": {name: round(statistics.fmean(vs), 2) for name, vs in figs.items()},
                "each": {name: [round(v, 2) for v in vs] for name, vs in figs.items()},
            }
            for key, figs in groups.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="bench_serve.py JSON files")
    ap.add_argument("--by", required=True, help="the workload field that tells the runs apart, e.g. ray_transport")
    ap.add_argument("--out", type=Path, default=None, help="write the summary JSON here")
    opts = ap.parse_args(argv)
    summary = summarize(opts.runs, opts.by)
    for key, group in summary["groups"].items():
        print(f"{opts.by}={key} ({len(group['runs'])} runs)")
        for name, mean in group["mean"].items():
            each = ", ".join(f"{v:,.2f}" for v in group["each"][name])
            print(f"  {name:<32} {mean:>10,.2f}   ({each})")
    if opts.out:
        opts.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
