"""Soak: mixed traffic at a fixed rate for a bounded time; resident memory of the model replica and the
ingress sampled throughout, their slope reported; every 5xx counted.

On one local Ray head (127.0.0.1) it deploys serve/config.yaml for a published tiny model (one replica of
each deployment) and sends ``/v1/sql``, ``/v1/chat/completions`` and streaming chat in turn at
``--rate`` requests per second (each in its own thread, so a slow answer never lowers the rate), plus,
every tenth request, a client that disconnects mid-stream and a bad request (4xx). RSS is read every
``--sample-s`` seconds from the processes Ray Serve names ``ServeReplica:sqltune:SQLModel`` and
``ServeReplica:sqltune:APIIngress``; the slope is a least-squares fit over the samples after the first
fifth of the run (warm-up: allocator pools and caches filling).

    python benchmarks/soak.py --minutes 10 --rate 4 --out benchmarks/results/soak-cpu-2026-12-04.json
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
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from promote_under_load import SCHEMA, build_model, serve_config  # noqa: E402

from sqltune.k8s.localray import LocalRay, free_ports  # noqa: E402
from sqltune.log import setup_logging  # noqa: E402

ROLES = {"replica": "ServeReplica:sqltune:SQLModel", "ingress": "ServeReplica:sqltune:APIIngress"}


def find_pids() -> dict[str, int]:
    found: dict[str, int] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(p.info.get("cmdline") or [])
        for role, title in ROLES.items():
            if title in line and role not in found:
                found[role] = p.info["pid"]
    return found


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) in MiB per minute."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(m for _, m in samples) / n
    den = sum((t - mx) ** 2 for t, _ in samples)
    return round(60 * sum((t - mx) * (m - my) for t, m in samples) / den, 3) if den else None


class Traffic:
    def __init__(self, base: str):
        self.base = base
        self.statuses: dict[str, int] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self.lock:
            self.statuses[key] = self.statuses.get(key, 0) + 1

    def one(self, i: int) -> None:
        chat = {"messages": [{"role": "user", "content": "List the customer names."}]}
        try:
            with httpx.Client(base_url=self.base, timeout=120) as c:
                kind = i % 3
                if i % 10 == 9:  # a bad request: a lone surrogate (400) or an unknown field (422)
                    r = c.post("/v1/sql", content=b'{"question": "\\ud800", "schema": "x"}',
                               headers={"content-type": "application/json"})
                    self._count(str(r.status_code))
                elif i % 10 == 4:  # a client that leaves mid-stream
                    with c.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as r:
                        for _ in r.iter_lines():
                            break
                    self._count("disconnected")
                elif kind == 0:
                    r = c.post("/v1/sql", json={"question": "How many customers are there?", "schema": SCHEMA})
                    self._count(str(r.status_code))
                elif kind == 1:
                    self._count(str(c.post("/v1/chat/completions", json=chat).status_code))
                else:
                    with c.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as r:
                        text = "".join(r.iter_lines())
                        bad = '"error"' in text or "[DONE]" not in text
                        self._count(f"{r.status_code}{' stream-error' if bad else ''}")
        except Exception as exc:  # noqa: BLE001 - counted as a failure
            self._count("exception")
            with self.lock:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=4.0, help="Requests per second.")
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--num-cpus", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = ap.parse_args(argv)
    setup_logging()
    work = Path(tempfile.mkdtemp(prefix="sqltune-soak-"))
    model = build_model(work, "tiny-soak", 1)
    (port,) = free_ports(1)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'libs'}"}
    with LocalRay(work / "ray", num_cpus=args.num_cpus, cwd=ROOT, env=env) as ray:
        cfg_path = work / "serve.yaml"
        cfg_path.write_text(yaml.safe_dump(serve_config(str(model), port), sort_keys=False))
        ray.serve_deploy(cfg_path)
        base = f"http://127.0.0.1:{port}"
        ray.wait_http_ready(f"{base}/readyz", timeout=600)
        pids = find_pids()
        assert set(pids) == set(ROLES), f"replica/ingress processes not found: {pids}"
        procs = {role: psutil.Process(pid) for role, pid in pids.items()}
        traffic = Traffic(base)
        samples: dict[str, list[tuple[float, float]]] = {role: [] for role in ROLES}
        load_1m: list[float] = []  # the machine's 1-minute load average at each sample: other work shares it
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        next_sample = t0
        i = 0
        threads: list[threading.Thread] = []
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                for role, p in procs.items():
                    samples[role].append((now - t0, p.memory_info().rss / 2**20))
                load_1m.append(os.getloadavg()[0])
                next_sample += args.sample_s
            t = threading.Thread(target=traffic.one, args=(i,), daemon=True)
            t.start()
            threads.append(t)
            i += 1
            time.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
        for t in threads:
            t.join(180)
        replica_pid_unchanged = find_pids() == pids
    warm = args.minutes * 60 / 5
    server_errors = sum(n for k, n in traffic.statuses.items() if k.startswith("5"))
    result = {
        "benchmark": "soak",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other work, CPU only",
        "command": "python benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "minutes": args.minutes,
        "rate_per_s": args.rate,
        "requests": i,
        "outcomes": dict(sorted(traffic.statuses.items())),
        "server_errors_5xx": server_errors,
        "load_average_1m": {
            "min": round(min(load_1m), 2),
            "mean": round(sum(load_1m) / len(load_1m), 2),
            "max": round(max(load_1m), 2),
        },
        "client_exceptions": traffic.errors[:10],
        "processes_restarted": not replica_pid_unchanged,
        "rss_mib": {
            role: {
                "first": round(s[0][1], 1),
                "last": round(s[-1][1], 1),
                "max": round(max(m for _, m in s), 1),
                "slope_mib_per_min_after_warmup": slope_mb_per_min([x for x in s if x[0] >= warm]),
                "samples": len(s),
            }
            for role, s in samples.items()
        },
        "rss_samples": {role: [[round(t, 1), round(m, 1)] for t, m in s] for role, s in samples.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=2))
    return 0 if server_errors == 0 and not traffic.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
