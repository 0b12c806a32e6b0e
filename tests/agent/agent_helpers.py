"""Constants and helpers shared by the agent tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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


