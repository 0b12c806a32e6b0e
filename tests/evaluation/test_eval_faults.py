"""Faults that must never change what the evaluation counts: a missing database, an endpoint failing some
requests, output holding two statements; each through the real job (local Ray, HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sqltune.errors import MissingDatabaseError
from sqltune.evaluation import EvalConfig, run_evaluation
from sqltune.evaluation.run import setup

from canned_server import CannedServer
from eval_helpers import build_shop

pytestmark = pytest.mark.ray

SHOP_TABLES = {
    "db_id": "shop",
    "table_names_original": ["customers"],
    "column_names_original": [[-1, "*"], [0, "customer_id"], [0, "name"], [0, "country"]],
    "column_types": ["text", "number", "text", "text"],
    "primary_keys": [1],
    "foreign_keys": [],
}


def _spider_folder(tmp_path: Path) -> Path:
    """A Spider-shaped folder: dev.json with 2 questions on `shop` (its database present) and 3 on `gone`
    (in tables.json, no database), plus `broken` whose file is not a database."""
    root = tmp_path / "spider"
    (root / "database" / "shop").mkdir(parents=True)
    build_shop("sqlite", root / "database" / "shop")
    (root / "database" / "broken").mkdir()
    (root / "database" / "broken" / "broken.sqlite").write_bytes(b"this is not a database file" * 10)
    tables = [SHOP_TABLES, {**SHOP_TABLES, "db_id": "gone"}, {**SHOP_TABLES, "db_id": "broken"}]
    (root / "tables.json").write_text(json.dumps(tables))
    items = [
        {"db_id": "shop", "question": "How many customers?", "query": "SELECT count(*) FROM customers"},
        {"db_id": "shop", "question": "Names of customers?", "query": "SELECT name FROM customers"},
        *({"db_id": "gone", "question": f"Gone {i}?", "query": "SELECT 1"} for i in range(3)),
        {"db_id": "broken", "question": "Broken?", "query": "SELECT name FROM customers"},
    ]
    (root / "dev.json").write_text(json.dumps(items))
    return root


def _spider_cfg(root: Path, out: Path, url: str, **dataset) -> EvalConfig:
    return EvalConfig.from_dict({
        "eval_name": "faults", "output_uri": str(out),
        "dataset": {"source": str(root), "format": "spider", "source_split": "dev", "split": "all", **dataset},
        "variants": [{"name": "ep", "kind": "http", "url": url}],
    })


def test_missing_database_fails_before_generating(tmp_path):
    root = _spider_folder(tmp_path)
    with CannedServer({}) as server:
        cfg = _spider_cfg(root, tmp_path / "out", server.url)
        with pytest.raises(MissingDatabaseError, match=r"(?s)2 database\(s\) needed by 4 of 6 examples.*"
                           r"broken \(1 examples\): .*not a database.*gone \(3 examples\): no gone/gone.sqlite.*"
                           r"dataset.databases_dir.*dataset.exclude_missing_databases=true"):
            setup(cfg)
        assert server.requests == []  # nothing was generated
    assert not (tmp_path / "out").exists()


def test_databases_dir_points_elsewhere(tmp_path):
    root = _spider_folder(tmp_path)
    elsewhere = tmp_path / "dbs"
    (elsewhere / "gone").mkdir(parents=True)
    build_shop("sqlite", elsewhere / "gone")
    (elsewhere / "gone" / "shop.sqlite").rename(elsewhere / "gone" / "gone.sqlite")
    cfg = _spider_cfg(root, tmp_path / "out", "http://127.0.0.1:1", databases_dir=str(elsewhere))
    # shop and broken are not under databases_dir: now they are the missing ones.
    with pytest.raises(MissingDatabaseError, match=rf"(?s)broken \(1 examples\): no broken/broken.sqlite under "
                                                   rf"{elsewhere}.*shop \(2 examples\)"):
        setup(cfg)


def test_excluded_databases_are_counted_in_the_headline(local_ray, tmp_path):
    root = _spider_folder(tmp_path)
    answers = {"How many customers?": "SELECT count(*) FROM customers", "Names of customers?": "SELECT 1"}
    with CannedServer(answers) as server:
        result = run_evaluation(_spider_cfg(root, tmp_path / "out", server.url, exclude_missing_databases=True),
                                progress=False)
        asked = {r["messages"][-1]["content"].rsplit("Question: ", 1)[1] for r in server.requests}
    report = result.report
    assert asked == set(answers)  # only the examples with a database were generated
    excluded = report["dataset"]["excluded_missing_databases"]
    assert excluded["n_examples"] == 4
    assert [(d["database"], d["n_examples"]) for d in excluded["databases"]] == [("broken", 1), ("gone", 3)]
    agg = report["variants"]["ep"]["aggregate"]
    assert report["dataset"]["n"] == 2 and agg["n_exec"] == 2 and agg["exec_accuracy"] == pytest.approx(0.5)
    md = (tmp_path / "out" / "faults" / "report.md").read_text()
    assert "**4 examples excluded: their databases are missing or unreadable**" in md
    assert "`gone` (3)" in md and "`broken` (1)" in md


def _shop_jsonl(tmp_path: Path, n: int = 20) -> tuple[Path, list[dict]]:
    db = build_shop("sqlite", tmp_path)
    schema = "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, segment TEXT);"
    rows = [{"id": f"q{i:02d}", "question": f"Customers with id above {i}?",
             "sql": f"SELECT name FROM customers WHERE customer_id > {i % 4}", "schema": schema, "db": db,
             "category": "filter"} for i in range(n)]
    path = tmp_path / "shop.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_flaky_endpoint_stacked_statements_engine_syntax_long_call(local_ray, tmp_path):
    """An endpoint failing 1 request in 10 (its retries then succeed) and one question whose every request
    fails: that one example is recorded (http_error) and counted wrong, the variant goes on. An endpoint
    failing every request is reported failed for too many failed examples. `SELECT ...; DROP ...` is wrong,
    with its own category; with metrics.statements=first its first statement is scored, and the report says so.
    `... GROUP BY a WHERE ...` (sqlglot parses it, SQLite does not) is not parseable. One builtin call running
    for minutes ends at the timeout (its worker process killed) and the run goes on."""
    data, rows = _shop_jsonl(tmp_path)
    unlucky = rows[3]["question"]
    answers = {r["question"]: r["sql"] for r in rows}
    answers[rows[5]["question"]] = rows[5]["sql"] + "; DROP TABLE customers"
    answers[rows[6]["question"]] = rows[6]["sql"] + ";\n\nThis lists the names."  # prose, not a statement
    answers[rows[7]["question"]] = "SELECT name FROM customers GROUP BY name WHERE customer_id > 1"
    answers[rows[8]["question"]] = "SELECT instr(printf('%.*c', 40000000, 'a'), printf('%.*c', 100000, 'a') || 'b')"
    order = list(answers)

    def flaky(question: str, attempt: int) -> int | None:
        if question == unlucky:
            return 503
        return 503 if attempt == 1 and order.index(question) % 10 == 9 else None  # 1 request in 10

    with CannedServer(answers, fail=flaky) as server, CannedServer(answers, fail=lambda q, a: 500) as down:
        def cfg(name: str, statements: str) -> EvalConfig:
            return EvalConfig.from_dict({
                "eval_name": name, "output_uri": str(tmp_path / "out"),
                "dataset": {"source": str(data), "format": "jsonl", "split": "all"},
                "variants": [{"name": "flaky", "kind": "http", "url": server.url},
                             {"name": "down", "kind": "http", "url": down.url, "retries": 0}][: 2 if name == "all" else 1],
                "metrics": {"statements": statements, "exec_timeout_s": 1.0},
                "max_failed_fraction": 0.2,
            })

        report = run_evaluation(cfg("all", "all"), progress=False).report
        assert server.attempts[unlucky] == 3  # the default retries: 2
        first = run_evaluation(cfg("first", "first"), progress=False).report

    v = report["variants"]["flaky"]
    assert v["status"] == "ok" and v["failure"] is None
    agg = v["aggregate"]
    assert agg["n"] == 20 and agg["n_exec"] == 20 and agg["n_failed"] == 1
    assert agg["error_categories"]["http_error"] == 1 and agg["error_categories"]["multiple_statements"] == 1
    assert agg["exec_accuracy"] == pytest.approx(16 / 20)
    assert agg["parseable"] == pytest.approx(18 / 20) and agg["parseable_sqlglot"] == pytest.approx(19 / 20)
    preds = [json.loads(line) for line in (tmp_path / "out" / "all" / "predictions.jsonl").read_text().splitlines()]
    by_id = {(p["variant"], p["id"]): p for p in preds}
    bad = by_id[("flaky", rows[3]["id"])]
    assert bad["failed"] and bad["error_category"] == "http_error" and bad["exec_match"] is False
    assert "HTTP 503" in bad["error"] and "3 attempt(s)" in bad["error"]
    stacked = by_id[("flaky", rows[5]["id"])]
    assert stacked["error_category"] == "multiple_statements" and stacked["exec_match"] is False
    assert stacked["extra_statements"] == "DROP TABLE customers" and stacked["hybrid"] < 1.0
    assert by_id[("flaky", rows[6]["id"])]["exec_match"] is True
    engine_bad = by_id[("flaky", rows[7]["id"])]
    assert engine_bad["parseable_sqlglot"] is True and engine_bad["parseable_engine"] is False
    assert not engine_bad["parseable"] and engine_bad["error_category"] == "syntax" and "WHERE" in engine_bad["error"]
    long_call = by_id[("flaky", rows[8]["id"])]
    assert long_call["error_category"] == "timeout" and "worker process was killed" in long_call["error"]
    assert report["scoring"]["sandbox_worker_kills"] == 1

    down_v = report["variants"]["down"]
    assert down_v["status"] == "failed" and down_v["failure"] == "too_many_failed_examples"
    assert "20 of 20 examples failed" in down_v["error"] and "max_failed_fraction=0.2" in down_v["error"]
    assert down_v["aggregate"]["n_failed"] == 20  # scored and published, not thrown away
    assert sum(1 for p in preds if p["variant"] == "down") == 20
    md = (tmp_path / "out" / "all" / "report.md").read_text()
    assert "**down** (too many failed examples" in md
    assert "Variant flaky: 1 examples got no output" in md

    fagg = first["variants"]["flaky"]["aggregate"]
    assert "multiple_statements" not in fagg["error_categories"] and fagg["exec_accuracy"] == pytest.approx(17 / 20)
    assert fagg["multiple_statements"] == pytest.approx(1 / 20)
    assert "Only the first statement of each output is scored" in (tmp_path / "out" / "first" / "report.md").read_text()
