"""Static analysis of (untrusted) SQL with sqlglot: parseability, statement kind, read-only, grounding."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from sqltune.sql._dialects import canonical_dialect
from sqltune.sql.schema import Schema, as_schema

log = logging.getLogger(__name__)

_EMPTY = tuple(getattr(exp, n) for n in ("Semicolon",) if hasattr(exp, n))  # comment-only statements

# Root statement types that may be run: queries only (allow-list).
_READ_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)

# Nodes that must not appear anywhere in a read-only statement.
_WRITE_NODES = tuple(
    getattr(exp, n)
    for n in (
        "DML", "DDL", "Command", "Copy", "Attach", "Detach", "Pragma", "Install", "Set", "Use",
        "Transaction", "Commit", "Rollback", "Merge", "TruncateTable", "Grant", "Revoke", "LoadData",
        "Export", "Analyze", "Lock", "Kill", "Refresh", "Cache", "Uncache", "Declare", "Execute",
        "Insert", "Update", "Delete", "Create", "Drop", "Alter",
    )
    if hasattr(exp, n)
)

# Functions that write, touch files, the network or the server, run dynamic SQL, or change session
# state. Matched on the lower-cased name with underscores removed, so READ_CSV == read_csv == readcsv.
DENIED_FUNCTIONS = frozenset(
    name.replace("_", "")
    for name in (
        # SQLite
        "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "sqlite_dbpage",
        # DuckDB: file readers/writers, dynamic SQL, environment, secrets, foreign databases
        "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema",
        "parquet_file_metadata", "parquet_kv_metadata", "read_json", "read_json_auto", "read_json_objects",
        "read_json_objects_auto", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects", "read_text",
        "read_blob", "read_xlsx", "sniff_csv", "glob", "st_read", "iceberg_scan", "delta_scan",
        "sqlite_scan", "sqlite_attach", "postgres_scan", "postgres_attach", "postgres_query",
        "postgres_execute", "mysql_scan", "mysql_query", "mysql_execute", "query", "query_table",
        "getenv", "duckdb_secrets", "which_secret", "load", "install", "checkpoint", "force_checkpoint",
        # PostgreSQL: server files, large objects, sessions/backends, dynamic SQL, sequences, notify
        "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir",
        "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_file_write", "pg_file_rename",
        "pg_file_unlink", "pg_logdir_ls", "lo_import", "lo_export", "lo_create", "lo_creat", "lo_unlink",
        "lo_open", "lo_write", "lowrite", "lo_put", "lo_from_bytea", "lo_truncate", "lo_truncate64",
        "dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_send_query",
        "dblink_open", "dblink_fetch", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
        "pg_rotate_logfile", "pg_switch_wal", "pg_promote", "pg_create_restore_point",
        "pg_logical_emit_message", "pg_backup_start", "pg_backup_stop", "pg_start_backup",
        "pg_stop_backup", "set_config", "nextval", "setval", "pg_notify", "query_to_xml",
        "query_to_xml_and_xmlschema", "query_to_xmlschema", "cursor_to_xml", "cursor_to_xmlschema",
        "pg_advisory_lock", "pg_advisory_xact_lock", "pg_advisory_lock_shared",
        "pg_advisory_xact_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_xact_lock",
        "pg_import_system_collations", "pg_replication_origin_create", "pg_create_logical_replication_slot",
        "pg_create_physical_replication_slot", "pg_drop_replication_slot", "txid_current",
        "pg_current_xact_id",
    )
)

# A table reference that looks like a file path or URL (DuckDB replacement scans: FROM '/etc/passwd').
_FILEISH = re.compile(r"[/\\]|^[a-z][a-z0-9+.-]*://|\.(csv|tsv|parquet|json|jsonl|ndjson|txt|xlsx|gz|zst)$", re.I)


@dataclass
class Analysis:
    """What :func:`analyze` found. ``statement_type`` is the first statement's kind ("" when none)."""

    sql: str
    dialect: str
    parseable: bool
    num_statements: int
    statement_type: str
    statement_types: list[str]
    read_only: bool
    unknown_tables: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    error: str | None = None
    reasons: list[str] = field(default_factory=list)  # why the SQL is not read-only
    has_order_by: bool = False  # the outermost query has ORDER BY (results are ordered)

    @property
    def grounded(self) -> bool:
        """No unknown tables or columns (vacuously true when no schema was given)."""
        return not self.unknown_tables and not self.unknown_columns


def parse(sql: str, dialect: str) -> list[exp.Expression]:
    """sqlglot.parse with the warnings it logs for Command fallbacks silenced; None entries dropped."""
    sg_log = logging.getLogger("sqlglot")
    old = sg_log.level
    sg_log.setLevel(logging.ERROR)
    try:
        return [s for s in sqlglot.parse(sql, read=dialect) if s is not None and not isinstance(s, _EMPTY)]
    finally:
        sg_log.setLevel(old)


@functools.lru_cache(maxsize=1)
def statement_keys() -> frozenset[str]:
    """sqlglot expression keys of SQL *statements* (queries, DML, DDL, commands, PRAGMA, ATTACH, ...).

    sqlglot also parses bare expressions: ``anadaanada`` is a column, ``foo bar`` an alias, ``x = 1`` a
    comparison. No database runs those, so text that only parses as one is not parseable SQL.
    """
    names = ("Query", "Subquery", "Values", "DML", "DDL", "Command", "Transaction", "Commit", "Rollback", "Set",
             "Use", "Pragma", "Attach", "Detach", "Copy", "Describe", "Grant", "Revoke", "Merge", "TruncateTable",
             "Analyze", "Kill", "Install", "LoadData", "Export", "Cache", "Uncache", "Refresh", "Declare",
             "Execute", "Lock", "Show", "Summarize", "Drop", "Alter", "Comment", "Block", "IfBlock")
    bases = tuple(getattr(exp, n) for n in names if isinstance(getattr(exp, n, None), type))
    keys, stack, seen = set(), [exp.Expression], set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if issubclass(cls, bases):
            keys.add(cls.key)
        stack.extend(cls.__subclasses__())
    return frozenset(keys)


def analyze(sql: str, *, dialect: str, schema: Schema | str | Mapping | None = None) -> Analysis:
    """Analyse ``sql`` without running it. Never raises for bad SQL (only for a bad dialect/schema arg).

    ``read_only`` is an allow-list: exactly one statement, whose root is a query (SELECT, set
    operation, VALUES), with no write/DDL/command nodes anywhere (data-modifying CTEs), no
    ``SELECT ... INTO``, no row locks (``FOR UPDATE``), no denied functions (:data:`DENIED_FUNCTIONS`)
    and no table references that look like file paths. Anything sqlglot only parses as a Command is
    rejected. With ``schema`` (DDL text, a :class:`Schema` or a mapping), tables and columns that do
    not exist in it are listed in ``unknown_tables``/``unknown_columns``.
    """
    dialect = canonical_dialect(dialect)
    schema_obj = as_schema(schema, dialect)
    if not isinstance(sql, str):
        return Analysis(str(sql), dialect, False, 0, "", [], False, error="SQL must be a string")
    try:
        statements = parse(sql, dialect)
    except Exception as exc:  # noqa: BLE001 - sqlglot raises ParseError, TokenError and others
        return Analysis(sql, dialect, False, 0, "", [], False, error=_short_error(exc))
    if not statements:
        return Analysis(sql, dialect, False, 0, "", [], False, error="empty SQL: no statement found")
    types = [s.key.lower() for s in statements]
    bare = [t for t in types if t not in statement_keys()]
    if bare:
        return Analysis(sql, dialect, False, len(statements), types[0], types, False,
                        error=f"not a SQL statement: the text parses only as a bare expression ({bare[0]})")
    reasons: list[str] = []
    if len(statements) > 1:
        reasons.append(f"{len(statements)} statements; exactly one is allowed")
    for stmt in statements:
        reasons.extend(_write_reasons(stmt, dialect))
    analysis = Analysis(
        sql=sql,
        dialect=dialect,
        parseable=True,
        num_statements=len(statements),
        statement_type=types[0],
        statement_types=types,
        read_only=not reasons,
        reasons=_dedupe(reasons),
        has_order_by=outermost_has_order_by(statements[0]),
    )
    if schema_obj is not None:
        tables, columns = set(), set()
        for stmt in statements:
            try:
                t, c = _unknown_identifiers(stmt, schema_obj, dialect)
            except Exception as exc:  # noqa: BLE001 - grounding is best effort, never fatal
                log.debug("grounding check failed for %r: %s", sql[:80], exc)
                continue
            tables.update(t)
            columns.update(c)
        analysis.unknown_tables = sorted(tables)
        analysis.unknown_columns = sorted(columns)
    return analysis


def outermost_has_order_by(stmt: exp.Expression) -> bool:
    """True when the outermost query orders its result (``SELECT ... ORDER BY``, ``a UNION b ORDER BY``)."""
    node = stmt
    while isinstance(node, exp.Subquery) and node.args.get("order") is None:
        node = node.this
    return isinstance(node, (exp.Query, exp.Subquery)) and node.args.get("order") is not None


def function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name)
    return node.sql_name()


def _write_reasons(stmt: exp.Expression, dialect: str) -> list[str]:
    reasons = []
    if isinstance(stmt, exp.Command):
        head = str(stmt.this or "").strip().split(" ")[0].upper() or "?"
        return [f"{head} is not a query (sqlglot parsed it only as a generic command)"]
    if not isinstance(stmt, _READ_ROOTS):
        reasons.append(f"{stmt.key.upper()} statement is not a query")
    cte_names = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    for node in stmt.walk():
        if node is not stmt and isinstance(node, _WRITE_NODES):
            reasons.append(f"contains a {node.key.upper()} (data-modifying or DDL clause)")
        elif isinstance(node, exp.Select):
            if node.args.get("into") is not None:
                reasons.append("SELECT ... INTO creates a table")
            if node.args.get("locks"):
                reasons.append("SELECT ... FOR UPDATE/SHARE takes row locks")
        elif isinstance(node, exp.Func):
            name = function_name(node)
            if name.lower().replace("_", "") in DENIED_FUNCTIONS:
                reasons.append(f"function {name.lower()}() is not allowed (file, system or write access)")
        elif isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            name = node.name
            if name.lower() not in cte_names and _FILEISH.search(name):
                reasons.append(f"table reference {name!r} looks like a file path or URL")
    if isinstance(stmt, _READ_ROOTS) and not reasons and stmt.find(exp.Command):
        reasons.append("contains a generic command")
    return reasons


# -- grounding ---------------------------------------------------------------------------------------


def _scope_columns(scope: Scope) -> list[str] | None:
    """Output column names of a derived table/CTE scope, or None if unknowable (``*``)."""
    expr = scope.expression
    names = list(expr.named_selects) if isinstance(expr, exp.Query) else []
    if not names:
        return None
    if isinstance(expr, exp.Select) and any(isinstance(e, exp.Star) or (
            isinstance(e, exp.Column) and isinstance(e.this, exp.Star)) for e in expr.expressions):
        return None
    if "*" in names:
        return None
    return [n.lower() for n in names]


def _source_columns(source: object, alias: str, schema: Schema, scope: Scope) -> list[str] | None:
    """Column names a source provides, or None if unknowable."""
    if isinstance(source, Scope):
        cols = _scope_columns(source)
        # a column alias list, e.g. (SELECT ...) AS s(a, b) / WITH c(a, b) AS (...)
        return cols
    if isinstance(source, exp.Table):
        if not isinstance(source.this, exp.Identifier):
            return None  # table function
        alias_cols = source.args.get("alias")
        if alias_cols is not None and alias_cols.columns:
            return [c.name.lower() for c in alias_cols.columns]
        cols = schema.columns(source.name)
        return None if cols is None else [c.lower() for c in cols]
    return None


def _unknown_identifiers(stmt: exp.Expression, schema: Schema, dialect: str) -> tuple[set[str], set[str]]:
    unknown_tables: set[str] = set()
    unknown_columns: set[str] = set()
    cte_names = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    for table in stmt.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier) or not table.name:
            continue
        if table.name.lower() in cte_names and not table.db:
            continue
        if not schema.has_table(table.name):
            unknown_tables.add(table.name)
    if not isinstance(stmt, exp.Query) and not isinstance(stmt, (exp.DML,)):
        return unknown_tables, unknown_columns

    scopes = list(traverse_scope(stmt))
    owner: dict[int, Scope] = {}
    for scope in scopes:  # children come first, so the innermost scope claims a column
        for col in scope.columns:
            owner.setdefault(id(col), scope)

    for scope in scopes:
        for col in scope.columns:
            if owner.get(id(col)) is not scope or isinstance(col.this, exp.Star):
                continue
            if col.args.get("db") or col.args.get("catalog"):
                continue  # struct field access or a fully qualified name: not checked
            if col.table:
                verdict = _check_qualified(col, scope, schema)
            else:
                verdict = _check_unqualified(col, scope, schema)
            if verdict is False:
                if dialect == "sqlite" and not col.table and col.this.args.get("quoted"):
                    continue  # SQLite reads an unresolvable "double-quoted" identifier as a string
                unknown_columns.add(f"{col.table}.{col.name}" if col.table else col.name)
    return unknown_tables, unknown_columns


def _check_qualified(col: exp.Column, scope: Scope, schema: Schema) -> bool | None:
    """True: known; False: unknown; None: cannot tell."""
    qualifier = col.table.lower()
    s: Scope | None = scope
    while s is not None:
        for alias, (node, source) in s.selected_sources.items():
            if alias.lower() == qualifier:
                cols = _source_columns(source, alias, schema, s)
                if cols is None:
                    return None
                return col.name.lower() in cols
        s = s.parent
    # qualifier is the real table name while the table has an alias in FROM (invalid in most engines,
    # but be lenient: look it up in the schema directly)
    if schema.has_table(qualifier):
        return schema.has_column(qualifier, col.name)
    return False


def _check_unqualified(col: exp.Column, scope: Scope, schema: Schema) -> bool | None:
    name = col.name.lower()
    s: Scope | None = scope
    unknowable = False
    while s is not None:
        if s is scope and isinstance(s.expression, exp.SetOperation):
            outputs = _scope_columns(s)
            if outputs is None:
                unknowable = True
            elif name in outputs:
                return True  # ORDER BY of a UNION names an output column
        if isinstance(s.expression, exp.Select) and _is_select_alias(col, name, s.expression):
            return True  # a select alias (ORDER BY / GROUP BY / HAVING / lateral reference)
        for alias, (node, source) in s.selected_sources.items():
            cols = _source_columns(source, alias, schema, s)
            if cols is None:
                unknowable = True
            elif name in cols:
                return True
        if (s.is_cte or s.is_derived_table) and not isinstance(s.expression.parent, exp.Lateral):
            break  # a CTE or derived table cannot see the outer query's FROM
        s = s.parent
    return None if unknowable else False


def _is_select_alias(col: exp.Column, name: str, select: exp.Select) -> bool:
    """``name`` is an alias of ``select``'s projections, and ``col`` is not inside that very alias."""
    for proj in select.expressions:
        if isinstance(proj, exp.Alias) and proj.alias.lower() == name:
            node: exp.Expression | None = col
            while node is not None and node is not select:
                if node is proj:
                    break
                node = node.parent
            if node is not proj:
                return True
    return False


def _dedupe(items: list[str]) -> list[str]:
    seen, out = set(), []
    for it in items:
        if it not in seen:
            seen.add(it)
            out.append(it)
    return out


def _short_error(exc: Exception) -> str:
    text = str(exc).replace("\x1b[4m", "").replace("\x1b[0m", "")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first}"
