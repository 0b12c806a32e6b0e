"""scripts/mutate_sandbox.py still finds every guard of the SQL sandbox, and docs/testing.md records a run of
every one of its mutations (the run itself is not part of the suite: ~10 minutes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("mutate_sandbox", ROOT / "scripts" / "mutate_sandbox.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def test_every_guard_is_located_exactly_once_and_every_required_guard_is_mutated():
    assert _script().check() == []


def test_a_pattern_that_no_longer_matches_is_reported():
    script = _script()
    sources = {path: text.replace("SET TRANSACTION READ ONLY", "SET TRANSACTION  READ ONLY")
               for path, text in script._sources(script.LIB).items()}
    problems = script.check(sources)
    assert any(p.startswith("pg-read-only-transaction:") for p in problems), problems


def test_docs_record_every_mutation_as_caught():
    text = (ROOT / "docs" / "testing.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`sqltune/" in line]
    for m in _script().MUTATIONS:
        row = next((r for r in rows if f"| {m.guard} | {m.what} |" in r), None)
        assert row is not None, f"docs/testing.md has no row for {m.id}: run scripts/mutate_sandbox.py"
        assert "| caught" in row, row
