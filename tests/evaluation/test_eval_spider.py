"""The Spider preset on the real Spider dev set: the whole dev set is loaded, the examples of the databases
that exist are scored, the rest are excluded and counted, and the report has Spider's tables: execution
accuracy per hardness (easy/medium/hard/extra) and per database. Spider's SQLite files are not shipped, so
the test builds (empty) databases for three db_ids from tables.json."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

from sqltune.config import load_config
from sqltune.data.schema import ddl_from_tables_json
from sqltune.evaluation import EvalConfig, run_evaluation
from sqltune.sql import split_statements

from canned_server import CannedServer

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
DB_IDS = ("concert_singer", "pets_1", "orchestra")  # 127 questions, every hardness level among them


def _build_databases(spider_dir: Path, where: Path) -> None:
    tables = {t["db_id"]: t for t in json.loads((spider_dir / "tables.json").read_text())}
    for db_id in DB_IDS:
        (where / db_id).mkdir(parents=True)
        with sqlite3.connect(where / db_id / f"{db_id}.sqlite") as conn:
            for stmt in split_statements(ddl_from_tables_json(tables[db_id])):
                conn.execute(stmt)


def test_spider_preset_reports_hardness_and_database_tables(local_ray, spider_dir, tmp_path):
    dbs = tmp_path / "database"
    _build_databases(spider_dir, dbs)
    dev = json.loads((spider_dir / "dev.json").read_text())
    ours = [item for item in dev if item["db_id"] in DB_IDS]
    answers = {item["question"]: item["query"] for item in ours}
    for item in ours[::5]:
        answers[item["question"]] = "SELECT 424242"  # every fifth wrong
    with CannedServer(answers) as server:
        cfg = load_config(EvalConfig, ROOT / "jobs/configs/eval-spider.yaml", [
            f"dataset.source={spider_dir}", f"dataset.databases_dir={dbs}", "dataset.exclude_missing_databases=true",
            f"output_uri={tmp_path / 'out'}", "eval_name=spider", "generation.batch_size=64",
            f"variants=[{{name: ep, kind: http, url: '{server.url}', concurrency: 16}}]",
        ])
        assert cfg.dataset.split == "all" and cfg.dataset.source_split == "dev"
        report = run_evaluation(cfg, progress=False).report

    ds = report["dataset"]
    assert ds["n_total"] == len(dev) == 1034 and ds["n"] == len(ours) == 127
    assert ds["excluded_missing_databases"]["n_examples"] == 1034 - 127
    assert set(report["database_counts"]) == set(DB_IDS)
    assert list(report["hardness_counts"]) == ["easy", "medium", "hard", "extra"]
    assert sum(report["hardness_counts"].values()) == ds["n"] - ds["n_gold_failed"]

    # Each table's figure, recomputed from predictions.jsonl.
    out = tmp_path / "out" / "spider"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_id = {f"spider-dev-{i:05d}": item["db_id"] for i, item in enumerate(dev)}
    hard, per_db = defaultdict(list), defaultdict(list)
    for r in rows:
        if not r["gold_failed"]:
            hard[r["difficulty"]].append(r["exec_match"])
            per_db[by_id[r["id"]]].append(r["exec_match"])
    for level, matches in hard.items():
        assert report["per_hardness"][level]["ep"] == pytest.approx(sum(matches) / len(matches)), level
        assert report["hardness_counts"][level] == len(matches)
    for db_id, matches in per_db.items():
        assert report["per_database"][db_id]["ep"] == pytest.approx(sum(matches) / len(matches)), db_id
    assert 0.5 < report["variants"]["ep"]["aggregate"]["exec_accuracy"] < 1.0

    md = (out / "report.md").read_text()
    assert "**907 examples excluded: their databases are missing or unreadable**" in md
    assert "## Execution accuracy per hardness" in md and "## Execution accuracy per database" in md
    for name in (*DB_IDS, "easy", "medium", "hard", "extra"):
        assert f"| {name} |" in md, name
    assert {"hardness_accuracy.png", "database_accuracy.png"} <= set(report["files"]["plots"])
