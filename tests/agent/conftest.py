"""Real databases for the agent tests (a small SQLite/DuckDB shop, the embedded warehouse) and a taught model."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_helpers import (
    ASK_SYSTEM,
    COUNT_Q,
    COUNT_SQL,
    REPAIR_Q,
    RIGHT_SQL,
    WRONG_SQL,
    build_shop,
    linked_schema,
    teach,
)


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
