"""Raw records of JSONL, JSON, CSV/TSV and Parquet files: ``(location, record)`` pairs whose location names
the file and the line (1-based), item or row (0-based) for error messages."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqltune.errors import DataError, missing

__all__ = ["FILE_SUFFIXES", "READERS", "file_kind", "iter_csv", "iter_json", "iter_jsonl", "iter_parquet", "read_json"]

FILE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def iter_jsonl(path: Path, label: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{label} line {line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
            yield where, obj


def read_json(path: Path, label: str) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{label} line {exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from exc


def iter_json(path: Path, label: str) -> Iterator[tuple[str, dict[str, Any]]]:
    data = read_json(path, label)
    if isinstance(data, dict):
        lists = [k for k in ("data", "examples", "rows", "items") if isinstance(data.get(k), list)]
        if not lists:
            raise DataError(f"{label}: expected a JSON list of objects (or an object with a 'data' list)")
        data = data[lists[0]]
    if not isinstance(data, list):
        raise DataError(f"{label}: expected a JSON list of objects, got {type(data).__name__}")
    for idx, obj in enumerate(data):
        where = f"{label} item {idx}"
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        yield where, obj


def iter_csv(path: Path, label: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in sample.split("\n", 1)[0] and "," not in sample.split("\n", 1)[0]) else ","
        reader = csv.DictReader(fh, delimiter=delimiter)
        if not reader.fieldnames:
            raise DataError(f"{label} line 1: the CSV file has no header row")
        start = 2
        for row in reader:
            where = f"{label} line {start}" if reader.line_num == start else f"{label} lines {start}-{reader.line_num}"
            if None in row:
                raise DataError(
                    f"{where}: has {len(reader.fieldnames) + len(row[None])} values but the header has "
                    f"{len(reader.fieldnames)} columns (unquoted comma?)"
                )
            start = reader.line_num + 1
            if not any((v or "").strip() for v in row.values()):
                continue
            yield where, {k: v for k, v in row.items()}


def iter_parquet(path: Path, label: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise missing("pyarrow", "train") from exc
    for idx, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"{label} row {idx}", row


READERS = {"jsonl": iter_jsonl, "json": iter_json, "csv": iter_csv, "parquet": iter_parquet}


def file_kind(path: Path) -> str:
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None and path.suffix.lower() == ".tsv":
        kind = "csv"
    if kind is None:
        raise DataError(
            f"{path}: cannot tell the file type from the suffix {path.suffix!r}; "
            "expected .jsonl, .json, .csv, .tsv or .parquet (or pass format=...)"
        )
    return kind
