"""GRPO and DPO step time and peak memory on the Qwen2.5-3B shape (random weights), in one run.

    python benchmarks/bench_rl.py --json out.json          # GPU: Qwen2.5-3B-shaped model, NF4 QLoRA
    python benchmarks/bench_rl.py --tiny --json out.json   # CPU smoke test: a small Qwen2 of the same layout

Both steps are sqltune's own worker code (``sqltune.train.grpo.GRPOTrainer`` / ``sqltune.train.dpo.DPOTrainer``)
built from the presets (jobs/configs/qwen2.5-3b-grpo.yaml; its DPO twin is the same model with method=dpo),
outside Ray Train: the trainer is set up as a worker would be (no checkpoint to restore) and its step is
called directly. No hub access on the GPU machine, so the base is a Qwen2.5-3B-shaped model with random
weights and a BPE tokenizer trained on the questions; a random model never emits a stop token, so every
GRPO completion runs to ``grpo.max_new_tokens`` (the worst case of the sampling phase) and its rewards are
~0 (the sandbox still scores every completion). GRPO's step is split into sampling, rewards (sandbox) and
the policy update (forward + backward over all completions + optimizer). Peak memory is
``torch.cuda.max_memory_allocated`` over the timed steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

GRETEL = ROOT / "tests" / "train" / "fixtures" / "gretel_small.jsonl"
PAIRS = ROOT / "tests" / "train" / "fixtures" / "pairs_small.jsonl"
QWEN25_3B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                 num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=32768)
TINY = dict(vocab_size=4096, hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096)


def build_base(out: Path, shape: dict[str, Any], device: str) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sqltune.data import load_dataset
    from sqltune.models.tiny import train_tokenizer

    if (out / "config.json").is_file():
        return out
    texts = []
    for ex in load_dataset(GRETEL, format="gretel"):
        texts += [ex.question, ex.schema, ex.sql]
    tok = train_tokenizer(texts * 4, 1024 if shape is TINY else 4096)
    cfg = Qwen2Config(**shape, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16 if device.startswith("cuda") else torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _trainer(cls, cfg, payload, device):
    try:
        import ray.train
    except ImportError:  # a GPU image without Ray: the worker code only asks it for a checkpoint here
        import types

        ray = types.ModuleType("ray")
        ray.train = types.ModuleType("ray.train")
        sys.modules.update({"ray": ray, "ray.train": ray.train})
    ray.train.get_checkpoint = lambda: None  # outside Ray Train: a fresh start, nothing to restore
    t = cls(cfg, payload, rank=0, world_size=1, device=device)
    t.setup()
    return t


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _step(trainer, micro) -> dict[str, float]:
    import torch

    metrics = trainer.policy_step(micro)
    if trainer.cfg.optim.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(trainer.trainable, trainer.cfg.optim.max_grad_norm)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return metrics


def bench_grpo(cfg, payload, device: str, steps: int) -> dict[str, Any]:
    import torch

    from sqltune.train.grpo import GRPOTrainer

    trainer = _trainer(GRPOTrainer, cfg, payload, device)
    phases: dict[str, float] = {}
    original = trainer._rollout
    score = __import__("sqltune.train.rewards", fromlist=["score_completions"])
    real_score = score.score_completions

    def timed_score(*a, **k):
        t = time.perf_counter()
        try:
            return real_score(*a, **k)
        finally:
            phases["rewards"] = phases.get("rewards", 0.0) + time.perf_counter() - t

    def timed_rollout(idx):
        _sync(device)
        t = time.perf_counter()
        out = original(idx)
        _sync(device)
        phases["rollout"] = phases.get("rollout", 0.0) + time.perf_counter() - t
        return out

    score.score_completions = timed_score
    import sqltune.train.grpo as grpo_mod

    trainer._rollout = timed_rollout
    batches = trainer._index_batches()
    ga = cfg.train.grad_accum
    _step(trainer, [next(batches) for _ in range(ga)])  # warm-up (CUDA kernels, allocator)
    phases.clear()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, last = [], {}
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        last = _step(trainer, [next(batches) for _ in range(ga)])
        _sync(device)
        times.append(time.perf_counter() - t)
    score.score_completions = real_score
    del grpo_mod
    rollout = phases.get("rollout", 0.0) / steps
    rewards = phases.get("rewards", 0.0) / steps
    step = sum(times) / steps
    g = cfg.grpo
    result = {
        "step_s": round(step, 3), "step_s_each": [round(x, 3) for x in times],
        "sampling_s": round(rollout - rewards, 3), "rewards_s": round(rewards, 3),
        "update_s": round(step - rollout, 3),
        "completions_per_step": cfg.train.batch_size * ga * g.num_generations,
        "completion_tokens_mean": round(last.get("completion_length", 0.0), 1),
        "max_new_tokens": g.max_new_tokens, "num_generations": g.num_generations,
        "prompts_per_step": cfg.train.batch_size * ga, "reward_mean": round(last.get("reward", 0.0), 4),
    }
    if device.startswith("cuda"):
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del trainer
    return result


def bench_dpo(cfg, payload, device: str, steps: int) -> dict[str, Any]:
    import torch

    from sqltune.train.dpo import DPOTrainer

    trainer = _trainer(DPOTrainer, cfg, payload, device)
    batches = trainer._index_batches()
    ga = cfg.train.grad_accum
    _step(trainer, [next(batches) for _ in range(ga)])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, last = [], {}
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        last = _step(trainer, [next(batches) for _ in range(ga)])
        _sync(device)
        times.append(time.perf_counter() - t)
    lengths = [len(c["input_ids"]) + len(r["input_ids"]) for c, r in trainer.rows]
    result = {"step_s": round(sum(times) / steps, 3), "step_s_each": [round(x, 3) for x in times],
              "pairs_per_step": cfg.train.batch_size * ga, "pair_tokens_mean": round(sum(lengths) / len(lengths), 1),
              "tokens_per_step": last.get("tokens")}
    if device.startswith("cuda"):
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test on a small model of the same layout")
    ap.add_argument("--json", default=None)
    ap.add_argument("--steps", type=int, default=1, help="timed steps after one warm-up step")
    ap.add_argument("--work", default="/tmp/sqltune-bench-rl")
    ap.add_argument("--grpo-batch", type=int, default=None, help="prompts per micro-batch (default: the preset's)")
    args = ap.parse_args()

    import torch

    from sqltune.config import load_config
    from sqltune.data import load_dataset
    from sqltune.train.config import DpoSettings, TrainConfig
    from sqltune.train.prefs import load_pairs

    device = "cpu" if args.tiny else "cuda:0"
    if not args.tiny:
        torch.cuda.set_device(0)
    t0 = time.time()
    base = build_base(Path(args.work) / ("base-tiny" if args.tiny else "base-3b"), TINY if args.tiny else QWEN25_3B,
                      device)
    built_s = time.time() - t0
    examples = load_dataset(GRETEL, format="gretel")
    over = [f"model.base={base}", "model.init_adapter=null", "data.source=unused", f"output_uri={args.work}/runs"]
    if args.tiny:
        over += ["grpo.max_new_tokens=16", "grpo.num_generations=4", "train.batch_size=2", "train.grad_accum=1",
                 "eval.max_new_tokens=16", "model.compute_dtype=fp32", "scaling.use_gpu=false"]
    else:  # one micro-batch per step keeps the call short; a step with grad_accum=k costs ~k times this
        over += ["train.grad_accum=1"]
    if args.grpo_batch:
        over.append(f"train.batch_size={args.grpo_batch}")
    grpo_cfg = load_config(TrainConfig, ROOT / "jobs/configs/qwen2.5-3b-grpo.yaml", over)
    payload = {"config": grpo_cfg.to_dict(), "train": [e.to_dict() for e in examples * 4],
               "validation": [e.to_dict() for e in examples[:4]], "pairs": None}
    out: dict[str, Any] = {
        "benchmark": "bench_rl", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": (torch.cuda.get_device_name(0) if not args.tiny else platform.processor() or platform.machine()),
        "torch": torch.__version__, "shape": "tiny" if args.tiny else "Qwen2.5-3B (random weights)",
        "mode": grpo_cfg.model.mode, "lora_r": grpo_cfg.lora.r, "base_build_s": round(built_s, 1),
        "command": "python benchmarks/bench_rl.py " + " ".join(sys.argv[1:]),
        "prompt_tokens_note": "gretel-format fixture questions (tests/train/fixtures/gretel_small.jsonl)",
    }
    out["grpo"] = bench_grpo(grpo_cfg, payload, device, args.steps)
    print(json.dumps({"grpo": out["grpo"]}), flush=True)
    if args.json:  # written now too: a call cut short still brings GRPO's numbers back
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if not args.tiny:
        torch.cuda.empty_cache()
    d = grpo_cfg.to_dict()
    d["method"] = "dpo"
    d["grpo"] = {}
    d["dpo"] = {"beta": 0.1}
    dpo_cfg = TrainConfig.from_dict(d)
    pairs, _ = load_pairs(str(PAIRS), DpoSettings())
    payload_dpo = {**payload, "config": dpo_cfg.to_dict(), "pairs": pairs * 16}
    out["dpo"] = bench_dpo(dpo_cfg, payload_dpo, device, args.steps + 1)
    print(json.dumps(out, indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
