"""SFT+GRPO and SFT+DPO as `ray job submit` jobs on a local Ray head, on a gretel-format split whose
rewards and pair checks run on in-memory databases built from each example's CREATE/INSERT context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rl_helpers import GRETEL, RayHead, build_gretel_base

pytestmark = [pytest.mark.ray, pytest.mark.slow]
PAIRS = Path(__file__).parent / "fixtures" / "pairs_small.jsonl"


def _data(tmp: Path) -> list[str]:
    return [f"data.source={GRETEL}", "data.format=gretel", "data.split_ratios=[0.75,0.25,0.0]",
            "data.stratify=none", "data.max_length=400", f"output_uri={tmp / 'runs'}", "tracking.backend=none",
            "scaling.num_workers=1", "scaling.cpus_per_worker=1"]


def test_grpo_and_dpo_jobs_from_a_starting_adapter(tmp_path):
    from adapter_fixture import build_adapter

    base = build_gretel_base(tmp_path / "base")
    # The starting adapter (in the place of an SFT run's): r8 LoRA on every linear layer.
    sft = build_adapter(base, tmp_path / "sft" / "adapter", steps=8, r=8)
    lora = ["lora.r=8", "lora.alpha=16", "lora.modules_to_save=[]", "model.compute_dtype=fp32", "train.log_every=1"]
    with RayHead() as head:
        common = [f"model.base={base}", f"model.init_adapter={sft}", *lora, *_data(tmp_path),
                  "eval.exec_examples=6", "eval.max_new_tokens=32", "eval.interval=2", "checkpoint.interval=2"]
        logs = head.submit("jobs.train", [
            "--config", "jobs/configs/tiny-grpo.yaml", *common, "train.max_steps=4", "train.batch_size=2",
            "grpo.num_generations=4", "grpo.max_new_tokens=32", "grpo.beta=0.04"])
        logs_dpo = head.submit("jobs.train", [
            "--config", "jobs/configs/tiny-dpo.yaml", *common, f"dpo.pairs_file={PAIRS}", "train.max_steps=4", "optim.lr=1e-3",
            "train.batch_size=2", "data.max_train_examples=null"])

    grpo = json.loads((tmp_path / "runs" / "tiny-grpo" / "adapter" / "metrics.json").read_text())
    assert grpo["method"] == "grpo" and grpo["init_adapter"] == str(sft)
    assert grpo["final"]["step"] == 4 and grpo["final"]["method"] == "grpo"
    steps = [h for h in grpo["history"] if "train_reward" in h]
    assert len(steps) == 4 and all(0.0 <= h["train_reward"] <= 1.0 for h in steps)
    assert all(h["train_completion_length"] > 0 for h in steps) and any(h["train_kl"] > 0 for h in steps[1:])
    assert all(0.0 <= h["train_varied_groups"] <= 1.0 for h in steps)
    evals = [h for h in grpo["history"] if "eval_reward" in h]
    assert [h["step"] for h in evals] == [0, 2, 4] and grpo["final"]["eval_reward"] == evals[-1]["eval_reward"]
    assert "validation reward" in logs and "started from adapter" in logs

    dpo = json.loads((tmp_path / "runs" / "tiny-dpo" / "adapter" / "metrics.json").read_text())
    assert dpo["method"] == "dpo" and dpo["final"]["pairs"] == 5
    assert dpo["dataset"]["pairs"]["dropped"] == {"rejected_matches": 1}
    losses = [h["train_loss"] for h in dpo["history"] if "train_pref_accuracy" in h]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert "dpo: 5 pairs" in logs_dpo
