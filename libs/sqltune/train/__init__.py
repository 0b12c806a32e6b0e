"""Training: QLoRA / LoRA / full fine-tuning as a Ray Train job (``python -m jobs.train``).

* :mod:`sqltune.train.config`: :class:`TrainConfig` and its sections.
* :mod:`sqltune.train.data`: tokenization (loss on SQL only), batch plans, padding and packing.
* :mod:`sqltune.train.model`: base model loading, NF4 quantization, LoRA.
* :mod:`sqltune.train.optim`: paged 8-bit AdamW, warmup + cosine schedule.
* :mod:`sqltune.train.loop`: the Ray Train worker function (checkpoints, resume, eval).
* :mod:`sqltune.train.run`: the driver (preflight, TorchTrainer, publish, tracking).

Importing this package does not import torch or ray.
"""

from __future__ import annotations

from sqltune.train.config import TrainConfig

__all__ = ["TrainConfig"]
