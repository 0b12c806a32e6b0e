"""Promotion under load: switch the served model while clients keep calling, and count what they saw.

On one local Ray head (the stand-in's :class:`~sqltune.k8s.localray.LocalRay`, 127.0.0.1) it deploys
serve/config.yaml for model A (a published tiny model), runs a fixed mixed load — ``/v1/sql`` and
streaming ``/v1/chat/completions`` from several client threads — and a third of the way in promotes model
B with the pipeline's own promotion (:func:`sqltune.pipeline.promote.promote_local`: ``serve config`` →
``args.model_uri`` replaced → ``serve deploy`` → wait RUNNING). It reports failed requests (any non-200,
any in-band stream error, any client exception), whether every answer carries exactly one model id, the
time from ``serve deploy`` to the first answer of B and to the last answer of A, the promotion's own time,
and when the old replicas were gone.

    python benchmarks/promote_under_load.py --duration 120 --clients 4 \\
        --out benchmarks/results/promote-under-load-cpu-2026-12-04.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

from sqltune.k8s.localray import LocalRay, bin_path, free_ports  # noqa: E402
from sqltune.log import setup_logging  # noqa: E402
from sqltune.pipeline.config import PromoteConfig  # noqa: E402
from sqltune.pipeline.promote import promote_local  # noqa: E402

SCHEMA = "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);"
CORPUS = [SCHEMA, "SELECT name FROM customers WHERE country = 'Germany'", "How many customers are there?"] * 20


def build_model(work: Path, run: str, seed: int) -> Path:
    """A published tiny model artifact at <work>/runs/<run>/merged (served as '<run>-merged')."""
    import torch

    from sqltune.models.loading import write_artifact_info
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model
    from sqltune.storage import publish

    torch.manual_seed(seed)
    src = build_tiny_model(
        work / f"build-{run}",
        TinyModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128),
        corpus=CORPUS,
    )
    write_artifact_info(src, kind="merged", base_model="tiny", precision="fp32", run_name=run)
    dest = work / "runs" / run / "merged"
    publish(src, str(dest), kind="merged")
    return dest


def serve_config(model_uri: str, port: int) -> dict:
    cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    cfg["http_options"].update(host="127.0.0.1", port=port)
    app = cfg["applications"][0]
    app["args"].update(model_uri=model_uri, default_max_new_tokens=24, max_new_tokens_cap=32, warmup=True)
    for dep in app["deployments"]:  # one replica each: the switch is from one replica to one replica
        dep.pop("autoscaling_config", None)
        dep["num_replicas"] = 1
    return cfg


class Load:
    """Client threads calling /v1/sql and streaming chat in turn until ``stop``; every answer recorded."""

    def __init__(self, base: str, clients: int):
        self.base = base
        self.clients = clients
        self.stop = threading.Event()
        self.records: list[dict] = []
        self.lock = threading.Lock()

    def _one(self, c: httpx.Client, kind: str) -> dict:
        t0 = time.monotonic()
        rec: dict = {"kind": kind, "start": t0, "models": [], "status": None, "error": None}
        try:
            if kind == "sql":
                r = c.post("/v1/sql", json={"question": "How many customers are there?", "schema": SCHEMA})
                rec["status"] = r.status_code
                body = r.json()
                if r.status_code == 200:
                    rec["models"] = [body["model"]]
                else:
                    rec["error"] = body.get("error", {}).get("code")
            else:
                body = {"messages": [{"role": "user", "content": "List the customer names."}], "stream": True}
                with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    rec["status"] = r.status_code
                    done = False
                    for line in r.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        data = line[len("data: ") :]
                        if data == "[DONE]":
                            done = True
                            continue
                        event = json.loads(data)
                        if "error" in event:
                            rec["error"] = event["error"].get("code")
                        elif event.get("model") not in rec["models"]:
                            rec["models"].append(event.get("model"))
                    if r.status_code == 200 and not done:
                        rec["error"] = "stream_not_finished"
        except Exception as exc:  # noqa: BLE001 - a client-side failure is a failed request
            rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["end"] = time.monotonic()
        return rec

    def _client(self, i: int) -> None:
        kinds = ("sql", "stream") if i % 2 == 0 else ("stream", "sql")
        n = 0
        with httpx.Client(base_url=self.base, timeout=120) as c:
            while not self.stop.is_set():
                rec = self._one(c, kinds[n % 2])
                n += 1
                with self.lock:
                    self.records.append(rec)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for t in threads:
            t.start()
        return threads


def replica_states(ray: LocalRay, app: str = "sqltune") -> dict:
    out = ray.run([bin_path("serve"), "status", "-a", ray.address], check=False).stdout
    data = yaml.safe_load(out) or {}
    deps = ((data.get("applications") or {}).get(app) or {}).get("deployments") or {}
    return {name: d.get("replica_states", {}) for name, d in deps.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=120.0, help="Seconds of load (default 120).")
    ap.add_argument("--clients", type=int, default=4, help="Client threads (half start with /v1/sql).")
    ap.add_argument("--num-cpus", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "promote-under-load.json")
    args = ap.parse_args(argv)
    setup_logging()
    work = Path(tempfile.mkdtemp(prefix="sqltune-promote-"))
    model_a = build_model(work, "tiny-a", 1)
    model_b = build_model(work, "tiny-b", 2)
    (port,) = free_ports(1)
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'libs'}"}
    with LocalRay(work / "ray", num_cpus=args.num_cpus, cwd=ROOT, env={**os.environ, **env}) as ray:
        cfg_path = work / "serve.yaml"
        cfg_path.write_text(yaml.safe_dump(serve_config(str(model_a), port), sort_keys=False))
        ray.serve_deploy(cfg_path)
        base = f"http://127.0.0.1:{port}"
        ray.wait_http_ready(f"{base}/readyz", timeout=600)
        load = Load(base, args.clients)
        t0 = time.monotonic()
        threads = load.run()
        time.sleep(args.duration / 3)
        # promote_local calls the serve CLI with this process's environment: the head's token auth
        os.environ.update({k: ray.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")})
        promote_start = time.monotonic()
        promotion = promote_local(str(model_b), PromoteConfig(target="local", address=ray.address), wait_s=600)
        promote_end = time.monotonic()
        drained_at = None
        while time.monotonic() < t0 + args.duration:
            states = replica_states(ray)
            if drained_at is None and states and all(s == {"RUNNING": 1} for s in states.values()):
                drained_at = time.monotonic()
            time.sleep(2)
        load.stop.set()
        for t in threads:
            t.join(180)
        final_states = replica_states(ray)
    recs = sorted(load.records, key=lambda r: r["start"])
    name_a, name_b = "tiny-a-merged", "tiny-b-merged"
    failed = [r for r in recs if r["status"] != 200 or r["error"]]
    mixed = [r for r in recs if len(r["models"]) != 1]
    b_answers = [r for r in recs if r["models"] == [name_b]]
    a_answers = [r for r in recs if r["models"] == [name_a]]
    first_b = min((r["end"] for r in b_answers), default=None)
    last_a = max((r["end"] for r in a_answers), default=None)

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - promote_start, 2)

    result = {
        "benchmark": "promote_under_load",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), CPU only",
        "command": "python benchmarks/promote_under_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "duration_s": args.duration,
        "clients": args.clients,
        "requests": len(recs),
        "by_kind": {k: sum(1 for r in recs if r["kind"] == k) for k in ("sql", "stream")},
        "failed": len(failed),
        "failed_examples": [{k: r[k] for k in ("kind", "status", "error")} for r in failed[:10]],
        "answers_with_not_exactly_one_model": len(mixed),
        "answers_model_a": len(a_answers),
        "answers_model_b": len(b_answers),
        "promotion": {"from": promotion.previous_model_uri, "to": promotion.model_uri},
        "promote_call_s": round(promote_end - promote_start, 2),
        "first_b_answer_after_deploy_s": rel(first_b),
        "last_a_answer_after_deploy_s": rel(last_a),
        "old_replicas_gone_after_deploy_s": rel(drained_at),
        "replica_states_at_end": final_states,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if not failed and not mixed and b_answers else 1


if __name__ == "__main__":
    raise SystemExit(main())
