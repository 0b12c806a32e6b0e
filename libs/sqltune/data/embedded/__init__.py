"""The embedded dataset: a seeded e-commerce + subscriptions + ML-predictions warehouse with templated
question/gold-SQL pairs in SQLite, DuckDB and PostgreSQL dialects (the default data of the demo and CI).

    from sqltune.data.embedded import build_embedded
    ds = build_embedded("out/embedded", seed=0)      # warehouse.sqlite/.duckdb, examples.jsonl, ...

CLI: ``python -m sqltune.data.embedded build --out DIR [--seed 0] [--postgres DSN]``.
"""

from .build import DEFAULT_N, VERSION, EmbeddedDataset, build_embedded, embedded_examples, load_examples
from .dialects import render, results_equal
from .questions import CATEGORIES, TEMPLATES
from .warehouse import (
    TABLE_NAMES,
    compact_schema,
    full_schema_ddl,
    generate,
    load_postgres,
    write_duckdb,
    write_sqlite,
)

__all__ = [
    "CATEGORIES", "DEFAULT_N", "TABLE_NAMES", "TEMPLATES", "VERSION", "EmbeddedDataset", "build_embedded",
    "compact_schema", "embedded_examples", "full_schema_ddl", "generate", "load_examples", "load_postgres",
    "render", "results_equal", "write_duckdb", "write_sqlite",
]
