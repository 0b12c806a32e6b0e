from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from sqltune.config import Config, load_config, param, parse_cli, parse_overrides
from sqltune.errors import ConfigError


@dataclass
class LoraCfg(Config):
    r: int = param(16, "LoRA rank.", min=1)
    alpha: float = param(32.0, "LoRA alpha.")
    targets: list[str] = param(["q_proj", "v_proj"], "Modules to adapt.")


@dataclass
class DemoCfg(Config):
    name: str = param("run", "Run name.")
    mode: Literal["qlora", "lora", "full"] = param("qlora", "What to train.")
    lr: float = param(2e-4, "Learning rate.", min=0.0)
    steps: int | None = param(None, "Optional step cap.")
    gpu: bool = param(False, "Use GPUs.")
    warmup_ratio: float = param(0.0, "Share of steps spent warming up.", min=0.0)
    lora: LoraCfg = param(LoraCfg(), "LoRA settings.")

    def validate(self) -> None:
        if self.mode == "full" and self.lora.r != 16:
            raise ConfigError("lora.r is ignored when mode=full; remove it")


def test_defaults_and_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("name: a\nlora:\n  r: 8\n")
    cfg = load_config(DemoCfg, preset, ["lora.alpha=64", "gpu=true", "lora.targets=q_proj,k_proj", "steps=10"])
    assert (cfg.name, cfg.lora.r, cfg.lora.alpha, cfg.gpu, cfg.steps) == ("a", 8, 64.0, True, 10)
    assert cfg.lora.targets == ["q_proj", "k_proj"]
    # Mutable defaults are not shared between instances.
    assert DemoCfg().lora is not DemoCfg().lora


def test_round_trip_through_yaml(tmp_path):
    cfg = DemoCfg(name="x")
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert load_config(DemoCfg, tmp_path / "c.yaml") == cfg


def test_unknown_key_names_it_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"lora\.alpah: unknown key \(did you mean 'alpha'\?\).*valid keys of LoraCfg"):
        load_config(DemoCfg, None, ["lora.alpah=8"])


def test_unknown_key_in_file_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("nmae: x\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: nmae: unknown key \(did you mean 'name'\?\)"):
        load_config(DemoCfg, p)


def test_bad_choice_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"mode: 'qlorra' is not a valid choice; choose one of \['qlora', 'lora', 'full'\]"):
        load_config(DemoCfg, None, ["mode=qlorra"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr=fast", r"lr: 'fast' is not a number"),
        ("lr=-1", r"lr: -1.0 is below the minimum 0.0"),
        ("lora.r=0", r"lora\.r: 0 is below the minimum 1"),
        ("gpu=maybe", r"gpu: 'maybe' is not a boolean"),
        ("steps=1.5", r"steps: 1\.5 is not a int \| null"),
    ],
)
def test_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DemoCfg, None, [override])


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="lora.r is ignored when mode=full"):
        load_config(DemoCfg, None, ["mode=full", "lora.r=4"])


def test_invalid_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: a\nlora: [1,\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml line \d+: invalid YAML"):
        load_config(DemoCfg, p)


def test_missing_file():
    with pytest.raises(ConfigError, match=r"config file 'nope.yaml' does not exist"):
        load_config(DemoCfg, "nope.yaml")


def test_parse_cli_forms(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: fromfile\n")
    cfg = parse_cli(DemoCfg, ["--config", str(p), "--warmup-ratio=0.1", "--lora.r=8", "lr=0.1", "--name", "cli",
                              "--steps", "5"])
    assert (cfg.name, cfg.lr, cfg.warmup_ratio, cfg.lora.r, cfg.steps) == ("cli", 0.1, 0.1, 8, 5)
    assert parse_cli(DemoCfg, [f"--config={p}"]).name == "fromfile"
    # A flag is an override like any other: an unknown one is named, with the closest valid key.
    with pytest.raises(ConfigError, match=r"lora_x: unknown key \(did you mean 'lora'\?\)"):
        parse_cli(DemoCfg, ["--config", str(p), "--lora-x=1"])
    with pytest.raises(ConfigError, match="flag '--name' needs a value; write name=VALUE"):
        parse_cli(DemoCfg, ["--name"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["justakey"])


def test_describe_lists_docs():
    text = DemoCfg.describe()
    assert "lora.r (int, default 16): LoRA rank." in text
    assert "mode ('qlora' | 'lora' | 'full', default 'qlora'): What to train." in text
