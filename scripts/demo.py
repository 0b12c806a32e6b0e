"""`make demo`: the whole sqltune flow on embedded defaults, through the same interfaces as a real cluster.

1. starts the embedded S3-compatible server (moto, 127.0.0.1) and a local Ray head (`ray start --head`);
2. builds the embedded dataset + databases and the tiny base model, publishes both to the embedded S3;
3. submits the training job with `ray job submit` (tiny preset, NF4 QLoRA, 2 workers) and follows it;
4. submits the export job (merged, int8; the merged model is kept in .demo/merged/) and the evaluation job
   (base, adapter, merged, int8) and prints the comparison table; the report and plots land in S3 and under
   .demo/report/;
5. deploys the server with `serve deploy`, asks it a few questions over HTTP, prints question, SQL and
   rows, then shuts everything down (no process left running).

Usage: python scripts/demo.py [--quick | --train-steps N] [--induction-steps N] [--keep-running]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

from sqltune.k8s import localray
from sqltune.k8s.localray import LocalRay

log = logging.getLogger("sqltune.demo")
BUCKET = "sqltune"  # the presets in jobs/configs/ default to s3://sqltune/...
RAY_PORT = 6390
DASHBOARD_PORT = 8266
SERVE_PORT = 8000
RAY_TEMP = "/tmp/sqltune-demo-ray"  # short: Ray puts unix sockets under it


def own_ray_processes() -> list:
    """The processes of the demo's Ray cluster: those started with its temp dir, and their descendants.

    `ray stop` would stop every Ray cluster on the machine (a test suite's too); the demo stops its own.
    """
    return localray.own_ray_processes(RAY_TEMP)


class Demo:
    def __init__(self, work: Path, quick: bool, train_steps: int | None = None,
                 induction_steps: int | None = None) -> None:
        self.work = work
        self.quick = quick
        self.train_steps = 6 if quick else train_steps
        # --quick (CI) keeps the pre-training step but shortens it, as it shortens training.
        self.induction_steps = 20 if quick and induction_steps is None else induction_steps
        self.env = dict(os.environ)
        self.env["PATH"] = f"{Path(sys.executable).parent}:{self.env.get('PATH', '')}"
        self.env["PYTHONPATH"] = f"{ROOT}:{ROOT / 'libs'}"
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.ray: LocalRay | None = None
        self.s3 = None
        self.started_ray = False
        self.timings: dict[str, float] = {}

    # -- services ---------------------------------------------------------------------------------
    def start_services(self) -> None:
        from sqltune.storage import EmbeddedS3

        self.s3 = EmbeddedS3().start()
        self.env.update(self.s3.env())
        os.environ.update(self.s3.env())
        self.s3.create_bucket(BUCKET)
        log.info("embedded S3 at %s, bucket s3://%s", self.s3.endpoint, BUCKET)
        # token auth with the demo's own token file, free agent/metrics ports, one retry (sqltune.k8s.localray);
        # leftovers of an interrupted demo are stopped first, other Ray clusters on this machine are left alone
        self.ray = LocalRay(self.work, temp_dir=RAY_TEMP, num_cpus=4, port=RAY_PORT, dashboard_port=DASHBOARD_PORT,
                            env=self.env, cwd=ROOT)
        self.started_ray = True
        self.ray.start()
        self.env = self.ray.env

    def stop_services(self) -> None:
        if self.started_ray and self.ray is not None:
            self.ray.stop()
        if self.s3 is not None:
            self.s3.stop()

    # -- steps ------------------------------------------------------------------------------------
    def build_assets(self) -> None:
        from sqltune.config import load_config
        from sqltune.data.embedded import build_embedded
        from sqltune.models.tiny import TinyModelConfig, build_tiny_model
        from sqltune.storage import publish

        data_dir = self.work / "dataset"
        base_dir = self.work / "tiny-base"
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(base_dir, ignore_errors=True)
        build_embedded(data_dir, seed=0)
        # Random weights pre-trained on repeating random token spans (in-context copying, no text or SQL:
        # jobs/configs/tiny-base.yaml); cached by config and tokenizer, so a second demo skips the ~3 min.
        overrides = [f"induction_steps={self.induction_steps}"] if self.induction_steps is not None else []
        cfg = load_config(TinyModelConfig, ROOT / "jobs/configs/tiny-base.yaml", overrides)
        build_tiny_model(base_dir, cfg, cache_dir=ROOT / ".cache" / "tiny-models")
        publish(data_dir, f"s3://{BUCKET}/datasets/embedded", kind="dataset", overwrite=True)
        publish(base_dir, f"s3://{BUCKET}/models/tiny-base", kind="base", overwrite=True)

    def submit(self, module: str, config: str, overrides: list[str]) -> None:
        """`ray job submit`, then follow its logs; fails unless the job ends SUCCEEDED."""
        job_id = f"sqltune-{module.split('.')[-1]}-{int(time.time())}"
        state, _ = self.ray.submit(["python", "-m", module, "--config", config, *overrides], submission_id=job_id,
                                   working_dir=".", stream=True)
        if state != "SUCCEEDED":
            raise RuntimeError(f"job {job_id} ({module}) did not succeed: {state}")
        log.info("job %s succeeded", job_id)

    def train(self) -> None:
        overrides = [
            f"model.base=s3://{BUCKET}/models/tiny-base",
            f"data.source=s3://{BUCKET}/datasets/embedded",
            f"output_uri=s3://{BUCKET}/runs",
            "run_name=tiny",
        ]
        if self.train_steps:
            overrides.append(f"train.max_steps={self.train_steps}")
        self.submit("jobs.train", "jobs/configs/tiny.yaml", overrides)

    def export(self) -> None:
        self.submit("jobs.export", "jobs/configs/export-tiny.yaml",
                    [f"adapter=s3://{BUCKET}/runs/tiny/adapter", f"output_uri=s3://{BUCKET}/runs", "run_name=tiny"])
        from sqltune.storage import fetch

        # The embedded S3 is in memory and stops with the demo: .demo/merged keeps the model for `sqltune ask`
        # and benchmarks/bench_repair.py afterwards.
        merged = self.work / "merged"
        shutil.rmtree(merged, ignore_errors=True)
        fetch(f"s3://{BUCKET}/runs/tiny/merged", merged)

    def evaluate(self) -> None:
        overrides = [f"output_uri=s3://{BUCKET}/eval", "eval_name=tiny", f"run_uri=s3://{BUCKET}/runs/tiny",
                     f"base_uri=s3://{BUCKET}/models/tiny-base", f"dataset.source=s3://{BUCKET}/datasets/embedded"]
        if self.quick:
            # The server caps an answer at 256 tokens (serve/config.yaml): a barely trained model may not stop
            # before that, so the quick run scores with the same budget and its answers can be compared.
            overrides += ["dataset.limit=16", "generation.max_new_tokens=256"]
        self.submit("jobs.evaluate", "jobs/configs/eval-tiny.yaml", overrides)
        from sqltune.storage import fetch

        report_dir = self.work / "report"
        shutil.rmtree(report_dir, ignore_errors=True)
        report = fetch(f"s3://{BUCKET}/eval/tiny", report_dir)
        print((Path(report) / "report.md").read_text())

    def serve_and_ask(self) -> None:
        import yaml

        cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
        app = cfg["applications"][0]
        app["args"]["model_uri"] = f"s3://{BUCKET}/runs/tiny/merged"
        app["args"]["databases"] = {"warehouse": str(self.work / "dataset" / "warehouse.sqlite")}
        for dep in app.get("deployments", []):
            dep.setdefault("autoscaling_config", {})["max_replicas"] = 1
        cfg["http_options"]["host"] = "127.0.0.1"
        cfg["http_options"]["port"] = SERVE_PORT
        path = self.work / "serve.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.ray.serve_deploy(path)
        base = f"http://127.0.0.1:{SERVE_PORT}"
        self.ray.wait_http_ready(f"{base}/readyz", timeout=300)
        evaluated = self.evaluated_sql("merged")
        for ex in self.demo_questions(evaluated):
            # The embedded examples' prompts carry the tables their question is about; `tables` puts the same
            # ones in the server's prompt (without it the server sends the whole database's schema).
            body = json.dumps({"question": ex.question, "database": "warehouse", "tables": ex.extra["tables"],
                               "dialect": "sqlite", "execute": True, "max_new_tokens": 256}).encode()
            req = urllib.request.Request(f"{base}/v1/sql", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                out = json.loads(resp.read())
            print(f"\nQ: {ex.question}   (tables: {', '.join(ex.extra['tables'])})\nSQL:  {out['sql']}\n"
                  f"gold: {ex.sql}\nvalid={out['valid']} read_only={out['read_only']} "
                  f"latency={out['latency_ms']:.0f} ms")
            if ex.id in evaluated:
                # Serving must decode what evaluation scored for the same artifact and prompt.
                same = out["sql"].strip() == evaluated[ex.id].strip()
                print(f"    same SQL as the evaluation's merged variant: {'yes' if same else 'NO: ' + evaluated[ex.id]}")
            if out.get("execution_error"):
                print("    execution error:", out["execution_error"])
            for row in (out.get("rows") or [])[:5]:
                print("   ", row)

    def evaluated_sql(self, variant: str) -> dict[str, str]:
        """id -> cleaned SQL of ``variant`` in the evaluation report fetched to .demo/report/ (empty if absent)."""
        path = self.work / "report" / "predictions.jsonl"
        if not path.is_file():
            return {}
        rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
        return {r["id"]: r.get("cleaned_sql") or "" for r in rows if r.get("variant") == variant}

    def demo_questions(self, evaluated: dict[str, str] | None = None) -> list:
        """One held-out test question of each of DEMO_CATEGORIES, from the split eval-tiny.yaml scores; one the
        evaluation scored (``evaluated``) where there is one, so the server's answer can be checked against it
        (every test question is scored unless --quick samples the split)."""
        from sqltune.config import load_config
        from sqltune.data import load_dataset, split_examples
        from sqltune.evaluation.config import EvalConfig

        d = load_config(EvalConfig, ROOT / "jobs/configs/eval-tiny.yaml").dataset
        examples = load_dataset(self.work / "dataset", format="embedded")
        test = split_examples(examples, ratios=tuple(d.split_ratios), seed=d.split_seed,
                              stratify=d.stratify or "none").test
        scored = [ex for ex in test if ex.id in (evaluated or {})]
        return [next(ex for ex in scored + test if ex.category == cat) for cat in DEMO_CATEGORIES]

    def run(self, keep_running: bool) -> None:
        steps = [
            ("services", self.start_services),
            ("build dataset + tiny model", self.build_assets),
            ("train (ray job submit)", self.train),
            ("export (ray job submit)", self.export),
            ("evaluate (ray job submit)", self.evaluate),
            ("serve + ask", self.serve_and_ask),
        ]
        t0 = time.time()
        try:
            for name, fn in steps:
                start = time.time()
                log.info("=== %s", name)
                fn()
                self.timings[name] = time.time() - start
        finally:
            if not keep_running:
                self.stop_services()
        left = own_ray_processes()
        if left and not keep_running:
            log.warning("%d Ray processes of the demo are still running", len(left))
        print("\nDemo timings:")
        for name, secs in self.timings.items():
            print(f"  {name:<30} {secs:7.1f} s")
        print(f"  {'total':<30} {time.time() - t0:7.1f} s")


DEMO_CATEGORIES = ("single_table", "join", "revenue")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few training steps (CI's end-to-end test)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="optimizer steps instead of the preset's epochs (make demo-full: 1000)")
    parser.add_argument("--induction-steps", type=int, default=None,
                        help="pre-training steps of the tiny base instead of jobs/configs/tiny-base.yaml's")
    parser.add_argument("--keep-running", action="store_true", help="leave S3, Ray and the server up")
    parser.add_argument("--work-dir", default=str(ROOT / ".demo"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    Demo(work, args.quick, args.train_steps, args.induction_steps).run(args.keep_running)
    return 0


if __name__ == "__main__":
    sys.exit(main())
