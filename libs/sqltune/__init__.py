"""sqltune: fine-tune, evaluate and serve small text-to-SQL models on Ray and Kubernetes.

The public API is small and loaded lazily, so ``import sqltune`` never pulls in torch or ray:

- SQL: :func:`analyze`, :func:`execute`, :func:`execution_match` (``sqltune.sql``)
- data: :class:`Example`, :func:`load_dataset`, :func:`split_examples` (``sqltune.data``)
- prompts: :class:`PromptTemplate`, :func:`build_messages`, :func:`clean_sql` (``sqltune.prompts``)
- storage: :func:`publish`, :func:`fetch` (``sqltune.storage``)
- config: :class:`Config`, :func:`param`, :func:`load_config` (``sqltune.config``)
- errors: :class:`SqltuneError` and its subclasses (``sqltune.errors``)

Jobs live in ``jobs/`` (train, export, evaluate) and the server in ``serve/``; their library code is in
``sqltune.train``, ``sqltune.export``, ``sqltune.evaluation`` and ``sqltune.serving``; the greedy decoding
engines evaluation and serving share are in ``sqltune.generation``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "analyze": "sqltune.sql",
    "execute": "sqltune.sql",
    "execution_match": "sqltune.sql",
    "Example": "sqltune.data",
    "load_dataset": "sqltune.data",
    "split_examples": "sqltune.data",
    "PromptTemplate": "sqltune.prompts",
    "build_messages": "sqltune.prompts",
    "clean_sql": "sqltune.prompts",
    "publish": "sqltune.storage",
    "fetch": "sqltune.storage",
    "Config": "sqltune.config",
    "param": "sqltune.config",
    "load_config": "sqltune.config",
    "SqltuneError": "sqltune.errors",
    "ConfigError": "sqltune.errors",
    "DataError": "sqltune.errors",
    "StorageError": "sqltune.errors",
    "IntegrityError": "sqltune.errors",
    "ModelError": "sqltune.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sqltune' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
