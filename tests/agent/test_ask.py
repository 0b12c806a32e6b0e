"""``sqltune ask`` end to end: a real (tiny, taught) model, the embedded warehouse, the console script."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from agent_helpers import COUNT_Q, COUNT_SQL, REPAIR_Q, RIGHT_SQL, WRONG_SQL, linked_schema

from sqltune.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


def ask(*args: str) -> list[str]:
    return ["ask", *args]


def test_ask_answers_against_the_embedded_warehouse(ask_model, warehouse, capsys):
    code = main(ask(COUNT_Q, "--model", str(ask_model), "--db", str(warehouse.sqlite_path), "--link", "always",
                    "--execute", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["sql"] == COUNT_SQL.rstrip(";")
    assert out["valid"] and out["read_only"] and out["passed"] and out["rounds_used"] == 0
    conn = sqlite3.connect(warehouse.sqlite_path)
    expected = conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0]
    conn.close()
    assert out["columns"] == ["COUNT(*)"] and out["rows"] == [[expected]]
    assert out["linking"]["tables"] == ["customers"] and out["linking"]["total_tables"] == 7


def test_ask_with_tables_prompts_only_those_tables(ask_model, warehouse, capsys):
    """--tables puts the named tables of --db in the prompt (as /v1/sql's tables): the schema the model was
    taught with, so it answers without linking."""
    code = main(ask(COUNT_Q, "--model", str(ask_model), "--db", str(warehouse.sqlite_path), "--tables", " customers ,",
                    "--link", "never", "--execute", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["sql"] == COUNT_SQL.rstrip(";") and out["passed"] and "linking" not in out
    assert out["columns"] == ["COUNT(*)"] and len(out["rows"]) == 1


def test_ask_repairs_an_unknown_column_through_the_console_script(ask_model, warehouse):
    exe = Path(sys.executable).with_name("sqltune")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sqltune.cli"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "libs"),
                                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [*cmd, "ask", REPAIR_Q, "--model", str(ask_model), "--db", str(warehouse.sqlite_path), "--link", "always",
         "--execute"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == RIGHT_SQL.rstrip(";")
    assert "valid: yes   read-only: yes   status: ok   repair rounds: 1" in proc.stdout
    assert f"round 0: unknown_identifier: no such column: nme  [{WRONG_SQL.rstrip(';')}]" in proc.stdout
    assert "name" in lines[lines.index(next(x for x in lines if x.startswith("name")))]
    assert proc.stdout.rstrip().endswith("rows)")


def test_ask_without_repair_keeps_the_first_answer(ask_model, warehouse, capsys):
    code = main(ask(REPAIR_Q, "--model", str(ask_model), "--db", str(warehouse.sqlite_path), "--link", "always",
                    "--max-rounds", "0", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # the final SQL did not pass its checks
    assert out["sql"] == WRONG_SQL.rstrip(";") and out["status"] == "unknown_identifier"
    assert out["valid"] and out["read_only"] and "rows" not in out


def test_ask_with_a_schema_file_checks_without_a_database(ask_model, warehouse, tmp_path, capsys):
    schema = tmp_path / "schema.sql"
    schema.write_text(linked_schema(warehouse, COUNT_Q))
    code = main(ask(COUNT_Q, "--model", str(ask_model), "--schema", str(schema)))
    text = capsys.readouterr().out
    assert code == 0
    assert text.splitlines()[0] == COUNT_SQL.rstrip(";")
    assert "valid: yes   read-only: yes   status: ok" in text


def test_max_new_tokens_limits_the_answer(ask_model, warehouse, capsys):
    """--max-new-tokens reaches the decoder: two tokens cut the taught answer short."""
    code = main(ask(COUNT_Q, "--model", str(ask_model), "--db", str(warehouse.sqlite_path), "--link", "always",
                    "--max-rounds", "0", "--max-new-tokens", "2", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and not out["passed"]
    assert out["sql"] and COUNT_SQL.startswith(out["sql"]) and len(out["sql"]) < len(COUNT_SQL.rstrip(";"))


def test_the_default_generation_limit_fits_the_longest_embedded_gold_query():
    """--max-new-tokens' default (and LocalModel's) leaves room for every gold query of the embedded set,
    in every dialect, plus the end-of-turn token, in the tokenizer of the demo's model; so does the demo's
    evaluation limit (jobs/configs/eval-tiny.yaml, SQLite)."""
    import inspect

    from sqltune.agent.local import DEFAULT_MAX_NEW_TOKENS, LocalModel
    from sqltune.cli import build_parser
    from sqltune.config import load_config
    from sqltune.data.embedded import embedded_examples
    from sqltune.evaluation import EvalConfig
    from sqltune.models.tiny import TinyModelConfig, default_corpus, train_tokenizer

    root = Path(__file__).resolve().parents[2]
    base = load_config(TinyModelConfig, root / "jobs/configs/tiny-base.yaml")
    tok = train_tokenizer(default_corpus(base.seed), base.vocab_size)
    evaluation = load_config(EvalConfig, root / "jobs/configs/eval-tiny.yaml")

    def tokens(sql: str) -> int:
        return len(tok(sql, add_special_tokens=False)["input_ids"])

    examples = embedded_examples(seed=evaluation.dataset.embedded_seed)
    longest = max(tokens(sql) for ex in examples for sql in [ex.sql, *ex.extra.get("sql_by_dialect", {}).values()])
    longest_sqlite = max(tokens(ex.sql) for ex in examples if ex.dialect == "sqlite")
    assert longest + 1 <= DEFAULT_MAX_NEW_TOKENS, longest
    assert longest_sqlite + 1 <= evaluation.generation.max_new_tokens, longest_sqlite
    args = build_parser(["ask"]).parse_args(["ask", "q", "--model", "m", "--db", "d"])
    assert args.max_new_tokens == DEFAULT_MAX_NEW_TOKENS
    assert inspect.signature(LocalModel).parameters["max_new_tokens"].default == DEFAULT_MAX_NEW_TOKENS


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--db", "{tmp}/missing.sqlite"], "--db: cannot open '{tmp}/missing.sqlite'"),
        (["--db", "{tmp}/garbage.sqlite"], "--db: cannot open '{tmp}/garbage.sqlite'"),
        (["--db", "postgresql://nobody@127.0.0.1:1/none"], "--db: cannot open 'postgresql://nobody@127.0.0.1:1/none'"),
        (["--schema", "{tmp}/nothing.sql"], "--schema: '{tmp}/nothing.sql' is not a file"),
        (["--schema", "{tmp}/schema.sql", "--execute"], "--execute needs --db"),
        (["--db", "{db}", "--max-rounds", "9"], "--max-rounds: 9 is above the maximum 5"),
        (["--db", "{db}", "--candidates", "0"], "--candidates: 0 is below the minimum 1"),
        (["--db", "{db}", "--timeout", "0"], "--timeout: 0.0 is below the minimum 0.1"),
        (["--db", "{db}", "--dialect", "oracle"], "--dialect: unknown SQL dialect 'oracle'"),
        (["--db", "{db}", "--tables", "customers,nope"], "--tables: unknown table(s) 'nope'; the database has: "
                                                         "customers, orders"),
        (["--db", "{db}", "--tables", " , "], "--tables: name at least one table"),
        (["--schema", "{tmp}/schema.sql", "--tables", "t"], "--tables needs --db"),
        (["--db", "{db}", "--max-new-tokens", "0"], "--max-new-tokens: 0 is below the minimum 1"),
    ],
)
def test_bad_input_is_a_clear_error(extra, message, tmp_path, shop_sqlite, capsys):
    (tmp_path / "garbage.sqlite").write_bytes(b"this is not a database" * 10)
    (tmp_path / "schema.sql").write_text("CREATE TABLE t (a INTEGER);")
    fill = {"tmp": str(tmp_path), "db": str(shop_sqlite)}
    args = [a.format(**fill) for a in extra]
    code = main(ask("How many?", "--model", str(tmp_path / "no-model"), *args))
    err = capsys.readouterr().err
    assert code == 2
    assert message.format(**fill) in err
    assert "Traceback" not in err


def test_an_empty_question_is_refused(tmp_path, shop_sqlite, capsys):
    assert main(ask("  ", "--model", str(tmp_path), "--db", str(shop_sqlite))) == 2
    assert "the question is empty" in capsys.readouterr().err


def test_text_output_shows_every_round_but_the_final_one():
    """With no round passing, the final SQL may be an earlier round's (an empty result beats later syntax
    errors): every other round is listed, the last one included, and the output says which one is final."""
    from sqltune.ask import render_text

    rounds = [{"round": 0, "sql": "SELECT a FROM t WHERE b = 'x'", "status": "empty",
               "error": "the query ran but returned no rows"},
              {"round": 1, "sql": "SELECT FROM", "status": "syntax", "error": "near FROM"},
              {"round": 2, "sql": "SELECT ,", "status": "syntax", "error": "near ,"}]
    out = {"sql": rounds[0]["sql"], "valid": True, "read_only": True, "status": "empty", "rounds_used": 2,
           "latency_ms": 5.0, "error": rounds[0]["error"], "final_round": 0, "rounds": rounds,
           "columns": ["a"], "rows": [], "truncated": False}
    text = render_text(out, show_rows=True)
    assert "round 0:" not in text
    assert "round 1: syntax: near FROM  [SELECT FROM]" in text and "round 2: syntax: near ,  [SELECT ,]" in text
    assert "final SQL: round 0's" in text
    last = render_text({**out, "sql": "SELECT ,", "status": "syntax", "error": "near ,", "final_round": 2},
                       show_rows=False)
    assert "round 0: empty" in last and "round 1: syntax" in last and "round 2:" not in last
    assert "final SQL" not in last
