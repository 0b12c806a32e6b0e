#!/usr/bin/env python3
"""Serving benchmark: plain ``model.generate`` vs sqltune's engine (in-process and through Ray Serve HTTP).

    make bench-serve                                   # on the GPU machine (Qwen2.5-3B shape, bf16)
    python benchmarks/bench_serve.py --tiny            # CPU smoke run of the same code paths
    python benchmarks/bench_serve.py --only engine     # one section; see --help for the knobs

The model has Qwen2.5-3B's published shape (hidden 2048, 36 layers, 16 heads, 2 KV heads, MLP 11008,
vocabulary 151936, tied embeddings) with random weights. Every request has a ~320-token prompt and
generates exactly 64 tokens (end-of-sequence ignored), so all variants do the same work.

Measured, per variant:
* single-request latency p50/p95 (requests one after another);
* throughput (generated tokens/s) at 1, 16 and 64 concurrent requests. For the engine and HTTP these
  are closed-loop clients that start at random offsets and send their next request as soon as the
  previous one returns (independent arrivals); plain ``generate`` has no scheduler, so it gets its best
  case: the c prompts in one static batch.

Prints a table and a JSON document (also written to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

import torch  # noqa: E402

import cold_start  # noqa: E402  (benchmarks/cold_start.py, beside this file)
from sqltune.config import merge_mappings  # noqa: E402
from sqltune.serving.config import RAY_SERVE_ENV, local_serve_env  # noqa: E402


# ------------------------------------------------------------------------------------------ helpers


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> dict:
    """This process's peak GPU tensors and allocator reservation since :func:`reset_peak` (GiB)."""
    if not device.startswith("cuda"):
        return {}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "what": "this process: torch.cuda.max_memory_allocated / max_memory_reserved",
    }


def other_process_gpu_memory() -> dict:
    """GPU memory held by the other processes on the GPU (the Ray Serve replica), from nvidia-smi."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    procs = {}
    for line in out.strip().splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and int(pid) != os.getpid():
            procs[int(pid)] = int(mib.strip() or 0)
    return {
        "replica_gpu_gib": round(sum(procs.values()) / 1024, 2),
        "processes_mib": procs,
        "what": "nvidia-smi used memory of the other GPU processes (the replica: weights, KV cache, graphs, "
        "allocator reserve, CUDA context), read after the last concurrency level",
    }


def model_config(tiny: bool):
    from transformers import Qwen2Config

    if tiny:
        return Qwen2Config(
            vocab_size=2048,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            use_sliding_window=False,
        )
    # Qwen2.5-3B-Instruct's published config.json (weights random).
    return Qwen2Config(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        hidden_act="silu",
    )


def build_model(cfg, device: str, dtype):
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(cfg, dtype=dtype)
    model.eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    return model


def make_prompts(n: int, length: int, vocab: int, seed: int = 0, shared: int = 0) -> list[list[int]]:
    """``n`` random prompts of about ``length`` tokens; the first ``shared`` tokens are the same in all
    (a system prompt and schema), the rest differs (the question)."""
    rng = random.Random(seed)
    lo = min(100, vocab // 4)
    head = [rng.randrange(lo, vocab) for _ in range(min(shared, length))]
    return [head + [rng.randrange(lo, vocab) for _ in range(length - len(head) + rng.randrange(-8, 9))]
            for _ in range(n)]


# ------------------------------------------------------------------------------- (a) model.generate


def bench_generate(model, prompts, new_tokens, levels, n_latency, device, static: bool = False) -> dict:
    kwargs = {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": 0,
    }
    if static:
        kwargs["cache_implementation"] = "static"

    def run(batch):
        width = max(len(p) for p in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, p in enumerate(batch):  # left padding, as generate expects
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        sync(device)
        assert out.shape[1] - width == new_tokens, out.shape
        return time.perf_counter() - t0

    reset_peak(device)
    for _ in range(3 if static else 1):  # warm-up (static: compiles)
        run(prompts[:1])
    # A baseline, not a target: a few sequential requests are enough (each takes seconds on the 3B shape).
    lat = [run([p]) for p in prompts[: min(n_latency, 5)]]
    res = {"latency_s": {"p50": pct(lat, 50), "p95": pct(lat, 95), "n": len(lat)}, "throughput": {}}
    for c in levels:
        if c == 1:
            res["throughput"]["1"] = {
                "tokens_per_s": new_tokens / statistics.median(lat),
                "mode": "sequential",
            }
            continue
        batch = prompts[:c]
        if static:
            run(batch)  # compile for this batch size
        secs = run(batch)
        res["throughput"][str(c)] = {
            "tokens_per_s": c * new_tokens / secs,
            "mode": "one static batch",
            "batch_latency_s": secs,
        }
    res["memory"] = peak_memory(device)
    return res


# ---------------------------------------------------------------------------------------- (b) engine


def level_record(tokens: int, n_req: int, wall: float, lat: list[float], st: dict, mode: str) -> dict:
    """One concurrency level's figures: throughput and latency from the clients, the rest from the engine's
    stats (in-process, or a replica's through /v1/stats)."""
    sizes = {int(k): v for k, v in (st.get("decode_batch_sizes") or {}).items()}
    steps = sum(sizes.values()) or 1
    return {
        "tokens_per_s": tokens / wall,
        "requests": n_req,
        "wall_s": wall,
        "latency_p50_s": pct(lat, 50),
        "latency_p95_s": pct(lat, 95),
        "mean_decode_batch": sum(k * v for k, v in sizes.items()) / steps,
        "prefill_s": st.get("prefill_s"),
        "decode_s": st.get("decode_s"),
        "decode_steps": st.get("decode_steps"),
        "device_s": st.get("device_s"),
        "mixed_steps": st.get("mixed_steps"),
        "overlapped_prefills": st.get("overlapped_prefills"),
        "prefill_batches": st.get("prefill_batch_sizes"),
        "prefill_tokens": st.get("prefill_tokens"),
        "prefix_hit_tokens": st.get("prefix_hit_tokens"),
        "mode": mode,
    }


def bench_engine(model, prompts, new_tokens, levels, n_latency, rounds, device, opts, eng=None) -> dict:
    """``eng``: an engine already warmed up (profile_serve.py reuses its own); else one is built here."""
    from sqltune.generation import EngineConfig, GenRequest
    from sqltune.generation.engine import Engine

    warm = 0.0
    reset_peak(device)
    if eng is None:
        max_len = max(len(p) for p in prompts)
        cfg = EngineConfig(
            max_slots=max(levels),
            seq_len=max_len + new_tokens + 16,
            decode_chunk=opts.decode_chunk,
            cuda_graphs=not opts.no_graphs,
            compile=opts.compile,
            attn=opts.attn,
            mixed_prefill=opts.mixed_prefill,
            prefix_cache=opts.prefix_cache,
            overlap=not opts.no_overlap,
        )
        eng = Engine(model, None, cfg)
        t0 = time.perf_counter()
        eng.warmup()
        warm = time.perf_counter() - t0
    log(f"engine mode={eng.mode} warm-up {warm:.1f}s")
    res: dict = {"mode": eng.mode, "warmup_s": warm, "decode_chunk": eng.chunk, "throughput": {}}
    try:
        lat, ttft = [], []
        for p in prompts[:n_latency]:
            r = eng.generate([p], new_tokens)[0]
            assert len(r.tokens) == new_tokens, len(r.tokens)
            lat.append(r.finished_at - r.submitted_at)
            ttft.append(r.first_token_at - r.submitted_at)
        res["latency_s"] = {"p50": pct(lat, 50), "p95": pct(lat, 95), "n": len(lat)}
        res["ttft_s"] = {"p50": pct(ttft, 50), "p95": pct(ttft, 95)}

        # The top level again with mixed prefill, then overlapped admission, flipped: the same engine and
        # warm-up, so the settings compare.
        base = (eng.cfg.mixed_prefill, eng.cfg.overlap)
        runs = [(c, "", base) for c in levels]
        if max(levels) > 1:
            top = max(levels)
            runs.append((top, f" (mixed prefill {'off' if base[0] else 'on'})", (not base[0], base[1])))
            if eng.is_cuda:
                runs.append((top, f" (overlap {'off' if base[1] else 'on'})", (base[0], not base[1])))
        for c, tag, (mixed, overlap) in runs:
            eng.cfg.mixed_prefill, eng.cfg.overlap = mixed, overlap
            eng.reset_stats()
            n_req = n_latency if c == 1 else c * rounds
            done_lat: list[float] = []
            lock = threading.Lock()
            counter = iter(range(10**9))
            tokens = [0]

            def client(
                stagger: float, lock=lock, counter=counter, n_req=n_req, done_lat=done_lat, tokens=tokens
            ):
                time.sleep(stagger)
                while True:
                    with lock:
                        k = next(counter)
                    if k >= n_req:
                        return
                    ev = threading.Event()
                    req = GenRequest(
                        prompts[k % len(prompts)],
                        new_tokens,
                        frozenset(),
                        None,
                        lambda _r, _t, fin, ev=ev: fin and ev.set(),
                    )
                    eng.submit(req)
                    ev.wait()
                    with lock:
                        done_lat.append(req.finished_at - req.submitted_at)
                        tokens[0] += len(req.tokens)

            rng = random.Random(c)
            threads = [
                threading.Thread(target=client, args=(rng.uniform(0, 0.05) if c > 1 else 0,))
                for _ in range(c)
            ]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            st = eng.stats()
            res["throughput"][str(c) + tag] = level_record(
                tokens[0], n_req, wall, done_lat, st, "closed-loop clients"
            )
            log(
                f"engine c={c}{tag}: {tokens[0] / wall:,.0f} tok/s, p50 {pct(done_lat, 50):.3f}s, "
                f"prefill {st.get('prefill_s', 0):.3f}s decode {st.get('decode_s', 0):.3f}s of {wall:.3f}s, "
                f"device busy {st.get('device_s') or 0:.3f}s, mean decode batch "
                f"{res['throughput'][str(c) + tag]['mean_decode_batch']:.1f}"
            )
        eng.cfg.mixed_prefill, eng.cfg.overlap = base
        res["memory"] = peak_memory(device)
    finally:
        eng.stop()
    return res


# ---------------------------------------------------------------------------------- (c) Ray Serve HTTP


def save_artifact(model, out: Path, prompt_len: int, vocab_limit: int, n_texts: int = 1,
                  shared: int = 0) -> list[str]:
    """Save the random model with a small locally trained tokenizer; returns ``n_texts`` different texts of
    ~prompt_len tokens whose first ~``shared`` tokens are the same."""
    from sqltune.models.tiny import train_tokenizer
    from sqltune.prompts import PromptTemplate

    words = (
        "select customers orders total revenue country status shipped where group by having count sum "
        "average join table column schema question answer"
    ).split()
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(200)]
    tok = train_tokenizer(corpus, min(512, vocab_limit))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    PromptTemplate().save(out)
    def grow(start: list[str], limit: int) -> list[str]:
        text_words = list(start)
        while len(tok(" ".join(text_words))["input_ids"]) < limit:
            text_words.append(rng.choice(words))
        return text_words

    head = grow([], min(shared, prompt_len - 12)) if shared else []
    return [" ".join(grow(head, prompt_len - 12)) for _ in range(n_texts)]


def _worker_pythonpath() -> list[str]:
    paths = [str(ROOT / "libs"), str(ROOT)]
    for p in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if p and p not in paths:
            paths.append(p)
    return paths


def bench_http(
    model_dir: str, texts: list[str], prompt_len, new_tokens, levels, n_latency, rounds, device, opts
) -> dict[str, dict]:
    """One result per ingress replica count in ``--http-ingress-replicas`` (the first is the headline) and
    per ``--http-variants`` setting, on the first of ``--ray-transport``; each further transport gets the
    headline run again on a Ray started anew (Ray Serve reads its transport when its processes start)."""
    transports = [t.strip() for t in str(opts.ray_transport).split(",") if t.strip()]
    out: dict[str, dict] = {}
    for i, transport in enumerate(transports):
        out.update(
            _http_on_ray(model_dir, texts, prompt_len, new_tokens, levels, n_latency, rounds, device, opts,
                         transport, everything=i == 0, label="" if i == 0 else f" [{transport} transport]")
        )
    return out


TRANSPORT_ENV = {
    # sqltune's clusters: Ray Serve's high-throughput mode (HAProxy, handlers on the replica's loop, gRPC)
    "haproxy": local_serve_env,
    # the Python HTTP proxy, gRPC between the deployments
    "grpc": lambda: {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"},
    # Ray's defaults: the Python HTTP proxy, Ray actor calls
    "actor": dict,
}
"""The Ray environment of each ``--ray-transport``."""


def _start_ray(cuda: bool, counts: list[int]) -> None:
    import ray

    ray.init(
        # logical CPUs: the model replica's 2 and one per ingress replica must fit, even on a small machine
        num_cpus=max(4, os.cpu_count() or 4, 3 + max(counts)),
        num_gpus=1 if cuda else 0,
        include_dashboard=False,
        log_to_driver=False,
        # Prepend, never replace: where ray itself comes from PYTHONPATH (a --target install), workers
        # started with only libs/ on the path cannot import ray and never start.
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_worker_pythonpath())}},
    )


def _http_on_ray(model_dir, texts, prompt_len, new_tokens, levels, n_latency, rounds, device, opts,
                 transport: str, everything: bool, label: str) -> dict[str, dict]:
    import ray
    from ray import serve

    cuda = device.startswith("cuda")
    counts = [int(x) for x in str(opts.http_ingress_replicas).split(",") if x.strip()]
    # Set before Ray starts, as a cluster's pods have it: Ray's processes inherit this environment. This
    # process keeps its own.
    saved = dict(os.environ)
    env = TRANSPORT_ENV[transport]()
    for key in RAY_SERVE_ENV:
        os.environ.pop(key, None)
    os.environ.update(env)
    try:
        _start_ray(cuda, counts)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    top = max(levels)
    opts.http_ingress_first = counts[0]
    out: dict[str, dict] = {}
    runs = [
        ("sqltune via Ray Serve HTTP" + (f" (ingress x{n})" if len(counts) > 1 else "") + label, n, {}, i == 0)
        for i, n in enumerate(counts if everything else counts[:1])
    ]
    for spec in filter(None, (v.strip() for v in str(opts.http_variants or "").split(";") if everything)):
        name, _, kvs = spec.partition(":")
        overrides = {}
        if kvs.strip().startswith("{"):  # a YAML mapping, merged into the args (nested deployment options)
            overrides = yaml.safe_load(kvs)
        for kv in filter(None, (x.strip() for x in kvs.split(","))) if not overrides else ():
            key, _, value = kv.partition("=")
            overrides[key.strip()] = yaml.safe_load(value)
        runs.append((f"sqltune via Ray Serve HTTP [{name.strip()}: {kvs.strip()}]", counts[0], overrides, False))
    try:
        for name, n_ingress, overrides, headline in runs:
            try:
                out[name] = _http_run(
                    serve, model_dir, texts, prompt_len, new_tokens, levels if headline else [1, top],
                    n_latency if headline or overrides else 0, rounds, cuda, opts, port, top, n_ingress,
                    overrides,
                )
                out[name]["ray_transport"] = transport
            except Exception as exc:  # noqa: BLE001 - report and go on with the next setting
                traceback.print_exc()
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        serve.shutdown()
        ray.shutdown()
        if "RAY_SERVE_HAPROXY_SERVER_STATE_BASE" in env:
            shutil.rmtree(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)
    return out


async def _clients(base: str, texts: list[str], offset: int, c: int, n_req: int, new_tokens: int,
                   parts: dict[str, list[float]], gate=None) -> tuple[list[float], int, float]:
    """``c`` closed-loop clients sending ``n_req`` chat completions in all, each with the next of ``texts``
    (from ``offset``); returns (latencies, completion tokens, wall seconds). ``gate``: (ready queue, start
    event) of several client processes: say ready once the connection is warm, then wait for the start."""
    import httpx

    sent = iter(range(offset, 10**9))

    async def one(client) -> tuple[float, int]:
        body = {
            "model": "bench",
            "messages": [{"role": "user", "content": texts[next(sent) % len(texts)]}],  # a new prompt each time
            "max_tokens": new_tokens,
            "ignore_eos": True,
        }
        t = time.perf_counter()
        r = await client.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        secs = time.perf_counter() - t
        timing = server_timing(r.headers.get("server-timing", ""))
        if timing:
            # Where a request's time goes: queued in the replica, generating there, the ingress<->replica
            # hop (ingress minus replica), and outside the app (client latency minus ingress).
            parts.setdefault("replica_queue_ms", []).append(timing["queue"])
            parts.setdefault("replica_total_ms", []).append(timing["replica"])
            parts.setdefault("ingress_hop_ms", []).append(timing["ingress"] - timing["replica"])
            parts.setdefault("outside_app_ms", []).append(secs * 1000 - timing["ingress"])
            if "app" in timing:  # the ingress app around its handler: parsing, validation, middleware
                parts.setdefault("ingress_framework_ms", []).append(timing["app"] - timing["ingress"])
            if "handler" in timing:  # the hop split: the replica's work around the engine, and the transport
                parts.setdefault("replica_prep_ms", []).append(timing["handler"] - timing["replica"])
                parts.setdefault("transport_ms", []).append(timing["ingress"] - timing["handler"])
            if "fwd" in timing:  # the transport's two legs: ingress -> replica handling, and back
                parts.setdefault("forward_ms", []).append(timing["fwd"])
                parts.setdefault("return_ms", []).append(timing["ret"])
        return secs, r.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=c + 4, max_keepalive_connections=c + 4)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        await one(client)  # warm connection
        parts.clear()
        if gate is not None:
            gate[0].put(1)
            await asyncio.to_thread(gate[1].wait)
        lat: list[float] = []
        toks = [0]
        counter = iter(range(10**9))
        rng = random.Random(c + offset)

        async def worker():
            if c > 1:
                await asyncio.sleep(rng.uniform(0, 0.05))
            while next(counter) < n_req:
                secs, n = await one(client)
                lat.append(secs)
                toks[0] += n

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        return lat, toks[0], time.perf_counter() - t


def _client_process(args: tuple, ready, start, out) -> None:
    parts: dict[str, list[float]] = {}
    lat, toks, _ = asyncio.run(_clients(*args, parts, (ready, start)))
    out.put((lat, toks, time.time(), parts))


def run_clients(base: str, texts: list[str], c: int, n_req: int, new_tokens: int, procs: int,
                parts: dict[str, list[float]], on_ready=None) -> tuple[list[float], int, float]:
    """``c`` closed-loop clients in ``procs`` processes (so the client's own CPU time does not limit what is
    measured); returns (latencies, completion tokens, wall seconds from the common start to the last answer)."""
    if procs <= 1:
        return asyncio.run(_clients(base, texts, 0, c, n_req, new_tokens, parts))
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    shares = [(c // procs + (i < c % procs), n_req // procs + (i < n_req % procs)) for i in range(procs)]
    children = [
        ctx.Process(target=_client_process, args=((base, texts, i * 7919, ci, ni, new_tokens), ready, start, out))
        for i, (ci, ni) in enumerate(shares) if ci
    ]
    for p in children:
        p.start()
    for _ in children:
        ready.get(timeout=300)  # every process has its connection warm
    if on_ready is not None:
        on_ready()  # e.g. reset the server's counters: the warm-up requests are not part of the run
    t0 = time.time()
    start.set()
    lat: list[float] = []
    toks, last = 0, t0
    for _ in children:
        child_lat, child_toks, finished, child_parts = out.get(timeout=1200)
        lat += child_lat
        toks += child_toks
        last = max(last, finished)
        for k, v in child_parts.items():
            parts.setdefault(k, []).extend(v)
    for p in children:
        p.join(timeout=60)
    return lat, toks, last - t0


def server_timing(header: str) -> dict[str, float]:
    """``queue;dur=1.2, ttft;dur=3.4`` -> {"queue": 1.2, "ttft": 3.4} (the server's Server-Timing header)."""
    out = {}
    for item in header.split(","):
        name, _, rest = item.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:])
    return out


def _replica_call(serve, method: str):
    """A function calling ``method`` on the SQLModel replica. The handle lives on an event loop of its own:
    with Ray's throughput-optimized settings a handle's router runs on the caller's loop, and this driver
    has none."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def make():
        return serve.get_deployment_handle("SQLModel", app_name="bench")

    handle = asyncio.run_coroutine_threadsafe(make(), loop).result()

    async def call():
        return await getattr(handle, method).remote()

    return lambda: asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=120)


def _http_run(serve, model_dir, texts, prompt_len, new_tokens, levels, n_latency, rounds, cuda, opts, port, top,
              n_ingress, overrides) -> dict:
    import httpx

    from sqltune.serving.config import ServeArgs
    from sqltune.serving.deployments import APIIngress, SQLModel, build_app

    args = {
        "model_uri": model_dir,
        "model_name": "bench",
        "device": "cuda" if cuda else "cpu",
        "precision": "bf16" if cuda else "fp32",
        "max_batch_size": top,
        "max_new_tokens_cap": new_tokens,
        "default_max_new_tokens": new_tokens,
        "max_question_tokens": 1024,
        "max_schema_tokens": 1024,
        "max_prompt_tokens": prompt_len + 64,
        "max_seq_len": 0,
        "max_body_bytes": 1 << 20,
        "decode_chunk": opts.decode_chunk,
        "prefix_cache": opts.prefix_cache,
        "cuda_graphs": not opts.no_graphs,
        "overlap": not opts.no_overlap,
        "compile": opts.compile,
        "debug": False,
        "request_timeout_s": 600,
        "batch_wait_timeout_s": 0.0,
        "model_deployment": {
            "max_ongoing_requests": 2 * top,
            "max_queued_requests": 8 * top,
            "ray_actor_options": {"num_cpus": 2, "num_gpus": 1 if cuda else 0},
        },
        "ingress_deployment": {
            "num_replicas": opts.http_ingress_first,
            "max_ongoing_requests": 4 * top,
            "max_queued_requests": 16 * top,
            "ray_actor_options": {"num_cpus": 1},
        },
    }
    args = merge_mappings(args, overrides)  # a variant: ServeArgs fields (e.g. admit_wait_s=0.03), nested merged
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    if n_ingress == opts.http_ingress_first:
        app = build_app(args)  # what `serve run serve.app:build_app` deploys
    else:  # the model deployment as above, another ingress replica count (Serve may restart the replica)
        plain = ServeArgs.from_args(args).to_dict()
        app = APIIngress.options(**{**args["ingress_deployment"], "num_replicas": n_ingress}).bind(
            SQLModel.options(**args["model_deployment"]).bind(plain), plain
        )
    serve.run(app, name="bench", route_prefix="/", blocking=False)
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=10).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.perf_counter() - t0 > 1200:
            raise TimeoutError("the Ray Serve app did not become ready in 20 minutes")
        time.sleep(2)
    res: dict = {
        "startup_s": time.perf_counter() - t0,
        "ingress_replicas": n_ingress,
        "overrides": overrides,
        "throughput": {},
    }
    info = httpx.get(f"{base}/readyz", timeout=10).json()
    res["replica_load_s"] = info.get("load_s")
    res["replica_startup"] = info.get("startup")
    log(f"http app (ingress x{n_ingress}) ready in {res['startup_s']:.1f}s (replica load + warm-up "
        f"{info.get('load_s')}s: {info.get('startup')})")
    reset_stats = _replica_call(serve, "reset_stats")
    parts: dict[str, list[float]] = {}

    def run_level(c: int, n_req: int):
        return run_clients(base, texts, c, n_req, new_tokens, opts.client_procs if c > 1 else 1, parts,
                           on_ready=reset_stats)

    if n_latency:
        lat, _, _ = run_level(1, n_latency)
        res["latency_s"] = {"p50": pct(lat, 50), "p95": pct(lat, 95), "n": len(lat)}
    for c in levels if n_latency else [max(levels)]:
        n_req = (n_latency or 20) if c == 1 else c * rounds
        reset_stats()
        parts.clear()
        lat, toks, wall = run_level(c, n_req)
        assert toks == n_req * new_tokens, (toks, n_req)
        stats = httpx.get(f"{base}/v1/stats", timeout=30).json()
        res["transport"] = stats.get("transport")  # as the ingress reports it
        st = stats.get("engine", {})
        res["throughput"][str(c)] = {
            **level_record(toks, n_req, wall, lat, st, "closed-loop HTTP clients"),
            "server_timing_mean_ms": {k: round(sum(v) / len(v), 2) for k, v in parts.items() if v},
        }
        if "gathered" in stats:  # coalesce_ms: one ingress replica's gathered calls since it started
            res["throughput"][str(c)]["gathered_one_ingress"] = stats["gathered"]
        log(f"http c={c}: {toks / wall:,.0f} tok/s, p50 {pct(lat, 50):.3f}s; engine prefill "
            f"{st.get('prefill_s') or 0:.3f}s decode {st.get('decode_s') or 0:.3f}s of {wall:.3f}s, device busy "
            f"{st.get('device_s') or 0:.3f}s, mean decode batch {res['throughput'][str(c)]['mean_decode_batch']:.1f}, "
            f"overlapped prefills {st.get('overlapped_prefills') or 0}")
    res["memory"] = other_process_gpu_memory() if cuda else {}
    return res


# --------------------------------------------------------------------------------------------- main


def fmt(x, unit="") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if unit == "s":
        return f"{x:.3f}"
    return f"{x:,.0f}"


def table(results: dict, levels: list[int]) -> str:
    head = ["variant", "p50 s", "p95 s"] + [f"tok/s @{c}" for c in levels]
    rows = [head]
    for name, r in results.items():
        if not isinstance(r, dict) or "error" in r or "skipped" in r:
            reason = r.get("error") or r.get("skipped") if isinstance(r, dict) else r
            rows.append([name, "-", "-"] + ["-"] * len(levels) + [f"({str(reason)[:60]})"])
            continue
        lat = r.get("latency_s", {})
        rows.append(
            [name, fmt(lat.get("p50"), "s"), fmt(lat.get("p95"), "s")]
            + [fmt(r.get("throughput", {}).get(str(c), {}).get("tokens_per_s")) for c in levels]
        )
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(head))]
    lines = []
    for row in rows:
        cells = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row[: len(head)])]
        lines.append("| " + " | ".join(cells) + " |" + (f" {row[len(head)]}" if len(row) > len(head) else ""))
        if row is head:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke test of every code path)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 320; tiny 48)")
    ap.add_argument("--new-tokens", type=int, default=None, help="generated tokens (default 64; tiny 16)")
    ap.add_argument("--levels", default=None, help="concurrency levels (default 1,16,64; tiny 1,4,8)")
    ap.add_argument("--latency-requests", type=int, default=None, help="sequential requests for p50/p95")
    ap.add_argument("--rounds", type=int, default=None,
                    help="requests per client at each concurrency level (default 16; tiny 4): enough that the "
                         "ramp-up and the drain at the end weigh little against the steady state")
    ap.add_argument(
        "--only",
        default="generate,engine,http,cold",
        help="comma list of sections: generate, generate-static, engine, http, cold (serve run from no Ray "
             "to ready: benchmarks/cold_start.py)",
    )
    ap.add_argument("--cold-repeats", type=int, default=1, help="cold starts measured in the cold section")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="engine torch.compile")
    ap.add_argument("--no-graphs", action="store_true", help="engine without CUDA graphs")
    ap.add_argument("--mixed-prefill", action="store_true",
                    help="in-process engine: new requests' prefill carries a decode step of the running ones "
                         "(the top level is also run with the other setting)")
    ap.add_argument("--no-overlap", action="store_true",
                    help="engine and replica: admit arrivals only after a decode chunk's tokens are back "
                         "(EngineConfig.overlap off; the in-process top level is also run with the other setting)")
    ap.add_argument("--decode-chunk", type=int, default=0, help="engine decode steps per host sync (0: auto)")
    ap.add_argument(
        "--attn",
        default="auto",
        choices=["auto", "triton", "sdpa", "math"],
        help="engine decode attention (auto: Triton split-K on CUDA, else SDPA)",
    )
    ap.add_argument("--http-ingress-replicas", default="2",
                    help="comma list: the HTTP section runs once per ingress replica count (the first is the "
                         "headline, with the single-request latency)")
    ap.add_argument("--client-procs", type=int, default=None,
                    help="HTTP clients run in this many processes (the concurrent clients split between them, so "
                         "the client's own CPU does not limit what is measured; default 4, tiny 1)")
    ap.add_argument("--shared-prefix", type=int, default=0,
                    help="prompt tokens every request shares (a system prompt and schema); the rest differs")
    ap.add_argument("--prefix-cache", type=int, default=0,
                    help="prefix cache rows of the engine and the replica (EngineConfig.prefix_cache; 0: off)")
    ap.add_argument("--http-variants", default="",
                    help="more HTTP runs, each with server args changed: 'name:key=value,key=value;name2:...' "
                         "(e.g. 'admit:admit_wait_s=0.03'), or 'name:{YAML mapping}' merged into the args (e.g. "
                         "'loop:{model_deployment: {ray_actor_options: {runtime_env: {env_vars: "
                         "{RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD: \"0\"}}}}}'); each runs the single-request "
                         "latency and the top level")
    ap.add_argument("--ray-transport", default="haproxy",
                    help="how Ray Serve carries the requests: haproxy (sqltune's clusters, RAY_SERVE_ENV: Ray "
                         "Serve's high-throughput mode, HAProxy in front of the ingress replicas, gRPC to the "
                         "model replica), grpc (the Python HTTP proxy, gRPC between the deployments) or actor "
                         "(Ray's defaults: the Python proxy, Ray actor calls); 'haproxy,grpc' runs the headline "
                         "HTTP setting again on the second, on a Ray started anew")
    ap.add_argument(
        "--out", default=None, help="write the JSON here (default benchmarks/results/serve-*.json)"
    )
    opts = ap.parse_args(argv)
    bad = [t for t in opts.ray_transport.split(",") if t.strip() not in TRANSPORT_ENV]
    if bad:
        ap.error(f"--ray-transport: {', '.join(bad)} is not one of {', '.join(TRANSPORT_ENV)} "
                 "(e.g. --ray-transport haproxy,grpc)")

    device = opts.device or ("cuda" if torch.cuda.is_available() and not opts.tiny else "cpu")
    tiny = opts.tiny
    prompt_len = opts.prompt_len or (48 if tiny else 320)
    new_tokens = opts.new_tokens or (16 if tiny else 64)
    levels = [int(x) for x in (opts.levels or ("1,4,8" if tiny else "1,16,64")).split(",")]
    if opts.rounds is None:
        opts.rounds = 4 if tiny else 16
    if opts.client_procs is None:
        opts.client_procs = 1 if tiny else 4
    n_latency = opts.latency_requests or (5 if tiny else 20)
    sections = [s.strip() for s in opts.only.split(",") if s.strip()]
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32

    machine = {
        "device": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        import transformers

        machine["transformers"] = transformers.__version__
    except ImportError:
        pass
    log(f"device {machine['device']}; prompt {prompt_len} tokens, {new_tokens} new; levels {levels}")
    cfg = model_config(tiny)
    held = {"model": build_model(cfg, device, dtype)}  # dropped before the HTTP section frees the GPU
    model = held["model"]
    nparams = sum(p.numel() for p in model.parameters())
    del model
    log(f"model: {nparams / 1e9:.2f}B parameters ({'tiny' if tiny else 'Qwen2.5-3B shape'}), {dtype}")
    # Every request a different prompt (the HTTP texts too), sharing its first --shared-prefix tokens.
    prompts = make_prompts(max(levels) * (opts.rounds + 1) + n_latency, prompt_len, cfg.vocab_size,
                           shared=opts.shared_prefix)
    results: dict = {}

    def section(name: str, fn):
        log(f"--- {name}")
        try:
            results[name] = fn()
        except Exception as exc:  # noqa: BLE001 - report and continue with the other sections
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

    if "generate" in sections:
        section(
            "generate (eager, dynamic cache)",
            lambda: bench_generate(held["model"], prompts, new_tokens, levels, n_latency, device),
        )
    if "generate-static" in sections:
        section(
            "generate (static cache + compile)",
            lambda: bench_generate(
                held["model"], prompts, new_tokens, levels, min(n_latency, 10), device, static=True
            ),
        )

    model_dir = None
    texts: list[str] = []
    tmp = None
    if "http" in sections or "cold" in sections:
        try:
            import ray  # noqa: F401
            from ray import serve  # noqa: F401

            tmp = tempfile.TemporaryDirectory(prefix="sqltune-bench-")
            model_dir = str(Path(tmp.name) / "model")
            log("saving the model for the Ray Serve replica")
            texts = save_artifact(held["model"], Path(model_dir), prompt_len, cfg.vocab_size,
                                  n_texts=max(levels) * (opts.rounds + 1) + n_latency + 2, shared=opts.shared_prefix)
        except ImportError as exc:
            results["sqltune via Ray Serve HTTP"] = {"skipped": f"ray[serve] not installed ({exc})"}

    if "engine" in sections:
        section(
            "sqltune engine (in-process)",
            lambda: bench_engine(
                held["model"], prompts, new_tokens, levels, n_latency, opts.rounds, device, opts
            ),
        )
    held.clear()
    torch._dynamo.reset()  # drop compiled code (and anything it references) before the HTTP section
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    if model_dir is not None and "http" in sections:
        section(
            "http",
            lambda: bench_http(
                model_dir, texts, prompt_len, new_tokens, levels, n_latency, opts.rounds, device, opts
            ),
        )
        if "http" in results:
            http = results.pop("http")
            results.update(http if "error" not in http else {"sqltune via Ray Serve HTTP": http})
    cold: dict = {}
    if model_dir is not None and "cold" in sections:
        log("--- cold start: serve run of serve/config.yaml, no Ray running, empty compile caches")
        try:
            cold = cold_start.measure(model_dir, device, opts.cold_repeats)
        except Exception as exc:  # noqa: BLE001 - report it with the rest
            traceback.print_exc()
            cold = {"error": f"{type(exc).__name__}: {exc}"}
    # The HTTP path is where users meet the model: it heads the table and the JSON.
    results = dict(sorted(results.items(), key=lambda kv: not kv[0].startswith("sqltune via Ray Serve HTTP")))
    if tmp is not None:
        tmp.cleanup()

    report = {
        "benchmark": "serve",
        "machine": machine,
        "workload": {
            "model": "tiny" if tiny else "Qwen2.5-3B shape (random weights)",
            "dtype": str(dtype),
            "prompt_tokens": prompt_len,
            "new_tokens": new_tokens,
            "levels": levels,
            "shared_prefix_tokens": opts.shared_prefix,
            "http_client_processes": opts.client_procs,
            "ray_transport": opts.ray_transport,
            "prefix_cache": opts.prefix_cache,
            "distinct_prompts": True,
            "latency_requests": n_latency,
            "rounds": opts.rounds,
        },
        "targets": {"http_p50_single_s": 0.20, "http_tokens_per_s_at_64": 8000, "http_cold_start_s": 30},
        "cold_start": cold,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    print()
    print(table(results, levels))
    print()
    out = (
        Path(opts.out)
        if opts.out
        else ROOT
        / "benchmarks"
        / "results"
        / (f"serve-{'tiny' if tiny else 'qwen2.5-3b'}-{device.split(':')[0]}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    for name, r in results.items():
        if not isinstance(r, dict) or "throughput" not in r:
            continue
        mem = r.get("memory") or {}
        gib = mem.get("replica_gpu_gib", mem.get("peak_allocated_gib"))
        extra = [f"memory {gib} GiB" if gib is not None else "memory n/a"]
        if "startup_s" in r:
            extra.append(f"ready {r['startup_s']:.1f}s after serve.run (replica load + warm-up {r.get('replica_load_s')}s)")
        if "warmup_s" in r and r["warmup_s"]:
            extra.append(f"warm-up {r['warmup_s']:.1f}s")
        print(f"{name}: " + "; ".join(extra))
    if cold.get("ready_s"):
        print(f"cold start (serve run, no Ray running, empty compile caches): ready after "
              f"{', '.join(f'{x:.1f}s' for x in cold['ready_s'])} (target {report['targets']['http_cold_start_s']}s)")
    log(f"wrote {out}")
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    failed += ["cold start"] if "error" in cold else []
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
