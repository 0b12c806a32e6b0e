"""Beyond one generation step: the execute-and-repair loop and schema linking.

- :mod:`sqltune.agent.repair` - generate, check (``analyze`` + the engine's compile step), execute
  read-only, feed the error back, up to N rounds; optional self-consistency voting.
- :mod:`sqltune.agent.linking` - pick the tables a question is about (lexical and value matching, an
  embedding hook) when a schema exceeds the prompt budget or when asked.
- :mod:`sqltune.agent.local` - a model loaded in this process as the loop's generate function (torch).

Serving (``/v1/sql``), ``sqltune ask`` and evaluation use this same code. Importing this package loads
neither torch nor ray.
"""

from __future__ import annotations

from sqltune.agent.linking import Embedder, LinkResult, ValueIndex, gold_tables, link_schema, sample_values
from sqltune.agent.repair import (
    MAX_CANDIDATES,
    MAX_ROUNDS,
    Candidate,
    Generated,
    RepairConfig,
    RepairResult,
    RepairSession,
    Round,
    Sampling,
    Target,
    check_candidate,
    repair,
    repair_many,
    target_for,
)

__all__ = [
    "MAX_CANDIDATES",
    "MAX_ROUNDS",
    "Candidate",
    "Embedder",
    "Generated",
    "LinkResult",
    "RepairConfig",
    "RepairResult",
    "RepairSession",
    "Round",
    "Sampling",
    "Target",
    "ValueIndex",
    "check_candidate",
    "gold_tables",
    "link_schema",
    "repair",
    "repair_many",
    "sample_values",
    "target_for",
]
