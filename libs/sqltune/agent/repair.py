"""Execute-and-repair: generate SQL, check it, run it read-only, feed the error back, up to N rounds.

One round: the model writes SQL (``candidates`` samples in the first round, one afterwards); each is

1. cleaned (:func:`~sqltune.prompts.clean_sql`) and analysed (:func:`~sqltune.sql.analyze`): SQL that
   does not parse, or is anything but one read-only query, is refused here and never reaches a database;
2. compiled by the engine without running (:func:`~sqltune.sql.compile.compile_check`: SQLite/DuckDB
   ``EXPLAIN``, PostgreSQL ``PREPARE``) on the real database or, for a pasted schema, on an empty scratch
   copy of it;
3. executed read-only with a timeout (:func:`~sqltune.sql.execute`) when there is a real database.

A candidate that fails (syntax, unknown identifier, runtime error, timeout, or an empty result when
``retry_on_empty``) is put back into the conversation with its error
(:func:`~sqltune.prompts.repair_messages`) and the model answers again, until one passes or
``max_rounds`` repair rounds are spent. With several candidates, those that pass vote with their
execution results (self-consistency): the largest group of identical results wins, ties go to the
earliest candidate (the greedy one).

The loop knows nothing about models: a *generate* function turns chat conversations (and their
:class:`Sampling`) into texts, or into :class:`Generated` texts that carry their token counts, which the
candidates keep so that a result knows what its rounds cost (:attr:`RepairResult.output_tokens`).
:class:`RepairSession` is the loop as a state machine (what to generate
next, then the texts), so callers batch the generation of many sessions together (evaluation) or await
it (the server); :func:`repair` and :func:`repair_many` drive sessions with a synchronous generate
function.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqltune.config import Config, param
from sqltune.errors import ConfigError, SQLError
from sqltune.generation.request import GREEDY, Sampling

__all__ = [
    "MAX_CANDIDATES",
    "MAX_ROUNDS",
    "Candidate",
    "Generated",
    "RepairConfig",
    "RepairResult",
    "RepairSession",
    "Round",
    "Sampling",
    "Target",
    "check_candidate",
    "repair",
    "repair_many",
    "target_for",
]

MAX_ROUNDS = 5
"""Hard cap on repair rounds (each one is a full generation plus checks)."""
MAX_CANDIDATES = 8
"""Hard cap on self-consistency candidates."""


@dataclass
class RepairConfig(Config):
    """The execute-and-repair loop (``sqltune ask --repair``, ``/v1/sql`` ``repair``, evaluation)."""

    max_rounds: int = param(2, "Repair rounds after the first generation (0: check only, never regenerate).",
                            min=0, max=MAX_ROUNDS)
    candidates: int = param(
        1, "SQL candidates in the first round; above 1 they are sampled (the first stays greedy) and vote by "
        "their execution results (self-consistency).", min=1, max=MAX_CANDIDATES)
    temperature: float = param(0.7, "Sampling temperature of candidates after the first.", min=0.01, max=2.0)
    top_p: float = param(0.95, "Nucleus sampling mass of sampled candidates.", min=0.01, max=1.0)
    seed: int = param(0, "Seed of sampled candidates (candidate i uses seed + i): the same request gives the "
                      "same answer.", min=0)
    retry_on_empty: bool = param(False, "Treat an empty result as an error and repair it.")
    execute: bool = param(True, "Run candidates read-only on the database (needs one); false: analyze and "
                          "compile only.")
    timeout_s: float = param(5.0, "Time limit of one compile check or execution, in seconds.", min=0.1, max=60.0)
    max_rows: int = param(1000, "Rows kept from an execution (more: marked truncated).", min=1, max=100_000)


Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class Generated:
    """One generation with what it cost, in the model's tokens (None: not counted)."""

    text: str
    prompt_tokens: int | None = None
    output_tokens: int | None = None


Generate = Callable[[list[Conversation], list[Sampling]], Sequence[str | Generated]]
"""(conversations, their sampling) -> one generation per conversation, in order: its text, or a
:class:`Generated` with its token counts."""


@dataclass
class Target:
    """Where candidates are checked: the prompt's schema, and a real database, a scratch copy, or neither."""

    dialect: str
    schema: str = ""
    db: str | None = None
    """A real database (SQLite/DuckDB file or PostgreSQL DSN): compile checks and execution."""
    scratch: str | None = None
    """An empty copy of ``schema`` (:func:`~sqltune.sql.compile.scratch_database`): compile checks only."""


@contextlib.contextmanager
def target_for(dialect: str, schema: str, db: str | None = None) -> Iterator[Target]:
    """A :class:`Target`; without ``db``, an empty scratch database built from ``schema`` (removed on
    exit) gives the engine's compile check. A schema sqlglot cannot turn into tables falls back to
    static analysis only."""
    from sqltune.sql import canonical_dialect

    dialect = canonical_dialect(dialect)
    if db is not None:
        yield Target(dialect=dialect, schema=schema, db=str(db))
        return
    with tempfile.TemporaryDirectory(prefix="sqltune-scratch-") as tmp:
        from sqltune.sql.compile import scratch_database

        scratch = None
        if dialect != "postgres":  # PostgreSQL SQL is checked statically: no in-process PostgreSQL
            try:
                scratch = str(scratch_database(schema, dialect=dialect, directory=tmp))
            except SQLError:
                scratch = None
        yield Target(dialect=dialect, schema=schema, scratch=scratch)


# ------------------------------------------------------------------------------------------ checking

# Candidate statuses, best first: ok (passed), empty (ran, no rows), then the failure categories.
_RANK = {"ok": 0, "empty": 1, "timeout": 2, "runtime": 2, "unknown_identifier": 3, "syntax": 4, "not_read_only": 5}


@dataclass
class Candidate:
    """One generated query and what the checks found."""

    sql: str
    raw: str = ""
    cleaned: bool = False
    status: str = "ok"
    """ok | empty | syntax | unknown_identifier | not_read_only | runtime | timeout"""
    error: str | None = None
    stage: str = ""
    """Where it stopped: analyze | compile | execute ("" when it passed every stage it went through)."""
    executed: bool = False
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    truncated: bool = False
    check_ms: float = 0.0
    sampled: bool = False
    prompt_tokens: int | None = None
    """Tokens of the prompt it was generated from (None: the generate function did not count them)."""
    output_tokens: int | None = None
    """Tokens generated for it (None: not counted)."""

    def passed(self, retry_on_empty: bool) -> bool:
        return self.status == "ok" or (self.status == "empty" and not retry_on_empty)

    def result_key(self) -> str:
        """What votes: the multiset of rows when it ran, else the normalized SQL."""
        if self.executed:
            return "rows:" + repr(sorted(repr(tuple(r)) for r in self.rows))
        from sqltune.sql import normalize

        try:
            return "sql:" + normalize(self.sql)
        except Exception:  # noqa: BLE001 - normalisation is best effort
            return "sql:" + " ".join(self.sql.split()).lower()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sql": self.sql, "status": self.status, "check_ms": round(self.check_ms, 2)}
        if self.error:
            out["error"] = self.error
            out["stage"] = self.stage
        if self.executed:
            out["row_count"] = len(self.rows)
        if self.sampled:
            out["sampled"] = True
        return out


def _short(error: str | None) -> str:
    """The error without the driver's exception class (``OperationalError: no such column: x``)."""
    text = " ".join((error or "").split())
    return re.sub(r"^[A-Za-z]*(Error|Exception): ", "", text, count=1)


def check_candidate(raw: str, target: Target, cfg: RepairConfig) -> Candidate:
    """Clean, analyse, compile and (with a database and ``cfg.execute``) run one generation.

    Never raises for a problem of the SQL. A non-read-only query is refused at the analysis stage and
    never reaches a database. Raises :class:`~sqltune.errors.SQLError` when the database itself cannot be
    opened (a missing file, PostgreSQL down): that is not the model's fault and no round can fix it.
    """
    from sqltune.prompts import clean_sql
    from sqltune.sql import analyze, execute
    from sqltune.sql.compile import compile_check

    start = time.perf_counter()
    cleaned = clean_sql(raw)
    cand = Candidate(sql=cleaned.sql, raw=raw, cleaned=cleaned.cleaned)

    def done(status: str, error: str | None = None, stage: str = "") -> Candidate:
        cand.status, cand.error, cand.stage = status, _short(error) if error else None, stage
        cand.check_ms = (time.perf_counter() - start) * 1000
        return cand

    if not cand.sql:
        return done("syntax", "the answer holds no SQL statement", "analyze")
    analysis = analyze(cand.sql, dialect=target.dialect, schema=target.schema or None)
    if not analysis.parseable:
        return done("syntax", analysis.error, "analyze")
    if not analysis.read_only:
        return done("not_read_only", "not a single read-only query: " + "; ".join(analysis.reasons), "analyze")
    engine_db = target.db or target.scratch
    if engine_db is None:
        if not analysis.grounded:
            parts = []
            if analysis.unknown_tables:
                parts.append("no such table: " + ", ".join(analysis.unknown_tables))
            if analysis.unknown_columns:
                parts.append("no such column: " + ", ".join(analysis.unknown_columns))
            return done("unknown_identifier", "; ".join(parts), "analyze")
        return done("ok")
    compiled = compile_check(cand.sql, db=engine_db, dialect=target.dialect, timeout_s=cfg.timeout_s)
    if not compiled.ok:
        return done(compiled.category or "runtime", compiled.error, "compile")
    if target.db is None or not cfg.execute:
        return done("ok")
    res = execute(cand.sql, db=target.db, dialect=target.dialect, timeout_s=cfg.timeout_s, max_rows=cfg.max_rows)
    if res.error is not None and res.category != "too_many_rows":
        return done(res.category or "runtime", res.error, "execute")
    cand.executed = True
    cand.columns, cand.rows, cand.truncated = list(res.columns), list(res.rows), bool(res.truncated)
    if not cand.rows:
        return done("empty", "the query ran but returned no rows", "execute")
    return done("ok")


# ------------------------------------------------------------------------------------------ the loop


@dataclass
class Round:
    """One generation step: its candidates, the one carried forward, and what it cost."""

    index: int
    candidates: list[Candidate]
    chosen: int
    generate_ms: float = 0.0
    check_ms: float = 0.0
    votes: dict[str, int] = field(default_factory=dict)

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        out: dict[str, Any] = {
            "round": self.index,
            "sql": best.sql,
            "status": best.status,
            "generate_ms": round(self.generate_ms, 2),
            "check_ms": round(self.check_ms, 2),
        }
        if best.error:
            out["error"] = best.error
            out["stage"] = best.stage
        if len(self.candidates) > 1:
            out["candidates"] = [c.to_dict() for c in self.candidates]
            out["chosen"] = self.chosen
            out["votes"] = self.votes
        return out


@dataclass
class RepairResult:
    """What the loop ended with: the chosen candidate and every round."""

    final: Candidate
    rounds: list[Round]
    passed: bool

    @property
    def sql(self) -> str:
        return self.final.sql

    @property
    def rounds_used(self) -> int:
        """Repair rounds run after the first generation."""
        return max(0, len(self.rounds) - 1)

    @property
    def repaired(self) -> bool:
        """The first round failed and a later one passed (the loop only goes on after a failure)."""
        return self.passed and len(self.rounds) > 1

    @property
    def prompt_tokens(self) -> int | None:
        """Prompt tokens of every generation of every round (each repair round prefills its longer
        conversation again); None when the generate function did not count one of them."""
        return _total(c.prompt_tokens for r in self.rounds for c in r.candidates)

    @property
    def output_tokens(self) -> int | None:
        """Tokens generated over every round and candidate: what the answer cost, repairs included;
        None when the generate function did not count one of them."""
        return _total(c.output_tokens for r in self.rounds for c in r.candidates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sql": self.sql,
            "status": self.final.status,
            "passed": self.passed,
            "rounds_used": self.rounds_used,
            "rounds": [r.to_dict() for r in self.rounds],
        }


def _total(counts: Iterable[int | None]) -> int | None:
    values = list(counts)
    return None if not values or any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


def _vote(cands: list[Candidate], retry_on_empty: bool) -> tuple[int, dict[str, int]]:
    """Index of the winning candidate: the largest group of equal results among those that passed
    (ties: the group holding the earliest candidate); with none passing, the best-ranked failure."""
    passing = [i for i, c in enumerate(cands) if c.passed(retry_on_empty)]
    if not passing:
        return min(range(len(cands)), key=lambda i: (_RANK.get(cands[i].status, 9), i)), {}
    groups: dict[str, list[int]] = {}
    for i in passing:
        groups.setdefault(cands[i].result_key(), []).append(i)
    winner = max(groups.values(), key=lambda idxs: (len(idxs), -idxs[0]))
    votes = {str(idxs[0]): len(idxs) for idxs in groups.values()}
    return winner[0], votes


class RepairSession:
    """The loop for one question, as a state machine.

    ``requests()`` gives the conversations to generate now (with their sampling); ``submit(texts)`` checks
    the generations (blocking: compile checks and executions) and moves on. ``done`` turns true after a
    candidate passes or the rounds run out; then ``result()``.
    """

    def __init__(self, messages: Conversation, target: Target, cfg: RepairConfig | None = None):
        self.cfg = cfg or RepairConfig()
        self.messages = list(messages)
        self.target = target
        self.rounds: list[Round] = []
        self._tried: set[str] = set()
        self._pending = self._first_requests()
        self._started = time.perf_counter()
        self._marked = self._started

    # -- what to generate ---------------------------------------------------------------------------

    def _first_requests(self) -> list[tuple[Conversation, Sampling]]:
        c = self.cfg
        reqs = [(self.messages, GREEDY)]
        for i in range(1, c.candidates):
            reqs.append((self.messages, Sampling(temperature=c.temperature, top_p=c.top_p, seed=c.seed + i)))
        return reqs

    def _repair_request(self) -> tuple[Conversation, Sampling]:
        from sqltune.prompts import repair_messages

        last = self.rounds[-1].best
        convo = repair_messages(self.messages, last.sql or last.raw, last.error or last.status,
                                dialect=self.target.dialect)
        # A greedy answer that repeats SQL already refused would be refused again: sample instead.
        repeated = len(self.rounds) > 1 and last.sql in self._tried_before_last()
        sampling = (Sampling(temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                             seed=self.cfg.seed + 100 * len(self.rounds)) if repeated else GREEDY)
        return convo, sampling

    def _tried_before_last(self) -> set[str]:
        return {c.sql for r in self.rounds[:-1] for c in r.candidates}

    @property
    def done(self) -> bool:
        return not self._pending

    def requests(self) -> list[tuple[Conversation, Sampling]]:
        return list(self._pending)

    # -- checking -----------------------------------------------------------------------------------

    def submit(self, texts: Sequence[str | Generated], generate_ms: float | None = None) -> None:
        """Check this round's generations (texts, or :class:`Generated` with their token counts), in the
        order of :meth:`requests`."""
        if len(texts) != len(self._pending):
            raise ValueError(f"expected {len(self._pending)} generations, got {len(texts)}")
        now = time.perf_counter()
        gen_ms = generate_ms if generate_ms is not None else (now - self._marked) * 1000
        t0 = time.perf_counter()
        cands = []
        for text, (_, sampling) in zip(texts, self._pending):
            gen = text if isinstance(text, Generated) else Generated(text)
            cand = check_candidate(gen.text, self.target, self.cfg)
            cand.sampled = not sampling.greedy
            cand.prompt_tokens, cand.output_tokens = gen.prompt_tokens, gen.output_tokens
            cands.append(cand)
        chosen, votes = _vote(cands, self.cfg.retry_on_empty)
        rnd = Round(index=len(self.rounds), candidates=cands, chosen=chosen, generate_ms=gen_ms,
                    check_ms=(time.perf_counter() - t0) * 1000, votes=votes if len(cands) > 1 else {})
        self.rounds.append(rnd)
        self._marked = time.perf_counter()
        if rnd.best.passed(self.cfg.retry_on_empty) or len(self.rounds) > self.cfg.max_rounds:
            self._pending = []
        else:
            self._pending = [self._repair_request()]

    def result(self) -> RepairResult:
        if not self.rounds:
            raise RuntimeError("no round has been submitted")
        retry_empty = self.cfg.retry_on_empty
        # The last passing round's pick; with none passing, the best-ranked (latest on ties).
        best_round = max(
            self.rounds,
            key=lambda r: (r.best.passed(retry_empty), -_RANK.get(r.best.status, 9), r.index),
        )
        return RepairResult(final=best_round.best, rounds=self.rounds, passed=best_round.best.passed(retry_empty))


# ------------------------------------------------------------------------------------------ drivers


def repair(generate: Generate, messages: Conversation, target: Target, cfg: RepairConfig | None = None) -> RepairResult:
    """Run the loop for one question with a synchronous ``generate``."""
    return repair_many(generate, [(messages, target)], cfg)[0]


def repair_many(
    generate: Generate, items: Sequence[tuple[Conversation, Target]], cfg: RepairConfig | None = None
) -> list[RepairResult]:
    """Run the loop for many questions; each round's generations of every open session go to
    ``generate`` together (one batch), so a batched model decodes them side by side. Its answers are
    matched to sessions by position, so token counts returned as :class:`Generated` land on the session
    (and candidate) they were generated for."""
    sessions = [RepairSession(m, t, cfg) for m, t in items]
    while True:
        open_ = [s for s in sessions if not s.done]
        if not open_:
            break
        convos: list[Conversation] = []
        samplings: list[Sampling] = []
        spans = []
        for s in open_:
            reqs = s.requests()
            spans.append((len(convos), len(reqs)))
            convos.extend(c for c, _ in reqs)
            samplings.extend(p for _, p in reqs)
        t0 = time.perf_counter()
        texts = generate(convos, samplings)
        gen_ms = (time.perf_counter() - t0) * 1000
        if len(texts) != len(convos):
            raise ValueError(f"generate returned {len(texts)} texts for {len(convos)} conversations")
        for s, (start, n) in zip(open_, spans):
            s.submit(texts[start:start + n], generate_ms=gen_ms)
    return [s.result() for s in sessions]


def validate_repair(value: Any, *, where: str = "repair") -> RepairConfig:
    """A :class:`RepairConfig` from a mapping (HTTP body, YAML), errors naming ``where.<field>``."""
    if isinstance(value, RepairConfig):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of repair settings, got {value!r}")
    return RepairConfig.from_dict(value, where=where)
