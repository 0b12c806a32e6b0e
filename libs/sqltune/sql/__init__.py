"""SQL handling for sqltune: analysis, sandboxed execution, and the metrics built on them.

Pure Python plus sqlglot/duckdb (psycopg lazily, for PostgreSQL); never imports torch or ray.

- :func:`analyze` - parse, statement kind, read-only check, unknown tables/columns against a schema.
- :func:`execute` - run one read-only query on SQLite/DuckDB/PostgreSQL inside a sandbox.
- :func:`execution_match` - execution accuracy with multiset/ordered comparison and float tolerance.
- :func:`normalize`, :func:`exact_match`, :func:`ast_equivalent`, :func:`transpile`.
- :class:`Schema` - tables -> typed columns (plus keys), from DDL, a mapping or a live database, rendered in
  the ``plain``/``full``/``compact`` styles: the one schema model, :mod:`sqltune.sql.schema`.
- :mod:`sqltune.sql.postgres` - create_database, ensure_readonly_role (import it explicitly).
- :mod:`sqltune.sql.context_db` - execution on an in-memory SQLite built from a context's CREATE/INSERT text.

Modules, lowest first (none imports one above it): ``_dialects``, ``result`` < ``sqlite_sandbox``,
``postgres`` < ``schema`` < ``analyze`` < ``compare`` < ``execute`` < ``match`` < ``context_db``.
"""

from __future__ import annotations

from sqltune.errors import SQLError
from sqltune.sql._dialects import DIALECTS, canonical_dialect, engine_of
from sqltune.sql.analyze import DENIED_FUNCTIONS, Analysis, analyze
from sqltune.sql.compare import ast_equivalent, exact_match, normalize, transpile
from sqltune.sql.execute import CATEGORIES, ExecResult, execute
from sqltune.sql.match import MatchResult, execution_match, results_equal
from sqltune.sql.schema import Schema, split_statements

__all__ = [
    "CATEGORIES",
    "DENIED_FUNCTIONS",
    "DIALECTS",
    "Analysis",
    "ExecResult",
    "MatchResult",
    "SQLError",
    "Schema",
    "analyze",
    "ast_equivalent",
    "canonical_dialect",
    "engine_of",
    "exact_match",
    "execute",
    "execution_match",
    "normalize",
    "results_equal",
    "split_statements",
    "transpile",
]
