#!/usr/bin/env python3
"""Remove each guard of the SQL sandbox, one at a time, and show that a test fails without it.

    python scripts/mutate_sandbox.py            # every mutation; prints a Markdown table (docs/testing.md)
    python scripts/mutate_sandbox.py --check    # only locate every guard in the code (no test runs)
    python scripts/mutate_sandbox.py --only pg-read-only-transaction --only sqlite-authorizer

For each mutation the library (libs/sqltune) is copied to a temporary directory, one precise source edit
removes the guard there, and the SQL tests (tests/sql, stopping at the first failure) run against that
copy through PYTHONPATH; the working tree is never modified. A mutation is *caught* when the tests fail
(a test that hangs past --timeout counts as caught too, and is reported as such). Guards are located by
code patterns anywhere under libs/sqltune, not by file or function name, so the script survives the
code moving between modules; a pattern that no longer matches exactly once is an error, not a pass.

PostgreSQL: the tests use the server of scripts/postgres.sh (started here if needed) through
SQLTUNE_PG_DSN. Role mutations act on roles the tests create for themselves.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "libs" / "sqltune"


@dataclass(frozen=True)
class Edit:
    """Replace ``pattern`` (a regex, MULTILINE) by ``repl``; it must match exactly ``count`` times.

    ``within``: regexes that together identify one function anywhere in the library (the innermost function
    whose source matches all of them, and none of those written ``!regex``); the edit is confined to it.
    Empty: the whole library.
    """

    pattern: str
    repl: str
    within: tuple[str, ...] = ()
    count: int = 1


@dataclass(frozen=True)
class Mutation:
    id: str
    guard: str  # the guard as docs/testing.md names it
    what: str  # what the edit does, in words
    edits: tuple[Edit, ...] = field(default_factory=tuple)


def _drop_line(text: str) -> str:
    """The pattern of an edit that removes the whole statement containing ``text`` (with repl=DROP)."""
    return text


DROP = "<the statement is replaced by pass>"  # repl of an edit that removes whole statements (however wrapped)
# Code that identifies each function holding guards (found by what it does, not by its name or file).
SQLITE_RUNNER = (r"\?mode=ro\b", r"\brun_untrusted_sqlite\(")  # opens the SQLite file read-only, runs the query
SQLITE_QUERY = (r"PRAGMA query_only", r"\.set_authorizer\(", r"\.fetchmany\(")  # one query under the SQLite guards
SQLITE_DEADLINE = (r"\.set_progress_handler\(lambda",)  # the deadline of every SQLite connection
DUCKDB_RUNNER = (r"\bread_only=True\b", r"\.interrupt\(\)")  # opens the DuckDB file and runs the query
POSTGRES_RUNNER = (r"[\"']SET TRANSACTION READ ONLY[\"']", r"\.fetchmany\(")  # runs the query on PostgreSQL
PRECHECK = (r"not a read-only query", r"\btranspile\(", r"!\bbuild_context_db\(")  # execute()'s static gate
CONTEXT_BUILD = (r"\.serialize\(\)", r"\.set_authorizer\(")  # builds a context database from CREATE/INSERT text
CONTEXT_CONNECTION = (r"[\"']:memory:[\"']", r"\bset_sqlite_deadline\(")  # the build's connection and deadline
CONTEXT_EXECUTE = (r"^\s*if precheck:", r"\bbuild_context_db\(")  # execute_in_context(): pre-check, then run

MUTATIONS: tuple[Mutation, ...] = (
    Mutation("sqlite-read-only-open", "SQLite read-only open", "mode=ro -> mode=rw in the connection URI",
             (Edit(r"\?mode=ro\b", "?mode=rw", within=SQLITE_RUNNER),)),
    Mutation("sqlite-authorizer", "SQLite authorizer", "the set_authorizer(...) call removed",
             (Edit(_drop_line(r"\.set_authorizer\("), DROP, within=SQLITE_QUERY),)),
    Mutation("sqlite-progress-handler", "SQLite progress-handler timeout", "the set_progress_handler(...) call removed",
             (Edit(_drop_line(r"\.set_progress_handler\("), DROP, within=SQLITE_DEADLINE),)),
    Mutation("sqlite-row-cap", "SQLite/DuckDB row cap", "SQLite fetches every row (fetchmany -> fetchall)",
             (Edit(r"\.fetchmany\([^()\n]*\)", ".fetchall()", within=SQLITE_QUERY),)),
    Mutation("duckdb-read-only", "DuckDB read-only", "read_only=True -> read_only=False",
             (Edit(r"\bread_only=True\b", "read_only=False", within=DUCKDB_RUNNER),)),
    Mutation("duckdb-external-access", "DuckDB external-access lock", '"enable_external_access": False -> True',
             (Edit(r"""(["']enable_external_access["']\s*:\s*)False""", r"\1True"),)),
    Mutation("duckdb-config-lock", "DuckDB config lock", '"lock_configuration": True -> False',
             (Edit(r"""(["']lock_configuration["']\s*:\s*)True""", r"\1False"),)),
    Mutation("duckdb-interrupt-timer", "DuckDB interrupt timer (timeout)", "the interrupt timer never fires",
             (Edit(r"threading\.Timer\(\s*timeout_s\s*,", "threading.Timer(1e9,", within=DUCKDB_RUNNER),)),
    Mutation("duckdb-row-cap", "SQLite/DuckDB row cap", "DuckDB fetches every row (fetchmany -> fetchall)",
             (Edit(r"\.fetchmany\([^()\n]*\)", ".fetchall()", within=DUCKDB_RUNNER),)),
    Mutation("pg-role-select-only", "PostgreSQL read-only role", "the role gets ALL on the tables, not SELECT",
             (Edit(r"GRANT SELECT ON ALL TABLES", "GRANT ALL ON ALL TABLES"),)),
    Mutation("pg-role-no-schema-create", "PostgreSQL read-only role", "REVOKE CREATE ON SCHEMA ... FROM PUBLIC removed",
             (Edit(_drop_line(r"REVOKE CREATE ON SCHEMA"), DROP),)),
    Mutation("pg-role-no-temp", "PostgreSQL read-only role", "REVOKE CREATE, TEMPORARY ON DATABASE ... removed",
             (Edit(_drop_line(r"REVOKE CREATE, TEMPORARY ON DATABASE"), DROP),)),
    Mutation("pg-role-default-read-only", "PostgreSQL read-only role",
             "ALTER ROLE ... SET default_transaction_read_only = on removed",
             (Edit(_drop_line(r"SET default_transaction_read_only = on"), DROP),)),
    Mutation("pg-read-only-transaction", "PostgreSQL READ ONLY transaction", "SET TRANSACTION READ ONLY removed",
             (Edit(_drop_line(r"""["']SET TRANSACTION READ ONLY["']"""), DROP, within=POSTGRES_RUNNER),)),
    Mutation("pg-statement-timeout", "PostgreSQL statement_timeout",
             "statement_timeout removed from the connection options and the transaction",
             (Edit(r"-c statement_timeout=\{ms\} ", "", within=POSTGRES_RUNNER),
              Edit(_drop_line(r"SET LOCAL statement_timeout"), DROP, within=POSTGRES_RUNNER))),
    Mutation("pg-row-cap", "PostgreSQL row cap", "PostgreSQL fetches every row (fetchmany -> fetchall)",
             (Edit(r"\.fetchmany\([^()\n]*\)", ".fetchall()", within=POSTGRES_RUNNER),)),
    Mutation("allow-list-precheck", "static allow-list", "execute() runs what analyze() finds not read-only",
             (Edit(r"if not (\w+)\.read_only:", r"if False:", within=PRECHECK),)),
    Mutation("allow-list-roots", "static allow-list", "any statement kind accepted as a query root",
             (Edit(r"if not isinstance\((\w+), _READ_ROOTS\):", r"if False:"),)),
    Mutation("allow-list-write-nodes", "static allow-list", "write/DDL nodes inside a query accepted",
             (Edit(r"isinstance\(node, _WRITE_NODES\)", "False"),)),
    Mutation("allow-list-denied-functions", "static allow-list", "denied functions accepted",
             (Edit(r"\bin DENIED_FUNCTIONS:", " in ():"),)),
    Mutation("pool-kill", "worker pool (SQLite/DuckDB)", "a worker past its timeout is waited for, never killed",
             (Edit(r"(select\.select\([^()]*\[\],\s*)timeout_s \+ self\.grace_s\)", r"\1None)"),)),
    Mutation("context-build-authorizer", "context database sandbox", "no authorizer while the context is built",
             (Edit(_drop_line(r"\.set_authorizer\((?!None)"), DROP, within=CONTEXT_BUILD),)),
    Mutation("context-build-deadline", "context database sandbox", "no deadline while the context is built",
             (Edit(_drop_line(r"\bset_sqlite_deadline\("), DROP, within=CONTEXT_CONNECTION),)),
    Mutation("context-precheck", "context database sandbox", "execute_in_context() runs what analyze() refuses",
             (Edit(r"if not (\w+)\.read_only:", r"if False:", within=CONTEXT_EXECUTE),)),
)

# The guards every mutation run must cover (docs/testing.md lists them).
REQUIRED_GUARDS = (
    "SQLite read-only open", "SQLite authorizer", "SQLite progress-handler timeout", "DuckDB read-only",
    "DuckDB external-access lock", "DuckDB config lock", "PostgreSQL read-only role",
    "PostgreSQL READ ONLY transaction", "PostgreSQL statement_timeout", "PostgreSQL row cap",
    "static allow-list", "context database sandbox", "worker pool (SQLite/DuckDB)",
)


class LocateError(Exception):
    pass


def _sources(lib: Path) -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(lib.rglob("*.py"))}


def _functions(text: str, anchors: tuple[str, ...]) -> list[tuple[int, int]]:
    """Character spans of the innermost functions in ``text`` whose source matches every anchor."""
    if not all(re.search(a, text, re.MULTILINE) for a in anchors if not a.startswith("!")):
        return []
    starts = [0] + [m.end() for m in re.finditer("\n", text)] + [len(text)]
    spans = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lo, hi = starts[node.lineno - 1], starts[min(node.end_lineno, len(starts) - 1)]
            if all(bool(re.search(a.removeprefix("!"), text[lo:hi], re.MULTILINE)) != a.startswith("!")
                   for a in anchors):
                spans.append((lo, hi))
    return [s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]


def _drop_statements(text: str, offsets: list[int]) -> str:
    """``text`` with each simple statement containing one of ``offsets`` replaced by ``pass``."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    spans = set()
    for offset in offsets:
        line_no = next(i for i in range(len(lines)) if starts[i] <= offset < starts[i + 1]) + 1
        best = None
        for node in ast.walk(ast.parse(text)):
            simple = isinstance(node, ast.stmt) and not hasattr(node, "body")
            if simple and node.lineno <= line_no <= node.end_lineno:
                if best is None or node.lineno >= best.lineno:
                    best = node
        if best is None:
            raise LocateError(f"no statement around line {line_no}")
        spans.add((best.lineno, best.end_lineno))
    for first, last in sorted(spans, reverse=True):
        indent = re.match(r"[ \t]*", lines[first - 1]).group(0)
        lines[first - 1 : last] = [f"{indent}pass  # guard removed\n"]
    return "".join(lines)


def locate(mutation: Mutation, sources: dict[Path, str]) -> dict[Path, str]:
    """The mutated text of every file the mutation changes; LocateError unless each edit matches exactly."""
    changed: dict[Path, str] = {}
    for edit in mutation.edits:
        scopes = []
        for path, original in sources.items():
            text = changed.get(path, original)
            spans = _functions(text, edit.within) if edit.within else [(0, len(text))]
            scopes += [(path, text, lo, hi) for lo, hi in spans]
        if edit.within and len(scopes) != 1:
            where_ = ", ".join(str(p.relative_to(ROOT)) for p, *_ in scopes) or "nowhere"
            raise LocateError(f"{mutation.id}: {len(scopes)} functions match {edit.within} (want 1): {where_}")
        found = [(path, text, lo, hi, len(re.findall(edit.pattern, text[lo:hi], re.MULTILINE)))
                 for path, text, lo, hi in scopes]
        found = [f for f in found if f[4]]
        total = sum(f[4] for f in found)
        if total != edit.count:
            where_ = ", ".join(f"{p.relative_to(ROOT)} ({n})" for p, _, _, _, n in found) or "nowhere"
            raise LocateError(f"{mutation.id}: {edit.pattern!r} matches {total} times (want {edit.count}): {where_}")
        for path, text, lo, hi, _ in found:
            if edit.repl == DROP:
                changed[path] = _drop_statements(text, [lo + m.start() for m in
                                                        re.finditer(edit.pattern, text[lo:hi], re.MULTILINE)])
            else:
                changed[path] = (text[:lo] + re.sub(edit.pattern, edit.repl, text[lo:hi], flags=re.MULTILINE)
                                 + text[hi:])
    for path, text in changed.items():
        try:
            compile(text, str(path), "exec")
        except SyntaxError as exc:
            raise LocateError(f"{mutation.id}: the edit leaves {path.relative_to(ROOT)} invalid: {exc}") from exc
    return changed


def where(changed: dict[Path, str], sources: dict[Path, str]) -> str:
    parts = []
    for path, text in changed.items():
        old = sources[path].splitlines()
        new = text.splitlines()
        line = next((i + 1 for i, (a, b) in enumerate(zip(old, new)) if a != b), len(old))
        parts.append(f"{path.relative_to(LIB.parent)}:{line}")
    return ", ".join(parts)


def check(sources: dict[Path, str] | None = None) -> list[str]:
    """Problems locating the guards (empty when every mutation applies cleanly)."""
    sources = sources if sources is not None else _sources(LIB)
    problems = []
    for m in MUTATIONS:
        try:
            locate(m, sources)
        except LocateError as exc:
            problems.append(str(exc))
    missing = set(REQUIRED_GUARDS) - {m.guard for m in MUTATIONS}
    problems += [f"no mutation for the guard {g!r}" for g in sorted(missing)]
    return problems


def _pg_dsn() -> str:
    if os.environ.get("SQLTUNE_PG_DSN"):
        return os.environ["SQLTUNE_PG_DSN"]
    out = subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "start"], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


def run_tests(lib_copy: Path | None, tests: list[str], timeout_s: int, env: dict[str, str]) -> tuple[str, str]:
    """(outcome, detail): outcome is passed, failed or hung; detail names the first failing test."""
    cmd = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           f"--timeout={timeout_s}", "--timeout-method=thread"]
    run_env = dict(env)
    if lib_copy is not None:
        run_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(lib_copy), env.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout_s + 120)
    except subprocess.TimeoutExpired:
        return "hung", f"killed after {timeout_s + 120} s"
    out = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return "passed", ""
    if "Timeout" in out and "+++++" in out:
        return "hung", "pytest-timeout fired"
    failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", out, re.MULTILINE)
    if failed:
        test = failed[0].replace("|", "/")
        return "failed", test if len(test) <= 110 else test[:107] + "..."
    return "failed", (out.strip().splitlines() or ["?"])[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only locate every guard; no test runs")
    parser.add_argument("--only", action="append", default=[], help="run only this mutation id (repeatable)")
    parser.add_argument("--tests", nargs="+", default=["tests/sql"], help="pytest targets (default: tests/sql)")
    parser.add_argument("--timeout", type=int, default=180, help="seconds a single test may run before it "
                                                                 "counts as hung (default 180)")
    args = parser.parse_args(argv)

    sources = _sources(LIB)
    problems = check(sources)
    if problems:
        print("cannot locate every guard:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check:
        print(f"all {len(MUTATIONS)} mutations locate their guard exactly")
        return 0
    unknown = set(args.only) - {m.id for m in MUTATIONS}
    if unknown:
        print(f"unknown mutation ids: {sorted(unknown)}; valid: {[m.id for m in MUTATIONS]}", file=sys.stderr)
        return 2
    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only]
    env = {**os.environ, "SQLTUNE_PG_DSN": _pg_dsn()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "libs", "tests"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    print(f"library at {commit}{' (uncommitted changes)' if dirty else ''}; tests: {' '.join(args.tests)}",
          flush=True)

    start = time.monotonic()
    outcome, detail = run_tests(None, args.tests, args.timeout, env)
    if outcome != "passed":
        print(f"the tests fail on the unmodified library ({outcome}: {detail}); fix that first", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="sqltune-mutate-") as tmp:
        lib_copy = Path(tmp) / "libs"
        for m in chosen:
            changed = locate(m, sources)
            shutil.rmtree(lib_copy, ignore_errors=True)
            shutil.copytree(LIB, lib_copy / "sqltune", ignore=shutil.ignore_patterns("__pycache__"))
            for path, text in changed.items():
                (lib_copy / path.relative_to(LIB.parent)).write_text(text)
            probe = subprocess.run([sys.executable, "-c", "import sqltune; print(sqltune.__file__)"],
                                   env={**env, "PYTHONPATH": str(lib_copy)}, capture_output=True, text=True)
            if not probe.stdout.strip().startswith(str(lib_copy)):
                print(f"the copy is not what Python imports: {probe.stdout or probe.stderr}", file=sys.stderr)
                return 2
            outcome, detail = run_tests(lib_copy, args.tests, args.timeout, env)
            result = {"failed": "caught", "hung": "caught (hang)", "passed": "**SURVIVED**"}[outcome]
            rows.append((m, where(changed, sources), result, detail))
            print(f"{m.id:<30} {result:<14} {detail}", flush=True)
    minutes = (time.monotonic() - start) / 60
    print(f"\n{len(rows)} mutations, {sum(r[2] != '**SURVIVED**' for r in rows)} caught, {minutes:.1f} min\n")
    print("| Guard | Mutation | Where | Result | First failing test |")
    print("|---|---|---|---|---|")
    for m, loc, result, detail in rows:
        print(f"| {m.guard} | {m.what} | `{loc}` | {result} | `{detail}` |")
    return 0 if all(r[2] != "**SURVIVED**" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
