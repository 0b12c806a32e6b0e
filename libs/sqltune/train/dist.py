"""What every trainer shares about its process: sums over ranks, memory, RNG state and seeding.

Below :mod:`sqltune.train.loop` and the method trainers (:mod:`sqltune.train.policy`, ``grpo``, ``dpo``),
which all import it; it imports nothing of the package.
"""

from __future__ import annotations

import random
import resource
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def dist_group():
    """``torch.distributed`` when a process group is up, else None (one process)."""
    return dist if dist.is_available() and dist.is_initialized() else None


def all_sum(values: list[float], device: str) -> list[float]:
    """Sum floats over all ranks (identity when not distributed)."""
    group = dist_group()
    if group is None:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    group.all_reduce(t)
    return t.tolist()


def memory_gib(device: str) -> tuple[str, float]:
    """("gpu"|"rss", GiB): peak allocated GPU memory, or this process's resident memory on CPU."""
    if device.startswith("cuda"):
        return "gpu_peak", torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import psutil

        return "rss", psutil.Process().memory_info().rss / 2**30
    except ImportError:  # pragma: no cover
        return "rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except RuntimeError:  # a different GPU count after an elastic restart
            pass


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = ["all_sum", "dist_group", "memory_gib", "rng_state", "seed_all", "set_rng_state"]
