"""Ray Tune sweeps over training runs: the search space checked against the training config, and a tiny
two-stage sweep on a real local Ray that publishes its results, best preset and best adapter."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from sqltune.config import load_config
from sqltune.errors import ConfigError
from sqltune.train.config import TrainConfig
from sqltune.tune.config import TuneConfig
from sqltune.tune.run import check_space, trial_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from rl_helpers import GRETEL, build_gretel_base  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "jobs" / "configs"


def _sweep(**extra) -> dict:
    return {"name": "t", "base_config": str(CONFIGS / "tiny.yaml"), "overrides": {"model.base": "/m"},
            "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}, "lora.r": {"choice": [8, 16]}}, **extra}


def test_preset_loads_and_documents_its_commands():
    cfg = load_config(TuneConfig, CONFIGS / "tune-tiny.yaml")
    header = (CONFIGS / "tune-tiny.yaml").read_text()
    assert "ray job submit --working-dir . -- python -m jobs.tune --config jobs/configs/tune-tiny.yaml" in header
    assert "  python -m jobs.tune --config jobs/configs/tune-tiny.yaml" in header
    check_space(cfg)
    assert cfg.mode() == "min" and cfg.stage2.top_k == 2


@pytest.mark.parametrize("space, match", [
    ({"optim.lrr": {"choice": [1e-3]}}, r"space.optim.lrr: .*optim.lrr: unknown key \(did you mean 'lr'\?\)"),
    ({"lora.r": {"choice": [0, 8]}}, r"space.lora.r: .*lora.r: 0 is below the minimum 1"),
    ({"optim.lr": {"loguniform": [0, 1e-3]}}, r"space.optim.lr.loguniform: bounds must be positive"),
    ({"optim.lr": {"uniform": [1e-3, 1e-4]}}, r"space.optim.lr.uniform: low 0.001 must be below high 0.0001"),
    ({"optim.lr": {"normal": [0, 1]}}, r"space.optim.lr: .* must be one of"),
    ({"method": {"choice": ["sft", "rl"]}}, r"space.method: .*'rl' is not a valid choice"),
])
def test_bad_search_spaces_name_the_key(space, match):
    with pytest.raises(ConfigError, match=match):
        check_space(TuneConfig.from_dict(_sweep(space=space)))


def test_trial_config_layers_preset_overrides_budget_and_sample():
    cfg = TuneConfig.from_dict(_sweep(overrides={"model.base": "/m", "model": {"mode": "lora"}}))
    t = trial_config(cfg, {"optim.lr": 5e-4, "lora.r": 8}, cfg.stage1, "t-s1")
    assert (t.model.base, t.model.mode, t.optim.lr, t.lora.r) == ("/m", "lora", 5e-4, 8)
    assert t.data.max_train_examples == cfg.stage1.max_train_examples and t.train.max_steps == cfg.stage1.max_steps
    assert t.eval.interval == cfg.stage1.eval_interval and t.output_uri.endswith("t/trials")


@pytest.mark.ray
@pytest.mark.slow
def test_tiny_sweep_publishes_results_best_preset_and_adapter(tmp_path, monkeypatch):
    from jobs.tune import main

    # Two trials start their Ray Train worker groups at once; on a loaded 2-core machine that can take over
    # Ray Train's default minute.
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")

    base = build_gretel_base(tmp_path / "base")
    sweep = {
        "name": "ci-sweep", "base_config": str(CONFIGS / "tiny.yaml"),
        "overrides": {
            "model.base": str(base), "model.compute_dtype": "fp32", "model.attn_implementation": None,
            "lora.r": 8, "lora.alpha": 16, "data.source": str(GRETEL), "data.format": "gretel",
            "data.split_ratios": [0.75, 0.25, 0.0], "data.stratify": "none", "data.max_length": 400,
            "data.max_validation_examples": 6, "train.packing": False, "train.batch_size": 4, "train.log_every": 1,
            "scaling.num_workers": 1, "scaling.cpus_per_worker": 1, "tracking.backend": "none",
        },
        "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}, "optim.warmup_ratio": {"uniform": [0.0, 0.2]}},
        "num_samples": 4, "max_concurrent": 2, "metric": "eval_loss", "local_num_cpus": 4,
        "stage1": {"max_train_examples": 16, "max_steps": 4, "eval_interval": 2},
        "stage2": {"top_k": 1, "max_train_examples": 18, "max_steps": 4, "eval_interval": 2},
        "output_uri": str(tmp_path / "out"), "preset_path": str(tmp_path / "best.yaml"),
        "work_dir": str(tmp_path / "work"),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert main(["--config", str(path)]) == 0

    results = json.loads((tmp_path / "out" / "ci-sweep" / "results" / "results.json").read_text())
    trials = results["trials"]
    assert [t["stage"] for t in trials].count("stage1") == 4 and [t["stage"] for t in trials].count("stage2") == 1
    s1 = [t for t in trials if t["stage"] == "stage1"]
    assert all(t["status"] in ("completed", "stopped early") for t in s1), s1
    assert all(1e-4 <= t["params"]["optim.lr"] <= 1e-2 for t in s1)
    completed = [t for t in s1 if t["status"] == "completed"]
    best_s1 = min(completed, key=lambda t: t["metric"])
    s2 = next(t for t in trials if t["stage"] == "stage2")
    assert s2["params"] == min((t for t in s1 if t["metric"] is not None), key=lambda t: t["metric"])["params"] \
        or s2["params"] == best_s1["params"]
    assert s2["status"] == "completed" and results["best"]["stage"] == "stage2"

    preset = load_config(TrainConfig, tmp_path / "best.yaml")
    assert preset.optim.lr == pytest.approx(s2["params"]["optim.lr"]) and preset.train.max_steps == 4
    assert preset.run_name == "ci-sweep-best"
    adapter = tmp_path / "out" / "ci-sweep" / "adapter"
    assert (adapter / "manifest.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    md = (tmp_path / "out" / "ci-sweep" / "results" / "results.md").read_text()
    assert md.count("| stage1 |") == 4 and "| stage2 | completed |" in md


def test_training_reports_reach_tune_without_its_reserved_keys():
    """A training run's last report says done=true; Tune would read that as the trial's end (before publish)."""
    from sqltune.tune.report import tune_metrics

    out = tune_metrics({"step": 4, "eval_loss": 1.5, "done": True, "final": True})
    assert out == {"step": 4, "eval_loss": 1.5, "train_done": True, "final": True}
