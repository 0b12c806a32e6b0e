"""The closed loop: train -> export -> evaluate -> gate -> promote (``python -m jobs.pipeline``)."""

from __future__ import annotations

from sqltune.pipeline.config import GateConfig, PipelineConfig, PromoteConfig

__all__ = ["GateConfig", "PipelineConfig", "PromoteConfig"]
