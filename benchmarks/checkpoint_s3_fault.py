"""S3 hung during a training checkpoint upload, then a resubmission: ``jobs.train`` end to end.

The embedded S3 server (moto on 127.0.0.1) backs the run. ``python -m jobs.train`` (tiny preset, a small
tiny model, 30 steps, a checkpoint every 10, one worker, no retries) runs as its own process; when the
step-20 checkpoint has been written locally and handed to Ray Train for upload (the worker's
``sqltune-ckpt-*`` folder holds its ``trainer_state.json``), the S3 server is stopped (SIGSTOP: it keeps its
objects, answers nothing) for ``--pause-s`` seconds, longer than ``SQLTUNE_S3_READ_TIMEOUT``, then
started again (SIGCONT). The same command is then run again. It prints, as JSON: both exit statuses,
the checkpoints Ray Train registered after each, the files of every checkpoint folder in storage, and
the published adapter's ``metrics.json`` steps (``resumed_from``, the logged steps, the final step).

    python benchmarks/checkpoint_s3_fault.py --out benchmarks/results/checkpoint-s3-fault-cpu-2026-12-04.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

from sqltune import storage  # noqa: E402
from sqltune.storage import EmbeddedS3  # noqa: E402


def build_base(work: Path) -> tuple[Path, Path]:
    """The tests' small tiny model (2 layers, hidden 64) and the embedded dataset."""
    from sqltune.data import load_dataset
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model
    from sqltune.prompts import build_messages

    embedded = work / "embedded"
    embedded.mkdir()
    examples = load_dataset(embedded, format="embedded")
    texts: list[str] = []
    for ex in examples[:400]:
        texts.extend(m["content"] for m in build_messages(ex.question, ex.schema, dialect=ex.dialect))
        texts.append(ex.sql)
    cfg = TinyModelConfig(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                          intermediate_size=128)
    (work / "base").mkdir()
    return build_tiny_model(work / "base", cfg, corpus=texts), embedded


def registered_steps(run_uri: str) -> list[int]:
    snap = storage.join(run_uri, "checkpoint_manager_snapshot.json")
    if not storage.exists(snap):
        return []
    data = json.loads(storage.read_bytes(snap))
    return [int(r["metrics"]["step"]) for r in data.get("checkpoint_results", [])]


def checkpoint_folders(run_uri: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for rel in storage.list_files(run_uri):
        top, _, name = rel.partition("/")
        if top.startswith("checkpoint_"):
            out.setdefault(top, {"files": 0, "step": None})
            out[top]["files"] += 1
            if name == "trainer_state.json":
                out[top]["step"] = json.loads(storage.read_bytes(storage.join(run_uri, rel))).get("step")
    return out


class PauseAtCheckpoint(threading.Thread):
    """SIGSTOPs the S3 server when the worker's ``nth`` local checkpoint folder is complete (its
    ``trainer_state.json`` written: the next thing the worker does is Ray Train's upload), SIGCONTs it later."""

    def __init__(self, tmp: Path, pid: int, nth: int, pause_s: float, timeout: float = 900.0):
        super().__init__(daemon=True)
        self.tmp, self.pid, self.nth, self.pause_s, self.timeout = tmp, pid, nth, pause_s, timeout
        self.paused_at: str | None = None

    def run(self) -> None:
        seen: set[str] = set()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for d in self.tmp.glob("sqltune-ckpt-*"):
                if (d / "trainer_state.json").exists() and d.name not in seen:
                    seen.add(d.name)
                    if len(seen) == self.nth:
                        os.kill(self.pid, signal.SIGSTOP)
                        try:
                            self.paused_at = json.loads((d / "trainer_state.json").read_text()).get("step")
                        except (OSError, ValueError):
                            self.paused_at = "unreadable"
                        time.sleep(self.pause_s)
                        os.kill(self.pid, signal.SIGCONT)
                        return
            time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pause-s", type=float, default=12.0)
    ap.add_argument("--read-timeout", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "checkpoint-s3-fault.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sqltune-ckfault-"))
    base, embedded = build_base(work)
    tmp = work / "tmp"
    tmp.mkdir()
    load_start = os.getloadavg()[0]
    with EmbeddedS3() as s3:
        s3.create_bucket("sqltune")
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "RAY_ADDRESS")}
        env.update(s3.env())
        env.update(
            TMPDIR=str(tmp), PYTHONPATH=f"{ROOT}:{ROOT / 'libs'}",
            SQLTUNE_S3_READ_TIMEOUT=str(args.read_timeout), SQLTUNE_S3_MAX_ATTEMPTS="1",
        )
        os.environ.update(s3.env())
        run_name = "ckfault"
        out_uri = "s3://sqltune/runs"
        cmd = [
            sys.executable, "-m", "jobs.train", "--config", "jobs/configs/tiny.yaml",
            f"model.base={base}", f"data.embedded_dir={embedded}", f"output_uri={out_uri}", f"run_name={run_name}",
            "train.max_steps=30", "train.log_every=1", "checkpoint.interval=10", "checkpoint.num_to_keep=3",
            "eval.interval=10", "scaling.num_workers=1", "scaling.max_failures=0", "scaling.local_num_cpus=2",
        ]
        run_uri = storage.join(out_uri, "ray-runs", run_name)
        pauser = PauseAtCheckpoint(tmp, s3.process.pid, nth=2, pause_s=args.pause_s)
        pauser.start()
        first = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
        pauser.join(args.pause_s + 5)
        after_first = {"registered": registered_steps(run_uri), "folders": checkpoint_folders(run_uri),
                       "adapter_manifest": storage.exists(storage.join(out_uri, run_name, "adapter", "manifest.json"))}
        second = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
        after_second = {"registered": registered_steps(run_uri), "folders": checkpoint_folders(run_uri)}
        metrics_uri = storage.join(out_uri, run_name, "adapter", "metrics.json")
        metrics = json.loads(storage.read_bytes(metrics_uri)) if storage.exists(metrics_uri) else {}
    logged = [h["step"] for h in metrics.get("history", []) if "train_loss" in h]
    result = {
        "benchmark": "checkpoint_s3_fault",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other work, CPU only",
        "load_average_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "command": "python benchmarks/checkpoint_s3_fault.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "job_command": " ".join(cmd[1:]),
        "s3_paused_at_checkpoint_step": pauser.paused_at,
        "pause_s": args.pause_s,
        "first": {"exit": first.returncode, "stderr_tail": first.stderr.strip().splitlines()[-3:], **after_first},
        "second": {"exit": second.returncode, "stderr_tail": second.stderr.strip().splitlines()[-3:],
                   "stdout_tail": second.stdout.strip().splitlines()[-2:], **after_second},
        "published": {
            "resumed_from": metrics.get("resumed_from"),
            "final_step": metrics.get("final", {}).get("step"),
            "logged_train_steps": logged,
            "steps_missing": sorted(set(range(1, 31)) - set(logged)),
            "steps_repeated": sorted({s for s in logged if logged.count(s) > 1}),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = (first.returncode != 0 and second.returncode == 0 and metrics.get("resumed_from") == [10]
          and metrics.get("final", {}).get("step") == 30)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
