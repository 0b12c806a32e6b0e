"""Splits: deterministic (any input order), stratified, disjoint, group-aware."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sqltune.data import Example, Splits, load_dataset, split_examples
from sqltune.data.splits import evidence_bucket
from sqltune.errors import ConfigError

CATEGORIES = {"aggregate": 60, "join": 40, "filter": 30, "window": 12, "rare": 2}


def _examples() -> list[Example]:
    out = []
    n = 0
    for cat, count in CATEGORIES.items():
        for i in range(count):
            n += 1
            out.append(
                Example(
                    id=f"ex-{n:04d}",
                    question=f"{cat} question {i}",
                    schema="CREATE TABLE t (a INT);",
                    sql=f"SELECT {i} FROM t",
                    category=cat,
                    difficulty=["easy", "medium", "hard"][i % 3],
                    evidence=" ".join(["w"] * (i % 30)) or None,
                    extra={"template_key": f"{cat}-t{i % 5}"},
                )
            )
    return out


def _ids(splits: Splits) -> list[list[str]]:
    return [[e.id for e in part] for part in splits]


def test_deterministic_regardless_of_input_order():
    exs = _examples()
    base = split_examples(exs, seed=7)
    shuffled = exs[:]
    random.Random(1).shuffle(shuffled)
    assert _ids(split_examples(shuffled, seed=7)) == _ids(base)
    assert _ids(split_examples(list(reversed(exs)), seed=7)) == _ids(base)
    assert _ids(split_examples(exs, seed=8)) != _ids(base)  # the seed matters


def test_disjoint_complete_and_proportional():
    exs = _examples()
    splits = split_examples(exs, ratios=(0.8, 0.1, 0.1), seed=0)
    ids = _ids(splits)
    flat = [i for part in ids for i in part]
    assert len(flat) == len(set(flat)) == len(exs)
    sizes = splits.sizes()
    assert sizes["train"] == pytest.approx(0.8 * len(exs), abs=len(CATEGORIES))
    assert sizes["validation"] == pytest.approx(0.1 * len(exs), abs=len(CATEGORIES))
    assert splits["test"] is splits.test


def test_stratified_by_category():
    splits = split_examples(_examples(), seed=3)
    for name, part in zip(("train", "validation", "test"), splits):
        counts = Counter(e.category for e in part)
        for cat, total in CATEGORIES.items():
            if total * 0.1 >= 1:  # large enough to have one in every split
                assert counts[cat] >= 1, (name, cat)
    # each category keeps its proportion in train
    train = Counter(e.category for e in splits.train)
    for cat, total in CATEGORIES.items():
        assert abs(train[cat] - 0.8 * total) <= 1


def test_stratify_difficulty_and_evidence_length():
    exs = _examples()
    for stratify, label in (("difficulty", lambda e: e.difficulty), ("evidence_length", evidence_bucket)):
        splits = split_examples(exs, stratify=stratify, seed=1)
        labels = Counter(label(e) for e in exs)
        for part, share in zip(splits, (0.8, 0.1, 0.1)):
            got = Counter(label(e) for e in part)
            for key, total in labels.items():
                assert abs(got[key] - share * total) <= 1, (stratify, key)
    assert {evidence_bucket(e) for e in exs} == {"none", "short", "medium", "long"}


def test_group_by_keeps_groups_together():
    exs = _examples()
    for group_by in ("template_key", "extra.template_key", lambda e: e.extra["template_key"]):
        splits = split_examples(exs, seed=5, group_by=group_by)
        where = {}
        for name, part in zip(("train", "validation", "test"), splits):
            for e in part:
                key = e.extra["template_key"]
                assert where.setdefault(key, name) == name, key
        assert len(set(where.values())) == 3
    # duplicate question texts never cross splits
    dupes = exs + [Example(id=f"dup-{e.id}", question=e.question, schema=e.schema, sql=e.sql, category=e.category) for e in exs[:50]]
    splits = split_examples(dupes, group_by="question")
    seen = {}
    for idx, part in enumerate(splits):
        for e in part:
            assert seen.setdefault(e.question, idx) == idx


def test_zero_ratio_and_no_stratify():
    splits = split_examples(_examples(), ratios=(0.9, 0.0, 0.1), stratify="none")
    assert splits.validation == []
    assert len(splits.train) == 130 and len(splits.test) == 14


def test_bad_arguments():
    with pytest.raises(ConfigError, match="ratios"):
        split_examples(_examples(), ratios=(0.5, 0.2, 0.2))
    with pytest.raises(ConfigError, match="stratify='db'"):
        split_examples(_examples(), stratify="db")  # type: ignore[arg-type]


def test_spider_split_by_database(spider_dir):
    exs = load_dataset(spider_dir)
    a = split_examples(exs, stratify="difficulty", group_by="db_id", seed=0)
    b = split_examples(list(reversed(exs)), stratify="difficulty", group_by="db_id", seed=0)
    assert _ids(a) == _ids(b)
    dbs = [{e.extra["db_id"] for e in part} for part in a]
    assert not (dbs[0] & dbs[1]) and not (dbs[0] & dbs[2]) and not (dbs[1] & dbs[2])
    assert sum(len(p) for p in a) == 1034
