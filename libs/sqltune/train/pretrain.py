"""Short, cached language-model pre-training of the tiny random base, before QLoRA (demo/CI only).

The tiny model (:mod:`sqltune.models.tiny`) starts from random weights. A random network has no way to
copy a value from the question into the SQL (``... from Netherlands?`` -> ``country = 'Netherlands'``;
the BPE even gives the two spellings different token ids), and LoRA on a frozen random base learns the
SQL structure quickly but that copying very slowly. This module pre-trains the base, in full, as a plain
unconditional language model on documents that teach the warehouse's *language* without its task:

* ``rows``: a row of each warehouse table written as a ``key value`` record and then as the matching
  ``INSERT`` statement (columns shuffled differently in each), so the model learns that a quoted SQL
  literal repeats a value mentioned earlier in prose form;
* ``ddl``: the CREATE TABLE statements;
* ``sql``: gold SQL queries of the *training* split alone, and ``questions``: training questions alone,
  each as its own document.

No document pairs a question with its SQL, so the pre-trained base cannot answer the task (the job
measures and reports the base model's accuracy), and nothing from the validation or test split is seen.
The result is cached by a key of its inputs, so a second demo run skips it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PRETRAIN_FILE = "sqltune_pretrain.json"


def _render_value(v: Any) -> tuple[str, str]:
    """(prose form, SQL literal) of a database value."""
    if v is None:
        return "unknown", "NULL"
    if isinstance(v, (int, float)):
        return str(v), str(v)
    text = str(v)
    return text, "'" + text.replace("'", "''") + "'"


def row_documents(db: str | Path, *, rows_per_table: int, seed: int) -> list[str]:
    """Record + INSERT documents for random rows of every table of a SQLite database."""
    rng = random.Random(seed)
    docs: list[str] = []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            for row in rng.sample(rows, min(rows_per_table, len(rows))):
                pairs = list(zip(cols, row))
                k = rng.randint(min(2, len(pairs)), len(pairs))
                chosen = rng.sample(pairs, k)
                prose = ", ".join(f"{c} {_render_value(v)[0]}" for c, v in chosen)
                rng.shuffle(chosen)
                names = ", ".join(c for c, _ in chosen)
                values = ", ".join(_render_value(v)[1] for _, v in chosen)
                docs.append(f"{table} record: {prose}.\nINSERT INTO {table} ({names}) VALUES ({values});")
    finally:
        conn.close()
    return docs


def build_corpus(train_examples: Sequence[Any], db: str | Path, *, rows_per_table: int = 400, seed: int = 0) -> list[str]:
    """The pre-training documents (see the module docstring); training-split examples only."""
    docs = row_documents(db, rows_per_table=rows_per_table, seed=seed)
    schemas = sorted({ex.schema for ex in train_examples})
    docs.extend(schemas)
    docs.extend(ex.sql for ex in train_examples)
    docs.extend(ex.question for ex in train_examples)
    random.Random(seed).shuffle(docs)
    return docs


def cache_key(base_dir: str | Path, docs: Sequence[str], settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in sorted(p.name for p in Path(base_dir).iterdir() if p.is_file()):
        h.update(name.encode())
        h.update((Path(base_dir) / name).read_bytes())
    for d in docs:
        h.update(d.encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def pretrain_tiny_base(
    base_dir: str | Path,
    out_dir: str | Path,
    docs: Sequence[str],
    *,
    steps: int = 300,
    lr: float = 2e-3,
    batch_tokens: int = 4096,
    seed: int = 0,
    threads: int | None = None,
) -> Path:
    """Full-parameter LM training of ``base_dir`` on ``docs``; saves a model + tokenizer to ``out_dir``.

    Cached: if ``out_dir`` holds a result for the same base, documents and settings it is returned as is.
    Documents are packed padding-free (position ids restart per document, no attention across them).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sqltune.train.data import collate_packed
    from sqltune.train.optim import lr_lambda

    settings = {"steps": steps, "lr": lr, "batch_tokens": batch_tokens, "seed": seed}
    key = cache_key(base_dir, docs, settings)
    out = Path(out_dir)
    marker = out / PRETRAIN_FILE
    if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        log.info("pre-trained tiny base found in %s (cache key %s)", out, key)
        return out
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.train()
    eos = tok.eos_token_id
    max_len = batch_tokens // 4
    rows = []
    for d in docs:
        ids = tok(d, add_special_tokens=False)["input_ids"][: max_len - 1] + [eos]
        rows.append({"input_ids": ids, "labels": list(ids)})
    lengths = [len(r["input_ids"]) for r in rows]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, total=steps, warmup=warm, schedule="cosine", min_ratio=0.1)
    )
    rng = random.Random(seed)
    order: list[int] = []
    t0 = time.perf_counter()
    tokens = 0
    loss_avg = None
    for step in range(steps):
        picked: list[int] = []
        used = 0
        while True:
            if not order:
                order = list(range(len(rows)))
                rng.shuffle(order)
            if picked and used + lengths[order[-1]] > batch_tokens:
                break
            i = order.pop()
            picked.append(i)
            used += lengths[i]
        batch = collate_packed([rows[i] for i in picked])
        out_ = model(**batch, use_cache=False)
        out_.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(batch["input_ids"].numel())
        loss = float(out_.loss)
        loss_avg = loss if loss_avg is None else 0.9 * loss_avg + 0.1 * loss
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log.info("pretrain step %d/%d loss %.3f (%.0f tok/s)", step + 1, steps, loss_avg,
                     tokens / (time.perf_counter() - t0))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    for extra in Path(base_dir).glob("*.yaml"):
        (out / extra.name).write_text(extra.read_text())
    marker.write_text(json.dumps({
        "key": key, "base": str(base_dir), "documents": len(docs), "tokens": tokens,
        "final_loss": loss_avg, "seconds": round(time.perf_counter() - t0, 1), **settings,
    }, indent=2) + "\n")
    log.info("pre-trained tiny base saved to %s (%d steps, %.0fs)", out, steps, time.perf_counter() - t0)
    return out
