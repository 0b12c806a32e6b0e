"""DPO in sqltune's own Ray Train loop: preference pairs checked in the SQL sandbox.

Pairs come from ``dpo.pairs_file`` (parsed and sandbox-checked by the driver before Ray starts,
:func:`sqltune.train.prefs.load_pairs`) or are built by the workers from the starting policy's own samples
(each worker samples its share of the training questions; the pairs are gathered so every worker holds the
same list; :func:`sqltune.train.prefs.pairs_from_samples`). The sampling uses the run's seed, so a resumed
run rebuilds the same pairs.

The reference policy is the starting one (``model.init_adapter``, else the base): the log-probabilities of
every pair's chosen and rejected SQL under it are computed once, before training. The loss is DPO's sigmoid
loss ``-log sigmoid(beta * ((pc - rc) - (pr - rr)))`` (or IPO's squared loss), with ``p``/``r`` the summed
log-probabilities of the SQL (and end-of-turn) tokens under the policy and the reference, averaged over the
pairs of the accumulation window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

import torch
import torch.nn.functional as F

from sqltune.errors import ConfigError, DataError
from sqltune.train.dist import dist_group
from sqltune.train.policy import PolicyTrainer, prompt_ids, sample_completions

log = logging.getLogger("sqltune.train")


def dpo_loss(pc, pr, rc, rr, *, beta: float, kind: str = "sigmoid"):
    """Per-pair loss and implicit reward margin from summed log-probs (policy/reference, chosen/rejected)."""
    logits = (pc - rc) - (pr - rr)
    if kind == "ipo":
        loss = (logits - 1.0 / (2.0 * beta)) ** 2
    else:
        loss = -F.logsigmoid(beta * logits)
    return loss, beta * logits


def sequence_logps(model: Any, rows: list[dict[str, list[int]]], pad_id: int, device: str):
    """Summed log-probability of the labelled tokens of each row ([B])."""
    from sqltune.train.data import collate_padded

    batch = {k: v.to(device) for k, v in collate_padded(rows, pad_id).items()}
    labels = batch.pop("labels")
    logits = model(**batch, use_cache=False).logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = (targets != -100).float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(-1)


class DPOTrainer(PolicyTrainer):
    """The DPO worker (``method: dpo``)."""

    needs_reference = True

    def _plan_data(self, train_ex: list[Any]) -> None:
        from sqltune.data.record import Example
        from sqltune.prompts import tokenize_for_training
        from sqltune.train.data import BatchPlan, TokenizedSet, tokenize_examples

        cfg = self.cfg
        pairs = self.payload.get("pairs")
        if pairs is None:
            pairs = self._pairs_from_samples(train_ex)
        self.pair_info = {"pairs": len(pairs), "source": "file" if self.payload.get("pairs") else "samples"}
        if cfg.dpo.max_pairs:
            pairs = pairs[: cfg.dpo.max_pairs]
        self.rows: list[tuple[dict, dict]] = []
        dropped = 0
        for p in pairs:
            ex = Example.from_dict(p["example"])
            chosen = tokenize_for_training(dataclasses.replace(ex, sql=p["chosen"]), self.tokenizer, self.template,
                                           max_length=cfg.data.max_length)
            rejected = tokenize_for_training(dataclasses.replace(ex, sql=p["rejected"]), self.tokenizer,
                                             self.template, max_length=cfg.data.max_length)
            if chosen is None or rejected is None:
                dropped += 1
                continue
            self.rows.append((chosen, rejected))
        if not self.rows:
            raise DataError(f"no preference pair to train on ({self.pair_info}, {dropped} longer than "
                               "data.max_length): sample more (dpo.samples_per_prompt) or give dpo.pairs_file")
        self.state["pairs"] = len(self.rows)
        self.train_set = TokenizedSet(rows=[c for c, _ in self.rows], dropped=dropped)
        self.val_set = tokenize_examples(self.val_ex, self.tokenizer, self.template, cfg.data.max_length)
        self.plan = BatchPlan(lengths=tuple(len(c["input_ids"]) + len(r["input_ids"]) for c, r in self.rows),
                              world_size=self.world, batch_size=cfg.train.batch_size,
                              grad_accum=cfg.train.grad_accum, seed=cfg.train.seed)
        if self.plan.steps_per_epoch() <= 0:
            raise ConfigError(
                f"{len(self.rows)} pairs make less than one optimizer step on each of {self.world} workers "
                f"(train.batch_size={cfg.train.batch_size}, train.grad_accum={cfg.train.grad_accum}): "
                "lower them, or sample more pairs (dpo.samples_per_prompt)"
            )
        if self.rank == 0:
            log.info("dpo: %d pairs (%s)", len(self.rows), self.pair_info)

    def _pairs_from_samples(self, train_ex: list[Any]) -> list[dict[str, Any]]:
        from sqltune.train.prefs import pairs_from_samples

        d = self.cfg.dpo
        mine = train_ex[self.rank :: self.world]
        texts: list[list[str]] = []
        self.model.eval()
        bs = max(1, self.cfg.eval.gen_batch_size // d.samples_per_prompt)
        for i in range(0, len(mine), bs):
            group = mine[i : i + bs]
            prompts = [prompt_ids(self.tokenizer, self.template, ex) for ex in group]
            with self._autocast():
                outs = sample_completions(self.model, self.tokenizer, prompts, n=d.samples_per_prompt,
                                          max_new_tokens=d.max_new_tokens, temperature=d.temperature,
                                          device=self.device)
            texts.extend([c.text for c in o] for o in outs)
        self.model.train()
        pairs, stats = pairs_from_samples(mine, texts, d)
        dist = dist_group()
        if dist is not None:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, pairs)
            pairs = [p for part in gathered for p in part]
        if self.rank == 0:
            log.info("dpo: pairs from the model's samples on this worker: %s", stats)
        return pairs

    def _before_restore(self) -> None:
        self.ref_logps: list[tuple[float, float]] = []
        self.model.eval()
        with torch.no_grad(), self.reference.active(), self._autocast():
            bs = max(1, self.cfg.train.batch_size)
            for i in range(0, len(self.rows), bs):
                chunk = self.rows[i : i + bs]
                both = sequence_logps(self.model, [c for c, _ in chunk] + [r for _, r in chunk], self.pad_id,
                                      self.device).tolist()
                self.ref_logps.extend(zip(both[: len(chunk)], both[len(chunk):]))
        self.model.train()

    def policy_step(self, micro: list[list[int]]) -> dict[str, float]:
        d = self.cfg.dpo
        n_pairs = sum(len(idx) for idx in micro)
        loss_total = margin_total = correct = tokens = 0.0
        for i, idx in enumerate(micro):
            sync = contextlib.nullcontext()
            if i < len(micro) - 1 and hasattr(self.model, "no_sync"):
                sync = self.model.no_sync()
            rows = [self.rows[j][0] for j in idx] + [self.rows[j][1] for j in idx]
            tokens += sum(len(r["input_ids"]) for r in rows)
            ref = torch.tensor([self.ref_logps[j] for j in idx], dtype=torch.float32, device=self.device)
            with sync:
                with self._autocast():
                    logps = sequence_logps(self.model, rows, self.pad_id, self.device)
                pc, pr = logps[: len(idx)], logps[len(idx):]
                loss, margin = dpo_loss(pc, pr, ref[:, 0], ref[:, 1], beta=d.beta, kind=d.loss)
                loss = loss.sum() / n_pairs
                loss.backward()
            loss_total += float(loss.detach())
            margin_total += float(margin.detach().sum())
            correct += float((margin.detach() > 0).sum())
        return {"loss": loss_total, "margin": margin_total / n_pairs, "pref_accuracy": correct / n_pairs,
                "tokens": tokens}


__all__ = ["DPOTrainer", "dpo_loss", "sequence_logps"]
