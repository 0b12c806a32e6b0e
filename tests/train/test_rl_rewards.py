"""The execution reward: hybrid score in the sandbox, in parallel, hostile completions cost only their reward."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqltune.data import load_dataset
from sqltune.train.rewards import RewardSpec, reward_one, score_completions, summarize_rewards

GRETEL = Path(__file__).parent / "fixtures" / "gretel_small.jsonl"


@pytest.fixture(scope="module")
def examples():
    return load_dataset(GRETEL, format="gretel")


def test_hybrid_reward_values(examples):
    ex = examples[1]  # SELECT SUM(tonnage) FROM ships;
    assert ex.sql == "SELECT SUM(tonnage) FROM ships;"
    assert reward_one(f"```sql\n{ex.sql}\n```", ex).value == 1.0
    assert reward_one("SELECT tonnage + 0 FROM ships WHERE id = -1 UNION SELECT 25200", ex).exec_match is True
    wrong = reward_one("SELECT SUM(id) FROM ships", ex)
    assert wrong.exec_match is False and wrong.category == "wrong_result"
    from sqltune.evaluation.metrics import rouge_l

    assert wrong.value == pytest.approx(0.7 * rouge_l("SELECT SUM(id) FROM ships", ex.sql))
    assert reward_one("DELETE FROM ships", ex).value == 0.0
    assert reward_one("", ex).category == "empty_output"
    fmt = RewardSpec(format_weight=0.2)
    assert reward_one(ex.sql, ex, fmt).value == pytest.approx(1.2)
    assert reward_one("DELETE FROM ships", ex, fmt).value == pytest.approx(0.1)


def test_batch_in_parallel_with_hostile_and_endless_completions(examples):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    completions = [ex.sql for ex in examples] + [endless, "SELECT zeroblob(2000000000)", "ATTACH 'x' AS y",
                                                  "not sql at all ((("]
    batch = list(examples) + [examples[0]] * 4
    rewards = score_completions(completions, batch, RewardSpec(timeout_s=0.5, workers=4))
    assert [r.value for r in rewards[: len(examples)]] == [1.0] * len(examples)
    tail = rewards[len(examples):]
    assert [r.category for r in tail] == ["timeout", "runtime", "not_read_only", "syntax"]
    assert all(r.value < 0.7 for r in tail)
    s = summarize_rewards(rewards)
    assert s["exec_accuracy"] == pytest.approx(len(examples) / (len(examples) + 4))


def test_batch_deadline_scores_unfinished_work_zero(examples):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    rewards = score_completions([endless] * 2, [examples[0]] * 2, RewardSpec(timeout_s=5, workers=2), deadline_s=0.5)
    assert [r.category for r in rewards] == ["timeout", "timeout"] and all(r.value == 0 for r in rewards)


def test_examples_without_a_database_fall_back_to_ast_equivalence(examples):
    import dataclasses

    bare = dataclasses.replace(examples[0], schema="", db=None)
    assert reward_one("select count(*) from ships", bare).value == 1.0
    assert reward_one("SELECT 2", bare).exec_match is None
