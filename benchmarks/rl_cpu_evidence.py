"""SFT, then SFT+GRPO on a tiny model on CPU: does GRPO raise the validation reward?

    python benchmarks/rl_cpu_evidence.py --json benchmarks/results/rl-cpu-tiny-grpo.json
    python benchmarks/rl_cpu_evidence.py --sft-adapter <published SFT adapter> --lr 1e-4 --beta 0.04 \
        --format-weight 0.5 --grpo-steps 10 --eval-every 5 --json benchmarks/results/<name>.json

Both stages are real ``jobs.train`` runs (``sqltune.train.run``: Ray Train, NF4 QLoRA, checkpoints,
publish) on one local Ray. The data is a generated gretel-format set (questions over small tables whose
CREATE/INSERT context is the only database: rewards and validation run on in-memory SQLite built from it),
split 70/30 into train and validation. The model is sqltune's tiny Qwen2 (``sqltune.models.tiny``) in a
small shape, its tokenizer trained on the set's prompts. The GRPO run evaluates the starting (SFT) policy at
step 0 and then every ``--eval-every`` steps: greedy decoding of every validation question, scored with the
sandboxed hybrid reward (1.0 on an execution match, else 0.7 x ROUGE-L). The JSON also records every GRPO
step's sampled reward and the share of its groups whose completions scored differently (only those carry a
learning signal), and each validation question's greedy answer from the SFT and the SFT+GRPO adapters,
decoded again after the runs from the published adapters (for reading; the in-run evals are the result).

``--sft-only`` stops after SFT and records its adapter's validation answers: a cheap way to pick a starting
point (GRPO needs one whose samples sometimes execute correctly).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_model  # noqa: E402

TABLES = [
    ("ships", "name", "tonnage"), ("farms", "region", "hectares"), ("donations", "donor", "amount"),
    ("mines", "country", "output"), ("patients", "city", "visits"), ("games", "genre", "players"),
    ("hotels", "city", "rooms"), ("flights", "airline", "seats"), ("books", "author", "pages"),
    ("plants", "species", "height"),
    # --tables 20 adds these (more validation questions, so one answer moves the score less).
    ("rivers", "continent", "length"), ("schools", "district", "students"), ("stores", "brand", "revenue"),
    ("teams", "league", "wins"), ("vehicles", "maker", "mileage"), ("museums", "town", "visitors"),
    ("orders", "customer", "total"), ("wells", "field", "depth"), ("bridges", "state", "span"),
    ("concerts", "venue", "tickets"),
]
TEMPLATES = [
    ("How many {t} are there?", "SELECT COUNT(*) FROM {t};"),
    ("What is the total {n} of all {t}?", "SELECT SUM({n}) FROM {t};"),
    ("What is the largest {n} among {t}?", "SELECT MAX({n}) FROM {t};"),
    ("List the {c} of every {t} row.", "SELECT {c} FROM {t};"),
    ("Show the total {n} per {c} in {t}.", "SELECT {c}, SUM({n}) FROM {t} GROUP BY {c};"),
]


def build_dataset(path: Path, seed: int = 0, tables: int = 10) -> Path:
    rng = random.Random(seed)
    rows, i = [], 0
    for t, c, n in TABLES[:tables]:
        values = ", ".join(f"({k}, '{c[0].upper()}{rng.randint(1, 3)}', {rng.randint(10, 900)})" for k in range(1, 6))
        ctx = f"CREATE TABLE {t} (id INT, {c} TEXT, {n} INT); INSERT INTO {t} (id, {c}, {n}) VALUES {values};"
        for q, sql in TEMPLATES:
            i += 1
            rows.append({"id": i, "domain": t, "sql_complexity": "basic SQL", "sql_prompt": q.format(t=t, c=c, n=n),
                         "sql_context": ctx, "sql": sql.format(t=t, c=c, n=n)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def validation_answers(adapter: str, examples: list) -> list[dict]:
    """Greedy answers of a published adapter (NF4 base, as trained) to ``examples``, scored in the sandbox."""
    from sqltune.models.loading import load_for_inference
    from sqltune.train.policy import prompt_ids, sample_completions
    from sqltune.train.rewards import score_completions

    loaded = load_for_inference(adapter, precision="nf4", device="cpu")
    prompts = [prompt_ids(loaded.tokenizer, loaded.template, ex) for ex in examples]
    outs = sample_completions(loaded.model, loaded.tokenizer, prompts, n=1, greedy=True, max_new_tokens=40)
    rewards = score_completions([o[0].text for o in outs], examples)
    return [{"question": ex.question, "gold": ex.sql, "answer": o[0].text, "hybrid": round(r.hybrid, 4),
             "exec_match": r.exec_match} for ex, o, r in zip(examples, outs, rewards)]


def _answers_summary(answers: list[dict]) -> dict:
    n = len(answers)
    return {"exec_matches": sum(bool(a["exec_match"]) for a in answers), "questions": n,
            "hybrid": round(sum(a["hybrid"] for a in answers) / n, 5) if n else 0.0, "answers": answers}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--work", default="/tmp/sqltune-rl-evidence")
    ap.add_argument("--sft-steps", type=int, default=150)
    ap.add_argument("--sft-lr", type=float, default=3e-3, help="SFT peak learning rate (cosine, 5 warm-up steps)")
    ap.add_argument("--sft-only", action="store_true", help="stop after SFT (record its validation answers)")
    ap.add_argument("--grpo-steps", type=int, default=30)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--tables", type=int, default=10, choices=[10, 20],
                    help="tables of the generated set (x 5 question templates)")
    ap.add_argument("--sft-adapter", default=None, help="reuse this published SFT adapter (skip the SFT run)")
    ap.add_argument("--lr", type=float, default=5e-4, help="GRPO learning rate (constant)")
    ap.add_argument("--beta", type=float, default=0.0, help="grpo.beta: KL coefficient to the SFT policy")
    ap.add_argument("--format-weight", type=float, default=0.0, help="grpo.format_weight (parseable, read-only)")
    ap.add_argument("--questions", type=int, default=4, help="questions per GRPO step (train.batch_size)")
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--temperature", type=float, default=1.0, help="grpo.temperature (sampling)")
    ap.add_argument("--seed", type=int, default=42, help="GRPO's train.seed (sampling, question order)")
    ap.add_argument("--scale-rewards", default="group", choices=["group", "batch", "none"],
                    help="grpo.scale_rewards: divide advantages by the group's std, the batch's, or not at all")
    args = ap.parse_args()

    import ray

    from sqltune.data import load_dataset
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model
    from sqltune.prompts import PromptTemplate, build_messages
    from sqltune.train.config import TrainConfig
    from sqltune.train.run import load_splits, preflight, run

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = build_dataset(work / "gretel-evidence.jsonl", tables=args.tables)
    system = "Reply with one {dialect} query."
    texts = []
    for ex in load_dataset(data, format="gretel"):
        texts += [m["content"] for m in build_messages(ex.question, ex.schema, dialect=ex.dialect,
                                                      template=PromptTemplate(system=system))] + [ex.sql]
    shape = TinyModelConfig(vocab_size=512, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=256, induction_steps=0)
    t0 = time.time()
    base = build_tiny_model(work / "base", shape, corpus=texts * 4)
    common = {
        "model": {"base": str(base), "mode": "qlora", "compute_dtype": "fp32"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "modules_to_save": ["embed_tokens"]},
        "data": {"source": str(data), "format": "gretel", "split_ratios": [0.7, 0.3, 0.0], "stratify": "none",
                 "max_length": 320, "max_validation_examples": 64},
        "prompt_system": system, "output_uri": str(work / "runs"), "overwrite": True, "resume": False,
        "scaling": {"num_workers": 1, "cpus_per_worker": args.cpus}, "tracking": {"backend": "none"},
    }
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=True)
    try:
        t_sft = time.time()
        if args.sft_adapter:
            sft_uri = args.sft_adapter
            sft_metrics = json.loads((Path(sft_uri) / "metrics.json").read_text())
        else:
            sft_cfg = {**common, "run_name": "evidence-sft", "optim": {"lr": args.sft_lr, "warmup_steps": 5},
                       "train": {"max_steps": args.sft_steps, "batch_size": 8, "log_every": 25},
                       "eval": {"interval": args.sft_steps}, "checkpoint": {"interval": args.sft_steps}}
            sft = run(preflight(TrainConfig.from_dict(sft_cfg)))
            sft_uri, sft_metrics = sft.adapter_uri, sft.metrics
        sft_s = time.time() - t_sft
        sft_out = {"steps": sft_metrics["final"]["step"], "lr": None if args.sft_adapter else args.sft_lr,
                   "eval_loss": sft_metrics["final"]["eval_loss"],
                   "train_loss": sft_metrics["final"].get("train_loss"), "adapter": sft_uri,
                   "wall_s": None if args.sft_adapter else round(sft_s, 1)}
        if args.sft_only:
            val = load_splits(TrainConfig.from_dict({**common, "run_name": "evidence-sft"}))[1]
            out = {"benchmark": "rl_cpu_evidence", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "command": "python benchmarks/rl_cpu_evidence.py " + " ".join(sys.argv[1:]), "sft": sft_out,
                   "sft_validation": _answers_summary(validation_answers(sft_uri, val))}
            print(json.dumps(out, indent=2))
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
            return 0
        t_grpo = time.time()
        grpo_cfg = {**common, "run_name": "evidence-grpo", "method": "grpo",
                    "model": {**common["model"], "init_adapter": sft_uri},
                    "optim": {"optimizer": "adamw", "lr": args.lr, "schedule": "constant", "warmup_steps": 0},
                    "train": {"max_steps": args.grpo_steps, "batch_size": args.questions, "log_every": 1,
                              "seed": args.seed},
                    "grpo": {"num_generations": args.num_generations, "max_new_tokens": args.max_new_tokens,
                             "temperature": args.temperature, "beta": args.beta,
                             "format_weight": args.format_weight, "scale_rewards": args.scale_rewards},
                    "eval": {"interval": args.eval_every, "exec_examples": 64,
                             "max_new_tokens": args.max_new_tokens},
                    "checkpoint": {"interval": args.eval_every, "select": "last"}}
        grpo = run(preflight(TrainConfig.from_dict(grpo_cfg)))
        grpo_s = time.time() - t_grpo
    finally:
        ray.shutdown()
    val = load_splits(TrainConfig.from_dict({**common, "run_name": "evidence-grpo"}))[1]
    answers = {"sft": _answers_summary(validation_answers(sft_uri, val)),
               "sft_grpo": _answers_summary(validation_answers(grpo.adapter_uri, val))}
    evals = [{k: h[k] for k in ("step", "eval_reward", "eval_hybrid", "eval_exec_accuracy", "eval_parseable",
                                "eval_loss") if k in h} for h in grpo.metrics["history"] if "eval_reward" in h]
    train = [{k: h[k] for k in ("step", "train_reward", "train_hybrid", "train_exec_accuracy",
                                "train_completion_length", "train_kl", "train_varied_groups") if k in h}
             for h in grpo.metrics["history"] if "train_reward" in h]
    out = {
        "benchmark": "rl_cpu_evidence", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {cpu_model()}".strip(), "cpus": args.cpus,
        "command": "python benchmarks/rl_cpu_evidence.py " + " ".join(sys.argv[1:]),
        "dataset": {"examples": args.tables * len(TEMPLATES), **grpo.metrics["dataset"]},
        "model": {"shape": shape.to_dict(), "mode": "qlora", "lora_r": 16},
        "sft": sft_out,
        "grpo": {"steps": args.grpo_steps, "num_generations": args.num_generations, "questions_per_step":
                 args.questions, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                 "lr": args.lr, "beta": args.beta, "format_weight": args.format_weight,
                 "scale_rewards": args.scale_rewards, "seed": args.seed, "validation": evals, "train": train,
                 "wall_s": round(grpo_s, 1)},
        # eval_reward includes the format term when format_weight > 0; eval_hybrid is the source project's
        # score (1.0 on an execution match, else 0.7 x ROUGE-L), comparable across settings.
        "validation_hybrid_before": evals[0]["eval_hybrid"],
        "validation_hybrid_after": evals[-1]["eval_hybrid"],
        "validation_parseable_before": evals[0]["eval_parseable"],
        "validation_parseable_after": evals[-1]["eval_parseable"],
        "validation_exec_accuracy_before": evals[0]["eval_exec_accuracy"],
        "validation_exec_accuracy_after": evals[-1]["eval_exec_accuracy"],
        "total_wall_s": round(time.time() - t0, 1),
        # Greedy answers decoded again after the runs from the published adapters: the NF4 base as trained, but
        # in the loader's compute dtype (bf16 on CPUs that have it), so a score can differ slightly from the
        # last in-run eval, which is the result.
        "validation_answers": answers,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
