"""Typed config of the closed loop (``python -m jobs.pipeline``): train -> export -> evaluate -> gate -> promote.

The pipeline chains the three jobs' own presets (each parsed by its own config class) and wires them:
export reads the adapter training published, evaluation scores the run export published. Paths of the
chained presets are relative to the pipeline config's folder, so the same file works from a checkout
(``jobs/configs/``) and from the ConfigMap a RayJob mounts (``/etc/sqltune/configs/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqltune.config import Config, load_config, param
from sqltune.errors import ConfigError
from sqltune.evaluation.config import EvalConfig
from sqltune.export.config import ExportConfig
from sqltune.storage import join
from sqltune.train.config import TrainConfig

STAGES = ("train", "export", "evaluate")


@dataclass
class GateConfig(Config):
    """When an evaluated artifact may be served. Every failed check is a reason in gate.json."""

    candidate: str = param("merged", "Variant of the evaluation report that would be served.")
    baseline: str = param(
        "base",
        "Variant the candidate must beat by min_gain ('' = no comparison). An http variant pointing at "
        "the running server compares against the model served now.",
    )
    min_exec_accuracy: float = param(
        0.0, "Lowest execution accuracy of the candidate (0.6 = 60%).", min=0.0, max=1.0
    )
    min_gain: float = param(
        0.0,
        "Execution-accuracy points over the baseline, as a fraction (0.05 = 5 points; negative allows a drop).",
        min=-1.0,
        max=1.0,
    )
    require_agreement: bool = param(
        True, "Fail when an agreement pair that includes the candidate is flagged."
    )
    max_read_only_violations: int = param(
        0, "Most predictions of the candidate that write to the database.", min=0
    )
    allow_failed_variants: bool = param(False, "Pass even when some variant of the report failed to run.")


@dataclass
class PromoteConfig(Config):
    """Where a model that passed the gate is switched on."""

    target: Literal["none", "local", "kubernetes"] = param(
        "none",
        "kubernetes: patch the RayService's serveConfigV2; local: `serve deploy` to a Ray cluster; none: gate only.",
    )
    rayservice: str = param("sqltune", "kubernetes: the RayService to patch.")
    namespace: str = param("sqltune", "kubernetes: its namespace.")
    context: str | None = param(
        None, "kubernetes: kubeconfig context (null: in-cluster config, else the current one)."
    )
    app: str = param("sqltune", "The Ray Serve application whose args.model_uri is replaced.")
    address: str = param(
        "",
        "local: the Ray dashboard address for `serve deploy` (empty: $SQLTUNE_SERVE_ADDRESS, else $RAY_ADDRESS "
        "when it is an http:// address).",
    )
    dry_run: bool = param(False, "Print the change (the patch or the serve config) and change nothing.")


@dataclass
class PipelineConfig(Config):
    """Train, export and evaluate a model, gate the result, and promote it to serving when it passes."""

    train_config: str = param("tiny.yaml", "Training preset, relative to this file's folder.")
    train_overrides: list[str] = param([], "key=value overrides of the training preset.")
    export_config: str = param("export-tiny.yaml", "Export preset, relative to this file's folder.")
    export_overrides: list[str] = param([], "key=value overrides of the export preset.")
    eval_config: str = param("eval-tiny.yaml", "Evaluation preset, relative to this file's folder.")
    eval_overrides: list[str] = param([], "key=value overrides of the evaluation preset.")
    presets_dir: str = param("", "Folder of the chained presets; empty: the pipeline config's own folder.")
    gate: GateConfig = param(GateConfig(), "Thresholds an artifact must meet to be served.")
    promote: PromoteConfig = param(PromoteConfig(), "Where a passing artifact is served.")

    def validate(self) -> None:
        for name in ("train_config", "export_config", "eval_config"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{name}: required (a preset file name, e.g. {name}=tiny.yaml)")
        for name in ("train_overrides", "export_overrides", "eval_overrides"):
            for item in getattr(self, name):
                if "=" not in item or item.startswith("="):
                    raise ConfigError(f"{name}: {item!r} is not key=value (for example train.max_steps=4)")

    def stage_file(self, stage: str, config_dir: str | Path | None = None) -> Path:
        """The preset file of ``stage``, resolved against the pipeline config's folder."""
        name = {"train": self.train_config, "export": self.export_config, "evaluate": self.eval_config}[stage]
        path = Path(name)
        folder = self.presets_dir or config_dir
        if not path.is_absolute() and folder:
            path = Path(folder) / path
        return path

    def stage_config(self, stage: str, config_dir: str | Path | None = None) -> Any:
        """The typed config of one stage: its preset, the pipeline's wiring, then its overrides."""
        if stage not in STAGES:
            raise ConfigError(f"unknown pipeline stage {stage!r}; stages are {', '.join(STAGES)}")
        key = {"train": "train_config", "export": "export_config", "evaluate": "eval_config"}[stage]
        path = self.stage_file(stage, config_dir)
        if not path.is_file():
            raise ConfigError(
                f"{key}: {str(path)!r} does not exist; name a preset beside the pipeline config"
            )
        train = load_config(
            TrainConfig,
            path if stage == "train" else self.stage_file("train", config_dir),
            self.train_overrides,
        )
        if stage == "train":
            return train
        run = join(train.output_uri, train.run_name)
        export_wiring = [
            f"adapter={join(run, 'adapter')}",
            f"output_uri={train.output_uri}",
            f"run_name={train.run_name}",
        ]
        if stage == "export":
            return load_config(ExportConfig, path, export_wiring + self.export_overrides)
        export = load_config(
            ExportConfig, self.stage_file("export", config_dir), export_wiring + self.export_overrides
        )
        return load_config(EvalConfig, path, [f"run_uri={export.destination()}"] + self.eval_overrides)
