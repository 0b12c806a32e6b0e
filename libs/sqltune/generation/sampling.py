"""Seeded sampling (temperature, top-p) of one prompt, for what the greedy engine does not do.

The slot engine decodes greedily (its argmax is fused into the layer math and CUDA graphs). A sampled
request - an OpenAI ``temperature > 0`` chat, a self-consistency candidate of the repair loop - decodes
here with transformers' ``generate`` on the same model. The same seed, prompt and settings give the same
tokens: the global generator ``generate`` draws from is seeded from the request's seed under a lock, and
restored afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from sqltune.generation.request import Sampling

_LOCK = threading.Lock()


def sample_tokens(
    model: Any,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    sampling: Sampling,
    stop_ids: frozenset[int] | set[int],
    pad_token_id: int | None = None,
    text_stop: Callable[[list[int]], int | None] | None = None,
) -> tuple[list[int], str]:
    """(new tokens, finish reason ``stop`` | ``length``) of one sampled generation.

    Tokens end before the first stop id; ``text_stop`` (as in :class:`~sqltune.generation.GenRequest`)
    may cut them earlier (the end of the first SQL statement).
    """
    if sampling.greedy:
        raise ValueError("sample_tokens needs temperature > 0; greedy requests go to the engine")
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], device=device)
    seed = int(sampling.seed or 0) % (2**63 - 1)
    with _LOCK:
        cpu_state = torch.random.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
        torch.manual_seed(seed)
        try:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    temperature=float(sampling.temperature),
                    top_p=float(sampling.top_p),
                    top_k=0,
                    max_new_tokens=int(max_new_tokens),
                    eos_token_id=sorted(stop_ids) or None,
                    pad_token_id=pad_token_id,
                )
        finally:
            torch.random.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
    new = out[0, len(prompt_ids):].tolist()
    finish = "length"
    for j, t in enumerate(new):
        if t in stop_ids:
            new, finish = new[:j], "stop"
            break
    if text_stop is not None:
        keep = text_stop(new)
        if keep is not None:
            new, finish = new[:keep], "stop"
    return new, finish


__all__ = ["sample_tokens"]
