#!/usr/bin/env python3
"""Time the slot engine of one checkout on the CPU: a tiny model, random prompts, after warm-up.

    git worktree add --detach /tmp/old <commit>
    for i in 1 2 3 4 5 6 7 8; do for r in /tmp/old .; do python benchmarks/engine_ab.py $r; done; done

Prints the checkout, the seconds to generate every prompt, and the tokens generated. Run two checkouts
alternately, several times: a shared VM's noise is larger than small differences.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", help="the checkout whose libs/ is timed")
    ap.add_argument("--model", default=".demo/merged", help="a model directory (default: the demo's merged model)")
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--slots", type=int, default=32)
    opts = ap.parse_args()
    root = Path(opts.root).resolve()
    sys.path.insert(0, str(root / "libs"))

    import torch
    from transformers import AutoModelForCausalLM

    import sqltune.generation.engine as engine_module
    from sqltune.generation import EngineConfig

    if not engine_module.__file__.startswith(str(root)):
        raise SystemExit(f"imported {engine_module.__file__}, not the engine under {root}")
    model = AutoModelForCausalLM.from_pretrained(opts.model, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    lengths = torch.randint(150, 300, (opts.prompts,), generator=g)
    prompts = [torch.randint(10, vocab - 10, (int(n),), generator=g).tolist() for n in lengths]
    eng = engine_module.build_engine(model, None, EngineConfig(max_slots=opts.slots, seq_len=400))
    eng.warmup()
    t = time.perf_counter()
    res = eng.generate(prompts, opts.new_tokens, timeout=600)
    print(root, f"{time.perf_counter() - t:.2f}s", sum(len(r.tokens) for r in res))
    eng.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
