"""Cold start of the server as users start it: `serve run` of serve/config.yaml on a machine with no Ray
running, until ``GET /readyz`` answers 200.

    python benchmarks/cold_start.py --model DIR [--device cuda] [--repeats 2]
    python benchmarks/bench_serve.py --only cold ...        # the same, inside the serving benchmark

serve/config.yaml is used as it is, except: ``args.model_uri`` (the model), ``device``, HTTP on 127.0.0.1 and
a free port, one model replica (no autoscaling) and its GPU count. Ray's ``serve`` CLI starts a local Ray,
Serve and the app, as ``serve run`` does for a user; torch.compile's and Triton's caches start empty, as
in a new pod (its /tmp is an emptyDir). Per repeat it reports the seconds until the HTTP proxy
first answers anything, until ``/readyz`` is 200, and the replica's own load + warm-up (``load_s`` of
``/readyz``); the process tree is stopped before the next repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

from sqltune.k8s.localray import free_ports
from sqltune.serving.config import local_serve_env

SERVE_CLI = "from ray.serve.scripts import cli; cli()"  # the `serve` console script, also for --target installs


def serve_config(model_dir: str, device: str, port: int) -> dict:
    """serve/config.yaml with the model, the device, loopback HTTP on ``port`` and one model replica."""
    cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    cfg["http_options"] = {**cfg.get("http_options", {}), "host": "127.0.0.1", "port": port}
    app = cfg["applications"][0]
    app["args"].update({"model_uri": model_dir, "device": device, "model_name": "bench"})
    for dep in app.get("deployments", []):
        if dep["name"] == "SQLModel":
            dep.pop("autoscaling_config", None)
            dep["num_replicas"] = 1
            dep.setdefault("ray_actor_options", {})["num_gpus"] = 1 if device.startswith("cuda") else 0
    return cfg


def once(model_dir: str, device: str, timeout_s: float, work: Path) -> dict:
    """One `serve run` until ready; compile caches start empty under ``work``, as in a new pod."""
    log_path = work / "serve-run.log"
    (port,) = free_ports(1)
    cfg_path = work / "serve-config.yaml"
    cfg_path.write_text(yaml.safe_dump(serve_config(model_dir, device, port)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(local_serve_env())  # as the images and manifests run Serve; HAProxy files of its own
    env.update({"TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"), "TRITON_CACHE_DIR": str(work / "triton")})
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "libs"), str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    base = f"http://127.0.0.1:{port}"
    first_answer = ready = None
    info: dict = {}
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE_CLI, "run", cfg_path], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            while time.perf_counter() - t0 < timeout_s and proc.poll() is None:
                try:
                    r = httpx.get(f"{base}/readyz", timeout=5)
                    first_answer = first_answer or time.perf_counter() - t0
                    if r.status_code == 200:
                        ready = time.perf_counter() - t0
                        info = r.json()
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        finally:
            _stop(proc)
            shutil.rmtree(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)
    if ready is None:
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(f"not ready in {timeout_s:.0f}s (serve run exit code {proc.returncode}):\n{tail}")
    return {
        "http_first_answer_s": round(first_answer, 2),
        "ready_s": round(ready, 2),
        "replica_load_s": info.get("load_s"),
        "replica_startup": info.get("startup"),
    }


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C to `serve run` (it shuts Serve and its Ray down), then the whole process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _parts(startup: dict | None) -> str:
    """``weights 2.1s, engine 20.3s (compile 9.0s, capture 10.2s)`` from a replica's startup seconds."""
    s = startup or {}
    inner = ", ".join(f"{k[:-2]} {s[k]}s" for k in ("compile_s", "capture_s") if k in s)
    own = f"engine process start {s['process_s']}s, " if "process_s" in s else ""
    return own + f"weights {s.get('weights_s')}s, engine {s.get('engine_s')}s" + (f" ({inner})" if inner else "")


def measure(model_dir: str, device: str, repeats: int, timeout_s: float = 600) -> dict:
    runs = []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(once(model_dir, device, timeout_s, Path(tmp)))
        print(f"[cold start] run {i + 1}: ready {runs[-1]['ready_s']}s after `serve run` "
              f"(Serve's HTTP port answering at {runs[-1]['http_first_answer_s']}s, replica load + warm-up "
              f"{runs[-1]['replica_load_s']}s: {_parts(runs[-1]['replica_startup'])})", file=sys.stderr)
    return {"command": "serve run <serve/config.yaml with the model>", "runs": runs,
            "ready_s": [r["ready_s"] for r in runs]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model artifact directory (merged model with tokenizer)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here")
    opts = ap.parse_args(argv)
    result = {"benchmark": "cold_start", "device": opts.device, "model": opts.model,
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              **measure(opts.model, opts.device, opts.repeats)}
    text = json.dumps(result, indent=2)
    print(text)
    if opts.out:
        opts.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
