"""Short, cached language-model pre-training of the tiny random base, before QLoRA (demo/CI only).

The tiny model (:mod:`sqltune.models.tiny`) starts from random weights. This module pre-trains the base,
in full, as a plain unconditional language model on documents that teach the warehouse's *language*
without its task, so the fine-tuning starts from a model that knows the SQL and the values:

* ``rows``: a row of each warehouse table written as a ``key value`` record and then as the matching
  ``INSERT`` or ``SELECT ... WHERE`` statement (columns shuffled differently in each), so the model learns
  that a quoted SQL literal repeats a value mentioned earlier in prose form;
* ``ddl``: the CREATE TABLE statements;
* ``sql``: gold SQL queries of the *training* split alone, and ``questions``: training questions alone,
  each as its own document.

No document pairs a question with its SQL, so the pre-trained base cannot answer the task (the job
measures and reports the base model's accuracy), and nothing from the validation or test split is seen.
The result is cached by a key of its inputs, so a second demo run skips it.

Measured (benchmarks/results/NOTES-tiny-accuracy.md): fine-tuning from this base reaches a higher
ceiling than from the random one (0.89 vs 0.73 teacher-forced on an H200 after 2,000 steps) but learns
to copy values from the question later (~1,500 vs ~800 steps); the CPU demo's 240 steps reach neither.
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
    """Documents about random rows of every table of a SQLite database, each in two forms.

    A row is written as a ``key value`` record and then either as the matching ``INSERT`` or as a
    ``SELECT * FROM t WHERE k = v AND ...`` over some of its columns (keys shuffled differently in each
    form). Both teach that a quoted SQL literal repeats the value a column name was given earlier in
    prose form.
    """
    rng = random.Random(seed)
    docs: list[str] = []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            for row in rng.sample(rows, min(rows_per_table, len(rows))):
                pairs = [(c, v) for c, v in zip(cols, row) if v is not None]
                k = rng.randint(min(2, len(pairs)), min(5, len(pairs)))
                chosen = rng.sample(pairs, k)
                prose = ", ".join(f"{c} {_render_value(v)[0]}" for c, v in chosen)
                rng.shuffle(chosen)
                if rng.random() < 0.5:
                    names = ", ".join(c for c, _ in chosen)
                    values = ", ".join(_render_value(v)[1] for _, v in chosen)
                    sql = f"INSERT INTO {table} ({names}) VALUES ({values});"
                else:
                    cond = " AND ".join(f"{c} = {_render_value(v)[1]}" for c, v in chosen[: rng.randint(1, 3)])
                    sql = f"SELECT * FROM {table} WHERE {cond};"
                docs.append(f"{table} record: {prose}.\n{sql}")
    finally:
        conn.close()
    return docs


def build_corpus(
    train_examples: Sequence[Any], db: str | Path, *, rows_per_table: int = 400, seed: int = 0,
    repeat_fraction: float = 0.5,
) -> list[str]:
    """The pre-training documents (see the module docstring); training-split examples only.

    ``repeat_fraction`` of the documents are written twice in a row (``doc`` blank line ``doc``): the
    second copy is only predictable by looking back, which grows the copy (induction) heads a random
    network lacks far faster than the rest of the corpus does.
    """
    rng = random.Random(seed)
    docs = row_documents(db, rows_per_table=rows_per_table, seed=seed)
    schemas = sorted({ex.schema for ex in train_examples})
    docs.extend(schemas)
    docs.extend(ex.sql for ex in train_examples)
    docs.extend(ex.question for ex in train_examples)
    docs = [f"{d}\n\n{d}" if rng.random() < repeat_fraction else d for d in docs]
    rng.shuffle(docs)
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
    row_tokens: int = 256,
    copy_steps: int = 120,
    copy_every: int = 4,
    seed: int = 0,
    threads: int | None = None,
) -> Path:
    """Full-parameter LM training of ``base_dir`` on ``docs``; saves a model + tokenizer to ``out_dir``.

    Cached: if ``out_dir`` holds a result for the same base, documents and settings it is returned as is.
    Documents are packed into rows of ``row_tokens`` (position ids restart per document, no attention
    across documents), ``batch_tokens // row_tokens`` rows per step; longer documents are truncated.

    The first ``copy_steps`` steps, and every ``copy_every``-th step after them, train on a generic copy
    task instead: random sequences of the corpus' tokens written twice, loss on the second copy. A random
    4-layer model learns that in ~100 steps (measured: loss 7.5 -> 0.05), far sooner than it learns to copy
    from the corpus alone, and the copy heads are what the text-to-SQL adapter needs to move values from
    the question into the SQL. The copy task holds no SQL and no question.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from sqltune.models.loading import load_tokenizer
    from sqltune.train.data import collate_packed_rows, pack_greedy
    from sqltune.train.optim import lr_lambda

    settings = {"steps": steps, "lr": lr, "batch_tokens": batch_tokens, "row_tokens": row_tokens, "seed": seed,
                "copy_steps": copy_steps, "copy_every": copy_every}
    key = cache_key(base_dir, docs, settings)
    out = Path(out_dir)
    marker = out / PRETRAIN_FILE
    if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        log.info("pre-trained tiny base found in %s (cache key %s)", out, key)
        return out
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tok = load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.train()
    eos = tok.eos_token_id
    max_len = row_tokens
    n_rows = max(1, batch_tokens // row_tokens)
    rows = []
    for d in docs:
        ids = tok(d, add_special_tokens=False)["input_ids"][: max_len - 1] + [eos]
        rows.append({"input_ids": ids, "labels": list(ids)})
    lengths = [len(r["input_ids"]) for r in rows]
    vocab = sorted({t for r in rows for t in r["input_ids"]} - set(tok.all_special_ids))
    gen = torch.Generator().manual_seed(seed)

    def copy_batch() -> dict[str, Any]:
        span = 24
        n = max(1, batch_tokens // (2 * span))
        x = torch.tensor(vocab)[torch.randint(len(vocab), (n, span), generator=gen)]
        ids = torch.cat([x, x], 1)
        labels = ids.clone()
        labels[:, : span + 1] = -100
        return {"input_ids": ids, "labels": labels, "real_tokens": int(ids.numel())}

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, steps // 20)
    rng = random.Random(seed)
    order: list[int] = []
    t0 = time.perf_counter()
    tokens = 0
    loss_avg = None
    total = copy_steps + steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, total=total, warmup=warm, schedule="cosine", min_ratio=0.1)
    )
    copy_loss = None

    def step_on(batch: dict[str, Any]) -> float:
        nonlocal tokens
        real = int(batch.pop("real_tokens"))
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += real
        return float(loss.detach())

    for step in range(total):
        if step < copy_steps or (copy_every and (step - copy_steps) % copy_every == copy_every - 1):
            copy_loss = step_on(copy_batch())
            if (step + 1) % 50 == 0:
                log.info("pretrain step %d/%d copy loss %.3f", step + 1, total, copy_loss)
            continue
        picked: list[int] = []
        used = 0
        while used < batch_tokens * 0.97:
            if not order:
                order = list(range(len(rows)))
                rng.shuffle(order)
            i = order.pop()
            picked.append(i)
            used += lengths[i]
        packed = pack_greedy(picked, lengths, row_tokens)
        groups = packed[:n_rows]
        order.extend(i for g in packed[n_rows:] for i in g)  # not used this step: back in the queue
        loss = step_on(collate_packed_rows([[rows[i] for i in g] for g in groups], row_tokens, tok.pad_token_id))
        loss_avg = loss if loss_avg is None else 0.9 * loss_avg + 0.1 * loss
        if (step + 1) % 50 == 0 or step + 1 == total:
            log.info("pretrain step %d/%d loss %.3f, copy loss %s (%.0f tok/s)", step + 1, total, loss_avg,
                     f"{copy_loss:.3f}" if copy_loss is not None else "n/a", tokens / (time.perf_counter() - t0))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    for extra in Path(base_dir).glob("*.yaml"):
        (out / extra.name).write_text(extra.read_text())
    marker.write_text(json.dumps({
        "key": key, "base": str(base_dir), "documents": len(docs), "tokens": tokens,
        "final_loss": loss_avg, "final_copy_loss": copy_loss, "seconds": round(time.perf_counter() - t0, 1), **settings,
    }, indent=2) + "\n")
    log.info("pre-trained tiny base saved to %s (%d steps, %.0fs)", out, steps, time.perf_counter() - t0)
    return out


def pretrain_from_config(
    base_dir: str | Path, out_dir: str | Path, train_config: str | Path | None = None, *,
    overrides: list[str] | None = None, steps: int = 200, threads: int | None = None,
) -> Path:
    """Pre-train ``base_dir`` on the training split that ``train_config`` (a TrainConfig preset) selects."""
    from sqltune.config import load_config
    from sqltune.train.config import TrainConfig
    from sqltune.train.run import load_splits

    cfg = load_config(TrainConfig, train_config, list(overrides or []) + [f"model.base={base_dir}"])
    train, _, _, _ = load_splits(cfg)
    dbs = sorted({ex.db for ex in train if ex.db and str(ex.db).endswith((".sqlite", ".db"))})
    if not dbs:
        raise ValueError("the training split names no SQLite database to draw row documents from")
    docs: list[str] = []
    for db in dbs:
        docs.extend(build_corpus([ex for ex in train if ex.db == db], db, seed=cfg.data.split_seed))
    return pretrain_tiny_base(base_dir, out_dir, docs, steps=steps, seed=cfg.train.seed, threads=threads)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m sqltune.train.pretrain",
        description="Cached LM pre-training of the tiny base on the warehouse's rows, DDL, SQL and questions "
        "(never a question paired with its SQL), before QLoRA.",
    )
    ap.add_argument("--base", required=True, help="tiny base model directory (sqltune.models.tiny)")
    ap.add_argument("--out", required=True, help="output directory (reused when its cache key matches)")
    ap.add_argument("--config", default="jobs/configs/tiny.yaml", help="training preset whose data split to use")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the preset (e.g. data.source=...)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = pretrain_from_config(args.base, args.out, args.config, overrides=args.overrides, steps=args.steps,
                               threads=args.threads)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
