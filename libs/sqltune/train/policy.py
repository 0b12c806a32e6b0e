"""What the preference (DPO) and policy-gradient (GRPO) trainers share, on top of the SFT worker.

* :func:`sample_completions`: sampled (or greedy) completions of rendered prompts, as token ids and text;
* :func:`completion_logps`: per-token log-probabilities of given completions under the model (prompts
  left-padded, completions right-padded, so one ``logits_to_keep`` slice holds every completion token);
* :func:`load_init_adapter`: the starting adapter of SFT+DPO / SFT+GRPO (``model.init_adapter``);
* :class:`Reference`: the reference policy, a snapshot of the trainable weights taken before training and
  swapped in for a no-grad forward (LoRA-sized, so the swap costs little);
* :class:`PolicyTrainer`: the SFT :class:`~sqltune.train.loop.Trainer` with a validation reward: every eval
  greedily decodes ``eval.exec_examples`` validation questions and scores them with the sandboxed reward
  (:mod:`sqltune.train.rewards`), reported as ``eval_reward`` (hybrid score), ``eval_exec_accuracy`` and
  ``eval_parseable``, next to the SFT ``eval_loss`` on the gold SQL.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from sqltune.errors import ModelError
from sqltune.train.dist import all_sum, memory_gib
from sqltune.train.loop import Trainer

log = logging.getLogger("sqltune.train")


@dataclass
class Completion:
    ids: list[int]
    """Generated token ids, up to and including the first stop token (when one was generated)."""
    text: str


def prompt_ids(tokenizer: Any, template: Any, example: Any) -> list[int]:
    """The rendered prompt of ``example`` as token ids (the same prompt SFT trains on)."""
    from sqltune.prompts import build_pair

    return list(tokenizer(build_pair(example, tokenizer, template).prompt, add_special_tokens=False)["input_ids"])


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: str):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def sample_completions(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                       temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
                       device: str = "cpu") -> list[list[Completion]]:
    """``n`` completions of each prompt (token ids); greedy decoding when ``greedy``."""
    from sqltune.generation.generate import stop_token_ids

    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    ids, mask = _left_pad(prompts, pad, device)
    kwargs: dict[str, Any] = {"do_sample": False} if greedy else {
        "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    use_cache = model.config.use_cache
    model.config.use_cache = True
    try:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 num_return_sequences=1 if greedy else n, eos_token_id=stops, pad_token_id=pad,
                                 **kwargs)
    finally:
        model.config.use_cache = use_cache
    width = ids.shape[1]
    per = 1 if greedy else n
    result: list[list[Completion]] = []
    stop_set = set(stops)
    for i in range(len(prompts)):
        group = []
        for j in range(per):
            new = out[i * per + j, width:].tolist()
            end = next((k for k, t in enumerate(new) if t in stop_set), None)
            kept = new if end is None else new[: end + 1]
            text = tokenizer.decode(kept if end is None else kept[:-1], skip_special_tokens=True)
            group.append(Completion(kept, text))
        result.append(group)
    return result


def completion_logps(model: Any, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
                     pad_id: int, device: str):
    """(logps, mask), each [B, T]: the log-probability of every completion token given its prompt; T is the
    longest completion, ``mask`` marks real tokens. Differentiable when called with grad enabled."""
    width_p = max(len(p) for p in prompts)
    width_c = max(1, max(len(c) for c in completions))
    b = len(prompts)
    ids = torch.full((b, width_p + width_c), pad_id, dtype=torch.long)
    attn = torch.zeros((b, width_p + width_c), dtype=torch.long)
    cmask = torch.zeros((b, width_c), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, width_p - len(p): width_p] = torch.tensor(list(p), dtype=torch.long)
        attn[i, width_p - len(p): width_p] = 1
        if c:
            ids[i, width_p: width_p + len(c)] = torch.tensor(list(c), dtype=torch.long)
            attn[i, width_p: width_p + len(c)] = 1
            cmask[i, : len(c)] = 1.0
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    ids, attn, positions, cmask = ids.to(device), attn.to(device), positions.to(device), cmask.to(device)
    # Logits of the last width_c + 1 positions: position k predicts token k + 1, so dropping the last one
    # leaves exactly the predictions of the completion tokens.
    out = model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=False,
                logits_to_keep=width_c + 1)
    logits = out.logits[:, :-1, :].float()
    targets = ids[:, width_p:]
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logps * cmask, cmask


def load_init_adapter(model: Any, uri: str) -> None:
    """Load a published adapter's weights into the freshly built PEFT model (same LoRA shape)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from sqltune.models.loading import resolve_source
    from sqltune.train.model import unwrap

    local = Path(resolve_source(uri))
    weights = local / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelError(f"model.init_adapter {uri!r}: no adapter_model.safetensors there (not a sqltune adapter)")
    try:
        result = set_peft_model_state_dict(unwrap(model), load_file(str(weights)))
    except (KeyError, RuntimeError) as exc:  # a tensor missing or of another shape
        raise ModelError(
            f"model.init_adapter {uri!r} does not fit this model ({type(exc).__name__}: {exc}); give lora.* "
            "(r, target_modules, modules_to_save) the adapter's values and the same model.base"
        ) from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ModelError(
            f"model.init_adapter {uri!r}: {len(unexpected)} of its tensors do not fit this model (e.g. {unexpected[0]}); "
            "give lora.* (r, target_modules, modules_to_save) the adapter's values"
        )


class Reference:
    """The reference policy: the trainable weights as they were when this object was made."""

    def __init__(self, model: Any):
        from sqltune.train.model import unwrap

        self.params = {n: p for n, p in unwrap(model).named_parameters() if p.requires_grad}
        self.saved = {n: p.detach().clone() for n, p in self.params.items()}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.no_grad():
            current = {n: p.detach().clone() for n, p in self.params.items()}
            for n, p in self.params.items():
                p.copy_(self.saved[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(current[n])


class PolicyTrainer(Trainer):
    """The SFT worker plus a starting adapter, a reference policy and a validation reward."""

    needs_reference = False

    def reward_spec(self) -> Any:
        from sqltune.train.rewards import RewardSpec

        if self.cfg.method == "dpo":
            d = self.cfg.dpo
            return RewardSpec(timeout_s=d.reward_timeout_s, workers=d.reward_workers)
        g = self.cfg.grpo
        return RewardSpec(partial_weight=g.partial_weight, format_weight=g.format_weight,
                          timeout_s=g.reward_timeout_s, workers=g.reward_workers)

    def _restore(self) -> None:
        # Before the checkpoint (if any) is restored: the starting point, and the reference taken from it.
        if self.cfg.model.init_adapter:
            load_init_adapter(self.model, self.cfg.model.init_adapter)
            if self.rank == 0:
                log.info("started from adapter %s", self.cfg.model.init_adapter)
        self.reference = Reference(self.model) if self.needs_reference else None
        self._before_restore()
        super()._restore()

    def _before_restore(self) -> None:
        """Work that needs the starting policy (DPO's reference log-probabilities)."""

    # -------------------------------------------------------------------------------- validation reward

    def evaluate(self, *, exec_accuracy: bool) -> dict[str, float]:
        from sqltune.train.model import unwrap

        result = super().evaluate(exec_accuracy=False)
        model = unwrap(self.model)
        was_training = model.training
        model.eval()
        try:
            result.update(self._reward_eval(model))
        finally:
            if was_training:
                model.train()
        return result

    def _reward_eval(self, model: Any) -> dict[str, float]:
        from sqltune.train.rewards import score_completions

        cfg = self.cfg.eval
        chosen = self.val_ex[: cfg.exec_examples]
        mine = chosen[self.rank :: self.world]
        sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # reward, hybrid, exec hits, judged, parseable
        spec = self.reward_spec()
        for i in range(0, len(mine), cfg.gen_batch_size):
            group = mine[i : i + cfg.gen_batch_size]
            prompts = [prompt_ids(self.tokenizer, self.template, ex) for ex in group]
            with self._autocast():
                outs = sample_completions(model, self.tokenizer, prompts, n=1, greedy=True,
                                          max_new_tokens=cfg.max_new_tokens, device=self.device)
            rewards = score_completions([o[0].text for o in outs], group, spec)
            for r in rewards:
                sums[0] += r.value
                sums[1] += r.hybrid
                if r.exec_match is not None:
                    sums[2] += bool(r.exec_match)
                    sums[3] += 1
                sums[4] += r.parseable
        reward, hybrid, hits, judged, parseable = all_sum(sums, self.device)
        n = min(len(chosen), cfg.exec_examples)
        return {
            "eval_reward": reward / n if n else 0.0,
            "eval_hybrid": hybrid / n if n else 0.0,
            "eval_exec_accuracy": hits / judged if judged else 0.0,
            "eval_parseable": parseable / n if n else 0.0,
        }

    def _run_eval(self, *, exec_accuracy: bool) -> dict[str, float]:
        res = super()._run_eval(exec_accuracy=exec_accuracy)
        self.state["eval_reward"] = res.get("eval_reward")
        self.state["eval_hybrid"] = res.get("eval_hybrid")
        if self.rank == 0:
            log.info("eval step %d: reward %.4f, hybrid %.4f", self.state["step"], res.get("eval_reward", 0.0),
                     res.get("eval_hybrid", 0.0))
        return res

    def _report_metrics(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        reward = self.state.get("eval_reward")
        return super()._report_metrics({**(extra or {}), "eval_reward": reward if reward is not None else 0.0})

    def _summary(self) -> dict[str, Any]:
        out = super()._summary()
        out.update(method=self.cfg.method, eval_reward=self.state.get("eval_reward"),
                   eval_hybrid=self.state.get("eval_hybrid"), train_reward=self.state.get("train_reward"))
        if self.state.get("pairs") is not None:
            out["pairs"] = self.state["pairs"]
        return out

    def run(self) -> None:
        self.setup()
        if self.state["step"] == 0 and self.total_steps > 0:
            # The starting policy's validation reward (step 0 of the history), so a run shows what it changed.
            self._run_eval(exec_accuracy=False)
        if self.state["step"] < self.total_steps:
            self.train()
        self.finish()

    # ------------------------------------------------------------------------------------- the loop

    def _index_batches(self):
        """Yield micro-batches of indices (into the trainer's items) from the current data position on."""
        epoch, offset = self.plan.position(self.state["step"])
        while True:
            for idx in self.plan.micro_batches(epoch, self.rank)[offset:]:
                yield list(idx)
            epoch, offset = epoch + 1, 0

    def policy_step(self, micro: list[list[int]]) -> dict[str, float]:
        """Forward/backward of one optimizer step's micro-batches; returns the step's metrics (``loss``
        first, then method-specific ones). Subclasses implement it."""
        raise NotImplementedError

    def train(self) -> None:
        cfg = self.cfg
        ga = cfg.train.grad_accum
        self.model.train()
        batches = self._index_batches()
        window: dict[str, float] = {}
        count = 0
        window_time = 0.0
        while self.state["step"] < self.total_steps:
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(ga)]
            metrics = self.policy_step(micro)
            if self.flat_sync:
                self._sync_gradients()
            if cfg.optim.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.trainable, cfg.optim.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize(self.device)
            dt = time.perf_counter() - t0
            self.state["step"] += 1
            self.state["train_seconds"] += dt
            window_time += dt
            tokens = int(metrics.pop("tokens", 0))
            self.state["tokens"] += tokens
            for k, v in metrics.items():
                window[k] = window.get(k, 0.0) + float(v)
            count += 1
            step = self.state["step"]
            last = step >= self.total_steps
            if step % cfg.train.log_every == 0 or last:
                keys = sorted(window)
                totals = all_sum([window[k] for k in keys] + [float(count)], self.device)
                avg = {k: totals[i] / max(1.0, totals[-1]) for i, k in enumerate(keys)}
                lr = self.scheduler.get_last_lr()[0]
                point = {"step": step, "train_loss": round(avg.get("loss", 0.0), 5), "lr": lr,
                         **{f"train_{k}": round(v, 5) for k, v in avg.items() if k != "loss"}}
                self.state["history"].append(point)
                self.state["last_train_loss"] = avg.get("loss")
                self.state["train_reward"] = avg.get("reward")
                if self.rank == 0:
                    mem_kind, mem = memory_gib(self.device)
                    extras = " | ".join(f"{k} {v:.4f}" for k, v in avg.items() if k != "loss")
                    log.info("step %d/%d | loss %.4f | %s | lr %.3g | %.2fs/step | %s %.2f GiB", step,
                             self.total_steps, avg.get("loss", 0.0), extras, lr, window_time / count, mem_kind, mem)
                window, count, window_time = {}, 0, 0.0
            if last:
                break
            do_eval = step % cfg.eval.interval == 0
            do_ckpt = step % cfg.checkpoint.interval == 0
            if do_eval or do_ckpt:
                self._run_eval(exec_accuracy=False)
            if do_ckpt:
                self._save_and_report(self._report_metrics({"train_loss": self.state.get("last_train_loss")}))


__all__ = ["Completion", "PolicyTrainer", "Reference", "completion_logps", "load_init_adapter", "prompt_ids",
           "sample_completions"]
