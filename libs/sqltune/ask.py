"""``sqltune ask``: ask a model a question about a database, on this machine, without a cluster.

    sqltune ask "How many customers are there?" --model runs/tiny/merged --db warehouse.sqlite --execute
    sqltune ask "..." --model s3://sqltune/runs/tiny/adapter --schema schema.sql --json

The model is a local folder or an ``s3://`` artifact (base, adapter, merged, int8 or nf4); its prompt
template comes with it, and greedy decoding is the serving engine's. The SQL goes through the
execute-and-repair loop (:mod:`sqltune.agent.repair`): checked with ``analyze`` and the engine's compile
step, run read-only on ``--db``, and regenerated with the error in the prompt up to ``--max-rounds``
times. A schema over ``--max-schema-tokens`` is linked (:mod:`sqltune.agent.linking`) instead of refused.

Exit codes: 0 the final SQL passed its checks, 1 it did not (the answer is still printed), 2 bad input
(a missing file, a database that cannot be opened, an invalid flag).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sqltune.agent.local import DEFAULT_MAX_NEW_TOKENS
from sqltune.errors import ConfigError, DataError, SqltuneError

# The server's default prompt budget for a schema (serving's max_schema_tokens).
DEFAULT_MAX_SCHEMA_TOKENS = 2048


def register(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("question", help="The question, in natural language.")
    p.add_argument("--model", required=True, help="Model artifact: a local folder or s3:// URI (base, adapter, "
                   "merged, int8 or nf4).")
    p.add_argument("--base-model", default=None, help="For an adapter: its base model (default: the one it records).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="The database: a SQLite or DuckDB file, or a postgresql:// DSN.")
    src.add_argument("--schema", type=Path, help="A file of CREATE TABLE statements (no database: checks only).")
    p.add_argument("--tables", default=None,
                   help="With --db: only these of its tables go into the prompt (comma-separated), as /v1/sql's "
                   "'tables'; for a model trained on the tables each question needs.")
    p.add_argument("--dialect", default=None, help="sqlite | duckdb | postgres (default: the database's, else sqlite).")
    p.add_argument("--evidence", default=None, help="An optional hint (domain knowledge) for the model.")
    p.add_argument("--execute", action="store_true", help="Show the rows of the final SQL (needs --db).")
    p.add_argument("--json", action="store_true", help="Print one JSON object (for scripts).")
    p.add_argument("--max-rounds", type=int, default=2, help="Repair rounds after the first answer (0: none).")
    p.add_argument("--candidates", type=int, default=1, help="Candidates voting by execution result (1: greedy only).")
    p.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature of extra candidates.")
    p.add_argument("--top-p", type=float, default=0.95, help="Nucleus mass of sampled candidates.")
    p.add_argument("--seed", type=int, default=0, help="Seed of sampled candidates.")
    p.add_argument("--retry-on-empty", action="store_true", help="Repair a query that returns no rows.")
    p.add_argument("--timeout", type=float, default=5.0, help="Seconds for one compile check or execution.")
    p.add_argument("--max-rows", type=int, default=50, help="Rows kept (and shown) from an execution.")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help="Longest SQL, in the model's tokens (default %(default)s: room for the longest gold query "
                   "of the embedded set; decoding stops at the end of the statement, so a shorter answer costs "
                   "no more).")
    p.add_argument("--link", choices=("auto", "always", "never"), default="auto",
                   help="Schema linking: auto (when the schema is over --max-schema-tokens), always, never.")
    p.add_argument("--max-schema-tokens", type=int, default=DEFAULT_MAX_SCHEMA_TOKENS,
                   help="Prompt budget of the schema, in the model's tokens.")
    p.add_argument("--schema-style", choices=("compact", "full"), default="compact",
                   help="How --db's schema is written into the prompt (use the form the model was trained on).")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16", "int8", "nf4"), default="auto")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------ input


def repair_config(args: argparse.Namespace, *, has_db: bool) -> Any:
    from sqltune.agent.repair import RepairConfig

    data = {
        "max_rounds": args.max_rounds, "candidates": args.candidates, "temperature": args.temperature,
        "top_p": args.top_p, "seed": args.seed, "retry_on_empty": args.retry_on_empty,
        "execute": has_db, "timeout_s": args.timeout, "max_rows": args.max_rows,
    }
    try:
        return RepairConfig.from_dict(data)
    except ConfigError as exc:
        flag = str(exc).split(":", 1)[0].replace("_", "-").replace("timeout-s", "timeout")
        raise ConfigError(f"--{flag}:{str(exc).split(':', 1)[1]}") from None


def read_schema(args: argparse.Namespace) -> tuple[str, str | None, str]:
    """(schema text, database or None, dialect) from --db or --schema; clear errors for what cannot be read."""
    from sqltune.sql import canonical_dialect, engine_of

    dialect = None
    if args.dialect is not None:
        try:
            dialect = canonical_dialect(args.dialect)
        except SqltuneError as exc:
            raise ConfigError(f"--dialect: {exc}") from None
    if args.schema is not None:
        path: Path = args.schema
        if not path.is_file():
            raise DataError(f"--schema: {str(path)!r} is not a file; pass a file of CREATE TABLE statements")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"--schema: cannot read {str(path)!r}: {exc}") from None
        if not text.strip():
            raise DataError(f"--schema: {str(path)!r} is empty; it should hold CREATE TABLE statements")
        return text, None, dialect or "sqlite"
    db = args.db
    try:
        engine = engine_of(db)
        from sqltune.data.schema import ddl_from_database

        text = ddl_from_database(db, style=args.schema_style)
    except SqltuneError as exc:
        raise DataError(f"--db: cannot open {_safe(db)!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a driver's error on a broken file or an unreachable server
        raise DataError(f"--db: cannot open {_safe(db)!r}: {type(exc).__name__}: {_first_line(exc)}") from None
    if not text.strip():
        raise DataError(f"--db: {_safe(db)!r} has no tables")
    if args.tables is not None:
        text = _select_tables(text, args.tables)
    return text, db, dialect or engine


def _select_tables(schema: str, tables: str) -> str:
    """The --tables subset of the database's schema (the same selection as /v1/sql's ``tables``)."""
    from sqltune.data.schema import select_tables

    names = [t.strip() for t in tables.split(",") if t.strip()]
    if not names:
        raise ConfigError("--tables: name at least one table, comma-separated (e.g. --tables orders,customers), "
                          "or leave the flag out")
    try:
        return select_tables(schema, names)
    except DataError as exc:
        raise DataError(f"--tables: {exc}") from None


def _safe(db: str) -> str:
    if db.startswith(("postgresql://", "postgres://")):
        from sqltune.sql.postgres import dsn_with

        try:
            return dsn_with(db, password="")
        except Exception:  # noqa: BLE001
            return "postgresql://..."
    return db


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------------------------------ answer


def answer(model: Any, question: str, schema: str, *, dialect: str, db: str | None, cfg: Any,
           evidence: str | None = None, link: str = "auto", max_schema_tokens: int = DEFAULT_MAX_SCHEMA_TOKENS,
           values: Any = None) -> dict[str, Any]:
    """Link (if needed), generate, check, repair; the JSON-able answer. Shared by the CLI and its tests."""
    from sqltune.agent.linking import link_schema, sample_values
    from sqltune.agent.repair import RepairSession, target_for
    from sqltune.sql import analyze

    start = time.perf_counter()
    linking = None
    prompt_schema = schema
    too_long = model.count_tokens(schema) > max_schema_tokens
    if link == "always" or (link == "auto" and too_long):
        if values is None and db is not None:
            try:
                values = sample_values(db, timeout_s=cfg.timeout_s)
            except SqltuneError:
                values = None
        res = link_schema(question, schema, max_tokens=max_schema_tokens,
                          count_tokens=model.count_tokens, values=values,
                          reason="budget" if too_long else "requested")
        prompt_schema = res.schema
        linking = res.to_dict()
    elif too_long:
        raise DataError(f"the schema is {model.count_tokens(schema)} tokens, over --max-schema-tokens "
                        f"{max_schema_tokens}; use --link auto (the default) or --link always")
    messages = model.messages(question, prompt_schema, dialect=dialect, evidence=evidence)
    with target_for(dialect, prompt_schema, db) as target:
        session = RepairSession(messages, target, cfg)
        while not session.done:
            reqs = session.requests()
            t0 = time.perf_counter()
            texts = model([c for c, _ in reqs], [s for _, s in reqs])
            session.submit(texts, generate_ms=(time.perf_counter() - t0) * 1000)
        result = session.result()
    final = result.final
    analysis = analyze(final.sql, dialect=dialect, schema=prompt_schema) if final.sql else None
    out: dict[str, Any] = {
        "question": question,
        "sql": final.sql,
        "dialect": dialect,
        "valid": bool(analysis and analysis.parseable and analysis.num_statements == 1),
        "read_only": bool(analysis and analysis.read_only),
        "unknown_tables": list(analysis.unknown_tables) if analysis else [],
        "unknown_columns": list(analysis.unknown_columns) if analysis else [],
        "status": final.status,
        "passed": result.passed,
        "rounds_used": result.rounds_used,
        # the round whose SQL is final: the last one, unless none passed and an earlier one failed less badly
        "final_round": next(r.index for r in result.rounds if r.best is final),
        "rounds": [r.to_dict() for r in result.rounds],
    }
    if final.error:
        out["error"] = final.error
    if linking is not None:
        out["linking"] = linking
    if final.executed:
        out["columns"] = list(final.columns)
        out["rows"] = [list(r) for r in final.rows]
        out["truncated"] = final.truncated
    out["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
    return out


# ------------------------------------------------------------------------------------------ output


def format_table(columns: list[str], rows: list[list[Any]], *, max_width: int = 40) -> str:
    def cell(v: Any) -> str:
        s = "NULL" if v is None else str(v)
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells if i < len(r)]) for i, c in enumerate(columns)]
    line = "-+-".join("-" * w for w in widths)
    head = " | ".join(c.ljust(w) for c, w in zip(columns, widths))
    body = [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([head, line, *body])


def render_text(out: dict[str, Any], *, show_rows: bool) -> str:
    flag = lambda b: "yes" if b else "no"  # noqa: E731
    lines = [out["sql"] or "(no SQL)", ""]
    lines.append(f"valid: {flag(out['valid'])}   read-only: {flag(out['read_only'])}   status: {out['status']}"
                 f"   repair rounds: {out['rounds_used']}   {out['latency_ms']:.0f} ms")
    if out.get("unknown_tables") or out.get("unknown_columns"):
        lines.append(f"unknown: {', '.join(out.get('unknown_tables', []) + out.get('unknown_columns', []))}")
    if out.get("error"):
        lines.append(f"error: {out['error']}")
    if out.get("linking"):
        ln = out["linking"]
        lines.append(f"schema linking ({ln['reason']}): {len(ln['tables'])} of {ln['total_tables']} tables: "
                     f"{', '.join(ln['tables'])}")
    final_round = out["final_round"]
    for r in out["rounds"] if len(out["rounds"]) > 1 else []:
        if r["round"] != final_round:  # the final SQL is printed above
            lines.append(f"round {r['round']}: {r['status']}: {r.get('error', '')}  [{r['sql']}]")
    if final_round != len(out["rounds"]) - 1:
        lines.append(f"final SQL: round {final_round}'s (no round passed; later rounds failed worse)")
    if show_rows:
        if "rows" in out:
            lines.append("")
            lines.append(format_table(out["columns"], out["rows"]))
            more = " (truncated)" if out.get("truncated") else ""
            lines.append(f"({len(out['rows'])} row{'s' if len(out['rows']) != 1 else ''}{more})")
        else:
            lines.append("not executed" + (f": {out['error']}" if out.get("error") else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise DataError("the question is empty; pass the question to translate, e.g. sqltune ask \"How many ...?\"")
    if args.tables is not None and args.db is None:
        raise ConfigError("--tables needs --db; with --schema, put just the tables you want in the file")
    if args.execute and args.db is None:
        raise ConfigError("--execute needs --db (a database to run the SQL on); with --schema there is none")
    for flag, value, lo in (("--max-new-tokens", args.max_new_tokens, 1), ("--max-schema-tokens",
                                                                            args.max_schema_tokens, 1)):
        if value < lo:
            raise ConfigError(f"{flag}: {value} is below the minimum {lo}")
    schema, db, dialect = read_schema(args)
    cfg = repair_config(args, has_db=db is not None)
    from sqltune.agent.local import LocalModel

    try:
        model = LocalModel(args.model, base_uri=args.base_model, precision=args.precision, device=args.device,
                           max_new_tokens=args.max_new_tokens, slots=cfg.candidates)
    except SqltuneError:
        raise
    except OSError as exc:
        raise DataError(f"--model: cannot load {args.model!r}: {_first_line(exc)}") from None
    try:
        out = answer(model, args.question, schema, dialect=dialect, db=db, cfg=cfg, evidence=args.evidence,
                     link=args.link, max_schema_tokens=args.max_schema_tokens)
    finally:
        model.close()
    if not args.execute:
        for key in ("columns", "rows", "truncated"):
            out.pop(key, None)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print(render_text(out, show_rows=args.execute))
    sys.stdout.flush()
    return 0 if out["passed"] else 1
