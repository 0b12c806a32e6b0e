#!/usr/bin/env python3
"""Where the serving engine's time goes (GPU): ceilings, decode attention, per-step time vs batch, prefill.

    python benchmarks/profile_serve.py --out /tmp/prof        # Qwen2.5-3B shape, bf16, random weights

Prints short tables and writes profile.json (and kernel tables from torch.profiler) under --out:
* ceilings: device-to-device copy bandwidth; each decode GEMM alone at batch 1 and 64 (the weight-read floor);
* decode attention: Triton split-K vs SDPA (memory-efficient, masked over the length bucket), error against
  a float64 reference on random data;
* the engine's decode step (CUDA graph replay) per batch bucket, with either attention;
* prefill time by prompts x length; the same length repeated vs first seen;
* kernel tables of one decode step (eager, batch 1 and 64) and of one prefill;
* the in-process engine benchmark (bench_serve.bench_engine) for each --chunks value.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bench_serve as bs  # noqa: E402


def ev_time(fn, iters: int = 20, warm: int = 3) -> float:
    """Median seconds per call, CUDA events around each call."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    times.sort()
    return times[len(times) // 2]


def ceilings(out: dict) -> None:
    n = 1 << 28  # 512 MiB of bf16, well past L2
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    t = ev_time(lambda: dst.copy_(src))
    out["copy_GBps"] = 2 * src.numel() * 2 / t / 1e9
    del src, dst
    torch.cuda.empty_cache()


def graph_ms(fn, iters: int = 20) -> float:
    """Capture ``fn`` (many launches) in one CUDA graph; median replay time in ms."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    t = ev_time(g.replay, iters=iters) * 1e3
    del g
    return t


def floors(eng, out: dict) -> None:
    """The decode step's parts alone, with the engine's own weights and caches (graph-captured, 36 layers)."""
    r = eng.runner.passes
    res = {}
    H = r.w[0]["o"].shape[0]
    inter = r.w[0]["inter"]
    for B in (1, eng.cfg.max_slots):
        xh = torch.randn(B, H, device="cuda", dtype=r.dtype)
        xi = torch.randn(B, inter, device="cuda", dtype=r.dtype)

        def gemms(xh=xh, xi=xi):
            for w in r.w:
                F.linear(xh, w["qkv"])
                F.linear(xh, w["o"])
                F.linear(xh, w["gu"])
                F.linear(xi, w["down"])
            F.linear(xh, r.lm_head.weight).argmax(-1)

        nbytes = sum(w[k].numel() for w in r.w for k in ("qkv", "o", "gu", "down")) * 2
        nbytes += r.lm_head.weight.numel() * 2
        t = graph_ms(gemms)
        res[f"gemms_ms@{B}"] = t
        res[f"gemms_GBps@{B}"] = nbytes / (t / 1e3) / 1e9
        q = torch.randn(B, r.nh + r.nkv, r.hd, device="cuda", dtype=r.dtype)[:, : r.nh]
        pos = torch.full((B,), 340, device="cuda")
        if r.dec_attn is not None:

            def tri(q=q, pos=pos):
                for i in range(r.nl):
                    r.dec_attn(q, eng.runner.k_cache[i], eng.runner.v_cache[i], pos)

            res[f"attn_triton_ms@{B}"] = graph_ms(tri)
        L = min(512, eng.cfg.seq_len)
        ar = torch.arange(L, device="cuda")
        mask = torch.zeros((), dtype=r.dtype, device="cuda").masked_fill(ar[None, :] > pos[:, None], float("-inf"))[
            :, None, None, :
        ]
        qg = q.reshape(B, r.nkv, r.group, r.hd)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sd(qg=qg, mask=mask, B=B, L=L):
            with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
                for i in range(r.nl):
                    F.scaled_dot_product_attention(
                        qg, eng.runner.k_cache[i][:B, :, :L], eng.runner.v_cache[i][:B, :, :L], attn_mask=mask, scale=r.scale
                    )

        res[f"attn_sdpa_L512_ms@{B}"] = graph_ms(sd)
    out["floors"] = res


def attention(out: dict, seq_len: int) -> None:
    from sqltune.generation.kernels import DecodeAttention

    S, nh, nkv, hd = 64, 16, 2, 128
    scale = hd**-0.5
    att = DecodeAttention(S, nh, nkv, hd, seq_len, scale, "cuda")
    kc = torch.randn(S, nkv, seq_len, hd, device="cuda", dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    res = {}
    g = torch.Generator(device="cpu").manual_seed(1)
    for B in (1, 7, 64):
        qall = torch.randn(B, nh + nkv, hd, device="cuda", dtype=torch.bfloat16)
        q = qall[:, :nh]  # strided like the engine's q (a view of the RoPE output)
        pos = torch.randint(300, 360, (B,), generator=g).to("cuda")
        pos[0] = 0 if B > 1 else pos[0]
        o = att(q, kc, vc, pos)
        # float64 reference
        errs = []
        for b in range(B):
            n = int(pos[b]) + 1
            k = kc[b, :, :n].double().repeat_interleave(nh // nkv, 0)
            v = vc[b, :, :n].double().repeat_interleave(nh // nkv, 0)
            s = torch.einsum("hd,hnd->hn", q[b].double(), k) * scale
            ref = torch.einsum("hn,hnd->hd", s.softmax(-1), v)
            errs.append(((o[b].double() - ref).norm() / ref.norm()).item())
        t_tri = graph_ms(lambda q=q, pos=pos: [att(q, kc, vc, pos) for _ in range(36)]) / 36 / 1e3
        # SDPA as the engine ran it: memory-efficient kernel, additive mask over a 512 bucket.
        L = min(512, seq_len)
        ar = torch.arange(L, device="cuda")
        mask = torch.zeros((), dtype=torch.bfloat16, device="cuda").masked_fill(
            ar[None, :] > pos[:, None], float("-inf")
        )[:, None, None, :]
        qg = q.reshape(B, nkv, nh // nkv, hd)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sd(qg=qg, mask=mask, B=B, L=L):
            with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
                return F.scaled_dot_product_attention(qg, kc[:B, :, :L], vc[:B, :, :L], attn_mask=mask, scale=scale)

        o_sd = sd().reshape(B, nh, hd)
        rows = [b for b in range(B)]
        d = (o_sd[rows].float() - o[rows].float()).norm() / o_sd.float().norm()
        t_sd = graph_ms(lambda: [sd() for _ in range(36)]) / 36 / 1e3
        sweep = {}
        for split in (32, 64, 128, 256):
            att.split_for = lambda _b, split=split: split
            sweep[str(split)] = graph_ms(lambda q=q, pos=pos: [att(q, kc, vc, pos) for _ in range(36)]) / 36 * 1e3
        del att.split_for
        res[str(B)] = {
            "split_sweep_us": sweep,
            "triton_us": t_tri * 1e6,
            "sdpa_eff_us": t_sd * 1e6,
            "max_rel_err_vs_f64": max(errs),
            "rel_diff_vs_sdpa": d.item(),
            "split": att.split_for(B),
        }
    out["attention"] = res
    del kc, vc
    torch.cuda.empty_cache()


def engine_steps(eng, out: dict) -> None:
    """Graph replay time per batch bucket (positions ~340), both attentions; prefill timings."""
    r = eng.runner.passes
    steps = {}
    for B in eng.runner.batch_buckets:
        eng.runner.pos_buf[:B].fill_(340)
        g = eng.runner._graphs.get((B, eng.runner.len_buckets[0]))
        if g is None:
            continue

        def rep(g=g, B=B):
            eng.runner.pos_buf[:B].fill_(340)
            eng.runner.step_buf.zero_()  # the graph writes out_buf[:, step]; a chunk never runs past its width
            g.replay()

        steps[str(B)] = {"graph_ms": ev_time(rep, iters=20) * 1e3}
    eng.runner.pos_buf.zero_()
    eng.runner.tokens_buf.zero_()
    # SDPA attention on the same engine: capture B=1 and B=64 graphs for the 512 bucket ad hoc.
    if r.attn == "triton":
        saved = dict(eng.runner._graphs)
        r.set_attn("sdpa")
        try:
            for B in (1, eng.cfg.max_slots):
                L = min(512, eng.cfg.seq_len)
                g = eng.runner._capture(B, L)

                def rep(g=g, B=B):
                    eng.runner.pos_buf[:B].fill_(340)
                    eng.runner.step_buf.zero_()
                    g.replay()

                steps[str(B)]["graph_ms_sdpa_L512"] = ev_time(rep, iters=20) * 1e3
        except Exception as exc:  # noqa: BLE001
            steps["sdpa_error"] = repr(exc)
        finally:
            r.set_attn("triton")
            eng.runner._graphs = saved
        eng.runner.pos_buf.zero_()
        eng.runner.tokens_buf.zero_()
    out["decode_step"] = steps
    pre = {}
    gen = torch.Generator().manual_seed(0)
    shapes = [(1, 320), (1, 320), (1, 321), (1, 317), (1, 333)]
    shapes += [(n, 320) for n in (2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 64, 64)]
    for n, T in shapes:
        ids = torch.randint(100, 150000, (n, T), generator=gen).cuda()
        lens = torch.full((n,), T, device="cuda")
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        with torch.inference_mode():
            a.record()
            r.prefill(ids, lens, torch.arange(n, device="cuda"), eng.runner.k_cache, eng.runner.v_cache)
            b.record()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        # wall (with the sync), host (launching only), device (CUDA events): launch-bound when host >= device
        pre.setdefault(f"{n}x{T}", []).append(
            {"wall_ms": (time.perf_counter() - t0) * 1e3, "host_ms": (t1 - t0) * 1e3, "device_ms": a.elapsed_time(b)}
        )
    for T in (320, 384):  # captured single-prompt prefill graphs (engine path for one prompt)
        if T in eng.runner._pf_graphs:
            pre[f"graph_{T}"] = ev_time(eng.runner._pf_graphs[T][0].replay, iters=10) * 1e3
    out["prefill_ms"] = pre


def kernel_tables(eng, outdir: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    r = eng.runner.passes
    text = []
    for B in (1, eng.cfg.max_slots):
        eng.runner.pos_buf[:B].fill_(340)
        eng.runner.step_buf.zero_()
        with torch.inference_mode():
            eng.runner._step_eager(B, eng.runner.len_buckets[0])
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    eng.runner.pos_buf[:B].fill_(340)
                    eng.runner.step_buf.zero_()
                    eng.runner._step_eager(B, eng.runner.len_buckets[0])
                torch.cuda.synchronize()
        text.append(f"=== eager decode step B={B} x3\n")
        text.append(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))
        g = eng.runner._graphs.get((B, eng.runner.len_buckets[0]))
        if g is not None:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    eng.runner.step_buf.zero_()
                    g.replay()
                torch.cuda.synchronize()
            text.append(f"=== graph replay B={B} x3\n")
            text.append(
                prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70)
            )
    eng.runner.pos_buf.zero_()
    for n in (1, 64):
        ids = torch.randint(100, 150000, (n, 320)).cuda()
        lens = torch.full((n,), 320, device="cuda")
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            r.prefill(ids, lens, torch.arange(n, device="cuda"), eng.runner.k_cache, eng.runner.v_cache)
            torch.cuda.synchronize()
        text.append(f"=== prefill {n}x320\n")
        text.append(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))
    (outdir / "kernels.txt").write_text("\n".join(text))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--chunks", default="8,16")
    ap.add_argument("--skip", default="", help="comma list: ceilings, attention, steps, kernels, bench")
    opts = ap.parse_args()
    outdir = Path(opts.out)
    outdir.mkdir(parents=True, exist_ok=True)
    skip = set(opts.skip.split(","))
    res: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    t_all = time.perf_counter()

    def save():
        (outdir / "profile.json").write_text(json.dumps(res, indent=1, default=str))

    if "ceilings" not in skip:
        ceilings(res)
        bs.log(f"ceilings: copy {res['copy_GBps']:.0f} GB/s")
        save()
    if "attention" not in skip:
        try:
            attention(res, 448)
            bs.log(f"attention: {json.dumps(res['attention'])}")
        except Exception as exc:  # noqa: BLE001 - the engine falls back to SDPA; keep measuring
            import traceback

            traceback.print_exc()
            res["attention"] = {"error": repr(exc)}
        save()

    from sqltune.generation import EngineConfig
    from sqltune.generation.engine import Engine

    cfg = bs.model_config(False)
    model = bs.build_model(cfg, "cuda", torch.bfloat16)
    prompts = bs.make_prompts(64 * 2 + 20, 320, cfg.vocab_size)
    max_len = max(len(p) for p in prompts)
    chunks = [int(c) for c in opts.chunks.split(",") if c]
    for ci, chunk in enumerate(chunks):
        ecfg = EngineConfig(max_slots=64, seq_len=max_len + 64 + 16, decode_chunk=chunk)
        eng = Engine(model, None, ecfg)
        t0 = time.perf_counter()
        eng.warmup(capture=True)  # also starts the (idle) scheduler thread
        res.setdefault("warmup_s", {})[str(chunk)] = time.perf_counter() - t0
        res["mode"] = eng.mode
        bs.log(f"engine chunk={chunk} mode={eng.mode} warm-up {time.perf_counter() - t0:.1f}s")
        try:
            if ci == 0 and "steps" not in skip:
                with torch.inference_mode():
                    floors(eng, res)
                    bs.log(f"floors: {json.dumps(res['floors'])}")
                    engine_steps(eng, res)
                bs.log(f"decode steps: {json.dumps(res['decode_step'])}")
                bs.log(f"prefill ms: {json.dumps(res['prefill_ms'])}")
                save()
            if ci == 0 and "kernels" not in skip:
                try:
                    with torch.inference_mode():  # the engine's buffers are inference tensors
                        kernel_tables(eng, outdir)
                except Exception as exc:  # noqa: BLE001
                    bs.log(f"profiler failed: {exc!r}")
            if "bench" not in skip:
                b = bs.bench_engine(model, prompts, 64, [1, 16, 64], 20, 4, "cuda", None, eng=eng)
                res.setdefault("bench", {})[str(chunk)] = b
                t = b["throughput"]
                bs.log(
                    f"BENCH chunk={chunk}: p50 {b['latency_s']['p50']:.3f} p95 {b['latency_s']['p95']:.3f} "
                    f"ttft {b['ttft_s']['p50']:.3f} | "
                    + " ".join(f"@{c} {t[c]['tokens_per_s']:,.0f}" for c in t)
                )
                save()
        finally:
            eng.stop()
        del eng
        torch.cuda.empty_cache()
    res["total_s"] = time.perf_counter() - t_all
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
