"""The dataset spec training and evaluation share, and the split contract between the two jobs."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqltune.config import load_config
from sqltune.data import Example
from sqltune.data.spec import SPLIT_FIELDS, DatasetSpec, load_examples, split_identity
from sqltune.errors import ConfigError
from sqltune.evaluation.config import DatasetConfig, EvalConfig
from sqltune.evaluation.run import load_eval_examples
from sqltune.train.config import DataConfig, TrainConfig
from sqltune.train.run import load_splits

FIXTURES = Path(__file__).parent / "fixtures"
CATEGORIES = ("join", "aggregate", "filter", "window")


def _examples(n: int = 203) -> list[Example]:
    return [
        Example(
            id=f"ex-{i:04d}",
            question=f"question {i}",
            schema="CREATE TABLE t (a INT)",
            sql=f"SELECT {i}",
            category=CATEGORIES[i % len(CATEGORIES)],
        )
        for i in range(n)
    ]


def _jsonl(tmp_path: Path, examples: list[Example]) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in examples))
    return path


# ------------------------------------------------------------------------------------ split contract


@pytest.mark.parametrize("stratify", ["category", "none"])
@pytest.mark.parametrize("ratios", [[0.8, 0.1, 0.1], [0.5, 0.0, 0.5], [0.34, 0.33, 0.33]])
def test_partition_is_disjoint_complete_and_order_free(stratify, ratios):
    examples = _examples()
    spec = DatasetSpec(split_ratios=ratios, split_seed=3, stratify=stratify)
    splits = spec.partition(examples)
    ids = [[e.id for e in part] for part in splits]
    assert sum(len(part) for part in ids) == len(examples)
    assert set().union(*map(set, ids)) == {e.id for e in examples}
    assert not set(ids[0]) & set(ids[1]) and not set(ids[0]) & set(ids[2]) and not set(ids[1]) & set(ids[2])
    shuffled = examples[:]
    random.Random(1).shuffle(shuffled)
    assert [[e.id for e in part] for part in spec.partition(shuffled)] == ids
    for part, ratio in zip(splits, ratios):
        assert abs(len(part) - ratio * len(examples)) <= len(CATEGORIES)
    if ratios[1] == 0:
        assert splits.validation == []


def test_partition_keeps_each_stratum_share():
    splits = DatasetSpec(split_ratios=[0.5, 0.25, 0.25]).partition(_examples(400))
    for part, share in zip(splits, (0.5, 0.25, 0.25)):
        for category in CATEGORIES:
            assert sum(e.category == category for e in part) == pytest.approx(100 * share, abs=1)


def test_partition_depends_on_the_seed():
    examples = _examples()
    a = DatasetSpec(split_seed=0).partition(examples).test
    b = DatasetSpec(split_seed=1).partition(examples).test
    assert {e.id for e in a} != {e.id for e in b}


def test_training_and_evaluation_share_the_test_split(tmp_path):
    """The training job's data section and the evaluation job's dataset section, given the same values,
    are one spec: evaluation scores exactly the test split training held out."""
    source = _jsonl(tmp_path, _examples())
    shared = {
        "source": str(source),
        "format": "jsonl",
        "split_ratios": [0.7, 0.1, 0.2],
        "split_seed": 5,
        "stratify": "category",
    }
    train_cfg = TrainConfig.from_dict({"model": {"base": "m"}, "output_uri": str(tmp_path), "data": shared})
    eval_cfg = EvalConfig.from_dict(
        {
            "eval_name": "e",
            "output_uri": str(tmp_path),
            "variants": [{"name": "v", "kind": "merged", "model": "m"}],
            "dataset": {**shared, "split": "test"},
        }
    )
    assert isinstance(train_cfg.data, DatasetSpec) and isinstance(eval_cfg.dataset, DatasetSpec)
    assert split_identity(train_cfg.data) == split_identity(eval_cfg.dataset)
    train, validation, held_out, _ = load_splits(train_cfg)  # what jobs.train trains and validates on
    scored, info = load_eval_examples(eval_cfg.dataset)  # what jobs.evaluate scores
    assert [e.id for e in scored] == [e.id for e in held_out] and len(scored) == 40
    assert not {e.id for e in scored} & {e.id for e in train + validation}
    assert info["n_total"] == 203


def test_split_fields_are_spec_fields():
    names = set(DatasetSpec.__dataclass_fields__)
    assert set(SPLIT_FIELDS) <= names
    # both jobs' sections carry every field of the spec, under the same keys
    assert names <= set(DataConfig.__dataclass_fields__) and names <= set(DatasetConfig.__dataclass_fields__)


# --------------------------------------------------------------------------------------- the keys


def test_moved_key_names_its_new_spelling():
    with pytest.raises(ConfigError, match=r"data\.split: unknown key \(did you mean 'source_split'\?"):
        load_config(TrainConfig, None, ["model.base=m", "output_uri=/tmp/x", "data.split=train"])
    cfg = load_config(TrainConfig, None, ["model.base=m", "output_uri=/tmp/x", "data.source_split=train"])
    assert cfg.data.source_split == "train"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("split_ratios=[0.5,0.5]", r"split_ratios: \[0\.5, 0\.5\] must be three non-negative fractions"),
        ("split_ratios=[0.5,0.4,0.4]", r"split_ratios: .* must sum to 1"),
        ("stratify=topic", r"stratify: 'topic' is not a valid choice"),
        ("format=xml", r"format: 'xml' is not a valid choice"),
    ],
)
def test_bad_spec_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DatasetSpec, None, [override])


# --------------------------------------------------------------------------------- databases_dir


def test_databases_dir_points_at_databases_outside_the_dataset(tmp_path):
    root = tmp_path / "bird"
    shutil.copytree(FIXTURES / "bird", root)
    elsewhere = tmp_path / "dbs" / "california_schools"
    elsewhere.mkdir(parents=True)
    with sqlite3.connect(elsewhere / "california_schools.sqlite") as conn:
        conn.execute("CREATE TABLE schools (CDSCode TEXT PRIMARY KEY, County TEXT)")
    without = load_examples(DatasetSpec(source=str(root), format="bird"))
    assert all(e.db is None for e in without)
    spec = DatasetSpec(source=str(root), format="bird", databases_dir=str(tmp_path / "dbs"))
    examples = load_examples(spec)
    assert len(examples) == len(without) == 4
    assert {e.db for e in examples} == {str(elsewhere / "california_schools.sqlite")}
