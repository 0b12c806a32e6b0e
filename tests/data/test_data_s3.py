"""s3:// sources through the real embedded S3 server (moto subprocess on loopback), never a mock."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest

from sqltune.data import load_dataset
from sqltune.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures"
BUCKET = "sqltune-data-test"


@pytest.fixture(scope="module")
def s3_root(s3_server):
    return f"{s3_server.create_bucket(BUCKET)}/{uuid.uuid4().hex[:10]}"


def test_s3_file(s3_root, tmp_path):
    from sqltune.storage import upload_file

    upload_file(FIXTURES / "gretel.jsonl", f"{s3_root}/gretel/train.jsonl")
    upload_file(FIXTURES / "generic.csv", f"{s3_root}/generic.csv")
    examples = load_dataset(f"{s3_root}/gretel/train.jsonl", cache_dir=tmp_path / "cache")
    assert examples == load_dataset(FIXTURES / "gretel.jsonl")
    assert (tmp_path / "cache" / "train.jsonl").is_file()
    csv_examples = load_dataset(
        f"{s3_root}/generic.csv", mapping={"question": "prompt", "schema": "ddl", "sql": "query", "id": "uid"}
    )
    assert [e.id for e in csv_examples] == ["q1", "q2", "q3"]
    with pytest.raises(DataError, match="no such object"):
        load_dataset(f"{s3_root}/missing.jsonl")


def test_s3_bird_folder(s3_root, tmp_path):
    from sqltune.storage import upload_file

    local = tmp_path / "bird"
    shutil.copytree(FIXTURES / "bird", local)
    db_dir = local / "dev_databases" / "california_schools"
    db_dir.mkdir(parents=True)
    with sqlite3.connect(db_dir / "california_schools.sqlite") as conn:
        conn.execute("CREATE TABLE schools (CDSCode TEXT PRIMARY KEY)")
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        upload_file(path, f"{s3_root}/bird/{path.relative_to(local).as_posix()}")
    examples = load_dataset(f"{s3_root}/bird", format="bird", cache_dir=tmp_path / "cache")
    assert len(examples) == 4
    assert examples[0].db == str(tmp_path / "cache" / "bird" / "dev_databases" / "california_schools" / "california_schools.sqlite")
    assert Path(examples[0].db).is_file()
