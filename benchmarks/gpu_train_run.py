"""One real `python -m jobs.train` run of a preset's shape on GPUs (the Qwen2.5-3B QLoRA preset).

No hub access on the GPU machine, so the base is a Qwen2.5-3B-shaped model with random weights and a
BPE tokenizer trained on the dataset (sqltune.models.tiny.train_tokenizer); everything after that is the
production path: Ray Train TorchTrainer, NF4 QLoRA, paged 8-bit AdamW, checkpoints, atomic publish.

    python benchmarks/gpu_train_run.py --dataset DIR --workers 1 --steps 30 --out /tmp/gpu-run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_train  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="/tmp/gpu-run")
    ap.add_argument("--config", default="jobs/configs/qwen2.5-3b-qlora.yaml")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.time()
    # The same random-weight Qwen2.5-3B-shaped base as make bench-train's job arm.
    base = bench_train.write_base(bench_train.QWEN25_3B, Path(args.dataset), out / "base-3b", "cuda")
    print(f"base model ready in {time.time() - t0:.0f}s", flush=True)
    cmd = [sys.executable, "-m", "jobs.train", "--config", args.config, f"model.base={base}",
           f"data.source={args.dataset}", f"output_uri={out / 'runs'}", f"run_name=gpu-{args.workers}w",
           f"train.max_steps={args.steps}", "checkpoint.interval=20", "eval.interval=20", "eval.exec_examples=8",
           f"scaling.num_workers={args.workers}", "scaling.use_gpu=true", "scaling.cpus_per_worker=2"]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
