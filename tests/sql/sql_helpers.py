"""Constants shared by the sqltune.sql tests (a module with a unique name, importable from test files)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"

# t(a, b) plus a few typed tables for execution_match.
ROWS_T = [(1, "x"), (2, "y"), (3, None)]
