"""Spider and BIRD: folders of JSON question lists, a tables file with the schemas, and SQLite databases."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqltune.data.readers import iter_json, read_json
from sqltune.data.record import Example
from sqltune.data.schema import ddl_from_database, ddl_from_tables_json
from sqltune.data.spider_hardness import spider_hardness
from sqltune.errors import DataError

__all__ = ["load_bird", "load_spider"]


def _load_tables(path: Path) -> dict[str, dict[str, Any]]:
    data = read_json(path, str(path))
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of database entries")
    out = {}
    for idx, entry in enumerate(data):
        if not isinstance(entry, dict) or "db_id" not in entry:
            raise DataError(f"{path} item {idx}: field 'db_id' is missing")
        out[str(entry["db_id"])] = entry
    return out


def _split_file(root: Path, split: str | None, candidates: dict[str | None, list[str]], what: str) -> list[Path]:
    names = candidates.get(split)
    if names is None:
        names = [f"{split}.json"]
    found = [root / n for n in names if (root / n).is_file()]
    if not found:
        raise DataError(
            f"{root}: no {what} file for split {split!r} (looked for {', '.join(names)}); "
            f"splits: {', '.join(str(k) for k in candidates if k)}"
        )
    return found


class _SchemaSource:
    """db_id -> (schema DDL, database path or None), from tables.json and/or the database folder."""

    def __init__(self, tables_path: Path | None, db_dir: Path | None, label: str):
        self.tables = _load_tables(tables_path) if tables_path and tables_path.is_file() else {}
        self.tables_path = tables_path
        self.db_dir = db_dir
        self.label = label
        self.cache: dict[str, tuple[str, str | None]] = {}

    def get(self, db_id: str, where: str) -> tuple[str, str | None]:
        if db_id in self.cache:
            return self.cache[db_id]
        db_path = None
        if self.db_dir is not None:
            for name in (f"{db_id}.sqlite", f"{db_id}.db", f"{db_id}.sqlite3"):
                cand = self.db_dir / db_id / name
                if cand.is_file():
                    db_path = str(cand)
                    break
        if db_id in self.tables:
            try:
                schema = ddl_from_tables_json(self.tables[db_id])
            except DataError as exc:
                raise DataError(f"{self.tables_path}: {exc}") from exc
        elif db_path is not None:
            schema = ddl_from_database(db_path)
        else:
            raise DataError(
                f"{where}: field 'db_id' value {db_id!r} is neither in {self.tables_path or 'tables.json'} "
                f"nor a database under {self.db_dir or '<no database folder>'}"
            )
        self.cache[db_id] = (schema, db_path)
        return schema, db_path


def _require(where: str, item: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> str:
    if key not in item or item[key] is None:
        raise DataError(f"{where}: field {key!r} is missing (columns: {', '.join(map(str, item))})")
    value = item[key]
    if not isinstance(value, (str, int)):
        raise DataError(f"{where}: field {key!r} must be text, got {type(value).__name__}")
    value = str(value).strip()
    if not value and not allow_empty:
        raise DataError(f"{where}: field {key!r} is empty")
    return value


def _dataset_paths(
    source: Path, split: str | None, candidates: dict[str | None, list[str]], tables_for: dict[str | None, str],
    db_for: dict[str | None, str], tables: str | os.PathLike[str] | None, db_dir: str | os.PathLike[str] | None,
    what: str,
) -> tuple[list[Path], Path | None, Path | None]:
    if source.is_dir():
        files = _split_file(source, split, candidates, what)
        root = source
    elif source.is_file():
        files, root = [source], source.parent
    else:
        raise DataError(f"{source}: no such {what} file or folder")
    key = split if split in tables_for else None
    if split is None and source.is_file():
        stem = source.stem
        key = next((k for k, names in candidates.items() if f"{stem}.json" in names), None)
    tables_path = Path(tables) if tables else root / tables_for.get(key, tables_for[None])
    if tables and not tables_path.is_file():
        raise DataError(f"tables file {tables_path} does not exist")
    if not tables and not tables_path.is_file():
        alt = [root / n for n in dict.fromkeys(tables_for.values()) if (root / n).is_file()]
        tables_path = alt[0] if alt else None
    dbs = Path(db_dir) if db_dir else root / db_for.get(key, db_for[None])
    return files, tables_path, dbs if dbs.is_dir() else None


def _benchmark_items(files: Sequence[Path]) -> Iterator[tuple[Path, int, str, dict]]:
    """(file, index, location for errors, item) of every item of Spider/BIRD-style JSON list files."""
    for file in files:
        for idx, (where, item) in enumerate(iter_json(file, str(file))):
            yield file, idx, where, item


_SPIDER_SPLITS: dict[str | None, list[str]] = {
    None: ["dev.json"],
    "dev": ["dev.json"],
    "validation": ["dev.json"],
    "train": ["train_spider.json", "train_others.json"],
    "train_spider": ["train_spider.json"],
    "train_others": ["train_others.json"],
    "test": ["test.json"],
}


def load_spider(
    source: str | os.PathLike[str],
    *,
    split: str | None = None,
    tables: str | os.PathLike[str] | None = None,
    db_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Load Spider: a folder (``dev.json``/``train_spider.json``/``train_others.json``/``test.json``,
    ``tables.json`` or ``test_tables.json``, optional ``database/<db_id>/<db_id>.sqlite``) or one of
    its JSON files. ``difficulty`` is Spider's official hardness; ``extra['db_id']`` the database id;
    ``db`` the SQLite file when present, else ``None``."""
    source = Path(source)
    files, tables_path, dbs = _dataset_paths(
        source, split, _SPIDER_SPLITS, {None: "tables.json", "test": "test_tables.json"},
        {None: "database", "test": "test_database"}, tables, db_dir, "Spider",
    )
    schemas = _SchemaSource(tables_path, dbs, str(source))
    out: list[Example] = []
    for file, idx, where, item in _benchmark_items(files):
        if limit is not None and len(out) >= limit:
            return out
        question = _require(where, item, "question")
        sql = _require(where, item, "query" if "query" in item or "SQL" not in item else "SQL")
        db_id = _require(where, item, "db_id")
        schema, db_path = schemas.get(db_id, where)
        out.append(
            Example(
                id=f"spider-{file.stem}-{idx:05d}",
                question=question,
                schema=schema,
                sql=sql,
                dialect="sqlite",
                db=db_path,
                difficulty=spider_hardness(item.get("sql")) if isinstance(item.get("sql"), dict) else None,
                extra={"db_id": db_id},
            )
        )
    return out


_BIRD_SPLITS: dict[str | None, list[str]] = {
    None: ["dev.json"],
    "dev": ["dev.json"],
    "validation": ["dev.json"],
    "train": ["train.json"],
}


def load_bird(
    source: str | os.PathLike[str],
    *,
    split: str | None = None,
    tables: str | os.PathLike[str] | None = None,
    db_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Load BIRD: a folder (``dev.json`` + ``dev_tables.json`` + ``dev_databases/<db_id>/<db_id>.sqlite``,
    or the ``train`` equivalents) or one of its JSON files. Items need ``db_id``, ``question`` and
    ``SQL``; ``question_id``, ``evidence`` and ``difficulty`` are optional. The schema comes from the
    tables file, or from the SQLite database when the tables file is absent."""
    source = Path(source)
    files, tables_path, dbs = _dataset_paths(
        source, split, _BIRD_SPLITS, {None: "dev_tables.json", "train": "train_tables.json"},
        {None: "dev_databases", "train": "train_databases"}, tables, db_dir, "BIRD",
    )
    schemas = _SchemaSource(tables_path, dbs, str(source))
    out: list[Example] = []
    seen: dict[str, str] = {}
    for file, idx, where, item in _benchmark_items(files):
        if limit is not None and len(out) >= limit:
            return out
        question = _require(where, item, "question")
        sql = _require(where, item, "SQL")
        db_id = _require(where, item, "db_id")
        qid = str(item["question_id"]) if item.get("question_id") is not None else str(idx)
        ex_id = f"bird-{file.stem}-{qid}"
        if ex_id in seen:
            raise DataError(f"{where}: question_id {qid!r} was already used at {seen[ex_id]}")
        seen[ex_id] = where
        evidence = item.get("evidence")
        if evidence is not None and not isinstance(evidence, str):
            raise DataError(f"{where}: field 'evidence' must be text, got {type(evidence).__name__}")
        schema, db_path = schemas.get(db_id, where)
        difficulty = item.get("difficulty")
        out.append(
            Example(
                id=ex_id,
                question=question,
                schema=schema,
                sql=sql,
                dialect="sqlite",
                db=db_path,
                evidence=(evidence or "").strip() or None,
                difficulty=str(difficulty) if difficulty else None,
                extra={"db_id": db_id, "question_id": item.get("question_id", idx)},
            )
        )
    return out
