"""Summarise runs of benchmarks/rl_cpu_evidence.py: ten-step means of the sampled training reward, and the
validation change (first eval -> last eval) of each run and its mean over the runs given.

    python benchmarks/rl_cpu_summary.py benchmarks/results/rl-cpu-tiny-grpo-sft300-scale-none*.json \
        --json benchmarks/results/rl-cpu-tiny-grpo-sft300-scale-none-summary.json

Only the last eval of a run counts as its result; mid-run evals are listed, never picked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def windows(train: list[dict], size: int = 10) -> list[dict]:
    """Means of the per-step training records over consecutive windows of ``size`` steps."""
    out = []
    for i in range(0, len(train), size):
        w = train[i : i + size]
        row = {"steps": f"{w[0]['step']}-{w[-1]['step']}"}
        for key in ("train_hybrid", "train_exec_accuracy", "train_varied_groups", "train_kl"):
            vals = [r[key] for r in w if key in r]
            if vals:
                row[key] = round(sum(vals) / len(vals), 3)
        out.append(row)
    return out


def summarize(path: Path) -> dict:
    run = json.loads(path.read_text())
    val = run["grpo"]["validation"]
    first, last = val[0], val[-1]
    return {
        "file": path.name, "command": run["command"], "seed": run["grpo"].get("seed"),
        "validation_steps": [v["step"] for v in val],
        "exec_accuracy": [v["eval_exec_accuracy"] for v in val],
        "hybrid": [v["eval_hybrid"] for v in val],
        "hybrid_change": round(last["eval_hybrid"] - first["eval_hybrid"], 3),
        "exec_accuracy_change": round(last["eval_exec_accuracy"] - first["eval_exec_accuracy"], 3),
        "train_windows": windows(run["grpo"]["train"]),
        "train_varied_groups_mean": round(sum(r.get("train_varied_groups", 0.0) for r in run["grpo"]["train"])
                                          / max(1, len(run["grpo"]["train"])), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    runs = [summarize(p) for p in args.files]
    n = len(runs)
    out = {
        "runs": runs,
        "mean_hybrid_before": round(sum(r["hybrid"][0] for r in runs) / n, 3),
        "mean_hybrid_after": round(sum(r["hybrid"][-1] for r in runs) / n, 3),
        "mean_exec_accuracy_before": round(sum(r["exec_accuracy"][0] for r in runs) / n, 3),
        "mean_exec_accuracy_after": round(sum(r["exec_accuracy"][-1] for r in runs) / n, 3),
        "runs_ending_above_start": sum(r["hybrid_change"] > 0 for r in runs),
        "runs_ending_below_start": sum(r["hybrid_change"] < 0 for r in runs),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
