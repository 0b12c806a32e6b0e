"""Triton kernels for the engine's decode step (CUDA only; imported lazily by :mod:`.layers` and :mod:`.passes`).

Decode attention is split-K ("flash decoding"): one program per (sequence, KV head, key block of
``split`` positions) computes a partial softmax over its keys for all the query heads that share that
KV head (grouped-query attention), and a second kernel merges the partials. Why not SDPA: its
memory-efficient kernel runs one program per (sequence, head) over the whole cache bucket, so at batch 1
two programs stream every key (a few SMs busy out of 132), and it reads masked positions past each
sequence's end. Here every program reads only positions ``<= pos`` of its own sequence, so one CUDA graph
per batch size serves every cache length, and short sequences cost what they hold.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _split_kernel(
    Q,
    K,
    V,
    POS,
    OP,
    MP,
    LP,
    sq_b,
    sq_h,
    sk_b,
    sk_h,
    sk_l,
    so_b,
    so_h,
    so_s,
    sm_b,
    sm_h,
    qk_scale,
    G: tl.constexpr,
    BLOCK_G: tl.constexpr,
    HD: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)  # cache offsets can pass 2**31
    kvh = tl.program_id(1)
    s = tl.program_id(2)
    length = tl.load(POS + b).to(tl.int32) + 1
    start = s * SPLIT
    end = tl.minimum(start + SPLIT, length)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HD)
    heads = kvh * G + offs_g
    gmask = offs_g < G
    if start < length:
        q = tl.load(Q + b * sq_b + heads[:, None] * sq_h + offs_d[None, :], mask=gmask[:, None], other=0.0)
        m = tl.full([BLOCK_G], float("-inf"), tl.float32)
        lsum = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, HD], tl.float32)
        base = b * sk_b + kvh * sk_h
        for n0 in range(start, end, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            nmask = offs_n < end
            kv_off = base + offs_n[:, None] * sk_l + offs_d[None, :]
            k = tl.load(K + kv_off, mask=nmask[:, None], other=0.0)
            v = tl.load(V + kv_off, mask=nmask[:, None], other=0.0)
            qk = tl.dot(q, tl.trans(k)) * qk_scale  # log2 domain: scale folds in log2(e)
            qk = tl.where(nmask[None, :], qk, float("-inf"))
            m_new = tl.maximum(m, tl.max(qk, 1))
            alpha = tl.exp2(m - m_new)
            p = tl.exp2(qk - m_new[:, None])
            lsum = lsum * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        o_off = b * so_b + heads[:, None] * so_h + s * so_s + offs_d[None, :]
        tl.store(OP + o_off, acc, mask=gmask[:, None])
        ml_off = b * sm_b + heads * sm_h + s
        tl.store(MP + ml_off, m, mask=gmask)
        tl.store(LP + ml_off, lsum, mask=gmask)


@triton.jit
def _merge_kernel(
    OP,
    MP,
    LP,
    POS,
    O,
    so_b,
    so_h,
    so_s,
    sm_b,
    sm_h,
    sout_b,
    sout_h,
    SPLIT: tl.constexpr,
    BLOCK_S: tl.constexpr,
    TILE_S: tl.constexpr,
    HD: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    length = tl.load(POS + b).to(tl.int32) + 1
    n_valid = (length + SPLIT - 1) // SPLIT
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HD)
    ml = MP + b * sm_b + h * sm_h
    m_max = tl.max(tl.load(ml + offs_s, mask=offs_s < n_valid, other=float("-inf")), 0)
    acc = tl.zeros([HD], tl.float32)
    denom = tl.sum(tl.zeros([TILE_S], tl.float32), 0)
    for s0 in range(0, n_valid, TILE_S):
        offs_t = s0 + tl.arange(0, TILE_S)
        tmask = offs_t < n_valid
        m = tl.load(ml + offs_t, mask=tmask, other=float("-inf"))
        w = tl.where(tmask, tl.exp2(m - m_max), 0.0)
        lsum = tl.load(LP + b * sm_b + h * sm_h + offs_t, mask=tmask, other=0.0)
        part = tl.load(
            OP + b * so_b + h * so_h + offs_t[:, None] * so_s + offs_d[None, :], mask=tmask[:, None], other=0.0
        )
        acc += tl.sum(part * w[:, None], 0)
        denom += tl.sum(lsum * w, 0)
    tl.store(O + b * sout_b + h * sout_h + offs_d, (acc / denom).to(O.dtype.element_ty))


class DecodeAttention:
    """Split-K decode attention over a slot cache; scratch buffers are allocated once (graph-safe).

    ``q``: [B, heads, hd] (any strides with a unit last stride); ``k``/``v``: one layer's cache
    ``[slots, kv_heads, seq_len, hd]``; ``pos``: [B] position of each row's newest key (row b is slot b).
    Returns ``[B, heads, hd]`` in q's dtype.
    """

    def __init__(self, max_batch: int, heads: int, kv_heads: int, head_dim: int, seq_len: int, scale, device):
        if head_dim & (head_dim - 1) or head_dim < 16:
            raise ValueError(f"head_dim {head_dim}: the Triton decode kernel needs a power of two >= 16")
        self.heads, self.kv_heads, self.hd, self.seq_len = heads, kv_heads, head_dim, seq_len
        self.group = heads // kv_heads
        self.qk_scale = float(scale) * 1.4426950408889634  # exp2 instead of exp
        self.max_splits = triton.cdiv(seq_len, 32)
        self.o_part = torch.empty(max_batch, heads, self.max_splits, head_dim, dtype=torch.float32, device=device)
        self.m_part = torch.empty(max_batch, heads, self.max_splits, dtype=torch.float32, device=device)
        self.l_part = torch.empty_like(self.m_part)

    def split_for(self, batch: int) -> int:
        """Keys per program: small splits when few sequences must fill the GPU, larger ones otherwise."""
        programs = batch * self.kv_heads
        if programs <= 16:
            return 32
        if programs <= 64:
            return 64
        return 128

    def __call__(self, q, k, v, pos, out=None):
        B = q.shape[0]
        split = self.split_for(B)
        nsplit = triton.cdiv(self.seq_len, split)
        if out is None:
            out = torch.empty(B, self.heads, self.hd, dtype=q.dtype, device=q.device)
        op, mp, lp = self.o_part, self.m_part, self.l_part
        _split_kernel[(B, self.kv_heads, nsplit)](
            q,
            k,
            v,
            pos,
            op,
            mp,
            lp,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            k.stride(2),
            op.stride(0),
            op.stride(1),
            op.stride(2),
            mp.stride(0),
            mp.stride(1),
            self.qk_scale,
            G=self.group,
            BLOCK_G=max(16, triton.next_power_of_2(self.group)),
            HD=self.hd,
            SPLIT=split,
            BLOCK_N=min(split, 64),
            num_warps=4,
            num_stages=2,
        )
        _merge_kernel[(B, self.heads)](
            op,
            mp,
            lp,
            pos,
            out,
            op.stride(0),
            op.stride(1),
            op.stride(2),
            mp.stride(0),
            mp.stride(1),
            out.stride(0),
            out.stride(1),
            SPLIT=split,
            BLOCK_S=triton.next_power_of_2(nsplit),
            TILE_S=16,
            HD=self.hd,
            num_warps=4,
        )
        return out
