"""Fast recipe experiments for the tiny demo model: one process, no Ray, a teacher-forced accuracy proxy.

The demo's accuracy question (does the tiny model copy values from the question into the SQL?) takes a
15-minute `make demo` to answer end to end. This script trains with the same library pieces as the
training job (sqltune.train.model / data / optim, the preset's prompt template) in one process and
prints, every --every steps, the share of validation examples whose whole SQL the model predicts
token for token under teacher forcing (an upper bound on greedy exact match) and the token accuracy.

    python benchmarks/tiny_recipe.py --base .demo/tiny-base --steps 200 --batch 16 [key=value overrides]
    python benchmarks/tiny_recipe.py --base .demo/tiny-base --system "Reply with one {dialect} query." \
        model.mode=full lora.modules_to_save=[] optim.lr=1e-3

What the runs showed is in docs/benchmarks.md; their raw lines are under benchmarks/results/tiny-recipe-*/.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

log = logging.getLogger("sqltune.bench.tiny_recipe")


def teacher_forced_accuracy(model, rows, pad_id: int, device: str = "cpu") -> tuple[float, float, float]:
    """(share of rows whose every label token is the argmax, token accuracy, value-token accuracy).

    Value tokens are the label tokens inside the SQL literals copied from the question (rows carry
    ``value_mask``, see :func:`mark_value_tokens`); -1 when no row marks them.
    """
    import torch

    from sqltune.train.data import collate_padded

    model.eval()
    full = correct = total = vcorrect = vtotal = 0
    with torch.no_grad():
        for i in range(0, len(rows), 16):
            chunk = rows[i : i + 16]
            b = {k: v.to(device) for k, v in collate_padded(chunk, pad_id).items()}
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            pred, lab = logits[:, :-1].argmax(-1), b["labels"][:, 1:]
            mask = lab != -100
            full += int(((pred == lab) | ~mask).all(1).sum())
            correct += int(((pred == lab) & mask).sum())
            total += int(mask.sum())
            for j, r in enumerate(chunk):
                w = r.get("value_mask")
                if w is None:
                    continue
                vm = torch.zeros_like(mask[j])
                vm[: len(w) - 1] = torch.tensor(w[1:], dtype=torch.bool, device=vm.device)
                vcorrect += int(((pred[j] == lab[j]) & vm).sum())
                vtotal += int(vm.sum())
    model.train()
    return full / len(rows), correct / total, (vcorrect / vtotal if vtotal else -1.0)


def _sql_tokens_in_spans(row, tok, spans) -> tuple[int, list[bool] | None]:
    """(prompt length, for each SQL token whether it overlaps a character span of the SQL text), or None
    for the flags when the target does not re-tokenize to the row's own ids."""
    n_prompt = sum(1 for x in row["labels"] if x == -100)
    target = tok.decode(row["input_ids"][n_prompt:])
    enc = tok(target, add_special_tokens=False, return_offsets_mapping=True)
    if enc["input_ids"] != row["input_ids"][n_prompt:]:
        return n_prompt, None
    return n_prompt, [any(a < e and s < b for s, e in spans) and bool(tok.decode([i]).strip(" '"))
                      for (a, b), i in zip(enc["offset_mapping"], enc["input_ids"])]


def _aligned(rows, examples) -> None:
    if len(rows) != len(examples):  # tokenize_examples dropped some: rows no longer match examples
        raise SystemExit(f"{len(examples) - len(rows)} examples exceed data.max_length; raise it for this script")


def mark_value_tokens(rows, examples, tok) -> None:
    """Give each row ``value_mask`` (1 on SQL tokens inside a literal copied from the question)."""
    from sqltune.train.augment import copied_literals

    _aligned(rows, examples)
    for r, ex in zip(rows, examples):
        n_prompt, flags = _sql_tokens_in_spans(r, tok, [(a, b) for a, b, _, _ in copied_literals(ex)])
        if flags is not None:
            r["value_mask"] = [0] * n_prompt + [int(f) for f in flags]


def add_literal_weights(rows, examples, tok, weight: float) -> None:
    """Give each row ``weights`` (0 on the prompt, ``weight`` on SQL tokens in a literal, else 1)."""
    from sqlglot.tokens import Tokenizer, TokenType

    _aligned(rows, examples)
    for r, ex in zip(rows, examples):
        try:
            spans = [(t.start, t.end + 1) for t in Tokenizer().tokenize(ex.sql)
                     if t.token_type in (TokenType.STRING, TokenType.NUMBER)]
        except Exception:  # noqa: BLE001 - untokenizable SQL: plain weights
            spans = []
        n_prompt, flags = _sql_tokens_in_spans(r, tok, spans)
        r["weights"] = [0.0] * n_prompt + [weight if f else 1.0 for f in (flags or [False] * (len(r["input_ids"]) - n_prompt))]


def rebuild_base(base: str, shape: str, out: str) -> str:
    """A new random tiny base with ``base``'s tokenizer and the TinyModelConfig overrides in ``shape``."""
    from sqltune.config import load_config
    from sqltune.models.loading import load_tokenizer
    from sqltune.models.tiny import TinyModelConfig, build_model as build_tiny

    tok = load_tokenizer(base)
    cfg = load_config(TinyModelConfig, None, [kv for kv in shape.split(",") if kv])
    model = build_tiny(cfg, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    log.info("rebuilt base %s: %s, %.2fM parameters", out, shape, sum(p.numel() for p in model.parameters()) / 1e6)
    return out


def pair_batch(vocab, batch: int, length: int, g):
    """The first layout tried: one random span of 8-39 tokens, a random gap, the span again (loss on it)."""
    import torch

    ids, labels = [], []
    for _ in range(batch):
        n = int(torch.randint(8, 40, (1,), generator=g))
        span = vocab[torch.randint(len(vocab), (n,), generator=g)]
        gap = vocab[torch.randint(len(vocab), (int(torch.randint(0, 60, (1,), generator=g)),), generator=g)]
        seq = torch.cat([span, gap, span])[:length]
        lab = seq.clone()
        lab[: n + len(gap)] = -100
        pad = length - len(seq)
        ids.append(torch.nn.functional.pad(seq, (0, pad), value=0))
        labels.append(torch.nn.functional.pad(lab, (0, pad), value=-100))
    return torch.stack(ids), torch.stack(labels)


def induction_pretrain(base: str, out: str, steps: int, device: str, seed: int, lr: float = 1e-3,
                       batch: int = 32, length: int = 256, kind: str = "pair") -> str:
    """``base`` pre-trained with :func:`sqltune.models.tiny.pretrain_induction` (``kind`` multi: the library's
    multi-span sequences; pair: :func:`pair_batch`), saved to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    from sqltune.models.loading import load_tokenizer
    from sqltune.models.tiny import TinyModelConfig, pretrain_induction

    tok = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    cfg = TinyModelConfig(induction_steps=steps, induction_batch=batch, induction_length=length, induction_lr=lr,
                          seed=seed)
    pretrain_induction(model, tok, cfg, make_batch=pair_batch if kind == "pair" else None)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from sqltune.config import load_config
    from sqltune.prompts import PromptTemplate
    from sqltune.train.config import TrainConfig
    from sqltune.train.data import collate_padded, tokenize_examples
    from sqltune.train.model import build_model
    from sqltune.train.optim import build_optimizer, build_scheduler
    from sqltune.train.run import load_splits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="tiny base model directory (e.g. .demo/tiny-base)")
    ap.add_argument("--config", default=str(ROOT / "jobs/configs/tiny.yaml"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16, help="examples per step (the demo: 2 workers x 8)")
    ap.add_argument("--every", type=int, default=40, help="measure every N steps")
    ap.add_argument("--val", type=int, default=64, help="validation examples measured")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--system", default=None, help="system instruction (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data order and the LoRA initialisation")
    ap.add_argument("--literal-weight", type=float, default=1.0,
                    help="loss weight of SQL tokens inside string/number literals (1 = plain mean)")
    ap.add_argument("--extra-data", type=int, default=0,
                    help="train on the embedded generator's first N distinct examples minus validation/test")
    ap.add_argument("--shape", default="",
                    help="rebuild a random base with --base's tokenizer and these TinyModelConfig overrides "
                         "(comma-separated key=value, e.g. hidden_size=512,num_heads=8)")
    ap.add_argument("--induction-steps", type=int, default=0,
                    help="pre-train the base on repeated random token spans for N steps first (full parameters)")
    ap.add_argument("--ind-lr", type=float, default=1e-3)
    ap.add_argument("--ind-batch", type=int, default=32)
    ap.add_argument("--ind-len", type=int, default=256)
    ap.add_argument("--ind-kind", default="pair", choices=["pair", "multi"])
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the preset")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    import tempfile

    base = args.base
    work = tempfile.mkdtemp(prefix="tiny-recipe-")
    if args.shape:
        base = rebuild_base(base, args.shape, f"{work}/shaped")
    if args.induction_steps:
        base = induction_pretrain(base, f"{work}/induction", args.induction_steps, args.device, args.seed,
                                  lr=args.ind_lr, batch=args.ind_batch, length=args.ind_len, kind=args.ind_kind)
    cfg = load_config(TrainConfig, args.config, [*args.overrides, f"model.base={base}"])
    train, val, test, _ = load_splits(cfg)
    if args.extra_data:
        from sqltune.data.embedded import embedded_examples

        held = {e.question for e in [*val, *test]} | {e.sql for e in [*val, *test]}
        train = [e for e in embedded_examples(seed=cfg.data.embedded_seed, n=args.extra_data)
                 if e.question not in held and e.sql not in held]
    built = build_model(cfg, args.device)
    model, tok = built.model, built.tokenizer
    template = cfg.prompt_template()
    if args.system is not None:
        template = PromptTemplate(mode=cfg.prompt_mode, system=args.system)
    tr = tokenize_examples(train, tok, template, cfg.data.max_length)
    if args.literal_weight != 1.0:
        add_literal_weights(tr.rows, train, tok, args.literal_weight)
    va = tokenize_examples(val[: args.val], tok, template, cfg.data.max_length)
    mark_value_tokens(va.rows, val[: args.val], tok)
    log.info("trainable params %d, %d training rows of %.0f tokens on average", built.trainable_params,
             len(tr.rows), sum(tr.lengths) / len(tr.rows))
    opt, _ = build_optimizer(model, cfg.optim, args.device)
    sched = build_scheduler(opt, cfg.optim, args.steps)
    rng = random.Random(args.seed)
    order: list[int] = []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            epoch = list(range(len(tr.rows)))
            rng.shuffle(epoch)
            order += epoch
        picked = [tr.rows[order.pop()] for _ in range(args.batch)]
        batch = collate_padded(picked, tok.pad_token_id)
        batch = {k: v.to(args.device) for k, v in batch.items()}
        amp = (torch.autocast(torch.device(args.device).type, dtype=built.autocast_dtype)
               if built.autocast_dtype is not None else contextlib.nullcontext())
        if args.literal_weight == 1.0:
            with amp:
                loss = model(**batch).loss
        else:
            with amp:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            w = torch.zeros_like(batch["labels"], dtype=torch.float32)
            for i, r in enumerate(picked):
                w[i, : len(r["weights"])] = torch.tensor(r["weights"])
            lab, w = batch["labels"][:, 1:], w[:, 1:].to(args.device)
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), lab.reshape(-1), ignore_index=-100,
                reduction="none").view_as(w)
            loss = (ce * w).sum() / w.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % args.every == 0 or step == args.steps:
            seq, tok_acc, val_acc = teacher_forced_accuracy(model, va.rows, tok.pad_token_id, args.device)
            print(f"step {step} loss {loss.item():.4f} val teacher-forced seq-acc {seq:.3f} token-acc {tok_acc:.4f} "
                  f"value-acc {val_acc:.3f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
