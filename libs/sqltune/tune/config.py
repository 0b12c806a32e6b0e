"""The sweep's typed configuration (``python -m jobs.tune --config jobs/configs/tune-*.yaml key=value``).

A sweep names a training preset (``base_config``), fixed training keys for every trial (``overrides``), and a
search space over any training config fields, written as dotted keys::

    space:
      optim.lr: {loguniform: [1.0e-4, 3.0e-3]}
      lora.r: {choice: [8, 16, 32]}
      optim.warmup_ratio: {uniform: [0.0, 0.1]}

Every key of the space and every value it can take is checked against the training config before Ray
starts (an unknown key is an error naming it, with "did you mean"). Stage 1 trains each trial on a small
subset (``stage1``); ASHA stops weak trials early on the validation metric; stage 2 re-runs the best
``stage2.top_k`` configurations on more data (``stage2``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from sqltune.config import Config, param
from sqltune.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
KINDS = ("choice", "uniform", "loguniform")


@dataclass
class StageSettings(Config):
    """How much data and how many steps each trial of a stage trains on."""

    max_train_examples: int | None = param(256, "Training examples per trial (data.max_train_examples).", min=1)
    max_steps: int | None = param(50, "Optimizer steps per trial (train.max_steps); null = the preset's epochs.",
                                  min=1)
    eval_interval: int = param(10, "Evaluate (and report to Tune) every N steps: ASHA's rungs.", min=1)
    top_k: int = param(0, "Stage 2 only: re-run the best k stage-1 configurations; 0 = no stage 2.", min=0)


@dataclass
class AshaSettings(Config):
    """Asynchronous successive halving (ASHA) early stopping."""

    enabled: bool = param(True, "Stop weak trials early; false = every trial runs its full budget.")
    grace_period: int = param(1, "Reports (evaluations) a trial gets before it can be stopped.", min=1)
    reduction_factor: float = param(2.0, "Keep 1/reduction_factor of the trials at each rung.", min=1.01)


@dataclass
class TuneConfig(Config):
    """A hyper-parameter sweep over training runs with Ray Tune."""

    name: str = param("sweep", "Sweep name: Tune's experiment, trial run names, and the output folder.")
    base_config: str = param("", "The training preset every trial starts from (a jobs.train YAML).")
    overrides: dict[str, Any] = param(
        {}, "Training keys fixed for every trial, as dotted keys (model.base: ..., data.source: ...)."
    )
    space: dict[str, Any] = param(
        {}, "Search space: dotted training keys -> {choice: [...]}, {uniform: [low, high]} or "
        "{loguniform: [low, high]}."
    )
    num_samples: int = param(8, "Stage-1 trials (configurations sampled from the space).", min=1)
    metric: Literal["eval_loss", "eval_exec_accuracy", "eval_reward"] = param(
        "eval_loss", "What ASHA and the ranking use: validation loss (min), execution accuracy or reward (max)."
    )
    seed: int = param(0, "Seed of the search (which configurations are sampled).")
    max_concurrent: int = param(1, "Trials that train at the same time.", min=1)
    stage1: StageSettings = param(StageSettings(), "Stage 1: every sampled configuration on a small subset.")
    stage2: StageSettings = param(
        StageSettings(max_train_examples=None, max_steps=None, top_k=0), "Stage 2: the top-k on more data."
    )
    asha: AshaSettings = param(AshaSettings(), "Early stopping.")
    output_uri: str = param(".cache/tune", "Where results, the best preset and the best adapter go: "
                            "<output_uri>/<name>/ (local or s3://).")
    preset_path: str | None = param(
        None, "Also write the best configuration as a training preset to this local path; null = only "
        "<output_uri>/<name>/best.yaml.",
    )
    work_dir: str = param(".cache/tune-work", "Local directory of Tune's experiment state.")
    ray_address: str | None = param(None, "Ray cluster address; null = RAY_ADDRESS or a local Ray.")
    local_num_cpus: int | None = param(None, "CPUs of a local Ray started by the sweep (null = all).", min=1)
    overwrite: bool = param(False, "Replace the results of an earlier sweep of the same name.")

    def mode(self) -> Literal["min", "max"]:
        return "min" if self.metric == "eval_loss" else "max"

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"name: {self.name!r} must be letters, digits, '.', '_' or '-' (at most 101)")
        if not self.base_config.strip():
            raise ConfigError("base_config: required; the training preset trials start from, e.g. "
                              "jobs/configs/tiny.yaml")
        if not self.space:
            raise ConfigError("space: give at least one training key to search, e.g. optim.lr: {loguniform: [1e-4, 1e-3]}")
        for key, spec in self.space.items():
            parse_domain(key, spec)


def parse_domain(key: str, spec: Any) -> tuple[str, list[Any]]:
    """``(kind, args)`` of one search-space entry; raises ConfigError naming ``space.<key>``."""
    where = f"space.{key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where}: {spec!r} must be one of {{choice: [...]}}, {{uniform: [low, high]}}, "
                          "{loguniform: [low, high]}")
    kind, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}.{kind}: expected a non-empty list, got {args!r}")
    if kind == "choice":
        return kind, args
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"{where}.{kind}: expected [low, high] numbers, got {args!r}")
    low, high = float(args[0]), float(args[1])
    if not low < high:
        raise ConfigError(f"{where}.{kind}: low {low:g} must be below high {high:g}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}.loguniform: bounds must be positive, got {args!r}")
    return kind, [low, high]


def domain_values(key: str, spec: Any) -> list[Any]:
    """Values that stand for the whole domain when the space is checked: every choice, or the bounds."""
    kind, args = parse_domain(key, spec)
    if kind == "choice":
        return list(args)
    low, high = args
    return [low, high, math.sqrt(low * high) if kind == "loguniform" else (low + high) / 2]


__all__ = ["AshaSettings", "StageSettings", "TuneConfig", "domain_values", "parse_domain"]
