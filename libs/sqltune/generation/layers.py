"""The per-layer math of a Llama-family decoder, as pure functions over flattened tokens.

Tokens are flattened to ``[N, hidden]`` with a (slot, position) per token, so prefill and decode run the
same functions; on CUDA they are ``torch.compile``d once (see :meth:`.passes.LlamaPasses.enable_compile`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def rms(x, w, eps: float):
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(dtype)


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def pre_attn(
    x, delta, ln_w, w_qkv, b_qkv, q_norm_w, k_norm_w, cos, sin, kc, vc, slots, pos, eps: float, nh, nkv, hd
):
    """Residual add -> RMSNorm -> fused QKV -> (Qwen3 head norms) -> RoPE -> K/V stored at (slot, pos).

    x, delta: [N, hidden] (the residual stream and the previous layer's MLP output, added here so the
    add and the norm are one kernel); returns (x + delta, q [N, nh, hd]).
    """
    x = x + delta
    h = rms(x, ln_w, eps)
    qkv = F.linear(h, w_qkv, b_qkv)
    n = x.shape[0]
    v = qkv[:, (nh + nkv) * hd :].reshape(n, nkv, hd)
    if q_norm_w is None:
        # Queries and keys are rotated together: one RoPE pass instead of two.
        qk = rope(qkv[:, : (nh + nkv) * hd].reshape(n, nh + nkv, hd), cos, sin)
        q, k = qk.split([nh, nkv], dim=1)
    else:
        q = rope(rms(qkv[:, : nh * hd].reshape(n, nh, hd), q_norm_w, eps), cos, sin)
        k = rope(rms(qkv[:, nh * hd : (nh + nkv) * hd].reshape(n, nkv, hd), k_norm_w, eps), cos, sin)
    # Written in place (inductor re-inplaces the scatter), fused with the RoPE that produces k.
    kc[slots, :, pos] = k
    vc[slots, :, pos] = v
    return x, q


def post_attn(x, attn, w_o, b_o, ln_w, w_gu, b_gu, w_down, b_down, eps: float, inter: int):
    """o_proj + residual -> RMSNorm -> fused gate/up -> SiLU * up -> down. Returns (residual, MLP output):
    the final residual add happens in the next layer's pre-attention kernel (or the head)."""
    x = x + F.linear(attn, w_o, b_o)
    h = rms(x, ln_w, eps)
    gu = F.linear(h, w_gu, b_gu)
    g, u = gu.split([inter, inter], dim=-1)
    return x, F.linear(F.silu(g) * u, w_down, b_down)


def head(x, delta, norm_w, lm_w, eps: float):
    """Last residual add, final norm, logits, greedy token."""
    return F.linear(rms(x + delta, norm_w, eps), lm_w).argmax(dim=-1)


def resolve_attn(attn: str, device: Any, dtype: Any) -> str:
    """auto: the Triton split-K kernel on CUDA in half precision when Triton imports, else SDPA."""
    if attn not in ("auto", "triton"):
        return attn
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        try:
            from sqltune.generation import kernels  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - Triton missing or broken: SDPA still works
            if attn == "triton":
                log.warning("Triton decode attention unavailable (%s); using SDPA", exc)
            return "sdpa"
        return "triton"
    if attn == "triton":
        log.warning("Triton decode attention needs CUDA and fp16/bf16; using SDPA")
    return "sdpa"


__all__ = ["head", "post_attn", "pre_attn", "resolve_attn", "rms", "rope"]
