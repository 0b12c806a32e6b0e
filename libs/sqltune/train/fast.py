"""Speed and memory pieces of sqltune's training step (GPU-oriented; all run on CPU too).

* :func:`chunked_lm_loss`: the causal-LM loss computed from the final hidden states in chunks of tokens,
  each chunk's logits recomputed in the backward pass, so a 152k-token vocabulary never materialises a
  ``tokens x vocab`` fp32 logits tensor (several GiB at 16k tokens per micro-batch).
* :func:`enable_selective_checkpointing`: recompute only the MLP blocks (the widest activations) in the
  backward pass and keep attention activations, instead of recomputing whole decoder layers.
* :func:`apply_liger`: Liger kernels (RMSNorm, SwiGLU, RoPE) when ``liger_kernel`` is importable.
* :func:`compile_layers`: ``torch.compile`` of each decoder layer (opt-in; measured by the benchmark).
* :data:`PACKED_SDPA` (``model.attn_implementation=sqltune_packed_sdpa``): attention per packed example
  instead of over the whole packed row with a block-diagonal mask, whose kernel spends the row's full
  ``T^2`` on the attention of examples of ``T/k``. On CUDA (16-bit activations) one variable-length
  flash-attention call covers every example of the micro-batch (boundaries from :func:`packed_seqlens`,
  computed once per micro-batch on the host); elsewhere SDPA runs per example (tiny preset, 2-core AVX2
  CPU: 1.65 -> 1.26 s a worker step).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)


PACKED_SDPA = "sqltune_packed_sdpa"


def _segments(position_ids: Any) -> list[list[int]]:
    """Start indices of the examples in each packed row (where ``position_ids`` restarts at 0)."""
    return [(row == 0).nonzero().flatten().tolist() for row in position_ids]


def packed_seqlens(position_ids: Any) -> tuple[Any, int] | None:
    """(cumulative example lengths as int32, longest example) of packed rows flattened into one sequence.

    ``position_ids`` is ``[rows, T]`` restarting at 0 at every example (and at every row's start, so no
    example crosses a row). None when a row does not start at 0 (not a packed batch).
    """
    if position_ids.ndim != 2 or bool((position_ids[:, 0] != 0).any()):
        return None
    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().flatten()
    cu = torch.cat([starts, torch.tensor([flat.numel()], dtype=starts.dtype)]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def _varlen_flash(query: Any, key: Any, value: Any, cu: Any, max_len: int, dropout: float,
                  scaling: float | None) -> Any:
    """Causal flash attention over variable-length examples; ``[B, H, T, D]`` in, ``[B, T, H, D]`` out."""
    b, h, t, d = query.shape
    q = query.transpose(1, 2).reshape(b * t, h, d)
    k = key.transpose(1, 2).reshape(b * t, key.shape[1], d)
    v = value.transpose(1, 2).reshape(b * t, value.shape[1], d)
    out = torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, max_len, max_len, dropout, True, False,
                                                  scale=scaling)[0]
    return out.view(b, t, h, d)


def packed_sdpa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                          dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers attention function: causal attention per example of each packed row.

    On CUDA with 16-bit activations, when the caller passes the packed boundaries (``cu_seq_lens_q`` and
    ``max_length_q``, as :func:`sqltune.train.loop.forward_loss` does), one varlen flash-attention call;
    otherwise, when training, SDPA per example. Anything else (generation with a cache, rows without
    restarts) goes to transformers' own SDPA with its mask, so a model loaded with this implementation
    behaves exactly like ``sdpa``.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    pos = kwargs.get("position_ids")
    length = query.shape[2]
    cu = kwargs.get("cu_seq_lens_q")
    if (cu is not None and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)
            and key.shape[2] == length and cu.is_cuda and int(cu.numel()) > 1):
        return _varlen_flash(query, key, value, cu, int(kwargs["max_length_q"]), dropout, scaling), None
    if not module.training or pos is None or key.shape[2] != length or length == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    starts = _segments(pos.expand(query.shape[0], -1))
    if any(not s or s[0] != 0 for s in starts):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    rows = []
    for b, row_starts in enumerate(starts):
        bounds = [*row_starts, length]
        rows.append(torch.cat([
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e],
                dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa,
            )
            for s, e in zip(bounds, bounds[1:])
        ], dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def register_packed_sdpa() -> str:
    """Register :func:`packed_sdpa_attention` (and SDPA's mask builder) under :data:`PACKED_SDPA`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


def causal_lm_parts(model: Any) -> tuple[Any, Any]:
    """(decoder stack, lm_head) of a (PEFT/DDP-wrapped) causal LM."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner.model, inner.get_output_embeddings()


PACKED_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def uses_packed_attention(model: Any) -> bool:
    """Whether a (PEFT/DDP-wrapped) model runs :data:`PACKED_SDPA` attention."""
    decoder, _ = causal_lm_parts(model)
    return getattr(decoder.config, "_attn_implementation", None) == PACKED_SDPA


def packed_kwargs(position_ids: Any, device: Any) -> dict[str, Any]:
    """The varlen boundaries of a packed micro-batch as attention kwargs (empty if it is not packed)."""
    found = packed_seqlens(position_ids)
    if found is None:
        return {}
    cu, longest = found
    cu = cu.to(device, non_blocking=True)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


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
    decoder, head = causal_lm_parts(model)
    kwargs = {k: batch[k] for k in ("attention_mask", "position_ids", *PACKED_KWARGS) if k in batch}
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
