"""The plain ``generate()`` path: batched greedy ``model.generate`` over rendered prompts.

Used where no engine runs: validation during training, the export's smoke test, evaluation without
``engine_slots``. Left padding, greedy decoding, and stopping at the end of the assistant turn so a
batch does not decode past what any caller uses. The engines share :func:`stop_token_ids`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from sqltune.prompts import build_messages, render_prompt


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int
    latency_s: float


def prompts_for(tokenizer: Any, items: list[dict[str, Any]], template: Any) -> list[str]:
    """Render prompts for dicts with question, schema, dialect and optional evidence."""
    return [
        render_prompt(
            tokenizer,
            build_messages(
                it["question"],
                it["schema"],
                dialect=it.get("dialect", "sqlite"),
                evidence=it.get("evidence"),
                template=template,
            ),
        )
        for it in items
    ]


def stop_token_ids(tokenizer: Any) -> list[int]:
    ids = []
    for tok in ("<|im_end|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.append(tid)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def generate_batch(
    model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int = 128
) -> list[Generation]:
    """Greedy-decode a batch of rendered prompts; latency is the batch's wall time (shared by its rows)."""
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
    elapsed = time.perf_counter() - start
    stops = set(stop_token_ids(tokenizer))
    results = []
    width = enc["input_ids"].shape[1]
    for i in range(len(prompts)):
        new = out[i, width:].tolist()
        n = len(new)
        for j, t in enumerate(new):
            if t in stops:
                n = j
                break
        text = tokenizer.decode(new[:n], skip_special_tokens=True)
        results.append(
            Generation(
                text=text,
                prompt_tokens=int(enc["attention_mask"][i].sum()),
                output_tokens=n,
                latency_s=elapsed,
            )
        )
    return results


__all__ = ["Generation", "generate_batch", "prompts_for", "stop_token_ids"]
