"""Builders shared by the export and evaluation tests: a tiny base model and a real PEFT LoRA adapter.

The adapter is made here directly (peft.get_peft_model + a few AdamW steps, so its weights are non-zero),
not by the training job, and saved the way training publishes one: PEFT files, tokenizer,
prompt_template.json and sqltune_artifact.json (kind=adapter, base_model=<dir>).
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "SELECT name FROM customers WHERE country = 'DE' ORDER BY name",
    "SELECT COUNT(*) FROM orders WHERE status = 'shipped'",
    "SELECT c.name, SUM(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.name",
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, country TEXT, signup_date DATE);",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL, status TEXT);",
    "How many customers are there? List the names of customers in Germany. What is the total per customer?",
    "You are a text-to-SQL assistant. Given a database schema and a question, reply with exactly one SQLite SQL query.",
    "Schema: Question: Hint: churn_predictions subscriptions products order_items forecast_predictions",
] * 20

TINY_SHAPE = dict(vocab_size=400, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)


def build_tiny_base(out_dir: str | Path) -> Path:
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model

    return build_tiny_model(out_dir, TinyModelConfig(**TINY_SHAPE), corpus=CORPUS)


def build_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    texts: list[str] | None = None,
    steps: int = 6,
    r: int = 8,
    lr: float = 1e-2,
    seed: int = 0,
    modules_to_save: list[str] | None = None,
) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from sqltune.models.loading import load_tokenizer, write_artifact_info
    from sqltune.prompts import PromptTemplate

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model,
        LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear",
                   modules_to_save=modules_to_save, task_type="CAUSAL_LM"),
    )
    texts = texts or CORPUS[:8]
    tokenizer.padding_side = "right"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    peft_model.train()
    for _ in range(steps):
        loss = peft_model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = Path(out_dir)
    peft_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    PromptTemplate().save(out)
    write_artifact_info(out, kind="adapter", base_model=str(base_dir), precision="fp32",
                        config={"lora": {"r": r, "mode": "lora"}}, run_name=out.parent.name,
                        metrics={"final_loss": loss.item()})
    return out
