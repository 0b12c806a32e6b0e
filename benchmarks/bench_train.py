"""Training throughput and memory: ``python -m jobs.train`` vs the plain QLoRA recipe, in one run.

    python benchmarks/bench_train.py                 # GPU: Qwen2.5-3B-shaped model (random weights)
    python benchmarks/bench_train.py --tiny          # CPU smoke test: a small Qwen2 of the same layout
    python benchmarks/bench_train.py --json out.json --steps 10 --b-configs selective:8x2048,full:16x2048

(job) the training job itself: ``python -m jobs.train --config jobs/configs/qwen2.5-3b-qlora.yaml`` (its Ray
    Train path, one worker), with only the base model (a random-weight model of the preset's shape saved
    to disk with a BPE tokenizer trained on the dataset: no hub here), the dataset (the embedded set,
    SQLite only) and the output place overridden. Tokens/s after warm-up (the log windows after the
    first) and the peak GPU memory come from the job's own metrics (``metrics.json``'s history), and so
    does the time spent on validation, against the job's wall time.

The step arms below train the same LoRA (r16/a32 on every linear projection, the Qwen2.5-3B preset's adapter) on
an NF4 (double-quantized, bf16 compute) base with bitsandbytes' paged 8-bit AdamW, over examples whose
lengths follow a real prompt distribution (the embedded dataset's prompts + SQL, or Spider dev's with
``--lengths spider``), loss on the SQL tokens only.

(a) plain: what the replaced projects ran: ``prepare_model_for_kbit_training`` (which upcasts the
    embeddings/head and norms to fp32), gradient checkpointing on every layer, batch 4 with dynamic
    padding, the model's own loss (full fp32 logits).
(b) sqltune: the step of ``sqltune.train.loop`` (``forward_loss``): padding-free packing into rows of
    ``row_tokens`` (position ids restart per example; no attention across examples: one varlen
    flash-attention call per layer, ``sqltune_packed_sdpa``), frozen weights kept in bf16, the forward
    under bf16 autocast (fp32 LoRA master weights), the loss computed in chunks from hidden states (no
    full logits), selective (MLP-only), full or no checkpointing, Liger kernels when ``liger_kernel``
    imports, optionally ``torch.compile`` per layer. Several settings are measured (``--b-configs``,
    ``CKPT:ROWSxTOKENS[+OPTION...]``; options ``sdpa``: transformers' SDPA with a block-diagonal mask,
    ``fp32lora``: no autocast, so peft runs LoRA in fp32, ``upcast``: the non-quantized frozen weights
    upcast to fp32 as ``prepare_model_for_kbit_training`` does, ``compile``); the best one within the
    memory limit (default 24 GiB) is reported as (b). These arms are the breakdown of the job's step.

Counted tokens are real tokens (no padding). Model FLOPs per token: 4N (forward 2N + backward through
the frozen base 2N; N = parameters in matmuls, lm_head included, embeddings lookup excluded); recomputation
and LoRA's small extra work are not counted. The fraction of peak uses the GPU's dense bf16 peak
(H100/H200 SXM: 989 TFLOPS; pass --peak-tflops otherwise). Peak memory is
``torch.cuda.max_memory_allocated`` (paged optimizer state lives in managed memory and is not in it;
with 8-bit state for ~30M LoRA parameters it is ~60 MB).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

QWEN25_3B = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
    num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True, use_sliding_window=False, hidden_act="silu",
)
TINY = dict(
    vocab_size=4096, hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True, use_sliding_window=False, hidden_act="silu",
)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


@dataclass
class Arm:
    name: str
    settings: dict[str, Any]
    tokens_per_s: float = 0.0
    step_s: float = 0.0
    tokens_per_step: float = 0.0
    padding_fraction: float = 0.0
    peak_gib: float = 0.0
    reserved_gib: float = 0.0
    mfu: float | None = None
    loss_first: float | None = None
    loss_last: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- lengths


def example_lengths(source: str, n: int, seed: int, scale: float) -> list[tuple[int, int]]:
    """(prompt tokens, target tokens) pairs following a real distribution, estimated at ~``scale`` chars
    per token (Qwen's BPE on schema DDL + English + SQL averages about 3.5)."""
    from sqltune.prompts import PromptTemplate, build_messages

    texts: list[tuple[str, str]] = []
    if source == "spider":
        from sqltune.data import load_dataset
        from sqltune.fixtures import locate

        spider = locate("spider-dev")
        exs = load_dataset(spider, format="spider", split="dev")
    else:
        from sqltune.data.embedded import embedded_examples

        exs = embedded_examples(seed=0)
    tpl = PromptTemplate()
    for ex in exs:
        msgs = build_messages(ex.question, ex.schema, dialect=ex.dialect, template=tpl)
        prompt = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
        prompt += "<|im_start|>assistant\n"
        texts.append((prompt, ex.sql + "<|im_end|>"))
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p, t = rng.choice(texts)
        out.append((max(8, round(len(p) / scale)), max(2, round(len(t) / scale))))
    return out


def make_rows(lengths: list[tuple[int, int]], vocab: int, seed: int) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    rows = []
    for p, t in lengths:
        ids = [rng.randrange(10, vocab) for _ in range(p + t)]
        rows.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    return rows


# ------------------------------------------------------------------------------------------ model


def build_base(shape: dict[str, Any], device: str, *, liger: bool, attn: str = "sdpa"):
    """A random-weight Qwen2 with every decoder linear replaced by a bitsandbytes NF4 Linear4bit."""
    import bitsandbytes as bnb
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if liger:
        from sqltune.train.fast import apply_liger

        liger = apply_liger("qwen2")
    config = Qwen2Config(**shape)
    config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if not isinstance(child, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(
                    child.in_features, child.out_features, bias=child.bias is not None,
                    compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                    quant_storage=torch.uint8, device="meta",
                )
                q.weight = bnb.nn.Params4bit(
                    child.weight.data.to("cpu") if device == "cpu" else child.weight.data,
                    requires_grad=False, compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8,
                    module=q,
                ).to(device)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                if device == "cpu":
                    q.support_avx512bf16_for_cpu = False
                setattr(parent, name, q)
                del child
    model.is_loaded_in_4bit = True
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return model, bool(liger)


def lora(model, r: int = 16, alpha: int = 32):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.05, target_modules=LORA_TARGETS,
                                            bias="none", task_type="CAUSAL_LM"))


def matmul_params(shape: dict[str, Any]) -> float:
    h, i, L, v = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    return float(L * per_layer + h * v)


def peak_flops(device: str, override: float | None) -> tuple[float | None, str]:
    import torch

    if override:
        return override * 1e12, f"--peak-tflops {override}"
    if not device.startswith("cuda"):
        return None, "cpu"
    name = torch.cuda.get_device_name(0)
    for key, tf in PEAK_TFLOPS.items():
        if key in name:
            return tf * 1e12, name
    return None, name


# ------------------------------------------------------------------------------------------- arms


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_memory(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _memory(device: str) -> tuple[float, float]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30
    try:
        import psutil

        rss = psutil.Process().memory_info().rss / 2**30
    except ImportError:
        rss = 0.0
    return rss, rss


def run_steps(arm: Arm, model, batches, step_fn, *, device: str, warmup: int, steps: int, flops_tok: float,
              peak: float | None) -> Arm:
    """Warm up, then time ``steps`` optimizer steps of ``step_fn(model, batch) -> (loss, real, padded)``."""
    import bitsandbytes as bnb

    params = [p for p in model.parameters() if p.requires_grad]
    opt = bnb.optim.PagedAdamW8bit(params, lr=2e-4)
    losses = []
    _reset_memory(device)
    it = iter(batches)
    for _ in range(warmup):
        loss, _, _ = step_fn(model, next(it))
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    real = padded = 0
    start = time.perf_counter()
    for _ in range(steps):
        loss, r, pd = step_fn(model, next(it))
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        real += r
        padded += pd
    _sync(device)
    elapsed = time.perf_counter() - start
    arm.tokens_per_s = real / elapsed
    arm.step_s = elapsed / steps
    arm.tokens_per_step = real / steps
    arm.padding_fraction = 1 - real / padded if padded else 0.0
    arm.peak_gib, arm.reserved_gib = _memory(device)
    arm.loss_first, arm.loss_last = losses[0], losses[-1]
    if peak:
        arm.mfu = arm.tokens_per_s * flops_tok / peak
    del opt
    return arm


def plain_batches(rows, batch_size: int, pad_id: int, seed: int):
    """Random batches of ``batch_size`` examples, padded to the longest (a DataCollator's behaviour)."""
    from sqltune.train.data import collate_padded

    rng = random.Random(seed)
    while True:
        yield collate_padded(rng.sample(rows, batch_size), pad_id)


def packed_batches(rows, n_rows: int, row_tokens: int, pad_id: int, seed: int):
    """Rows filled first-fit from a shuffled stream (sqltune's BatchPlan packing) until each is full."""
    from sqltune.train.data import collate_packed_rows, pack_greedy

    rng = random.Random(seed)
    lengths = [len(r["input_ids"]) for r in rows]
    while True:
        order = rng.sample(range(len(rows)), min(len(rows), n_rows * row_tokens // 150 + 8))
        groups = pack_greedy(order, lengths, row_tokens)
        groups.sort(key=lambda g: -sum(lengths[i] for i in g))
        yield collate_packed_rows([[rows[i] for i in g] for g in groups[:n_rows]], row_tokens, pad_id)


def step_plain(device: str):
    def step(model, batch):
        b = {k: v.to(device) for k, v in batch.items()}
        out = model(**b, use_cache=False)
        out.loss.backward()
        real = int(b["attention_mask"].sum())
        return out.loss.detach(), real, b["input_ids"].numel()

    return step


def step_sqltune(device: str, chunk_tokens: int, autocast: bool = False):
    import contextlib

    import torch

    from sqltune.prompts import IGNORE_INDEX
    from sqltune.train.loop import forward_loss

    def step(model, batch):
        targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with amp:
            loss = forward_loss(model, batch, device, num_items=targets, chunk_tokens=chunk_tokens)
        loss.backward()
        return loss.detach(), int(batch["real_tokens"]), batch["input_ids"].numel()

    return step


def profile_step(model, batches, step_fn, out: Path, label: str, *, trace: bool) -> None:
    """torch.profiler over one more step: the kernel table (by CUDA time), and a gzipped Chrome trace."""
    import gzip
    import shutil

    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        step_fn(model, next(batches))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    out.mkdir(parents=True, exist_ok=True)
    key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    (out / f"{label}.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=45, max_name_column_width=70))
    if trace:
        path = out / f"{label}.json"
        prof.export_chrome_trace(str(path))
        with path.open("rb") as src, gzip.open(str(path) + ".gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        path.unlink()
    model.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------------------- main


ARM_OPTIONS = ("sdpa", "fp32lora", "upcast", "compile")
DEFAULT_B = ("full:16x2048,full:8x2048,full:24x2048,selective:4x2048,none:2x2048,full:16x2048+fp32lora,"
             "full:16x2048+sdpa+fp32lora,full:16x2048+sdpa+fp32lora+upcast")


def parse_b_configs(text: str) -> list[tuple[str, int, int, tuple[str, ...]]]:
    out = []
    for item in text.split(","):
        ckpt, _, rest = item.partition(":")
        shape, *opts = rest.split("+")
        rows, _, tokens = shape.partition("x")
        if ckpt not in ("none", "selective", "full"):
            raise SystemExit(f"--b-configs: {ckpt!r} must be none, selective or full")
        bad = [o for o in opts if o not in ARM_OPTIONS]
        if bad or not rows.isdigit() or not tokens.isdigit():
            raise SystemExit(f"--b-configs: {item!r} must be CKPT:ROWSxTOKENS[+OPTION...], options {ARM_OPTIONS}")
        out.append((ckpt, int(rows), int(tokens), tuple(opts)))
    # upcasting frozen weights cannot be undone: those arms run last
    return sorted(out, key=lambda c: "upcast" in c[3])


# ------------------------------------------------------------------------------------------- job


def write_dataset(out: Path) -> Path:
    """The embedded dataset in a folder (examples.jsonl + warehouse.sqlite; no DuckDB file)."""
    from sqltune.data.embedded import embedded_examples, generate, write_sqlite

    if (out / "examples.jsonl").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_sqlite(out / "warehouse.sqlite", generate(0))
    with (out / "examples.jsonl").open("w") as fh:
        for ex in embedded_examples(seed=0):
            fh.write(json.dumps(ex.to_dict(), sort_keys=True) + "\n")
    return out


def write_base(shape: dict[str, Any], dataset: Path, out: Path, device: str) -> Path:
    """A random-weight model of ``shape`` saved as a transformers directory, with a BPE tokenizer trained on
    the dataset's texts (4,096 tokens: the model's vocabulary rows beyond it are never read)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sqltune.models.tiny import train_tokenizer

    if (out / "config.json").is_file():
        return out
    texts = []
    for line in (dataset / "examples.jsonl").read_text().splitlines():
        ex = json.loads(line)
        texts += [ex["question"], ex["schema"], ex["sql"]]
    tok = train_tokenizer(texts, min(4096, shape["vocab_size"]))
    cfg = Qwen2Config(**shape, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    _reset_memory(device)
    return out


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def run_job(args, shape: dict[str, Any], device: str, flops_tok: float, peak: float | None) -> Arm:
    """``python -m jobs.train`` with the preset; the numbers come from the published metrics.json."""
    import subprocess

    work = Path(args.job_dir)
    dataset = write_dataset(work / "dataset")
    base = write_base(shape, dataset, work / "base", device)
    runs = work / f"runs-{int(time.time())}"
    cmd = [sys.executable, "-m", "jobs.train", "--config", args.job_config, f"model.base={base}",
           f"data.source={dataset}", f"output_uri={runs}", *args.job_set]
    arm = Arm("job: python -m jobs.train", {"config": args.job_config, "overrides": cmd[5:]})
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    log_path = work / "job.log"
    try:
        proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, check=False, timeout=args.job_timeout)
    except subprocess.TimeoutExpired as exc:
        log_path.write_text(_text(exc.stdout) + _text(exc.stderr))
        arm.error = f"timed out after {args.job_timeout:.0f}s (log: {log_path})"
        return arm
    wall = time.perf_counter() - t0
    log_path.write_text(proc.stdout + proc.stderr)
    metrics_files = sorted(runs.glob("*/adapter/metrics.json"))
    if proc.returncode != 0 or not metrics_files:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        arm.error = f"exit {proc.returncode}: " + " | ".join(tail)[-400:]
        return arm
    m = json.loads(metrics_files[0].read_text())
    windows = [h for h in m["history"] if "tokens_per_second" in h]
    timed = windows[1:] or windows  # the first log window holds the warm-up steps
    seconds = sum(h["seconds"] for h in timed)
    tokens = sum(h["tokens_per_second"] * h["seconds"] for h in timed)
    steps = m["final"]["step"]
    arm.tokens_per_s = tokens / seconds if seconds else 0.0
    step_counts = [h["step"] for h in windows]
    n_steps = step_counts[-1] - (step_counts[0] if len(windows) > 1 else 0)
    arm.step_s = seconds / n_steps if n_steps else 0.0
    arm.tokens_per_step = tokens / n_steps if n_steps else 0.0
    arm.peak_gib = max((h.get("gpu_peak_gib", h.get("rss_gib", 0.0)) for h in windows), default=0.0)
    losses = [h["train_loss"] for h in windows]
    arm.loss_first, arm.loss_last = losses[0], losses[-1]
    if peak:
        arm.mfu = arm.tokens_per_s * flops_tok / peak
    evals = [h for h in m["history"] if "eval_seconds" in h]
    eval_s = sum(h["eval_seconds"] for h in evals)
    arm.extra = {
        "steps": steps, "train_seconds": m["final"]["train_seconds"], "job_wall_seconds": m.get("wall_seconds"),
        "process_seconds": round(wall, 1), "validation_runs": len(evals), "validation_seconds": round(eval_s, 1),
        "validation_decoding_seconds": round(sum(h.get("eval_generate_seconds", 0.0) for h in evals), 1),
        "validation_share_of_wall": round(eval_s / m["wall_seconds"], 4) if m.get("wall_seconds") else None,
        "tokens_per_second_all_windows": m["final"]["tokens_per_second"], "train_loss": m["final"]["train_loss"],
        "windows": [{k: h.get(k) for k in ("step", "tokens_per_second", "seconds", "gpu_peak_gib")} for h in windows],
        "log": str(log_path),
    }
    return arm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="small model on CPU (smoke test)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps per step arm")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--lengths", choices=["embedded", "spider"], default="embedded")
    ap.add_argument("--chars-per-token", type=float, default=3.5)
    ap.add_argument("--a-batch", type=int, default=4)
    ap.add_argument("--b-configs", default=None,
                    help="comma list of CKPT:ROWSxTOKENS[+OPTION...], CKPT in none/selective/full, options "
                         f"{'/'.join(ARM_OPTIONS)} (default GPU: {DEFAULT_B})")
    ap.add_argument("--chunk-tokens", type=int, default=4096, help="loss chunk of arm (b)")
    ap.add_argument("--liger", choices=["auto", "off"], default="auto")
    ap.add_argument("--memory-limit-gib", type=float, default=24.0)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true", help="no step arms (the job and the plain recipe only)")
    ap.add_argument("--skip-job", action="store_true", help="no jobs.train run (default on GPU: run it)")
    ap.add_argument("--job", action="store_true", help="run the job with --tiny too (CPU plumbing check)")
    ap.add_argument("--job-config", default="jobs/configs/qwen2.5-3b-qlora.yaml")
    ap.add_argument("--job-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for the job (repeatable); none by default: the preset as users run it")
    ap.add_argument("--job-dir", default="/tmp/sqltune-bench-train", help="base model, dataset and runs of the job")
    ap.add_argument("--job-timeout", type=float, default=1800.0, help="seconds before the job is stopped")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="torch.profiler kernel table of one extra step of every step arm, written here")
    ap.add_argument("--trace", default="", metavar="SUBSTR,...",
                    help="with --profile: also a gzipped Chrome trace for the arms whose name contains one of these")
    ap.add_argument("--json", default=None, help="also write the results here (always: JOB_DIR/bench_train.json)")
    args = ap.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" and not args.tiny:
        print("no GPU: the 3B-shaped benchmark needs one; run with --tiny for the CPU smoke test", file=sys.stderr)
        return 2
    shape = TINY if args.tiny else QWEN25_3B
    steps = args.steps or (3 if args.tiny else 6)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2)
    b_configs = [] if args.skip_b else parse_b_configs(
        args.b_configs or ("selective:2x512,full:2x1024" if args.tiny else DEFAULT_B)
    )
    if device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    flops_tok = 4 * matmul_params(shape)
    peak, peak_name = peak_flops(device, args.peak_tflops)
    arms: list[Arm] = []

    # The job first: it runs in its own processes and needs the GPU to itself.
    if not args.skip_job and (args.job or not args.tiny):
        arm = run_job(args, shape, device, flops_tok, peak)
        arms.append(arm)
        _print_arm(arm)

    n_examples = 4000
    lengths = example_lengths(args.lengths, n_examples, 0, args.chars_per_token)
    rows = make_rows(lengths, shape["vocab_size"], 1)
    total_lens = sorted(p + t for p, t in lengths)
    dist = {"mean": sum(total_lens) / len(total_lens), "p10": total_lens[len(total_lens) // 10],
            "p50": total_lens[len(total_lens) // 2], "p90": total_lens[9 * len(total_lens) // 10],
            "max": total_lens[-1]}
    print(f"lengths ({args.lengths}, ~{args.chars_per_token} chars/token): {dist}", flush=True)

    t0 = time.perf_counter()
    on_gpu = device.startswith("cuda")
    from sqltune.train.fast import PACKED_SDPA, compile_layers, enable_selective_checkpointing, register_packed_sdpa

    register_packed_sdpa()
    model, liger_on = build_base(shape, device, liger=args.liger == "auto" and on_gpu, attn=PACKED_SDPA)
    print(f"built NF4 base in {time.perf_counter() - t0:.0f}s (liger: {liger_on})", flush=True)
    pad_id = 0
    upcast_done = False

    for ckpt, n_rows, row_tokens, opts in b_configs:
        attn = "sdpa" if "sdpa" in opts else PACKED_SDPA
        autocast = on_gpu and "fp32lora" not in opts
        label = f"b {ckpt} {n_rows}x{row_tokens}" + "".join(f" +{o}" for o in opts)
        arm = Arm(label, {"checkpointing": ckpt, "rows": n_rows, "row_tokens": row_tokens, "packing": True,
                          "loss_chunk_tokens": args.chunk_tokens, "liger": liger_on, "attention": attn,
                          "bf16_autocast": autocast, "frozen_fp32_upcast": "upcast" in opts,
                          "compile": "compile" in opts})
        peft_model = None
        try:
            if "upcast" in opts and not upcast_done:
                for p in model.parameters():  # what prepare_model_for_kbit_training does to frozen weights
                    if p.dtype in (torch.float16, torch.bfloat16) and p.__class__.__name__ != "Params4bit":
                        p.data = p.data.float()
                upcast_done = True
            model.config._attn_implementation = attn
            peft_model = lora(model)
            peft_model.train()
            if ckpt == "full":
                peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                peft_model.enable_input_require_grads()
            elif ckpt == "selective":
                enable_selective_checkpointing(peft_model)
            if "compile" in opts:
                compile_layers(peft_model)
            batches = packed_batches(rows, n_rows, row_tokens, pad_id, 2)
            step = step_sqltune(device, args.chunk_tokens, autocast=autocast)
            run_steps(arm, peft_model, batches, step, device=device, warmup=warmup, steps=steps,
                      flops_tok=flops_tok, peak=peak)
            if args.profile:
                trace = any(t and t in label for t in args.trace.split(","))
                profile_step(peft_model, batches, step, Path(args.profile),
                             label.replace(" ", "_").replace("+", ""), trace=trace)
        except torch.OutOfMemoryError as exc:
            arm.error = f"out of memory: {str(exc).splitlines()[0][:160]}"
        except Exception as exc:  # noqa: BLE001 - report and go on with the other settings
            arm.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        finally:
            if peft_model is not None:
                if ckpt == "full":
                    peft_model.gradient_checkpointing_disable()
                model = peft_model.unload()
                for layer in model.model.layers:  # undo selective checkpointing / compile wrappers
                    for part in (layer.mlp,):
                        if getattr(part, "_sqltune_ckpt", False):
                            del part.forward
                            part._sqltune_ckpt = False
                    if "compile" in opts and hasattr(layer, "_compiled_call_impl"):
                        layer._compiled_call_impl = None
            del peft_model
            _reset_memory(device)
        arms.append(arm)
        _print_arm(arm)

    if not args.skip_a:
        from peft import prepare_model_for_kbit_training

        arm = Arm("a plain recipe", {"checkpointing": "full", "batch": args.a_batch, "padding": "dynamic",
                                      "loss": "model (full fp32 logits)", "prepare_model_for_kbit_training": True,
                                      "attention": "sdpa"})
        try:
            model.config._attn_implementation = "sdpa"
            plain = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
            plain = lora(plain)
            plain.train()
            run_steps(arm, plain, plain_batches(rows, args.a_batch, pad_id, 3), step_plain(device), device=device,
                      warmup=warmup, steps=steps, flops_tok=flops_tok, peak=peak)
        except torch.OutOfMemoryError as exc:
            arm.error = f"out of memory: {str(exc).splitlines()[0][:160]}"
        arms.append(arm)
        _print_arm(arm)

    report = summarize(arms, args, device, peak_name, peak, shape, dist, flops_tok)
    print_table(report)
    outputs = [Path(args.job_dir) / "bench_train.json"] + ([Path(args.json)] if args.json else [])
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    print("results: " + ", ".join(str(p) for p in outputs))
    return 0


def _print_arm(arm: Arm) -> None:
    if arm.error:
        print(f"{arm.name}: {arm.error}", flush=True)
    else:
        print(f"{arm.name}: {arm.tokens_per_s:,.0f} tok/s, peak {arm.peak_gib:.1f} GiB, "
              f"loss {arm.loss_first:.3f}->{arm.loss_last:.3f}", flush=True)


def summarize(arms, args, device, peak_name, peak, shape, dist, flops_tok) -> dict[str, Any]:
    import torch

    a = next((x for x in arms if x.name.startswith("a ") and not x.error), None)
    job = next((x for x in arms if x.name.startswith("job") and not x.error), None)
    ok_b = [x for x in arms if x.name.startswith("b ") and not x.error]
    fitting = [x for x in ok_b if x.peak_gib <= args.memory_limit_gib] or ok_b
    best_b = max(fitting, key=lambda x: x.tokens_per_s) if fitting else None
    return {
        "benchmark": "bench_train",
        "model": "qwen2.5-3b-shaped" if not args.tiny else "tiny",
        "shape": shape,
        "matmul_params": matmul_params(shape),
        "flops_per_token": flops_tok,
        "device": peak_name if device.startswith("cuda") else f"cpu ({platform.processor() or platform.machine()})",
        "peak_tflops": peak / 1e12 if peak else None,
        "torch": torch.__version__,
        "lengths": {"source": args.lengths, "chars_per_token": args.chars_per_token, **dist},
        "memory_limit_gib": args.memory_limit_gib,
        "arms": [asdict(x) for x in arms],
        "job": asdict(job) if job else None,
        "a": asdict(a) if a else None,
        "b": asdict(best_b) if best_b else None,
        "speedup_job_over_a": (job.tokens_per_s / a.tokens_per_s) if (a and job) else None,
        "speedup_b_over_a": (best_b.tokens_per_s / a.tokens_per_s) if (a and best_b) else None,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
    }


def print_table(report: dict[str, Any]) -> None:
    print()
    print(f"device: {report['device']}  model: {report['model']}  ({report['matmul_params'] / 1e9:.2f}B matmul params)")
    head = f"{'arm':38} {'tok/s':>10} {'step s':>8} {'tok/step':>9} {'pad %':>6} {'peak GiB':>9} {'MFU':>6}"
    print(head)
    print("-" * len(head))
    for arm in report["arms"]:
        if arm["error"]:
            print(f"{arm['name']:38} {arm['error']}")
            continue
        mfu = f"{100 * arm['mfu']:.1f}%" if arm["mfu"] is not None else "n/a"
        print(f"{arm['name']:38} {arm['tokens_per_s']:>10,.0f} {arm['step_s']:>8.2f} {arm['tokens_per_step']:>9,.0f} "
              f"{100 * arm['padding_fraction']:>5.1f}% {arm['peak_gib']:>9.2f} {mfu:>6}")
    job = report["job"]
    if job:
        x = job["extra"]
        share = x.get("validation_share_of_wall")
        print(f"\njob: {job['tokens_per_s']:,.0f} tok/s after warm-up ({x['steps']} steps, peak {job['peak_gib']:.1f} GiB"
              + (f", MFU {100 * job['mfu']:.1f}%" if job["mfu"] is not None else "")
              + f"); validation {x['validation_runs']} run(s) {x['validation_seconds']}s = "
              + (f"{100 * share:.1f}%" if share is not None else "n/a")
              + f" of the job's {x['job_wall_seconds']}s wall time")
    if report["speedup_job_over_a"]:
        print(f"job / plain recipe: {report['speedup_job_over_a']:.2f}x")
    if report["speedup_b_over_a"]:
        print(f"best step arm ({report['b']['name']}): {report['speedup_b_over_a']:.2f}x (a)'s tokens/s "
              f"at {report['b']['peak_gib']:.1f} GiB (limit {report['memory_limit_gib']} GiB)")


if __name__ == "__main__":
    sys.exit(main())
