"""method: sft | dpo | grpo in the training config, and preference files validated line by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sqltune.config import load_config
from sqltune.errors import ConfigError, DataError
from sqltune.train.config import DpoSettings, TrainConfig
from sqltune.train.prefs import check_pairs, load_pairs, parse_pairs_file

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"
PAIRS = Path(__file__).parent / "fixtures" / "pairs_small.jsonl"


@pytest.mark.parametrize("name", ["tiny-grpo.yaml", "tiny-dpo.yaml", "qwen2.5-3b-grpo.yaml"])
def test_rl_presets_load_and_document_their_commands(name):
    path = CONFIGS / name
    cfg = load_config(TrainConfig, path)
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/{name}" in header
    assert f"  python -m jobs.train --config jobs/configs/{name}" in header
    assert cfg.method in ("dpo", "grpo") and cfg.score() == ("eval_reward", "max")


@pytest.mark.parametrize("overrides, match", [
    (["method=ppo"], r"method: 'ppo' is not a valid choice; choose one of \['sft', 'dpo', 'grpo'\]"),
    (["grpo.num_generations=8"], r"grpo.num_generations: applies to method=grpo only, and method is 'sft'"),
    (["method=grpo", "dpo.beta=0.2"], r"dpo.beta: applies to method=dpo only, and method is 'grpo'"),
    (["model.init_adapter=/x"], r"model.init_adapter: applies to method=dpo or grpo"),
    (["method=grpo"], r"train.packing: applies to method=sft only"),
    (["method=grpo", "train.packing=false", "grpo.num_gens=2"], r"grpo.num_gens: unknown key \(did you mean 'num_generations'\?\)"),
    (["method=dpo", "train.packing=false", "model.mode=full", "lora.modules_to_save=[]"], r"model.mode: method=dpo trains LoRA"),
])
def test_bad_method_keys_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TrainConfig, CONFIGS / "tiny.yaml", overrides)


def _write(tmp_path, lines) -> str:
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(p)


GOOD = {"question": "q", "schema": "CREATE TABLE t (a INT)", "chosen": "SELECT a FROM t", "rejected": "SELECT 1"}


@pytest.mark.parametrize("bad, match", [
    ("{not json", r"pairs.jsonl:2: invalid JSON"),
    ({"question": "q", "chosen": "SELECT 1"}, r"pairs.jsonl:2: missing 'rejected'"),
    ({**GOOD, "chosen": ""}, r"pairs.jsonl:2: 'chosen' must be a non-empty string"),
    ({**GOOD, "rejected": GOOD["chosen"]}, r"pairs.jsonl:2: chosen and rejected are the same SQL"),
    ({**GOOD, "chosenn": "x"}, r"pairs.jsonl:2: unknown key 'chosenn'"),
    ({**GOOD, "db": 3}, r"pairs.jsonl:2: 'db' must be a string"),
    ([1, 2], r"pairs.jsonl:2: expected a JSON object"),
])
def test_pairs_file_errors_name_file_and_line(tmp_path, bad, match):
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(DataError, match=match):
        parse_pairs_file(path)


def test_pairs_are_checked_in_the_sandbox():
    pairs, info = load_pairs(str(PAIRS), DpoSettings())
    assert info["read"] == 6 and info["kept"] == 5 and info["dropped"] == {"rejected_matches": 1}
    assert [p["line"] for p in pairs] == [1, 2, 3, 4, 5]
    assert pairs[2]["example"]["sql"] == "SELECT COUNT(*) FROM farms;"  # the line's gold, not its chosen
    bad = parse_pairs_file(str(PAIRS))[:1]
    bad[0] = {**bad[0], "chosen": "SELECT COUNT(*) FROM ships WHERE id > 1"}
    kept, info = check_pairs(bad, DpoSettings())
    assert kept == [] and info["dropped"] == {"chosen_wrong_result": 1}


def test_a_file_with_no_usable_pair_is_an_error(tmp_path):
    path = _write(tmp_path, [{**GOOD, "chosen": "SELECT a FROM t", "rejected": "SELECT a FROM t WHERE 1 = 1"}])
    with pytest.raises(DataError, match="none of its 1 pairs passed the sandbox check"):
        load_pairs(path, DpoSettings())
