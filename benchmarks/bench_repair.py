"""Execute-and-repair on the embedded test split: one model scored with and without `repair_rounds`.

Writes an evaluation config with two variants of the same artifact (``merged`` and ``merged+repair``, as in
docs/evaluation.md), starts a local Ray head of its own (127.0.0.1, own temp dir), submits ``jobs.evaluate``
with ``ray job submit`` as `make demo` does, and records execution accuracy, the rounds used and the time
each variant spent generating. The other settings (split, generation budget, engine, metrics) are those of
jobs/configs/eval-tiny.yaml, so the ``merged`` row is the demo's. Per example, it compares the two variants'
execution matches (fixed by repair, broken by it) from predictions.jsonl, and it records the machine's load
average before and after: on a shared machine, the wall times depend on it.

    python benchmarks/bench_repair.py --model .demo/merged --dataset .demo/dataset \\
        --out repair-tiny-cpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_model  # noqa: E402
from sqltune.k8s.localray import LocalRay  # noqa: E402
from sqltune.log import setup_logging  # noqa: E402

RAY_TEMP = "/tmp/sqltune-bench-repair-ray"  # short: Ray puts unix sockets under it


def eval_config(model: str, dataset: str, rounds: int, out_dir: Path, limit: int | None) -> dict:
    """eval-tiny.yaml with the merged variant twice: as is, and with ``rounds`` repair rounds."""
    cfg = yaml.safe_load((ROOT / "jobs/configs/eval-tiny.yaml").read_text())
    cfg.update(eval_name="repair", output_uri=str(out_dir), run_uri="", base_uri="")
    cfg["dataset"]["source"] = dataset
    if limit:
        cfg["dataset"]["limit"] = limit
    cfg["variants"] = [
        {"name": "merged", "kind": "merged", "model": model},
        {"name": "merged+repair", "kind": "merged", "model": model, "repair_rounds": rounds},
    ]
    cfg["agreement"]["pairs"] = []
    # one variant at a time: on a shared CPU, their latencies are not measured against each other's load
    cfg["ray"]["max_parallel"] = 1
    return cfg


def summary(report: dict) -> dict:
    rows = {}
    for name, v in report["variants"].items():
        agg = v.get("aggregate") or {}
        rows[name] = {"status": v["status"], "error": v.get("error"),
                      **{k: agg.get(k) for k in ("n", "n_exec", "parseable", "exact", "exec_accuracy", "exec_ci_low",
                                                  "exec_ci_high", "latency_p50_s", "latency_p95_s",
                                                  "generation_wall_s", "output_tokens_total", "n_failed",
                                                  "error_categories")},
                      "elapsed_s": v.get("elapsed_s"), "repair": v.get("repair")}
    return rows


def flips(predictions: Path, base: str, repaired: str) -> dict:
    """Per example, how the execution match changed from ``base`` to ``repaired`` (examples with a database)."""
    match: dict[str, dict[str, bool]] = {base: {}, repaired: {}}
    for line in predictions.read_text().splitlines():
        row = json.loads(line)
        if row["variant"] in match and row["exec_match"] is not None:
            match[row["variant"]][row["id"]] = bool(row["exec_match"])
    ids = match[base].keys() & match[repaired].keys()
    return {"compared": len(ids),
            "fixed": sum(1 for i in ids if not match[base][i] and match[repaired][i]),
            "broken": sum(1 for i in ids if match[base][i] and not match[repaired][i])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the merged artifact (local folder or s3:// URI)")
    ap.add_argument("--dataset", required=True, help="the embedded dataset (folder or s3:// URI)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="score only this many test examples")
    ap.add_argument("--work", default=str(ROOT / ".demo" / "bench-repair"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    setup_logging()

    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = args.model if args.model.startswith("s3://") else str(Path(args.model).resolve())
    dataset = args.dataset if args.dataset.startswith("s3://") else str(Path(args.dataset).resolve())
    cfg_path = work / "eval-repair.yaml"
    cfg_path.write_text(yaml.safe_dump(eval_config(model, dataset, args.rounds, work / "eval", args.limit),
                                       sort_keys=False))
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.time()
    with LocalRay(work, temp_dir=RAY_TEMP, num_cpus=2, cwd=ROOT) as ray:
        state, _ = ray.submit(["python", "-m", "jobs.evaluate", "--config", str(cfg_path)],
                              submission_id=f"bench-repair-{int(start)}", working_dir=".", stream=True)
    if state != "SUCCEEDED":
        print(f"evaluation job ended {state}", file=sys.stderr)
        return 1
    load_after = [round(x, 2) for x in os.getloadavg()]
    report = json.loads((work / "eval" / "repair" / "report.json").read_text())
    result = {
        "benchmark": "execute-and-repair on the embedded test split",
        "date": dt.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": cpu_model(), "cpus": os.cpu_count(),
                    "load_average_1_5_15_min": {"before": load_before, "after": load_after}},
        "command": " ".join(["python", "benchmarks/bench_repair.py", *sys.argv[1:]]),
        "model": args.model, "repair_rounds": args.rounds,
        "eval_config": yaml.safe_load(cfg_path.read_text()),
        "variants": summary(report),
        "per_example": flips(work / "eval" / "repair" / "predictions.jsonl", "merged", "merged+repair"),
        "total_s": round(time.time() - start, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print((work / "eval" / "repair" / "report.md").read_text())
    print(json.dumps({k: result[k] for k in ("variants", "per_example", "machine")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
