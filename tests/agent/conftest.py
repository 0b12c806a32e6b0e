"""Real databases for the agent tests: a small SQLite shop, the same in DuckDB, and the embedded warehouse."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

SHOP_DDL = [
    "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT)",
    "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL, status TEXT)",
]
SHOP_ROWS = [
    "INSERT INTO customers VALUES (1, 'Ada', 'UK'), (2, 'Bo', 'Sweden'), (3, 'Chen', 'China')",
    "INSERT INTO orders VALUES (10, 1, 20.0, 'shipped'), (11, 1, 5.5, 'open'), (12, 3, 12.0, 'shipped')",
]
SHOP_SCHEMA = ";\n".join(SHOP_DDL) + ";"


def build_shop(path: Path) -> Path:
    if path.suffix == ".duckdb":
        import duckdb

        conn = duckdb.connect(str(path))
        for stmt in SHOP_DDL + SHOP_ROWS:
            conn.execute(stmt)
        conn.close()
        return path
    conn = sqlite3.connect(path)
    for stmt in SHOP_DDL + SHOP_ROWS:
        conn.execute(stmt)
    conn.commit()
    conn.close()
    return path


@pytest.fixture()
def shop_sqlite(tmp_path: Path) -> Path:
    return build_shop(tmp_path / "shop.sqlite")


@pytest.fixture()
def shop_duckdb(tmp_path: Path) -> Path:
    return build_shop(tmp_path / "shop.duckdb")


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory):
    """The embedded dataset (warehouse.sqlite/.duckdb and its examples)."""
    from sqltune.data.embedded import build_embedded

    return build_embedded(tmp_path_factory.mktemp("warehouse"), seed=0)


# ------------------------------------------------------------------------------------------ a taught model

ASK_SYSTEM = "Reply with one {dialect} query."
COUNT_Q = "How many customers are there?"
COUNT_SQL = "SELECT COUNT(*) FROM customers;"
REPAIR_Q = "List the names of customers in the Enterprise segment."
WRONG_SQL = "SELECT nme FROM customers WHERE segment = 'Enterprise';"
RIGHT_SQL = "SELECT name FROM customers WHERE segment = 'Enterprise';"


def linked_schema(warehouse, question: str) -> str:
    """The schema ``sqltune ask --link always`` puts in the prompt for ``question`` on the warehouse."""
    from sqltune.agent.linking import link_schema, sample_values
    from sqltune.data.schema import ddl_from_database

    ddl = ddl_from_database(warehouse.sqlite_path, style="compact")
    return link_schema(question, ddl, values=sample_values(str(warehouse.sqlite_path))).schema


def teach(model_dir: Path, conversations: list[tuple[list[dict[str, str]], str]], steps: int = 150) -> None:
    """Fit the tiny model so each conversation is answered with its SQL (loss on the answer only)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sqltune.prompts import end_of_turn, render_prompt

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend on a busy 2-core box
    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        rows = []
        for convo, sql in conversations:
            prompt = tok(render_prompt(tok, convo), add_special_tokens=False)["input_ids"]
            target = tok(sql + end_of_turn(tok), add_special_tokens=False)["input_ids"]
            rows.append((prompt + target, [-100] * len(prompt) + target))
        width = max(len(ids) for ids, _ in rows)
        ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        mask = (torch.arange(width)[None] < torch.tensor([len(i) for i, _ in rows])[:, None]).long()
        opt = torch.optim.AdamW(model.parameters(), lr=4e-3)
        model.train()
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
        model.save_pretrained(model_dir, safe_serialization=True)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ask_model(tmp_path_factory, warehouse) -> Path:
    """A tiny model artifact that answers COUNT_Q, and REPAIR_Q first wrongly (an unknown column), then,
    shown the engine's error, rightly: what the repair loop is for, made deterministic."""
    from sqltune.agent.repair import RepairConfig, check_candidate, target_for
    from sqltune.models.loading import write_artifact_info
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model
    from sqltune.prompts import PromptTemplate, build_messages, repair_messages

    template = PromptTemplate(system=ASK_SYSTEM)
    count_schema = linked_schema(warehouse, COUNT_Q)
    repair_schema = linked_schema(warehouse, REPAIR_Q)
    first = build_messages(REPAIR_Q, repair_schema, dialect="sqlite", template=template)
    with target_for("sqlite", repair_schema, str(warehouse.sqlite_path)) as target:
        error = check_candidate(WRONG_SQL, target, RepairConfig()).error
    second = repair_messages(first, WRONG_SQL.rstrip(";"), error, dialect="sqlite")
    conversations = [
        (build_messages(COUNT_Q, count_schema, dialect="sqlite", template=template), COUNT_SQL),
        (first, WRONG_SQL),
        (second, RIGHT_SQL),
    ]
    corpus = [count_schema, repair_schema, COUNT_Q, REPAIR_Q, COUNT_SQL, WRONG_SQL, RIGHT_SQL, error,
              second[-1]["content"], ASK_SYSTEM]
    model_dir = tmp_path_factory.mktemp("ask-model") / "merged"
    build_tiny_model(model_dir, TinyModelConfig(vocab_size=600, hidden_size=64, num_layers=2, num_heads=2,
                                                num_kv_heads=1, intermediate_size=128), corpus=corpus * 20)
    template.save(model_dir)
    teach(model_dir, conversations)
    write_artifact_info(model_dir, kind="merged", base_model="tiny", precision="fp32", run_name="ask-test")
    return model_dir
