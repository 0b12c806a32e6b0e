"""sqltune.train.augment: literal-swapped training copies."""

from __future__ import annotations

import random
import re

import pytest

from sqltune.data.record import Example
from sqltune.train.augment import augment_examples, copied_literals, swap_literals

SCHEMA = "CREATE TABLE customers (name TEXT, country TEXT, segment TEXT, signup_date TEXT);"


def ex(question: str, sql: str, i: int = 0) -> Example:
    return Example(id=f"e{i}", question=question, schema=SCHEMA, sql=sql, extra={"sql_by_dialect": {"x": sql}})


EXAMPLES = [
    ex("How many SMB customers are from Poland in 2024?",
       "SELECT COUNT(*) FROM customers WHERE country = 'Poland' AND segment = 'SMB' "
       "AND CAST(strftime('%Y', signup_date) AS INTEGER) = 2024", 0),
    ex("Count the orders of the customer Felix Ricci.",
       "SELECT COUNT(*) FROM customers c JOIN orders o ON o.customer_id = c.customer_id WHERE c.name = 'Felix Ricci'", 1),
    ex("List customers who joined between 2023-01-01 and 2023-03-31 with a score above 0.7.",
       "SELECT name FROM customers WHERE signup_date BETWEEN '2023-01-01' AND '2023-03-31' AND score > 0.7 "
       "AND status = 'completed'", 2),
    ex("Which customers live in Italy? Show the top 5.", "SELECT name FROM customers WHERE country = 'Italy' LIMIT 5", 3),
    ex("Count the orders of the customer Laura Kim.",
       "SELECT COUNT(*) FROM customers c JOIN orders o ON o.customer_id = c.customer_id WHERE c.name = 'Laura Kim'", 4),
    ex("How many Enterprise customers live in Japan or Brazil?",
       "SELECT COUNT(*) FROM customers WHERE segment = 'Enterprise' AND country IN ('Japan', 'Brazil')", 5),
]


def test_copied_literals_are_those_the_question_contains():
    found = {v for _, _, v, _ in copied_literals(EXAMPLES[0])}
    assert found == {"Poland", "SMB", "2024"}  # '%Y' is the SQL's own
    found = {v for _, _, v, _ in copied_literals(EXAMPLES[2])}
    assert found == {"2023-01-01", "2023-03-31", "0.7"}  # 'completed' is not in the question
    # '2023' inside '2023-01-01' is not a value of its own; nor is a number glued to a word.
    assert copied_literals(ex("Orders in 2023-01?", "SELECT 1 WHERE y = 2023")) == []


@pytest.mark.parametrize("i", range(len(EXAMPLES)))
def test_swap_replaces_each_value_in_question_and_sql_alike(i):
    """Every copied value gets a new one, the same in question and SQL; nothing else changes."""
    from sqltune.train.augment import _word_pools

    original = EXAMPLES[i]
    pools = _word_pools(EXAMPLES)
    aug = swap_literals(original, random.Random(i), pools, suffix="t")
    assert aug is not None and aug.id == f"{original.id}~t" and aug.extra == {"augmented_from": original.id}
    old = {v: n for _, _, v, n in copied_literals(original)}
    new = {v: n for _, _, v, n in copied_literals(aug)}
    assert len(new) == len(old) and not set(new) & set(old)
    for value, is_number in new.items():
        assert value in aug.question
        if is_number:
            assert re.sub(r"\d", "9", value) in {re.sub(r"\d", "9", v) for v, n in old.items() if n}
    # What is not a copied value is untouched: the SQL's own literals, the schema, the question's words.
    assert aug.schema == original.schema
    for keep in ("'%Y'", "'completed'", "SELECT", "WHERE"):
        assert (keep in aug.sql) == (keep in original.sql)
    assert aug.question.split()[0] == original.question.split()[0]


def test_strings_are_swapped_for_strings_of_the_same_word_count():
    from sqltune.train.augment import _word_pools

    pools = _word_pools(EXAMPLES)
    assert pools[2] == ["Felix Ricci", "Laura Kim"]
    aug = swap_literals(EXAMPLES[1], random.Random(0), pools, suffix="t")
    assert "Laura Kim" in aug.question and "c.name = 'Laura Kim'" in aug.sql


def test_no_swap_when_the_pool_has_no_other_value():
    assert swap_literals(EXAMPLES[3], random.Random(0), {1: ["Italy"]}, suffix="t") is None


def test_augment_is_deterministic_and_adds_copies():
    a = augment_examples(EXAMPLES, copies=2, seed=0)
    b = augment_examples(EXAMPLES, copies=2, seed=0)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert a[: len(EXAMPLES)] == EXAMPLES and len(a) == 3 * len(EXAMPLES)
    originals = {e.id: e for e in EXAMPLES}
    for copy in a[len(EXAMPLES):]:
        assert copy.question != originals[copy.extra["augmented_from"]].question
    assert augment_examples(EXAMPLES, copies=0, seed=0) == EXAMPLES


def test_load_splits_augments_the_training_split_only(tmp_path):
    import json

    from sqltune.config import load_config
    from sqltune.train.config import TrainConfig
    from sqltune.train.run import load_splits

    path = tmp_path / "data.jsonl"
    rows = [{"question": e.question.replace("customer ", f"customer #{k} "), "schema": SCHEMA, "sql": e.sql}
            for k in range(8) for e in EXAMPLES]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = load_config(TrainConfig, None, [f"data.source={path}", "model.base=x", "data.stratify=none",
                                          "data.augment_copies=1"])
    train, val, test, info = load_splits(cfg)
    assert info["train_original"] + sum(1 for e in train if "augmented_from" in e.extra) == len(train)
    assert sum(1 for e in train if "augmented_from" in e.extra) == info["train_original"]
    assert not any("augmented_from" in e.extra for e in [*val, *test])
