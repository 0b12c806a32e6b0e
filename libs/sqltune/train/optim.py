"""Optimizer and learning-rate schedule.

``paged_adamw_8bit`` is bitsandbytes' ``PagedAdamW8bit`` (the QLoRA recipe: 8-bit optimizer state in
paged memory, so memory spikes page to the host instead of failing). bitsandbytes 0.50 also runs its
8-bit optimizers on CPU, so the CPU path uses the same optimizer; only if bitsandbytes is missing or
its CPU build cannot step does the job fall back to ``torch.optim.AdamW`` and say so in the log.
Tensors under 4,096 elements keep 32-bit state (bitsandbytes' ``min_8bit_size``), as in the recipe.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import torch

from sqltune.errors import ConfigError
from sqltune.train.config import OptimConfig

log = logging.getLogger(__name__)


def _param_groups(model: Any, cfg: OptimConfig) -> list[dict[str, Any]]:
    decay, no_decay, embed = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "modules_to_save" in name and cfg.embedding_lr is not None:
            embed.append(p)
        elif p.ndim < 2 or "norm" in name or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr})
    if embed:
        groups.append({"params": embed, "weight_decay": 0.0, "lr": cfg.embedding_lr})
    if not groups:
        raise ConfigError("the model has no trainable parameters: check model.mode and the lora section")
    return groups


def _probe(opt_cls: Any, device: str) -> str | None:
    """Step the optimizer once on a throwaway tensor; the reason it cannot run here, or None."""
    try:
        p = torch.nn.Parameter(torch.randn(64, 128, device=device))
        opt = opt_cls([p], lr=1e-3)
        p.grad = torch.randn_like(p)
        opt.step()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run here"
        return f"{type(exc).__name__}: {exc}"


def build_optimizer(model: Any, cfg: OptimConfig, device: str) -> tuple[Any, str]:
    """The optimizer and the name of what actually runs (logged and recorded in metrics)."""
    groups = _param_groups(model, cfg)
    kwargs = {"betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps}
    if cfg.optimizer in ("paged_adamw_8bit", "adamw_8bit"):
        try:
            import bitsandbytes as bnb

            opt_cls = bnb.optim.PagedAdamW8bit if cfg.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
            reason = _probe(opt_cls, device)
        except ImportError as exc:
            opt_cls, reason = None, f"bitsandbytes is not importable ({exc})"
        if reason is None:
            return opt_cls(groups, **kwargs), cfg.optimizer
        log.warning("optimizer %s cannot run on %s (%s); falling back to torch AdamW", cfg.optimizer, device, reason)
    return torch.optim.AdamW(groups, **kwargs), "adamw"


def lr_lambda(step: int, *, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if schedule == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(cfg: OptimConfig, total: int) -> int:
    if cfg.warmup_steps is not None:
        return min(cfg.warmup_steps, total)
    return int(round(cfg.warmup_ratio * total))


def build_scheduler(optimizer: Any, cfg: OptimConfig, total_steps: int):
    """Warmup then cosine (or linear/constant) decay, as a ``LambdaLR`` (its state_dict is checkpointed)."""
    fn = functools.partial(
        lr_lambda,
        total=total_steps,
        warmup=warmup_steps(cfg, total_steps),
        schedule=cfg.schedule,
        min_ratio=cfg.min_lr_ratio,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
