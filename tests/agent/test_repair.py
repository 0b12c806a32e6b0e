"""The execute-and-repair loop on real SQLite, DuckDB and PostgreSQL.

The model is replaced by a script of answers (what a model would write in each round): the loop's job
is what it does with them - check, execute, feed the error back, vote - and that is what these tests
pin. The end-to-end run with a real model is in test_ask.py.
"""

from __future__ import annotations

import sqlite3

import pytest
from agent_helpers import SHOP_SCHEMA

from sqltune.agent import (
    Generated,
    RepairConfig,
    RepairSession,
    Sampling,
    repair,
    repair_many,
    target_for,
)
from sqltune.agent.repair import check_candidate
from sqltune.errors import ConfigError, SQLError
from sqltune.prompts import REPAIR_FEEDBACK, build_messages


class Scripted:
    """Answers round by round; records every conversation and sampling it was asked for."""

    def __init__(self, *rounds: list[str]):
        self.rounds = list(rounds)
        self.calls: list[tuple[list, list[Sampling]]] = []

    def __call__(self, conversations, samplings):
        self.calls.append((conversations, samplings))
        answers = self.rounds.pop(0)
        assert len(answers) == len(conversations), (answers, len(conversations))
        return answers


def messages(question: str = "How many orders were shipped?") -> list[dict[str, str]]:
    return build_messages(question, SHOP_SCHEMA, dialect="sqlite")


@pytest.mark.parametrize("db_fixture", ["shop_sqlite", "shop_duckdb"])
def test_unknown_column_is_fed_back_and_repaired(request, db_fixture):
    db = request.getfixturevalue(db_fixture)
    model = Scripted(["SELECT COUNT(*) FROM orders WHERE state = 'shipped'"],
                     ["SELECT COUNT(*) FROM orders WHERE status = 'shipped';"])
    with target_for("sqlite", SHOP_SCHEMA, str(db)) as target:
        result = repair(model, messages(), target, RepairConfig(max_rounds=2))
    assert result.passed and result.repaired and result.rounds_used == 1
    assert result.sql == "SELECT COUNT(*) FROM orders WHERE status = 'shipped'"
    assert result.final.rows == [(2,)]
    first = result.rounds[0].best
    assert first.status == "unknown_identifier" and first.stage == "compile"
    assert "state" in first.error
    # The second call saw the failed SQL as the assistant's turn and the engine's error as the user's.
    convo = model.calls[1][0][0]
    assert convo[:2] == messages()
    assert convo[2] == {"role": "assistant", "content": "SELECT COUNT(*) FROM orders WHERE state = 'shipped'"}
    assert convo[3]["role"] == "user" and first.error in convo[3]["content"]
    assert convo[3]["content"].startswith(REPAIR_FEEDBACK.split("{error}")[0])
    assert [r.to_dict()["status"] for r in result.rounds] == ["unknown_identifier", "ok"]


def test_a_write_is_never_executed_and_is_repaired(shop_sqlite):
    model = Scripted(["DELETE FROM orders"], ["DROP TABLE orders; SELECT 1"], ["SELECT COUNT(*) FROM orders"])
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        result = repair(model, messages(), target, RepairConfig(max_rounds=3))
    assert [r.best.status for r in result.rounds] == ["not_read_only", "not_read_only", "ok"]
    assert all(r.best.stage == "analyze" and not r.best.executed for r in result.rounds[:2])
    assert result.final.rows == [(3,)]  # every order is still there
    conn = sqlite3.connect(shop_sqlite)
    assert conn.execute("SELECT COUNT(*) FROM orders").fetchone() == (3,)
    conn.close()


def test_runtime_timeout_and_syntax_errors_are_categorised(shop_sqlite):
    endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT COUNT(*) FROM r"
    cfg = RepairConfig(timeout_s=0.5)
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        timeout = check_candidate(endless, target, cfg)
        syntax = check_candidate("SELECT FROM WHERE", target, cfg)
        prose = check_candidate("I don't know.", target, cfg)
        empty = check_candidate("SELECT name FROM customers WHERE country = 'Mars'", target, cfg)
    assert (timeout.status, timeout.stage) == ("timeout", "execute")
    assert syntax.status == "syntax" and syntax.stage in ("analyze", "compile")
    assert prose.status == "syntax"
    assert (empty.status, empty.executed, empty.rows) == ("empty", True, [])
    assert empty.passed(retry_on_empty=False) and not empty.passed(retry_on_empty=True)


def test_empty_result_is_repaired_only_when_asked(shop_sqlite):
    empty = "SELECT name FROM customers WHERE country = 'Sweeden'"
    fixed = "SELECT name FROM customers WHERE country = 'Sweden'"
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        kept = repair(Scripted([empty]), messages("Who lives in Sweden?"), target, RepairConfig())
        retried = repair(Scripted([empty], [fixed]), messages("Who lives in Sweden?"), target,
                         RepairConfig(retry_on_empty=True))
    assert kept.passed and kept.rounds_used == 0 and kept.final.status == "empty"
    assert retried.rounds_used == 1 and retried.final.rows == [("Bo",)]
    assert retried.rounds[0].best.error == "the query ran but returned no rows"


def test_rounds_stop_at_max_rounds_and_keep_the_best_failure(shop_sqlite):
    model = Scripted(["SELEC 1"], ["SELECT nope FROM orders"], ["SELECT also_nope FROM orders"])
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        result = repair(model, messages(), target, RepairConfig(max_rounds=2))
    assert not model.rounds  # three generations: the first and two repairs, no more
    assert not result.passed and result.rounds_used == 2
    # unknown identifiers rank above a syntax error; the latest of equals wins
    assert result.final.sql == "SELECT also_nope FROM orders"
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        once = repair(Scripted(["SELEC 1"]), messages(), target, RepairConfig(max_rounds=0))
    assert once.rounds_used == 0 and once.final.status == "syntax"


def test_a_repeated_answer_is_sampled_next_time(shop_sqlite):
    bad = "SELECT nope FROM orders"
    model = Scripted([bad], [bad], ["SELECT COUNT(*) FROM orders"])
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        result = repair(model, messages(), target, RepairConfig(max_rounds=3, seed=7))
    samplings = [call[1][0] for call in model.calls]
    assert samplings[0].greedy and samplings[1].greedy
    assert not samplings[2].greedy and samplings[2].seed == 7 + 200
    assert result.passed


def test_self_consistency_votes_by_execution_result(shop_sqlite):
    answers = [
        "SELECT COUNT(*) FROM orders",  # greedy: 3
        "SELECT COUNT(*) FROM orders WHERE status = 'shipped'",  # 2
        "SELECT COUNT(order_id) FROM orders WHERE status = 'shipped'",  # 2
        "SELECT COUNT(*) FROM ordrs",  # fails: no vote
    ]
    model = Scripted(answers)
    cfg = RepairConfig(candidates=4, seed=3, temperature=0.9, top_p=0.8)
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        result = repair(model, messages(), target, cfg)
    samplings = model.calls[0][1]
    assert samplings[0].greedy
    assert [(s.temperature, s.top_p, s.seed) for s in samplings[1:]] == [(0.9, 0.8, 4), (0.9, 0.8, 5), (0.9, 0.8, 6)]
    rnd = result.rounds[0]
    assert rnd.chosen == 1 and rnd.votes == {"0": 1, "1": 2}
    assert result.final.rows == [(2,)]
    d = rnd.to_dict()
    assert d["chosen"] == 1 and len(d["candidates"]) == 4 and d["candidates"][3]["status"] == "unknown_identifier"


def test_schema_only_checks_compile_on_a_scratch_copy():
    model = Scripted(["SELECT nme FROM customers"], ["SELECT name FROM customers"])
    with target_for("sqlite", SHOP_SCHEMA) as target:
        assert target.db is None and target.scratch is not None
        result = repair(model, messages("List the names."), target, RepairConfig())
    first = result.rounds[0].best
    assert (first.status, first.stage) == ("unknown_identifier", "compile")
    assert result.passed and not result.final.executed


def test_postgres_dialect_without_a_database_is_checked_statically():
    with target_for("postgres", SHOP_SCHEMA) as target:
        assert target.scratch is None
        cand = check_candidate("SELECT nme FROM customers", target, RepairConfig())
    assert (cand.status, cand.stage) == ("unknown_identifier", "analyze")
    assert "nme" in cand.error


def test_repair_many_batches_every_open_session(shop_sqlite):
    model = Scripted(["SELECT nope FROM orders", "SELECT COUNT(*) FROM customers"], ["SELECT COUNT(*) FROM orders"])
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        results = repair_many(model, [(messages(), target), (messages("How many customers?"), target)])
    assert [len(c[0]) for c in model.calls] == [2, 1]  # the second round only holds the open session
    assert [r.final.rows for r in results] == [[(3,)], [(3,)]]



def test_token_counts_are_attributed_to_their_session_and_summed_over_rounds(shop_sqlite):
    """A generate function that returns Generated: each session's result sums the tokens of every
    generation made for it (its repair rounds included), none of another session's."""
    model = Scripted([Generated("SELECT nope FROM orders", 30, 5),
                      Generated("SELECT COUNT(*) FROM customers", 31, 7)],
                     [Generated("SELECT COUNT(*) FROM orders", 52, 6)])
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        repaired, at_once = repair_many(model, [(messages(), target), (messages("How many customers?"), target)])
    assert (repaired.rounds_used, at_once.rounds_used) == (1, 0)
    assert (repaired.output_tokens, repaired.prompt_tokens) == (5 + 6, 30 + 52)
    assert (at_once.output_tokens, at_once.prompt_tokens) == (7, 31)
    assert [c.output_tokens for r in repaired.rounds for c in r.candidates] == [5, 6]


def test_plain_texts_leave_the_token_counts_unknown(shop_sqlite):
    """Texts without counts (the server counts usage itself): None, never a partial sum."""
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        plain = repair(Scripted(["SELECT COUNT(*) FROM orders"]), messages(), target)
        mixed = repair(Scripted([Generated("SELECT nope FROM orders", 30, 5)], ["SELECT COUNT(*) FROM orders"]),
                       messages(), target)
    assert plain.passed and (plain.output_tokens, plain.prompt_tokens) == (None, None)
    assert mixed.rounds_used == 1 and (mixed.output_tokens, mixed.prompt_tokens) == (None, None)


def test_a_database_that_cannot_be_opened_is_an_error_not_a_round(tmp_path):
    with target_for("sqlite", SHOP_SCHEMA, str(tmp_path / "missing.sqlite")) as target:
        with pytest.raises(SQLError, match="database file not found"):
            check_candidate("SELECT 1", target, RepairConfig())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"max_rounds": 6}, r"repair\.max_rounds: 6 is above the maximum 5"),
        ({"candidates": 0}, r"repair\.candidates: 0 is below the minimum 1"),
        ({"timeout_s": 600}, r"repair\.timeout_s: 600.0 is above the maximum 60"),
        ({"max_round": 1}, r"repair\.max_round: unknown key \(did you mean 'max_rounds'\?\)"),
        ({"temperature": "hot"}, r"repair\.temperature: 'hot' is not a number"),
    ],
)
def test_config_is_validated_naming_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        RepairConfig.from_dict(data, where="repair")


def test_session_rejects_a_wrong_number_of_generations(shop_sqlite):
    with target_for("sqlite", SHOP_SCHEMA, str(shop_sqlite)) as target:
        session = RepairSession(messages(), target, RepairConfig(candidates=2))
        with pytest.raises(ValueError, match="expected 2 generations, got 1"):
            session.submit(["SELECT 1"])
