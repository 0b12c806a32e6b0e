"""Per-example metrics from fixture files: cleaning, parse, exact, AST, execution on every engine, ROUGE-L."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from sqltune.data import Example
from sqltune.evaluation.metrics import check_gold, lcs_length, rouge_l, score_example, sql_tokens

from eval_helpers import FIXTURES, SHOP_SCHEMA

CASES = yaml.safe_load((FIXTURES / "metric_cases.yaml").read_text())
HOSTILE = yaml.safe_load((FIXTURES / "hostile.yaml").read_text())
ROUGE = yaml.safe_load((FIXTURES / "rouge_cases.yaml").read_text())
TOKENS = yaml.safe_load((FIXTURES / "tokens.yaml").read_text())


def _example(gold: str, engine: str, db: str | None, id_: str = "ex") -> Example:
    return Example(id=id_, question="q?", schema=SHOP_SCHEMA, sql=gold, dialect=engine, db=db, category="cat")


def _fingerprint(engine: str, db: str) -> str:
    """sha256 of a database file, or of a full dump of the PostgreSQL database's tables."""
    if engine != "postgres":
        return hashlib.sha256(Path(db).read_bytes()).hexdigest()
    import psycopg

    h = hashlib.sha256()
    with psycopg.connect(db) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")]
        h.update(repr(tables).encode())
        for t in tables:
            h.update(repr(conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall()).encode())
    return h.hexdigest()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_metric_cases_on_every_engine(case, shop_db):
    engine, db = shop_db
    ex = _example(case["gold"], engine, db)
    gold = check_gold(ex)
    assert gold is not None and gold.ok, gold
    s = score_example(variant="v", example=ex, raw_output=case["raw"], gold=gold)
    d = s.to_dict()
    for key, want in case["expect"].items():
        assert d[key] == pytest.approx(want) if isinstance(want, float) else d[key] == want, (
            f"{case['name']} on {engine}: {key} = {d[key]!r}, expected {want!r} (error: {s.error})")
    if s.exec_match:
        assert s.hybrid == 1.0
    elif s.read_only_violation:
        assert s.hybrid == 0.0
    else:
        assert s.hybrid == pytest.approx(0.7 * s.rouge_l)
    assert s.rouge_l == pytest.approx(rouge_l(s.cleaned_sql, case["gold"]))


@pytest.mark.parametrize("case", HOSTILE, ids=[c["raw"][:30] for c in HOSTILE])
def test_hostile_outputs_score_zero_and_change_nothing(case, shop_db, tmp_path):
    engine, db = shop_db
    before = _fingerprint(engine, db)
    files_before = set(os.listdir(Path(db).parent)) if engine != "postgres" else set()
    ex = _example("SELECT name FROM customers", engine, db)
    s = score_example(variant="v", example=ex, raw_output=case["raw"], gold=check_gold(ex))
    assert s.exec_match is False and s.hybrid == 0.0 and not s.exact
    allowed = case["category"] if isinstance(case["category"], list) else [case["category"]]
    assert s.error_category in allowed, s.error
    assert _fingerprint(engine, db) == before
    if engine != "postgres":
        assert set(os.listdir(Path(db).parent)) == files_before  # no file created beside it
    assert not Path("/tmp/sqltune-evil.db").exists() and not Path("/tmp/sqltune-evil.csv").exists()


def test_gold_failure_is_flagged_not_scored(tmp_path):
    from eval_helpers import build_shop

    db = build_shop("sqlite", tmp_path)
    ex = _example("SELECT no_such_column FROM customers", "sqlite", db)
    gold = check_gold(ex)
    assert gold is not None and not gold.ok and "unknown_identifier" in gold.error
    s = score_example(variant="v", example=ex, raw_output="SELECT name FROM customers", gold=gold)
    assert s.gold_failed and s.error_category == "gold_failed" and s.gold_error


def test_without_database_falls_back_to_ast_equivalence():
    ex = _example("SELECT name FROM customers WHERE country = 'Germany'", "sqlite", None)
    assert check_gold(ex, context_db=False) is None
    # By default the schema's CREATE TABLE context becomes an in-memory database (empty tables here).
    on_context = check_gold(ex)
    assert on_context.ok and on_context.result.engine == "sqlite-context" and on_context.result.rows == []
    ok = score_example(variant="v", example=ex, raw_output="SELECT name FROM customers WHERE 'Germany' = country",
                       gold=None)
    assert ok.exec_match is None and ok.ast_equal and ok.error_category is None and ok.hybrid == 1.0
    bad = score_example(variant="v", example=ex, raw_output="SELECT email FROM customers", gold=None)
    assert bad.error_category == "unknown_identifier" and bad.hybrid == pytest.approx(0.7 * bad.rouge_l)


@pytest.mark.parametrize("case", ROUGE, ids=[f"{c['pred'][:20]}|{c['gold'][:20]}" for c in ROUGE])
def test_rouge_l_hand_computed(case):
    assert lcs_length(sql_tokens(case["pred"]), sql_tokens(case["gold"])) == case["lcs"]
    assert rouge_l(case["pred"], case["gold"]) == pytest.approx(case["f1"], abs=1e-9)


@pytest.mark.parametrize("case", TOKENS, ids=[c["sql"][:30] for c in TOKENS])
def test_sql_tokens(case):
    assert sql_tokens(case["sql"]) == case["tokens"]


def test_lcs_basics():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example
    assert lcs_length([], ["a"]) == 0
    assert rouge_l("", "") == 1.0
