"""Datasets: the :class:`Example` record, loaders for every supported format, schema rendering and
token budgets, deterministic stratified splits, and the dataset spec the training and evaluation jobs share."""

from __future__ import annotations

from typing import Any

from sqltune.data.loaders import ColumnMapping, load_dataset
from sqltune.data.record import Example
from sqltune.data.schema import ddl_from_database, ddl_from_tables_json, fit_schema
from sqltune.data.spec import DatasetSpec, load_examples
from sqltune.data.splits import Splits, split_examples

__all__ = [
    "Example",
    "load_dataset",
    "ColumnMapping",
    "split_examples",
    "Splits",
    "DatasetSpec",
    "load_examples",
    "ddl_from_tables_json",
    "ddl_from_database",
    "fit_schema",
]
# build_embedded (sqltune.data.embedded) is importable from here too, loaded on first access; it is
# left out of __all__ so that ``import *`` does not build the embedded generator's imports.


def __getattr__(name: str) -> Any:
    if name == "build_embedded":
        from sqltune.data.embedded import build_embedded

        return build_embedded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
