"""Every training preset parses, validates, and starts with the exact commands to launch it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqltune.config import load_config
from sqltune.train.config import ALL_LINEAR, TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"
PRESETS = ["tiny.yaml", "qwen2.5-3b-qlora.yaml", "qwen2.5-coder-1.5b-qlora-6gb.yaml",
           "qwen2.5-1.5b-sql-create-context.yaml", "qwen3-0.6b-lora-gretel.yaml"]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_documents_its_commands(name):
    path = CONFIGS / name
    cfg = load_config(TrainConfig, path)
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/{name}" in header
    assert f"  python -m jobs.train --config jobs/configs/{name}" in header
    assert cfg.lora.target_modules == ALL_LINEAR


def test_recipes_match_the_projects_they_replace():
    c = load_config(TrainConfig, CONFIGS / "qwen2.5-3b-qlora.yaml")
    assert (c.model.base, c.model.mode, c.lora.r, c.lora.alpha, c.optim.lr, c.train.epochs) == (
        "Qwen/Qwen2.5-3B-Instruct", "qlora", 16, 32.0, 2e-4, 4.0)
    assert c.optim.optimizer == "paged_adamw_8bit" and c.optim.schedule == "cosine" and c.model.double_quant
    c = load_config(TrainConfig, CONFIGS / "qwen2.5-coder-1.5b-qlora-6gb.yaml")
    assert (c.lora.r, c.lora.alpha, c.train.batch_size <= 2, c.model.gradient_checkpointing) == (32, 64.0, True, True)
    c = load_config(TrainConfig, CONFIGS / "qwen3-0.6b-lora-gretel.yaml")
    assert (c.model.mode, c.lora.r, c.lora.alpha, c.data.format) == ("lora", 64, 256.0, "gretel")
    c = load_config(TrainConfig, CONFIGS / "qwen2.5-1.5b-sql-create-context.yaml")
    assert (c.model.base, c.data.format) == ("Qwen/Qwen2.5-1.5B-Instruct", "sql-create-context")
    c = load_config(TrainConfig, CONFIGS / "tiny.yaml")
    assert c.model.mode == "qlora" and c.scaling.num_workers == 2 and not c.scaling.use_gpu


def test_prompt_system_overrides_the_instruction_and_travels_in_the_template():
    cfg = load_config(TrainConfig, CONFIGS / "tiny.yaml", ["prompt_system=Reply with one {dialect} query."])
    template = cfg.prompt_template()
    assert template.system_text("duckdb") == "Reply with one DuckDB query."
    assert type(template).from_dict(template.to_dict()) == template  # what the artifact's JSON gives back
    default = load_config(TrainConfig, CONFIGS / "qwen2.5-3b-qlora.yaml").prompt_template()
    assert default.system is None and "SQL" in default.system_text("sqlite")
