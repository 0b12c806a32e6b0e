"""The Ray Train worker's entry point: picks the trainer for the run's method and runs it.

The one module that knows every method's trainer (SFT: :mod:`sqltune.train.loop`, DPO and GRPO in their own
modules), so the trainers import the loop and never the other way round.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from sqltune.log import setup_logging
from sqltune.train.config import TrainConfig
from sqltune.train.dpo import DPOTrainer
from sqltune.train.grpo import GRPOTrainer
from sqltune.train.loop import Trainer


def train_loop_per_worker(payload: dict[str, Any]) -> None:
    """What Ray Train runs on every worker (``TorchTrainer(train_loop_per_worker=...)``)."""
    import ray.train

    cfg = TrainConfig.from_dict(payload["config"])
    setup_logging(force=True)  # this worker process's entry point; Ray's own handler would drop INFO
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = cfg.train.threads_per_worker or max(1, int(math.floor(cfg.scaling.cpus_per_worker or 1)))
    torch.set_num_threads(threads)
    if cfg.scaling.use_gpu:
        import ray.train.torch

        dev = ray.train.torch.get_device()
        torch.cuda.set_device(dev)
        device = f"cuda:{dev.index or 0}"
    else:
        device = "cpu"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer_class(cfg.method)(cfg, payload, rank=rank, world_size=world, device=device).run()


def trainer_class(method: str) -> type[Trainer]:
    """The worker's trainer for ``method``: SFT (the loop's own), DPO or GRPO."""
    return {"dpo": DPOTrainer, "grpo": GRPOTrainer}.get(method, Trainer)


__all__ = ["train_loop_per_worker", "trainer_class"]
