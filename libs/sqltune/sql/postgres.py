"""PostgreSQL helpers: databases, a read-only role, and the sandboxed query runner.

Needs the ``postgres`` extra (``pip install 'sqltune[postgres]'``); psycopg is imported lazily.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit, quote

from sqltune.errors import SQLError, missing
from sqltune.sql.result import ExecResult, capped_result

log = logging.getLogger(__name__)
READONLY_ROLE = "sqltune_ro"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _psycopg():
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise missing("psycopg", "postgres") from exc
    return psycopg


def connect(dsn: str, **kwargs: Any) -> Any:
    """``psycopg.connect(dsn, **kwargs)``; a server that cannot be reached (down, bad DSN, bad credentials)
    raises SQLError naming it, password left out."""
    psycopg = _psycopg()
    kwargs.setdefault("connect_timeout", 10)
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        raise SQLError(f"cannot connect to PostgreSQL at {_safe(dsn)}: {_first_line(exc)}") from exc


def _safe(dsn: str) -> str:
    return dsn_with(dsn, password="") if dsn.startswith(("postgresql://", "postgres://")) else "<conninfo>"


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SQLError(f"invalid PostgreSQL {what} name {name!r}: use letters, digits and _ (max 63)")
    return name


def dsn_with(dsn: str, *, dbname: str | None = None, user: str | None = None,
             password: str | None = None) -> str:
    """Return ``dsn`` with the database, user and/or password replaced (URL or key=value form)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        netloc = parts.netloc
        userinfo, at, hostport = netloc.rpartition("@")
        if not at:
            userinfo, hostport = "", netloc
        old_user, _, old_pw = userinfo.partition(":")
        new_user = quote(user, safe="") if user is not None else old_user
        new_pw = quote(password, safe="") if password is not None else (old_pw if user is None else "")
        userinfo = new_user + (f":{new_pw}" if new_pw else "")
        netloc = f"{userinfo}@{hostport}" if userinfo else hostport
        path = "/" + quote(dbname, safe="") if dbname is not None else parts.path
        return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))
    psycopg = _psycopg()
    kwargs: dict[str, Any] = {}
    if dbname is not None:
        kwargs["dbname"] = dbname
    if user is not None:
        kwargs["user"] = user
        kwargs["password"] = password
    elif password is not None:
        kwargs["password"] = password
    return psycopg.conninfo.make_conninfo(dsn, **kwargs)


def create_database(admin_dsn: str, name: str, *, drop_existing: bool = False) -> str:
    """Create database ``name`` (optionally dropping an existing one); return its DSN (admin user).

    Existing databases are kept when ``drop_existing`` is False (idempotent).
    """
    psycopg = _psycopg()
    _check_name(name, "database")
    with connect(admin_dsn, autocommit=True) as conn:
        if drop_existing:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
            except psycopg.errors.DuplicateDatabase:
                pass
    return dsn_with(admin_dsn, dbname=name)


def drop_database(admin_dsn: str, name: str) -> None:
    _check_name(name, "database")
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ensure_readonly_role(admin_dsn: str, database: str, *, role: str = READONLY_ROLE,
                         password: str | None = None, schema: str = "public") -> str:
    """Create (once) a LOGIN role that can only read ``database``; return a DSN that logs in as it.

    The role gets CONNECT on the database, USAGE on ``schema`` and SELECT on its tables (also on
    tables the admin creates later, through default privileges), and nothing else: no CREATE on the
    schema or database, no TEMP, no superuser/createdb/createrole/replication, and
    ``default_transaction_read_only`` plus a ``statement_timeout`` as role defaults. PUBLIC loses
    CREATE/TEMP on the database and CREATE on the schema. Safe to call repeatedly.
    """
    psycopg = _psycopg()
    from psycopg import sql as psql

    _check_name(role, "role")
    _check_name(database, "database")
    _check_name(schema, "schema")
    r, d, s = psql.Identifier(role), psql.Identifier(database), psql.Identifier(schema)
    with connect(dsn_with(admin_dsn, dbname=database), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            try:
                conn.execute(psql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                    "NOINHERIT").format(r))
            except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                pass  # created concurrently
        conn.execute(psql.SQL(
            "ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT "
            "CONNECTION LIMIT 64").format(r))
        if password is not None:
            conn.execute(psql.SQL("ALTER ROLE {} PASSWORD {}").format(r, psql.Literal(password)))
        conn.execute(psql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(r))
        conn.execute(psql.SQL("ALTER ROLE {} SET statement_timeout = '60s'").format(r))
        conn.execute(psql.SQL("ALTER ROLE {} SET temp_file_limit = '256MB'").format(r))
        conn.execute(psql.SQL("REVOKE CREATE, TEMPORARY ON DATABASE {} FROM PUBLIC").format(d))
        conn.execute(psql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(d, r))
        conn.execute(psql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(d, r))
        conn.execute(psql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(s))
        conn.execute(psql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(s, r))
        conn.execute(psql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
        conn.execute(psql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r))
        conn.execute(psql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(s, r))
    return dsn_with(admin_dsn, dbname=database, user=role, password=password)


def read_catalog(dsn: str, *, timeout_s: float = 10.0) -> tuple[list[tuple], list[tuple]]:
    """The tables, views and columns of every non-system schema, and their primary and foreign keys.

    Columns: ``(schema, table, is_view, column, type, not_null)``, schema ``public`` first, then by schema,
    table and column position. Keys: ``(schema, table, "PRIMARY KEY" | "FOREIGN KEY", columns,
    referenced table, referenced columns)``. Raises SQLError naming the database (password redacted).
    """
    psycopg = _psycopg()
    try:
        with connect(dsn, connect_timeout=max(1, int(timeout_s))) as conn:
            columns = conn.execute(_CATALOG_COLUMNS).fetchall()
            keys = conn.execute(_CATALOG_KEYS).fetchall()
            conn.rollback()
    except psycopg.Error as exc:
        raise SQLError(f"cannot read the schema of PostgreSQL database {_redact(dsn)}: {_first_line(exc)}") from exc
    kinds = {"p": "PRIMARY KEY", "f": "FOREIGN KEY"}
    return (
        [(s, t, kind == "v", c, typ, bool(nn)) for s, t, kind, c, typ, nn in columns],
        [(s, t, kinds[ct], list(cols or []), rt, list(rcols or [])) for s, t, ct, cols, rt, rcols in keys],
    )


_CATALOG_COLUMNS = """
    SELECT n.nspname, c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relkind IN ('r', 'p', 'v')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
    ORDER BY n.nspname <> 'public', n.nspname, c.relname, a.attnum"""

_CATALOG_KEYS = """
    SELECT n.nspname, c.relname, con.contype,
           ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
                 ORDER BY k.ord),
           rc.relname,
           ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
                 ORDER BY k.ord)
    FROM pg_constraint con
    JOIN pg_class c ON c.oid = con.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class rc ON rc.oid = con.confrelid
    WHERE con.contype IN ('p', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    ORDER BY con.contype DESC, con.conname"""


def _redact(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


def run_readonly(sql: str, dsn: str, *, timeout_s: float = 5.0, max_rows: int = 1000):
    """Run ``sql`` in a READ ONLY transaction with statement/lock timeouts; always roll back.

    Rows are fetched through a server-side cursor, so at most ``max_rows + 1`` rows reach the client.
    """
    psycopg = _psycopg()
    ms = max(1, int(timeout_s * 1000))
    conn = connect(dsn, autocommit=False, connect_timeout=max(2, int(timeout_s) + 1),
                   options=f"-c statement_timeout={ms} -c lock_timeout={ms} "
                           f"-c idle_in_transaction_session_timeout={ms + 5000}")
    timed_out = threading.Event()

    def _cancel() -> None:  # backstop if the server-side timeout does not fire (e.g. slow fetch)
        timed_out.set()
        try:
            conn.cancel_safe(timeout=2.0)
        except Exception:  # noqa: BLE001
            pass

    _warn_if_superuser(conn, dsn)
    timer = threading.Timer(timeout_s + 1.0, _cancel)
    timer.daemon = True
    try:
        conn.execute("SET TRANSACTION READ ONLY")  # first statement of the implicit transaction
        conn.execute(f"SET LOCAL statement_timeout = {ms}")
        conn.execute(f"SET LOCAL lock_timeout = {ms}")
        timer.start()
        deadline = time.monotonic() + timeout_s
        with conn.cursor(name="sqltune_q", scrollable=False, withhold=False) as cur:
            cur.itersize = max_rows + 1
            try:
                cur.execute(sql)
                columns = [d.name for d in cur.description or []]
                rows = cur.fetchmany(max_rows + 1) if cur.description else []
            except psycopg.errors.QueryCanceled as exc:
                return ExecResult(error=f"timed out after {timeout_s:g}s ({_first_line(exc)})", category="timeout")
            except psycopg.Error as exc:
                if timed_out.is_set() or time.monotonic() > deadline + 0.5:
                    return ExecResult(error=f"timed out after {timeout_s:g}s ({_first_line(exc)})",
                                      category="timeout")
                return ExecResult(error=f"{type(exc).__name__}: {_first_line(exc)}", category=classify_postgres(exc))
        return capped_result([tuple(r) for r in rows], columns, max_rows)
    finally:
        timer.cancel()
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001
            pass
        conn.close()


_warned: set[str] = set()


def _warn_if_superuser(conn: Any, dsn: str) -> None:
    try:
        superuser = conn.info.parameter_status("is_superuser") == "on"
    except Exception:  # noqa: BLE001
        return
    key = _safe(dsn)
    if superuser and key not in _warned:
        _warned.add(key)
        log.warning(
            "executing untrusted SQL as a PostgreSQL superuser (%s); superusers can read server files "
            "even in a read-only transaction. Use sqltune.sql.postgres.ensure_readonly_role() for the DSN.",
            key)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def classify_postgres(exc: BaseException) -> str:
    try:
        from psycopg import errors as e
    except ImportError:  # pragma: no cover
        return "runtime"
    if isinstance(exc, e.QueryCanceled):
        return "timeout"
    if isinstance(exc, (e.SyntaxError,)):
        return "syntax"
    if isinstance(exc, (e.UndefinedTable, e.UndefinedColumn, e.UndefinedObject, e.InvalidSchemaName)):
        return "unknown_identifier"
    if isinstance(exc, (e.ReadOnlySqlTransaction, e.InsufficientPrivilege)):
        return "not_read_only"
    msg = str(exc).lower()
    if "cannot insert multiple commands" in msg or "read-only transaction" in msg:
        return "not_read_only"
    return "runtime"


def prepare_readonly(sql: str, dsn: str, *, timeout_s: float = 5.0):
    """PostgreSQL's compile step for ``sql`` (``PREPARE``: parse, bind, rewrite; no row is read).

    Runs in a READ ONLY transaction with statement/lock timeouts that is always rolled back, so the
    prepared statement disappears with the session.
    """
    psycopg = _psycopg()
    ms = max(1, int(timeout_s * 1000))
    try:
        conn = psycopg.connect(dsn, autocommit=False, connect_timeout=max(2, int(timeout_s) + 1),
                               options=f"-c statement_timeout={ms} -c lock_timeout={ms}")
    except psycopg.OperationalError as exc:
        safe = dsn_with(dsn, password="") if dsn.startswith(("postgresql://", "postgres://")) else "<conninfo>"
        raise SQLError(f"cannot connect to PostgreSQL at {safe}: {_first_line(exc)}") from exc
    try:
        conn.execute("SET TRANSACTION READ ONLY")
        try:
            conn.execute("PREPARE sqltune_check AS " + sql)
        except psycopg.errors.QueryCanceled as exc:
            return ExecResult(error=f"timed out after {timeout_s:g}s ({_first_line(exc)})", category="timeout")
        except psycopg.Error as exc:
            return ExecResult(error=f"{type(exc).__name__}: {_first_line(exc)}", category=classify_postgres(exc))
        return ExecResult()
    finally:
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001
            pass
        conn.close()
