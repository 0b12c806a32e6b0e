"""GRPO in sqltune's own Ray Train loop: sampled SQL scored by the sandboxed execution reward.

Each optimizer step takes ``train.batch_size`` questions per micro-batch (``train.grad_accum`` micro-batches,
on every worker), samples ``grpo.num_generations`` completions of each with the current policy, and scores
them in the SQL sandbox on the question's database (:mod:`sqltune.train.rewards`: 1.0 on an execution match,
else 0.7 x ROUGE-L, 0 for a write; optional format term). Advantages are the rewards minus their group's
mean, divided by the group's (or the batch's) standard deviation. The loss is TRL's GRPO loss in its
default form (``loss_type="dapo"``, one policy update per generation batch, so the importance ratio is 1
and clipping never applies): ``-A * exp(logp - logp.detach())`` per completion token, plus
``beta`` x the k3 KL estimate against the reference policy when ``grpo.beta > 0``, summed over the
completion tokens of the whole accumulation window and divided by their number.

Everything else is the SFT worker's: model building (QLoRA/LoRA), checkpoints with optimizer/scheduler/RNG
state and the data position, resume, best-checkpoint selection (by ``eval_reward``), publishing, MLflow.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from sqltune.errors import ConfigError
from sqltune.train.policy import PolicyTrainer, completion_logps, prompt_ids, sample_completions

log = logging.getLogger("sqltune.train")


def group_advantages(rewards, scale: str):
    """Advantages of a [questions, generations] reward tensor: centred per group, scaled per ``scale``."""
    mean = rewards.mean(dim=1, keepdim=True)
    centred = rewards - mean
    if scale == "group":
        std = rewards.std(dim=1, keepdim=True, unbiased=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
        return centred / (std + 1e-4)
    if scale == "batch":
        return centred / (rewards.std() + 1e-4)
    return centred


def varied_groups(rewards) -> float:
    """The share of groups (rows of a [questions, generations] reward tensor) whose rewards are not all equal:
    only those have non-zero advantages, so only they move the policy."""
    if rewards.numel() == 0:
        return 0.0
    spread = rewards.max(dim=1).values - rewards.min(dim=1).values
    return float((spread > 1e-6).float().mean())


def grpo_token_loss(logps, old_logps, advantages, mask, *, beta: float = 0.0, ref_logps=None):
    """Per-token GRPO loss (ratio 1 at the sampling policy) and the per-token KL, both masked. ``advantages``
    is [B]; the others are [B, T]."""
    ratio = torch.exp(logps - old_logps)
    loss = -(ratio * advantages.unsqueeze(1))
    kl = torch.zeros_like(loss)
    if beta and ref_logps is not None:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1.0
        loss = loss + beta * kl
    return loss * mask, kl * mask


class GRPOTrainer(PolicyTrainer):
    """The GRPO worker (``method: grpo``)."""

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        return self.cfg.grpo.beta > 0

    def _plan_data(self, train_ex: list[Any]) -> None:
        from sqltune.train.data import BatchPlan, TokenizedSet, tokenize_examples

        cfg = self.cfg
        budget = cfg.data.max_length - cfg.grpo.max_new_tokens
        self.items: list[tuple[Any, list[int]]] = []
        dropped = 0
        for ex in train_ex:
            ids = prompt_ids(self.tokenizer, self.template, ex)
            if len(ids) > budget:
                dropped += 1
                continue
            self.items.append((ex, ids))
        if not self.items:
            raise ConfigError(
                f"no training question fits data.max_length - grpo.max_new_tokens = {budget} prompt tokens; raise it"
            )
        self.train_set = TokenizedSet(rows=[{"input_ids": ids, "labels": []} for _, ids in self.items],
                                      dropped=dropped)
        self.val_set = tokenize_examples(self.val_ex, self.tokenizer, self.template, cfg.data.max_length)
        self.plan = BatchPlan(lengths=tuple(len(ids) for _, ids in self.items), world_size=self.world,
                              batch_size=cfg.train.batch_size, grad_accum=cfg.train.grad_accum, seed=cfg.train.seed)
        if self.plan.steps_per_epoch() <= 0:
            raise ConfigError(
                f"{len(self.items)} training questions make less than one optimizer step on each of {self.world} "
                f"workers (train.batch_size={cfg.train.batch_size}, train.grad_accum={cfg.train.grad_accum}):"
                " lower them, or train on more questions"
            )

    def _rollout(self, idx: list[int]) -> dict[str, Any]:
        """Sample the groups of one micro-batch, score them, and compute their advantages."""
        from sqltune.train.model import unwrap
        from sqltune.train.rewards import score_completions

        g = self.cfg.grpo
        model = unwrap(self.model)
        model.eval()
        with self._autocast():
            groups = sample_completions(model, self.tokenizer, [self.items[i][1] for i in idx],
                                        n=g.num_generations, max_new_tokens=g.max_new_tokens,
                                        temperature=g.temperature, top_p=g.top_p, device=self.device)
        model.train()
        prompts, completions, examples, texts = [], [], [], []
        for i, group in zip(idx, groups):
            ex, ids = self.items[i]
            for c in group:
                prompts.append(ids)
                completions.append(c.ids)
                examples.append(ex)
                texts.append(c.text)
        rewards = score_completions(texts, examples, self.reward_spec())
        values = torch.tensor([r.value for r in rewards], dtype=torch.float32).view(len(idx), g.num_generations)
        adv = group_advantages(values, g.scale_rewards).reshape(-1)
        ref = None
        if self.reference is not None:
            with torch.no_grad(), self.reference.active(), self._autocast():
                ref, _ = completion_logps(model, prompts, completions, pad_id=self.pad_id, device=self.device)
        judged = [r for r in rewards if r.exec_match is not None]
        return {
            "prompts": prompts, "completions": completions, "advantages": adv.to(self.device), "ref": ref,
            "tokens": sum(len(c) for c in completions),
            "reward": float(values.mean()), "varied": varied_groups(values), "hybrid": sum(r.hybrid for r in rewards) / len(rewards),
            "exec": (sum(bool(r.exec_match) for r in judged) / len(judged)) if judged else 0.0,
            "length": sum(len(c) for c in completions) / len(completions),
        }

    def policy_step(self, micro: list[list[int]]) -> dict[str, float]:
        rollouts = [self._rollout(idx) for idx in micro]
        n_tokens = max(1, sum(r["tokens"] for r in rollouts))
        beta = self.cfg.grpo.beta
        loss_total = kl_total = 0.0
        for i, r in enumerate(rollouts):
            sync = contextlib.nullcontext()
            if i < len(rollouts) - 1 and hasattr(self.model, "no_sync"):
                sync = self.model.no_sync()
            with sync:
                with self._autocast():
                    logps, mask = completion_logps(self.model, r["prompts"], r["completions"], pad_id=self.pad_id,
                                                   device=self.device)
                per_token, kl = grpo_token_loss(logps, logps.detach(), r["advantages"], mask, beta=beta,
                                                ref_logps=r["ref"])
                loss = per_token.sum() / n_tokens
                loss.backward()
            loss_total += float(loss.detach())
            kl_total += float(kl.sum().detach())
        k = len(rollouts)
        return {
            "loss": loss_total,
            "reward": sum(r["reward"] for r in rollouts) / k,
            "hybrid": sum(r["hybrid"] for r in rollouts) / k,
            "exec_accuracy": sum(r["exec"] for r in rollouts) / k,
            "completion_length": sum(r["length"] for r in rollouts) / k,
            "varied_groups": sum(r["varied"] for r in rollouts) / k,
            "kl": kl_total / n_tokens,
            "tokens": float(n_tokens),
        }


__all__ = ["GRPOTrainer", "group_advantages", "grpo_token_loss", "varied_groups"]
