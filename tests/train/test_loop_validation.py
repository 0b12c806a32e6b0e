"""Validation's execution accuracy: the slot-engine decoding (used on GPU for the merged copy) scores the
same as transformers' generate() (no Ray, CPU, tiny model)."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from sqltune.data.record import Example
from sqltune.prompts import PromptTemplate
from sqltune.train.config import TrainConfig
from sqltune.train.loop import Trainer


@pytest.fixture
def trainer(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (a INTEGER)")
        con.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    cfg = TrainConfig.from_dict({"model": {"base": str(tiny_model_dir)}, "eval": {"exec_examples": 3, "max_new_tokens": 10}})
    t = Trainer(cfg, {}, rank=0, world_size=1, device="cpu")
    t.tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    t.template = PromptTemplate()
    t.val_ex = [
        Example(str(i), q, "CREATE TABLE t (a INTEGER);", "SELECT COUNT(*) FROM t", db=str(db))
        for i, q in enumerate(["How many rows?", "Which values?", "x", "Count them"])
    ]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return t, model


def test_engine_and_generate_decode_and_score_alike(trainer, monkeypatch):
    t, model = trainer
    prompts = [f"Question {i}: how many rows are in t?" for i in range(5)]
    t.cfg.eval.gen_batch_size = 2  # generate() in batches of 2, the engine in 2 slots
    texts = t._decode(model, prompts)
    by_generate = t._exec_accuracy(model)
    monkeypatch.setattr(Trainer, "_use_engine", lambda self, m: True)
    assert t._decode(model, prompts) == texts and all(texts)
    by_engine = t._exec_accuracy(model)
    for key in ("eval_exec_accuracy", "eval_parseable"):
        assert by_engine[key] == by_generate[key]
    assert by_engine["eval_generate_seconds"] > 0


def test_engine_is_for_the_merged_copy_on_gpu_only(trainer):
    t, model = trainer
    assert not t._use_engine(model)  # CPU: the training model decodes with generate()
    t.device = "cuda"
    assert t._use_engine(model)
    t.cfg.eval.engine = False
    assert not t._use_engine(model)
