"""Build the embedded dataset: warehouse files, examples.jsonl, schema.sql and dataset.json."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune.data.record import Example
from sqltune.errors import ConfigError, DataError, SqltuneError
from sqltune.log import setup_logging

from . import warehouse as W
from .questions import CATEGORIES, TEMPLATES, generate_examples

log = logging.getLogger(__name__)

VERSION = "1.0"
DEFAULT_N = 1600


@dataclass
class EmbeddedDataset:
    """What :func:`build_embedded` wrote (paths are absolute) and the examples it holds."""

    root: Path
    sqlite_path: Path
    duckdb_path: Path
    examples_path: Path
    schema_path: Path
    metadata_path: Path
    examples: list[Example]
    metadata: dict[str, Any]
    postgres_dsn: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


def embedded_examples(seed: int = 0, n: int = DEFAULT_N) -> list[Example]:
    """The examples of the embedded dataset, in memory (the warehouse is generated in memory too)."""
    _check_n(n, "n")
    return _generate(W.generate(seed), n, seed)


def _check_n(n: int, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{name} must be a positive integer (e.g. {DEFAULT_N}), got {n!r}")


def _generate(wh: W.Warehouse, n: int, seed: int) -> list[Example]:
    examples = generate_examples(wh, n, seed=seed)
    if len(examples) < n:
        # the templates' slot spaces are finite; say so instead of silently returning fewer
        log.warning("embedded: asked for %d examples, the templates yield %d distinct ones", n, len(examples))
    return examples


def full_schema_ddl(dialect: str = "sqlite") -> str:
    return W.full_schema_ddl(dialect)


def _metadata(seed: int, wh: W.Warehouse, examples: list[Example], postgres_db: str | None) -> dict[str, Any]:
    return {
        "name": "embedded",
        "version": VERSION,
        "seed": seed,
        "n_examples": len(examples),
        "tables": wh.counts(),
        "categories": dict(sorted(Counter(e.category for e in examples).items())),
        "difficulties": dict(sorted(Counter(e.difficulty for e in examples).items())),
        "templates": dict(sorted(Counter(e.extra["template"] for e in examples).items())),
        "n_templates": len(TEMPLATES),
        "dialects": list(W.DIALECTS),
        "files": {"sqlite": "warehouse.sqlite", "duckdb": "warehouse.duckdb", "examples": "examples.jsonl",
                  "schema": "schema.sql"},
        "postgres_database": postgres_db,
    }


def build_embedded(out_dir: str | Path, *, seed: int = 0, n_questions: int = DEFAULT_N,
                   postgres_dsn: str | None = None, postgres_db: str = "sqltune_warehouse") -> EmbeddedDataset:
    """Write the embedded dataset to ``out_dir``; with ``postgres_dsn`` (an admin DSN) also load the
    warehouse into database ``postgres_db`` on that server. Same seed -> byte-identical
    ``warehouse.sqlite``, ``examples.jsonl``, ``schema.sql`` and ``dataset.json``."""
    _check_n(n_questions, "n_questions")
    root = Path(out_dir).resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"out_dir {root} exists and is not a directory; pass a folder path")
    root.mkdir(parents=True, exist_ok=True)
    wh = W.generate(seed)
    sqlite_path = W.write_sqlite(root / "warehouse.sqlite", wh)
    duckdb_path = W.write_duckdb(root / "warehouse.duckdb", wh)
    examples = _generate(wh, n_questions, seed)
    examples_path = root / "examples.jsonl"
    with examples_path.open("w", encoding="utf-8", newline="\n") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False, sort_keys=True) + "\n")
    schema_path = root / "schema.sql"
    schema_path.write_text(
        "-- sqltune embedded warehouse (SQLite dialect; DuckDB/PostgreSQL use DATE/TIMESTAMP/DOUBLE)\n"
        + W.full_schema_ddl("sqlite"), encoding="utf-8")
    loaded_dsn = None
    if postgres_dsn:
        loaded_dsn = W.load_postgres(postgres_dsn, postgres_db, wh)
    metadata = _metadata(seed, wh, examples, postgres_db if postgres_dsn else None)
    metadata_path = root / "dataset.json"
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("embedded dataset: %d examples, %d templates -> %s", len(examples), len(TEMPLATES), root)
    return EmbeddedDataset(
        root=root, sqlite_path=sqlite_path, duckdb_path=duckdb_path, examples_path=examples_path,
        schema_path=schema_path, metadata_path=metadata_path, examples=examples, metadata=metadata,
        postgres_dsn=loaded_dsn, counts=metadata["categories"],
    )


def load_examples(path: str | Path) -> list[Example]:
    """Read an examples.jsonl written by :func:`build_embedded`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; build it with: python -m sqltune.data.embedded build --out {path.parent}")
    out = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                out.append(Example.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise DataError(f"{path}:{lineno}: not an Example JSON object ({exc}); rebuild the dataset") from exc
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqltune.data.embedded",
                                     description="Build the embedded text-to-SQL dataset.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write warehouse files, examples.jsonl, schema.sql and dataset.json")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--n", type=int, default=DEFAULT_N, help="number of question/SQL pairs")
    b.add_argument("--postgres", default=None, metavar="DSN", help="admin DSN; also load the warehouse there")
    b.add_argument("--postgres-db", default="sqltune_warehouse", help="database name to create/load")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        ds = build_embedded(args.out, seed=args.seed, n_questions=args.n, postgres_dsn=args.postgres,
                            postgres_db=args.postgres_db)
    except SqltuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(ds.root), "examples": len(ds.examples), "categories": ds.counts,
                      "postgres": ds.postgres_dsn}, indent=2))
    return 0
