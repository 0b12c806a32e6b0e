"""Speed and memory pieces of sqltune's training step (GPU-oriented; all run on CPU too).

* :func:`chunked_lm_loss`: the causal-LM loss computed from the final hidden states in chunks of tokens,
  each chunk's logits recomputed in the backward pass, so a 152k-token vocabulary never materialises a
  ``tokens x vocab`` fp32 logits tensor (several GiB at 16k tokens per micro-batch).
* :func:`enable_selective_checkpointing`: recompute only the MLP blocks (the widest activations) in the
  backward pass and keep attention activations, instead of recomputing whole decoder layers.
* :func:`apply_liger`: Liger kernels (RMSNorm, SwiGLU, RoPE) when ``liger_kernel`` is importable.
* :func:`compile_layers`: ``torch.compile`` of each decoder layer (opt-in; measured by the benchmark).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def causal_lm_parts(model: Any) -> tuple[Any, Any]:
    """(decoder stack, lm_head) of a (PEFT/DDP-wrapped) causal LM."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner.model, inner.get_output_embeddings()


def chunked_lm_loss(
    model: Any,
    batch: dict[str, Any],
    *,
    num_items: int,
    chunk_tokens: int = 4096,
) -> Any:
    """Sum of next-token cross-entropy over target tokens / ``num_items``, without full logits.

    ``batch`` holds ``input_ids``, ``labels`` and either ``attention_mask`` or ``position_ids``
    (packed rows). Only positions whose next label is a target are projected onto the vocabulary.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    decoder, head = causal_lm_parts(model)
    kwargs = {k: batch[k] for k in ("attention_mask", "position_ids") if k in batch}
    hidden = decoder(input_ids=batch["input_ids"], use_cache=False, **kwargs).last_hidden_state
    labels = batch["labels"][:, 1:]
    h = hidden[:, :-1]
    keep = labels != -100
    h = h[keep]
    y = labels[keep]

    def piece(hc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
        logits = head(hc).float()
        return F.cross_entropy(logits, yc, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk_tokens):
        hc, yc = h[start : start + chunk_tokens], y[start : start + chunk_tokens]
        total = total + checkpoint(piece, hc, yc, use_reentrant=False)
    return total / max(1, num_items)


def enable_selective_checkpointing(model: Any, parts: tuple[str, ...] = ("mlp",)) -> int:
    """Wrap the forward of each decoder layer's ``parts`` (default the MLP) in activation checkpointing."""
    from torch.utils.checkpoint import checkpoint

    decoder, _ = causal_lm_parts(model)
    n = 0
    for layer in decoder.layers:
        for name in parts:
            mod = getattr(layer, name, None)
            if mod is None or getattr(mod, "_sqltune_ckpt", False):
                continue
            original = mod.forward

            def wrapped(*args: Any, _f: Any = original, **kwargs: Any) -> Any:
                if not _f.__self__.training:
                    return _f(*args, **kwargs)
                return checkpoint(_f, *args, use_reentrant=False, **kwargs)

            mod.forward = wrapped
            mod._sqltune_ckpt = True
            n += 1
    return n


def apply_liger(model_type: str = "qwen2") -> bool:
    """Patch transformers' Qwen2 modules with Liger kernels before the model is built; False if absent.

    Fused linear cross-entropy is left off: sqltune computes the loss with :func:`chunked_lm_loss`.
    """
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2
    except ImportError:
        return False
    if model_type != "qwen2":
        return False
    apply_liger_kernel_to_qwen2(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=False)
    log.info("Liger kernels applied (RoPE, RMSNorm, SwiGLU)")
    return True


def compile_layers(model: Any, **kwargs: Any) -> int:
    """``torch.compile`` each decoder layer in place; returns how many were compiled."""
    decoder, _ = causal_lm_parts(model)
    n = 0
    for layer in decoder.layers:
        layer.compile(**kwargs)
        n += 1
    return n
