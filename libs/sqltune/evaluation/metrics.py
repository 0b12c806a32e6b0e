"""Per-example metrics: everything the report aggregates, computed for one (example, model output) pair.

The scoring order, and the error category an example gets (the first that applies):

1. the gold query fails on the database -> ``gold_failed``: reported, excluded from every denominator;
2. the variant produced no output (an HTTP error after its retries, a request timeout, a generation error)
   -> ``http_error`` / ``http_timeout`` / ``generation_error``: recorded with its message, counted wrong;
3. nothing SQL-like in the output -> ``empty_output``;
4. the cleaned SQL does not parse in the dataset's dialect, or parses only as a bare expression (an
   identifier, an alias, a comparison: not a statement) -> ``syntax``; with a database, the engine's
   compiler decides what parses (SQLite/DuckDB ``EXPLAIN``, PostgreSQL ``PREPARE``): its syntax errors are
   not parseable; whatever it refuses gets the engine's category (``syntax``, ``unknown_identifier``, ...)
   and is never executed
   (``parseable_sqlglot`` keeps sqlglot's verdict);
5. it is not one read-only query -> ``not_read_only`` (never executed; execution and hybrid score are 0);
6. more statements follow the first (``SELECT ...; DROP ...``) -> ``multiple_statements``: wrong, as the
   official Spider/BIRD evaluators score it (the engine runs one statement); with ``statements="first"``
   the first statement is scored instead;
7. execution through the sandbox fails -> the sandbox's category (``syntax``, ``unknown_identifier``,
   ``runtime``, ``timeout``, ``too_many_rows``);
8. it runs but returns a different result -> ``wrong_result``;
9. it returns the gold result -> no category (``None``).

An example without a database whose schema text is CREATE/INSERT context (sql-create-context, gretel) runs
steps 7-9 on an in-memory SQLite built from that context (:mod:`sqltune.sql.context_db`).
Without any database (no ``db``, no context) steps 7-9 use AST equivalence instead: ``None`` when equivalent, else
``unknown_identifier`` if it names tables/columns outside the schema, else ``wrong_result``.

Hybrid score: 1.0 on an execution match (or, without a database, AST equivalence); 0.0 for a read-only
violation; otherwise ``partial_weight`` (0.7) x ROUGE-L F1 between the SQL token sequences of the cleaned
prediction and the gold query.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sqltune.prompts import clean_sql

ERROR_CATEGORIES = (
    "wrong_result", "syntax", "unknown_identifier", "not_read_only", "runtime", "timeout", "too_many_rows",
    "empty_output", "multiple_statements", "http_error", "http_timeout", "generation_error",
)
FAILURE_CATEGORIES = ("http_error", "http_timeout", "generation_error")
"""Categories of an example the variant produced no output for (counted wrong, and towards
``max_failed_fraction``)."""

# String literals (quotes kept, case kept), quoted identifiers, numbers, words, multi-char operators, any
# other single non-space character.
_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?"""
    r"""|"(?:[^"]|"")*"?"""
    r"""|`[^`]*`?"""
    r"""|\[[^\]]*\]"""
    r"""|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?"""
    r"""|[A-Za-z_][A-Za-z0-9_$]*"""
    r"""|<=|>=|<>|!=|==|\|\||::|->>|->"""
    r"""|\S""",
)


def sql_tokens(sql: str) -> list[str]:
    """SQL text as tokens for ROUGE-L: keywords/identifiers lower-cased, string literals kept verbatim,
    a trailing semicolon dropped."""
    out = []
    for tok in _TOKEN.findall(sql or ""):
        out.append(tok if tok.startswith("'") else tok.lower())
    while out and out[-1] == ";":
        out.pop()
    return out


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, two rows)."""
    if not a or not b:
        return 0
    if len(b) > len(a):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else (prev[j] if prev[j] >= cur[j - 1] else cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(pred: str, gold: str) -> float:
    """ROUGE-L F1 (beta = 1) over SQL tokens: 2PR / (P + R) with P = LCS/|pred|, R = LCS/|gold|."""
    p, g = sql_tokens(pred), sql_tokens(gold)
    if not p or not g:
        return 1.0 if not p and not g else 0.0
    lcs = lcs_length(p, g)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(g)
    return 2 * precision * recall / (precision + recall)


@dataclass
class GoldCheck:
    """The gold query's own run (once per example, reused for every variant)."""

    ok: bool
    result: Any = None  # sqltune.sql.ExecResult
    error: str | None = None
    category: str | None = None


@dataclass
class ExampleScore:
    """One row of predictions.jsonl."""

    variant: str
    id: str
    category: str | None
    difficulty: str | None
    dialect: str
    question: str
    gold_sql: str
    raw_output: str
    cleaned_sql: str
    cleaned: bool  # cleaning had to remove something (fences, prose, trailing text)
    parseable: bool  # the engine's compiler accepted it where the example has a database, else sqlglot
    exact: bool
    ast_equal: bool
    exec_match: bool | None  # None: no database for this example
    gold_failed: bool
    unknown_tables: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    read_only: bool = False
    read_only_violation: bool = False
    rouge_l: float = 0.0
    hybrid: float = 0.0
    latency_s: float = 0.0
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error_category: str | None = None
    error: str | None = None  # the parse/sandbox error message, if any
    gold_error: str | None = None
    extra_statements: str = ""  # statements the output held after its first one
    parseable_sqlglot: bool = False  # sqlglot parses it as a statement
    parseable_engine: bool | None = None  # EXPLAIN / PREPARE on the example's database accepted it (None: not checked)
    failed: bool = False  # no output: HTTP error after retries, generation error (error_category says which)

    @property
    def hallucinated(self) -> bool:
        return bool(self.unknown_tables or self.unknown_columns)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hallucination"] = self.hallucinated
        return d


def score_example(
    *,
    variant: str,
    example: Any,
    raw_output: str,
    gold: GoldCheck | None,
    schema: Any = None,
    latency_s: float = 0.0,
    prompt_tokens: int | None = None,
    output_tokens: int | None = None,
    exec_timeout_s: float = 5.0,
    max_rows: int = 10000,
    float_tol: float = 1e-6,
    partial_weight: float = 0.7,
    statements: str = "all",
    failure: tuple[str, str] | None = None,
    pool: Any = None,
) -> ExampleScore:
    """Score one model output against ``example`` (an :class:`~sqltune.data.Example`).

    ``gold`` is the gold query's checked run on ``example.db`` (None when the example has no database);
    ``schema`` is the example's schema as a :class:`sqltune.sql.Schema` (parsed once per schema by the caller)
    or None to parse ``example.schema`` here. ``failure`` = (category, message) when the variant produced no
    output for this example: it is recorded and counts as wrong. ``statements="all"`` scores output holding more
    than one statement as wrong (``multiple_statements``); ``"first"`` scores its first statement. ``pool``: a
    :class:`~sqltune.sql.isolated.SandboxPool` the SQLite/DuckDB compile checks and queries run in.
    """
    from sqltune.sql import analyze, ast_equivalent, exact_match, execution_match

    dialect = example.dialect
    cleaned = clean_sql(raw_output or "")
    sql = cleaned.sql
    score = ExampleScore(
        variant=variant, id=example.id, category=example.category, difficulty=example.difficulty, dialect=dialect,
        question=example.question, gold_sql=example.sql, raw_output=raw_output or "", cleaned_sql=sql,
        cleaned=cleaned.cleaned, parseable=False, exact=False, ast_equal=False, exec_match=None,
        gold_failed=bool(gold is not None and not gold.ok), latency_s=float(latency_s),
        prompt_tokens=prompt_tokens, output_tokens=output_tokens,
    )
    if score.gold_failed:
        score.gold_error = gold.error
        score.error_category = "gold_failed"
    score.rouge_l = rouge_l(sql, example.sql)
    if failure is not None:
        score.failed = True
        score.exec_match = False if gold is not None else None
        score.error_category = score.error_category or failure[0]
        score.error = failure[1]
        return score
    score.extra_statements = cleaned.rest
    if not sql.strip():
        score.exec_match = False if gold is not None else None
        score.error_category = score.error_category or "empty_output"
        score.error = "no SQL in the output"
        score.hybrid = 0.0
        return score
    analysis = analyze(sql, dialect=dialect, schema=schema if schema is not None else example.schema)
    is_statement = analysis.parseable  # analyze already refuses text that parses only as a bare expression
    score.parseable = score.parseable_sqlglot = is_statement
    score.read_only = is_statement and analysis.read_only
    score.read_only_violation = is_statement and not analysis.read_only
    if is_statement:
        score.unknown_tables = list(analysis.unknown_tables)
        score.unknown_columns = list(analysis.unknown_columns)
    score.exact = is_statement and exact_match(sql, example.sql, dialect)
    score.ast_equal = score.exact or (is_statement and ast_equivalent(sql, example.sql, dialect))
    if not analysis.parseable:
        category, score.error = "syntax", analysis.error
    elif score.read_only_violation:
        category, score.error = "not_read_only", "; ".join(analysis.reasons) or "not a read-only query"
    elif cleaned.rest and statements == "all":
        category = "multiple_statements"
        score.error = f"more than one statement (the engine runs one): {cleaned.rest[:200]}"
        score.exact = score.ast_equal = False  # the output as a whole is not the gold query
    else:
        category = None
    if gold is None:  # no database: structural correctness only
        if category is None and not score.ast_equal:
            category = "unknown_identifier" if score.hallucinated else "wrong_result"
    elif category is None and not score.gold_failed and example.db:
        # Parseable means what the engine's compiler accepts (sqlglot takes `... GROUP BY a WHERE ...`).
        from sqltune.sql.compile import compile_check

        compiled = compile_check(sql, db=example.db, dialect=dialect, timeout_s=exec_timeout_s, pool=pool)
        if compiled.category != "timeout":  # a plan that timed out says nothing about the syntax
            # Parseable is about syntax: a name the engine cannot bind parsed, and is wrong (unknown_identifier).
            score.parseable = score.parseable_engine = compiled.category != "syntax"
        if not compiled.ok:
            category, score.error = compiled.category or "syntax", compiled.error
    if gold is not None and category is None and not score.gold_failed:
        if example.db:
            m = execution_match(sql, example.sql, db=example.db, dialect=dialect, timeout_s=exec_timeout_s,
                                max_rows=max_rows, float_tol=float_tol, gold_result=gold.result, pool=pool)
        else:
            from sqltune.sql.context_db import context_execution_match

            m = context_execution_match(sql, example.sql, context=example.schema, dialect=dialect,
                                        timeout_s=exec_timeout_s, max_rows=max_rows, float_tol=float_tol,
                                        gold_result=gold.result)
        score.exec_match = bool(m.match)
        if not m.match:
            category = "wrong_result" if m.category == "mismatch" else (m.category or "runtime")
            score.error = m.pred.error if m.pred is not None and m.pred.error else (m.reason or None)
    if gold is not None and score.exec_match is None:
        score.exec_match = False  # never executed (syntax, read-only violation) or gold failed
    if not score.gold_failed:
        score.error_category = category
    correct = score.exec_match if gold is not None else score.ast_equal
    if correct and not score.gold_failed:
        score.hybrid = 1.0
    elif score.read_only_violation:
        score.hybrid = 0.0
    else:
        score.hybrid = partial_weight * score.rouge_l
    return score


def check_gold(example: Any, *, exec_timeout_s: float = 5.0, max_rows: int = 10000,
               context_db: bool = True, pool: Any = None) -> GoldCheck | None:
    """Run the gold query once under the sandbox; None when the example has no database (nor, with
    ``context_db``, CREATE TABLE context to build one from)."""
    from sqltune.sql import execute

    if not example.db:
        from sqltune.sql.context_db import execute_in_context, has_context

        if not (context_db and has_context(example.schema)):
            return None
        res = execute_in_context(example.sql, context=example.schema, dialect=example.dialect,
                                 timeout_s=exec_timeout_s, max_rows=max_rows)
        if not res.ok:
            return GoldCheck(ok=False, result=res, error=f"{res.category}: {res.error}", category=res.category)
        return GoldCheck(ok=True, result=res)
    try:
        res = execute(example.sql, db=example.db, dialect=example.dialect, timeout_s=exec_timeout_s, max_rows=max_rows,
                      pool=pool)
    except Exception as exc:  # noqa: BLE001 - a missing database file etc.: the gold cannot be checked
        return GoldCheck(ok=False, error=f"{type(exc).__name__}: {exc}", category="runtime")
    if not res.ok:
        return GoldCheck(ok=False, result=res, error=f"{res.category}: {res.error}", category=res.category)
    return GoldCheck(ok=True, result=res)
