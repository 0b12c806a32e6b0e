from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sqltune.data.record import Example
from sqltune.errors import ConfigError, DataError
from sqltune.prompts import (
    IGNORE_INDEX,
    PromptTemplate,
    build_messages,
    build_pair,
    clean_sql,
    render_prompt,
    tokenize_for_training,
)

CASES = yaml.safe_load((Path(__file__).parent / "fixtures" / "clean" / "cases.yaml").read_text())
EX = Example(
    id="e1",
    question="How many orders were shipped?",
    schema="CREATE TABLE orders (order_id INTEGER PRIMARY KEY, status TEXT)",
    sql="SELECT COUNT(*) FROM orders WHERE status = 'shipped'",
    evidence="shipped means status = 'shipped'",
)


@pytest.mark.parametrize("case", CASES, ids=[c["raw"][:30] for c in CASES])
def test_clean_sql(case):
    out = clean_sql(case["raw"])
    assert out.sql == case["sql"]
    assert out.cleaned is case["cleaned"]


def test_messages_strict_and_plain():
    strict = build_messages(EX.question, EX.schema, dialect="postgres", evidence=EX.evidence)
    assert strict[0]["role"] == "system" and "PostgreSQL" in strict[0]["content"]
    assert "SQL only" in strict[0]["content"]
    assert "Hint: shipped means" in strict[1]["content"] and EX.schema in strict[1]["content"]
    plain = build_messages(EX.question, EX.schema, template=PromptTemplate(mode="plain"))
    assert "SQL only" not in plain[0]["content"]
    with pytest.raises(DataError, match="question is empty"):
        build_messages("  ", EX.schema)


def test_template_round_trip_and_errors(tmp_path):
    t = PromptTemplate(mode="plain")
    t.save(tmp_path)
    assert PromptTemplate.load(tmp_path) == t
    (tmp_path / "prompt_template.json").write_text('{"mode": "loud"}')
    with pytest.raises(ConfigError, match="mode 'loud': choose 'strict' or 'plain'"):
        PromptTemplate.load(tmp_path)
    with pytest.raises(ConfigError, match="carries no prompt template"):
        PromptTemplate.load(tmp_path / "missing")


def test_chat_template_render(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = render_prompt(tok, build_messages(EX.question, EX.schema))
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    pair = build_pair(EX, tok)
    assert pair.target == EX.sql + "<|im_end|>"


def test_loss_mask_covers_sql_only(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    item = tokenize_for_training(EX, tok)
    ids, labels = item["input_ids"], item["labels"]
    assert len(ids) == len(labels)
    supervised = [i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    # Exactly the SQL plus the end-of-turn token carry loss, and they come last.
    assert tok.decode(supervised) == EX.sql + "<|im_end|>"
    first = labels.index(next(lab for lab in labels if lab != IGNORE_INDEX))
    assert all(lab == IGNORE_INDEX for lab in labels[:first])
    assert all(lab != IGNORE_INDEX for lab in labels[first:])
    assert tok.decode(ids[:first]) == build_pair(EX, tok).prompt
    assert tokenize_for_training(EX, tok, max_length=10) is None
