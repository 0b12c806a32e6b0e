"""The execution reward of GRPO (and the checks that build DPO pairs): run in the SQL sandbox, in parallel.

For one completion and its example, :func:`reward_one` computes the hybrid score the evaluation reports
(:func:`sqltune.evaluation.metrics.score_example`): 1.0 when the cleaned SQL returns the gold result on the
example's database (its SQLite/DuckDB file or PostgreSQL DSN; for context-only datasets the in-memory
database built from its CREATE/INSERT context, :mod:`sqltune.sql.context_db`), 0.0 for a query that is not
read-only, otherwise ``partial_weight`` x ROUGE-L against the gold SQL. Examples without any database, or
whose gold query fails, fall back to AST equivalence for the 1.0. An optional format term adds
``format_weight`` x (half for parseable, half for parseable *and* read-only).

:func:`score_completions` scores a batch on a thread pool (SQLite, DuckDB and psycopg release the GIL while
a query runs). Every query has the sandbox's own deadline; on top of that the whole batch has a deadline,
and a completion still unscored when it passes gets reward 0 with category ``timeout``. Nothing a completion
contains raises out of here: a hostile or endless query costs its reward, never the run.

Pure Python on sqltune.sql: no torch.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass
from typing import Any, Sequence

from sqltune.evaluation.metrics import rouge_l
from sqltune.prompts import clean_sql


@dataclass(frozen=True)
class RewardSpec:
    """How rewards are computed (from the ``grpo`` section, or the defaults)."""

    partial_weight: float = 0.7
    format_weight: float = 0.0
    timeout_s: float = 2.0
    max_rows: int = 1000
    workers: int = 4


@dataclass(frozen=True)
class Reward:
    value: float
    """What training uses: ``hybrid`` plus the format term."""
    hybrid: float
    exec_match: bool | None
    """None when the example has no database (AST equivalence decided) or its gold query failed."""
    rouge_l: float
    parseable: bool
    read_only: bool
    category: str | None = None
    """None on a match; else why not (empty_output, syntax, not_read_only, the sandbox's category,
    wrong_result, gold_failed, timeout, reward_error)."""


def _gold_run(ex: Any, spec: RewardSpec) -> Any:
    """The gold query's result on the example's database (None when there is none)."""
    from sqltune.sql import execute
    from sqltune.sql.context_db import execute_in_context, has_context

    if ex.db:
        try:
            return execute(ex.sql, db=ex.db, dialect=ex.dialect, timeout_s=spec.timeout_s, max_rows=spec.max_rows)
        except Exception as exc:  # noqa: BLE001 - a missing database file: the gold cannot be run
            from sqltune.sql import ExecResult

            return ExecResult(error=f"{type(exc).__name__}: {exc}", category="runtime")
    if has_context(ex.schema):
        return execute_in_context(ex.sql, context=ex.schema, dialect=ex.dialect, timeout_s=spec.timeout_s,
                                  max_rows=spec.max_rows)
    return None


def reward_one(completion: str, ex: Any, spec: RewardSpec = RewardSpec(), *, gold: Any = None) -> Reward:
    """The reward of one completion (raw model text) for example ``ex``; ``gold`` reuses a gold run."""
    from sqltune.sql import analyze, ast_equivalent
    from sqltune.sql.context_db import match_anywhere

    sql = clean_sql(completion or "").sql
    if not sql.strip():
        return Reward(0.0, 0.0, False, 0.0, False, False, "empty_output")
    rl = rouge_l(sql, ex.sql)
    partial = spec.partial_weight * rl
    analysis = analyze(sql, dialect=ex.dialect)
    parseable, read_only = bool(analysis.parseable), bool(analysis.parseable and analysis.read_only)
    fmt = spec.format_weight * (0.5 * parseable + 0.5 * read_only)
    if not parseable:
        return Reward(partial + fmt, partial, False, rl, False, False, "syntax")
    if not read_only:
        return Reward(fmt, 0.0, False, rl, True, False, "not_read_only")
    if gold is None:
        gold = _gold_run(ex, spec)
    match = None
    if gold is not None:
        match = match_anywhere(sql, ex.sql, db=ex.db, context=ex.schema, dialect=ex.dialect,
                               timeout_s=spec.timeout_s, max_rows=spec.max_rows, gold_result=gold)
    if match is None or match.gold_failed:
        equal = ast_equivalent(sql, ex.sql, ex.dialect)
        hybrid = 1.0 if equal else partial
        category = None if equal else ("gold_failed" if match is not None else "wrong_result")
        return Reward(hybrid + fmt, hybrid, None, rl, True, True, category)
    if match.match:
        return Reward(1.0 + fmt, 1.0, True, rl, True, True, None)
    category = "wrong_result" if match.category == "mismatch" else (match.category or "runtime")
    return Reward(partial + fmt, partial, False, rl, True, True, category)


def _failed(category: str) -> Reward:
    return Reward(0.0, 0.0, False, 0.0, False, False, category)


def score_completions(completions: Sequence[str], examples: Sequence[Any], spec: RewardSpec = RewardSpec(),
                      *, deadline_s: float | None = None) -> list[Reward]:
    """Rewards of ``completions[i]`` for ``examples[i]``, computed in parallel.

    Each gold query runs once per distinct example. ``deadline_s`` bounds the whole batch (default: four
    sandbox timeouts plus 10 s); what is not done by then scores 0 (``timeout``)."""
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions for {len(examples)} examples")
    n = len(completions)
    if n == 0:
        return []
    budget = deadline_s if deadline_s is not None else 4 * spec.timeout_s + 10.0
    pool = cf.ThreadPoolExecutor(max_workers=max(1, spec.workers), thread_name_prefix="sqltune-reward")
    out: list[Reward | None] = [None] * n
    try:
        end = time.monotonic() + budget
        golds: dict[int, cf.Future] = {}
        for ex in examples:
            golds.setdefault(id(ex), pool.submit(_gold_run, ex, spec))
        gold_of: dict[int, Any] = {}
        for key, fut in golds.items():
            try:
                gold_of[key] = fut.result(timeout=max(0.0, end - time.monotonic()))
            except Exception:  # noqa: BLE001 - a gold run that timed out or broke: decide without it
                gold_of[key] = None
        futures = {pool.submit(reward_one, c, ex, spec, gold=gold_of.get(id(ex))): i
                   for i, (c, ex) in enumerate(zip(completions, examples))}
        done, _ = cf.wait(futures, timeout=max(0.0, end - time.monotonic()))
        for fut in done:
            try:
                out[futures[fut]] = fut.result()
            except Exception:  # noqa: BLE001 - whatever a completion does, it costs its reward only
                out[futures[fut]] = _failed("reward_error")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [r if r is not None else _failed("timeout") for r in out]


def summarize_rewards(rewards: Sequence[Reward]) -> dict[str, float]:
    """Mean reward, hybrid score and execution accuracy (over examples that have a verdict) of a batch."""
    n = len(rewards)
    judged = [r for r in rewards if r.exec_match is not None]
    return {
        "reward": sum(r.value for r in rewards) / n if n else 0.0,
        "hybrid": sum(r.hybrid for r in rewards) / n if n else 0.0,
        "exec_accuracy": sum(bool(r.exec_match) for r in judged) / len(judged) if judged else 0.0,
        "parseable": sum(r.parseable for r in rewards) / n if n else 0.0,
    }


__all__ = ["Reward", "RewardSpec", "reward_one", "score_completions", "summarize_rewards"]
