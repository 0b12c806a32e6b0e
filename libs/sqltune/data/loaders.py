"""Dataset loaders: every supported format becomes a list of :class:`~sqltune.data.record.Example`.

Formats: generic JSONL / JSON / CSV (/ Parquet) with a :class:`ColumnMapping`; the presets
``sql-create-context`` (b-mc2/sql-create-context) and ``gretel`` (gretelai/synthetic_text_to_sql);
``spider`` and ``bird`` dataset folders; and ``embedded`` (the project's generated warehouse set).
Sources are local paths, ``s3://`` URIs, or Hugging Face hub dataset ids. :func:`load_dataset` is
the one entry point.

A malformed record raises :class:`~sqltune.errors.DataError` whose message names the file, the
location (``line N`` for JSONL/CSV, 1-based; ``item N`` for a JSON list, 0-based index; ``row N``
for Parquet and hub rows, 0-based) and the field, plus the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from sqltune.data.readers import FILE_SUFFIXES, READERS, file_kind, read_json
from sqltune.data.record import Example
from sqltune.data.schema import ddl_from_database
from sqltune.data.spider_bird import load_bird, load_spider
from sqltune.errors import ConfigError, DataError, missing

__all__ = [
    "ColumnMapping",
    "Format",
    "GRETEL",
    "SQL_CREATE_CONTEXT",
    "load_dataset",
    "load_records",
    "load_spider",
    "load_bird",
    "detect_format",
]

Format = Literal["auto", "jsonl", "json", "csv", "sql-create-context", "gretel", "spider", "bird", "embedded"]
FORMATS: tuple[str, ...] = get_args(Format)


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column holds each :class:`Example` field.

    ``question`` and ``sql`` are required in every record; ``schema`` too, unless the record has a
    ``db`` (SQLite/DuckDB file or ``postgresql://`` DSN) to introspect. The others are optional: a
    record without them gets ``None`` (``id`` defaults to ``<file stem>-<line>``). Set a field to
    ``None`` to ignore that column entirely. Columns not mapped to any field land in ``Example.extra``
    (a column named ``extra`` holding an object is merged into it).
    """

    question: str = "question"
    schema: str | None = "schema"
    sql: str = "sql"
    id: str | None = "id"
    db: str | None = "db"
    evidence: str | None = "evidence"
    category: str | None = "category"
    difficulty: str | None = "difficulty"
    dialect: str | None = "dialect"

    @classmethod
    def coerce(cls, value: "ColumnMapping | Mapping[str, Any] | None", base: "ColumnMapping | None" = None) -> "ColumnMapping":
        """``None`` -> ``base`` (or the defaults); a dict overrides fields of ``base``; an instance is used as is."""
        base = base or cls()
        if value is None:
            return base
        if isinstance(value, ColumnMapping):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"mapping must be a ColumnMapping or a dict, got {type(value).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ConfigError(f"mapping has unknown field(s) {unknown}; valid fields: {', '.join(names)}")
        for key in ("question", "sql"):
            if key in value and not value[key]:
                raise ConfigError(f"mapping.{key} must name a column; it is required")
        return dataclasses.replace(base, **dict(value))


SQL_CREATE_CONTEXT = ColumnMapping(
    question="question", schema="context", sql="answer", id=None, db=None, evidence=None,
    category=None, difficulty=None, dialect=None,
)
GRETEL = ColumnMapping(
    question="sql_prompt", schema="sql_context", sql="sql", id="id", db=None, evidence=None,
    category="domain", difficulty="sql_complexity", dialect=None,
)
_PRESETS = {"sql-create-context": SQL_CREATE_CONTEXT, "gretel": GRETEL}


# ------------------------------------------------------------------------------------ conversion


class _Converter:
    """Turns raw records into Examples with one mapping; caches introspected schemas."""

    def __init__(self, mapping: ColumnMapping, *, base_dir: Path | None, id_prefix: str, dialect: str | None):
        self.mapping = mapping
        self.base_dir = base_dir
        self.id_prefix = id_prefix
        self.dialect = dialect
        self.mapped = {v for v in dataclasses.asdict(mapping).values() if v}
        self.schema_cache: dict[str, str] = {}
        self.seen_ids: dict[str, str] = {}

    def _text(self, where: str, record: Mapping[str, Any], attr: str, *, required: bool) -> str | None:
        column = getattr(self.mapping, attr)
        if column is None:
            return None
        if column not in record or record[column] is None:
            if not required:
                return None
            cols = ", ".join(str(k) for k in record) or "none"
            raise DataError(
                f"{where}: field {column!r} is missing (columns: {cols}); "
                f"set mapping.{attr}=<column> if it has another name"
            )
        value = record[column]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and attr not in ("question", "sql", "schema"):
            value = str(value)
        if not isinstance(value, str):
            raise DataError(f"{where}: field {column!r} must be text, got {type(value).__name__}")
        value = value.strip()
        if required and not value:
            raise DataError(f"{where}: field {column!r} is empty")
        return value or None

    def _resolve_db(self, value: str | None) -> str | None:
        if not value or "://" in value or os.path.isabs(value) or self.base_dir is None:
            return value
        candidate = self.base_dir / value
        return str(candidate) if candidate.exists() else value

    def convert(self, where: str, record: Mapping[str, Any], default_id: str) -> Example:
        question = self._text(where, record, "question", required=True)
        sql = self._text(where, record, "sql", required=True)
        db = self._resolve_db(self._text(where, record, "db", required=False))
        schema_col = self.mapping.schema
        has_schema = schema_col is not None and record.get(schema_col) not in (None, "")
        if has_schema:
            schema = self._text(where, record, "schema", required=True)
        elif db and ("://" in db or Path(db).is_file()):
            if db not in self.schema_cache:
                try:
                    self.schema_cache[db] = ddl_from_database(db)
                except DataError as exc:
                    raise DataError(f"{where}: field {self.mapping.db!r}: {exc}") from exc
            schema = self.schema_cache[db]
        elif schema_col is None:
            schema = ""
        else:
            self._text(where, record, "schema", required=True)  # raises "missing" or "empty"
            schema = ""
        ex_id = self._text(where, record, "id", required=False) or default_id
        if ex_id in self.seen_ids:
            raise DataError(
                f"{where}: id {ex_id!r} was already used at {self.seen_ids[ex_id]}; ids must be unique "
                "(set mapping.id=None to number records instead)"
            )
        self.seen_ids[ex_id] = where
        extra: dict[str, Any] = {}
        if isinstance(record.get("extra"), Mapping):
            extra.update(record["extra"])
        for key, value in record.items():
            if key not in self.mapped and key != "extra":
                extra[key] = value
        return Example(
            id=ex_id,
            question=question or "",
            schema=schema or "",
            sql=sql or "",
            dialect=self._text(where, record, "dialect", required=False) or self.dialect or "sqlite",
            db=db,
            evidence=self._text(where, record, "evidence", required=False),
            category=self._text(where, record, "category", required=False),
            difficulty=self._text(where, record, "difficulty", required=False),
            extra=extra,
        )


def _convert_all(
    records: Iterable[tuple[str, Mapping[str, Any]]],
    converter: _Converter,
    *,
    limit: int | None,
    id_from_where: bool = True,
) -> list[Example]:
    out: list[Example] = []
    for n, (where, record) in enumerate(records):
        if limit is not None and len(out) >= limit:
            break
        loc = re.search(r"(?:line|lines|item|row) (\d+)", where)
        suffix = loc.group(1) if (loc and id_from_where) else str(n)
        out.append(converter.convert(where, record, f"{converter.id_prefix}-{suffix}"))
    return out


def load_records(
    path: str | os.PathLike[str],
    *,
    mapping: ColumnMapping | Mapping[str, Any] | None = None,
    kind: str | None = None,
    dialect: str | None = None,
    limit: int | None = None,
    label: str | None = None,
    base: ColumnMapping | None = None,
) -> list[Example]:
    """Load a JSONL/JSON/CSV/Parquet file with a column mapping (``kind`` defaults from the suffix)."""
    path = Path(path)
    label = label or str(path)
    if not path.is_file():
        raise DataError(f"{label}: file not found")
    kind = kind or file_kind(path)
    cmap = ColumnMapping.coerce(mapping, base)
    records = READERS[kind](path, label)
    if kind == "csv":
        records = _check_csv_header(records, cmap, label, explicit=mapping is not None)
    conv = _Converter(cmap, base_dir=path.parent, id_prefix=path.stem, dialect=dialect)
    return _convert_all(records, conv, limit=limit)


def _check_csv_header(
    records: Iterator[tuple[str, dict[str, Any]]], cmap: ColumnMapping, label: str, *, explicit: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    """An explicitly mapped optional column that the CSV header lacks is a typo, not an absence."""
    first = True
    defaults = ColumnMapping()
    for where, row in records:
        if first and explicit:
            for f in dataclasses.fields(cmap):
                column = getattr(cmap, f.name)
                if column and column != getattr(defaults, f.name) and column not in row and f.name not in ("question", "sql", "schema"):
                    raise DataError(
                        f"{label} line 1: mapping.{f.name}={column!r} is not a column "
                        f"(columns: {', '.join(row)})"
                    )
        first = False
        yield where, row


# ------------------------------------------------------------------------------------- detection


def _sniff_keys(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    if {"sql_prompt", "sql_context", "sql"} <= keys:
        return "gretel"
    if {"question", "context", "answer"} <= keys:
        return "sql-create-context"
    if {"db_id", "question", "query"} <= keys:
        return "spider"
    if {"db_id", "question", "SQL"} <= keys:
        return "bird"
    return None


def _first_keys(path: Path, kind: str) -> list[str]:
    try:
        if kind == "jsonl":
            with open(path, encoding="utf-8-sig") as fh:
                for line in fh:
                    if line.strip():
                        obj = json.loads(line)
                        return list(obj) if isinstance(obj, dict) else []
        elif kind == "csv":
            with open(path, encoding="utf-8-sig", newline="") as fh:
                delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
                return next(csv.reader(fh, delimiter=delimiter), [])
        elif kind == "json":
            with open(path, encoding="utf-8-sig") as fh:
                head = fh.read(65536)
            m = re.match(r"\s*\[\s*(\{.*?\})\s*[,\]]", head, re.S)
            if m:
                return list(json.loads(m.group(1)))
            data = read_json(path, str(path))
            if isinstance(data, list) and data and isinstance(data[0], dict):
                return list(data[0])
    except (json.JSONDecodeError, OSError, UnicodeDecodeError, DataError):
        return []
    return []


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format ``load_dataset(..., format="auto")`` uses for a local file or folder."""
    path = Path(path)
    if path.is_dir():
        if (path / "tables.json").is_file() or (path / "train_spider.json").is_file():
            return "spider"
        if (path / "dev_tables.json").is_file() or (path / "train_tables.json").is_file() or (path / "dev_databases").is_dir():
            return "bird"
        if (path / "examples.jsonl").is_file():
            return "jsonl"
        raise DataError(
            f"{path}: cannot tell the dataset format of this folder (no tables.json, dev_tables.json or "
            "examples.jsonl); pass format=..."
        )
    kind = file_kind(path)
    sniffed = _sniff_keys(_first_keys(path, kind))
    if sniffed in ("spider", "bird"):
        return sniffed
    return sniffed or kind


# -------------------------------------------------------------------------------------- dispatch


def load_dataset(
    source: str | os.PathLike[str],
    *,
    format: Format = "auto",  # noqa: A002 - the user-facing word
    mapping: ColumnMapping | Mapping[str, Any] | None = None,
    split: str | None = None,
    dialect: str | None = None,
    limit: int | None = None,
    tables: str | os.PathLike[str] | None = None,
    db_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_questions: int | None = None,
    postgres_dsn: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[Example]:
    """Load a dataset as a list of :class:`Example`.

    ``source`` is a local file or folder, an ``s3://`` URI (downloaded to ``cache_dir`` or a temporary
    folder first), or a Hugging Face hub dataset id (needs the ``datasets`` package). ``format="auto"``
    detects the format from the folder layout, the file suffix and the first record's columns.
    ``split`` picks a split: Spider/BIRD (``dev``/``validation``/``train``/...), hub datasets
    (default ``train``), a folder holding ``<split>.jsonl``/``.json``/``.csv``, or for ``embedded``
    the examples whose ``extra['split']`` equals it. ``mapping`` renames columns of generic files (a
    dict overrides the preset's columns). ``dialect`` is the SQL dialect of records that do not name
    one (default ``sqlite``). ``limit`` keeps the first N examples. ``tables``/``db_dir`` override
    where Spider/BIRD look for the tables file and database folder. ``seed``, ``n_questions`` and
    ``postgres_dsn`` are passed to ``build_embedded`` when ``format="embedded"`` and ``source`` holds
    no ``examples.jsonl`` yet.
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} is not one of: {', '.join(FORMATS)}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    text = os.fspath(source)
    if text.startswith("s3://"):
        local = _fetch_s3(text, format=format, cache_dir=cache_dir)
        return load_dataset(
            local, format=format, mapping=mapping, split=split, dialect=dialect, limit=limit, tables=tables,
            db_dir=db_dir, seed=seed, n_questions=n_questions, postgres_dsn=postgres_dsn,
        )
    path = Path(text)
    if format == "embedded":
        return _load_embedded(path, split=split, seed=seed, n_questions=n_questions, postgres_dsn=postgres_dsn, limit=limit)
    if not path.exists():
        if _looks_like_hub_id(text):
            return _load_hub(text, format=format, mapping=mapping, split=split, dialect=dialect, limit=limit)
        raise DataError(f"{text}: no such file or folder")

    fmt = detect_format(path) if format == "auto" else format
    if fmt == "spider":
        return load_spider(path, split=split, tables=tables, db_dir=db_dir, limit=limit)
    if fmt == "bird":
        return load_bird(path, split=split, tables=tables, db_dir=db_dir, limit=limit)

    if path.is_dir():
        path = _file_in_folder(path, split)
    elif split is not None:
        raise ConfigError(
            f"split={split!r} applies to folders, Spider/BIRD, hub datasets and embedded; {path} is one file "
            "(use sqltune.data.split_examples to split it)"
        )
    if fmt in _PRESETS:
        return load_records(path, mapping=mapping, base=_PRESETS[fmt], dialect=dialect, limit=limit)
    kind = fmt if fmt in ("jsonl", "json", "csv") else None
    if kind is None:
        kind = file_kind(path)
    return load_records(path, mapping=mapping, kind=kind, dialect=dialect, limit=limit)


def _file_in_folder(folder: Path, split: str | None) -> Path:
    stems = [split] if split else ["examples", "data", "train"]
    for stem in stems:
        for suffix in (".jsonl", ".json", ".csv", ".parquet"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    raise DataError(f"{folder}: no {'/'.join(stems)}.jsonl/.json/.csv/.parquet file in this folder")


def _looks_like_hub_id(text: str) -> bool:
    if Path(text).suffix.lower() in (*FILE_SUFFIXES, ".tsv") or text.startswith((".", "/", "~")):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", text) is not None


def _fetch_s3(uri: str, *, format: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Download an ``s3://`` dataset file, or every object under a folder prefix, to a local path.

    A prefix holding a ``manifest.json`` (a published artifact) is fetched and verified with
    :func:`sqltune.storage.fetch`; a plain prefix is copied object by object.
    """
    from sqltune import storage  # imported only for s3:// sources

    root = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="sqltune-data-"))
    root.mkdir(parents=True, exist_ok=True)
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "dataset"
    if not uri.endswith("/") and Path(name).suffix.lower() in (*FILE_SUFFIXES, ".tsv"):
        target = root / name
        try:
            storage.download_file(uri, target)
        except FileNotFoundError as exc:
            raise DataError(f"{uri}: no such object") from exc
        return target
    folder = uri.rstrip("/")
    dest = root / name
    if storage.exists(storage.join(folder, "manifest.json")):
        return Path(storage.fetch(folder, dest))
    rels = storage.list_files(folder)
    if not rels:
        raise DataError(f"{uri}: no such object, and no objects under it as a folder")
    for rel in rels:
        storage.download_file(f"{folder}/{rel}", dest / rel)
    return dest


def _load_embedded(
    folder: Path, *, split: str | None, seed: int, n_questions: int | None, postgres_dsn: str | None, limit: int | None
) -> list[Example]:
    if folder.suffix == ".jsonl" and folder.is_file():
        file = folder
    else:
        file = folder / "examples.jsonl"
        if not file.is_file():
            from sqltune.data.embedded import build_embedded

            kwargs: dict[str, Any] = {"seed": seed}
            if n_questions is not None:
                kwargs["n_questions"] = n_questions
            if postgres_dsn is not None:
                kwargs["postgres_dsn"] = postgres_dsn
            build_embedded(folder, **kwargs)
            if not file.is_file():
                raise DataError(f"build_embedded({folder}) did not write {file}")
    examples = load_records(file, kind="jsonl")
    if split is not None:
        if not any("split" in ex.extra for ex in examples):
            raise ConfigError(
                f"{file}: examples carry no extra['split'], so split={split!r} cannot select; "
                "use sqltune.data.split_examples"
            )
        examples = [ex for ex in examples if ex.extra.get("split") == split]
    return examples[:limit] if limit is not None else examples


def _load_hub(
    name: str, *, format: str, mapping: ColumnMapping | Mapping[str, Any] | None, split: str | None,
    dialect: str | None, limit: int | None,
) -> list[Example]:
    try:
        import datasets
    except ImportError as exc:
        err = missing("datasets", "hub")
        raise type(err)(f"{name!r} is not a local file or folder, and as a hub dataset id: {err}") from exc
    split = split or "train"
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; report them all the same way
        raise DataError(f"cannot load hub dataset {name!r} split {split!r}: {exc}") from exc
    columns = list(getattr(ds, "column_names", []) or [])
    fmt = format
    if fmt == "auto":
        fmt = _sniff_keys(columns) or "jsonl"
    if fmt in ("spider", "bird"):
        raise DataError(
            f"hub dataset {name!r}: Spider/BIRD need their tables file and databases; download the "
            "dataset folder and load it with format='spider'/'bird'"
        )
    base = _PRESETS.get(fmt)
    cmap = ColumnMapping.coerce(mapping, base)
    label = f"{name}[{split}]"
    prefix = re.sub(r"[^\w.-]+", "-", name.rsplit("/", 1)[-1]) + f"-{split}"
    conv = _Converter(cmap, base_dir=None, id_prefix=prefix, dialect=dialect)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return _convert_all(((f"{label} row {i}", row) for i, row in enumerate(ds)), conv, limit=limit)
