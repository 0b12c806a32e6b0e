"""Fast recipe experiments for the tiny demo model: one process, no Ray, a teacher-forced accuracy proxy.

The demo's accuracy question (does the tiny model copy values from the question into the SQL?) takes a
15-minute `make demo` to answer end to end. This script trains with the same library pieces as the
training job (sqltune.train.model / data / optim, the preset's prompt template) in one process and
prints, every --every steps, the share of validation examples whose whole SQL the model predicts
token for token under teacher forcing (an upper bound on greedy exact match) and the token accuracy.

    python benchmarks/tiny_recipe.py --base .demo/tiny-base --steps 200 --batch 16 [key=value overrides]
    python benchmarks/tiny_recipe.py --base .demo/tiny-base --system "Reply with one {dialect} query." \
        model.mode=full lora.modules_to_save=[] optim.lr=1e-3

Results of the runs made so far are in benchmarks/results/NOTES-tiny-accuracy.md.
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


def teacher_forced_accuracy(model, rows, pad_id: int, device: str = "cpu") -> tuple[float, float]:
    """(share of rows whose every label token is the argmax, token accuracy) over ``rows``."""
    import torch

    from sqltune.train.data import collate_padded

    model.eval()
    full = correct = total = 0
    with torch.no_grad():
        for i in range(0, len(rows), 16):
            b = {k: v.to(device) for k, v in collate_padded(rows[i : i + 16], pad_id).items()}
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            pred, lab = logits[:, :-1].argmax(-1), b["labels"][:, 1:]
            mask = lab != -100
            full += int(((pred == lab) | ~mask).all(1).sum())
            correct += int(((pred == lab) & mask).sum())
            total += int(mask.sum())
    model.train()
    return full / len(rows), correct / total


def add_literal_weights(rows, tok, weight: float) -> None:
    """Give each row ``weights`` (0 on the prompt, ``weight`` on SQL tokens in a literal, else 1)."""
    from sqlglot.tokens import Tokenizer, TokenType

    for r in rows:
        n_prompt = sum(1 for x in r["labels"] if x == -100)
        target = tok.decode(r["input_ids"][n_prompt:])
        enc = tok(target, add_special_tokens=False, return_offsets_mapping=True)
        spans = []
        try:
            spans = [(t.start, t.end + 1) for t in Tokenizer().tokenize(target.split("<|")[0])
                     if t.token_type in (TokenType.STRING, TokenType.NUMBER)]
        except Exception:
            pass
        w = [0.0] * n_prompt
        if enc["input_ids"] != r["input_ids"][n_prompt:]:
            w += [1.0] * (len(r["input_ids"]) - n_prompt)
        else:
            for a, b in enc["offset_mapping"]:
                w.append(weight if any(a < e and s < b for s, e in spans) else 1.0)
        r["weights"] = w


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
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the preset")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = load_config(TrainConfig, args.config, [*args.overrides, f"model.base={args.base}"])
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
        add_literal_weights(tr.rows, tok, args.literal_weight)
    va = tokenize_examples(val[: args.val], tok, template, cfg.data.max_length)
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
            seq, tok_acc = teacher_forced_accuracy(model, va.rows, tok.pad_token_id, args.device)
            print(f"step {step} loss {loss.item():.4f} val teacher-forced seq-acc {seq:.3f} token-acc {tok_acc:.4f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
