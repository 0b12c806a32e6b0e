"""Forward passes of a Llama-family model over the engine's slot KV cache (prefill and decode).

Llama-family models (Qwen2/Qwen2.5, Qwen3, Llama, Mistral without sliding windows) get fused weights
(q/k/v and gate/up concatenated) and the compiled layer math of :mod:`.layers`; quantized
(bitsandbytes) or unmerged-adapter models run the same passes through their own modules (no fusion).
Attention: decode uses the Triton split-K kernel of :mod:`.kernels` (each sequence read up to its own
position) or SDPA/math over a padded length bucket with a mask; prefill uses causal flash SDPA per
prompt (never cuDNN, which plans every new shape).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sqltune.generation.layers import head, post_attn, pre_attn, resolve_attn, rope
from sqltune.generation.request import EngineConfig


class LlamaPasses:
    """Forward passes of a Llama-family model over the engine's slot KV cache."""

    def __init__(self, model: Any, cfg: EngineConfig, device: Any):
        self.model = model
        hf = model.config
        self.device = device
        inner = model.model
        self.layers = list(inner.layers)
        self.nl = len(self.layers)
        self.nh = hf.num_attention_heads
        self.nkv = getattr(hf, "num_key_value_heads", None) or self.nh
        self.hd = getattr(hf, "head_dim", None) or hf.hidden_size // self.nh
        self.group = self.nh // self.nkv
        self.eps = float(getattr(hf, "rms_norm_eps", 1e-6))
        self.scale = self.hd**-0.5
        self.embed = inner.embed_tokens
        # The activation dtype is the embedding's (quantized layers keep int weights elsewhere).
        self.dtype = self.embed.weight.dtype
        if self.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.norm = inner.norm
        self.lm_head = model.get_output_embeddings()
        self.fast = self._can_fuse()
        if self.fast:
            with torch.no_grad():
                self._fuse_weights()
        # RoPE tables for every position the cache can hold (cos/sin of the model's own inv_freq).
        rotary = inner.rotary_emb
        pos = torch.arange(cfg.seq_len, device=device, dtype=torch.float32)
        freqs = pos[:, None] * rotary.inv_freq.to(device=device, dtype=torch.float32)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        scaling = float(getattr(rotary, "attention_scaling", 1.0))
        self.cos = (emb.cos() * scaling).to(self.dtype)
        self.sin = (emb.sin() * scaling).to(self.dtype)
        self.max_slots, self.seq_len = cfg.max_slots, cfg.seq_len
        self.dec_attn = None
        self.set_attn(resolve_attn(cfg.attn, device, self.dtype))
        self.pre, self.post, self.head = pre_attn, post_attn, head

    # -- setup ------------------------------------------------------------------------------------

    def _can_fuse(self) -> bool:
        for layer in self.layers:
            a, m = layer.self_attn, layer.mlp
            mods = [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
            if any(type(mod) is not nn.Linear for mod in mods):
                return False
        return type(self.lm_head) is nn.Linear

    def _fuse_weights(self) -> None:
        """Concatenate q/k/v and gate/up weights; the modules' own weights become views of them."""
        self.w: list[dict[str, Any]] = []
        for layer in self.layers:
            a, m = layer.self_attn, layer.mlp
            qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).contiguous()
            nq, nk = a.q_proj.weight.shape[0], a.k_proj.weight.shape[0]
            a.q_proj.weight = nn.Parameter(qkv[:nq], requires_grad=False)
            a.k_proj.weight = nn.Parameter(qkv[nq : nq + nk], requires_grad=False)
            a.v_proj.weight = nn.Parameter(qkv[nq + nk :], requires_grad=False)
            b_qkv = None
            if a.q_proj.bias is not None:
                b_qkv = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).contiguous()
                a.q_proj.bias = nn.Parameter(b_qkv[:nq], requires_grad=False)
                a.k_proj.bias = nn.Parameter(b_qkv[nq : nq + nk], requires_grad=False)
                a.v_proj.bias = nn.Parameter(b_qkv[nq + nk :], requires_grad=False)
            inter = m.gate_proj.weight.shape[0]
            gu = torch.cat([m.gate_proj.weight, m.up_proj.weight]).contiguous()
            m.gate_proj.weight = nn.Parameter(gu[:inter], requires_grad=False)
            m.up_proj.weight = nn.Parameter(gu[inter:], requires_grad=False)
            b_gu = None
            if m.gate_proj.bias is not None:
                b_gu = torch.cat([m.gate_proj.bias, m.up_proj.bias]).contiguous()
            q_norm = getattr(a, "q_norm", None)
            k_norm = getattr(a, "k_norm", None)
            self.w.append(
                {
                    "ln1": layer.input_layernorm.weight,
                    "qkv": qkv,
                    "b_qkv": b_qkv,
                    "q_norm": q_norm.weight if q_norm is not None else None,
                    "k_norm": k_norm.weight if k_norm is not None else None,
                    "o": a.o_proj.weight,
                    "b_o": a.o_proj.bias,
                    "ln2": layer.post_attention_layernorm.weight,
                    "gu": gu,
                    "b_gu": b_gu,
                    "down": m.down_proj.weight,
                    "b_down": m.down_proj.bias,
                    "inter": inter,
                }
            )

    def set_attn(self, attn: str) -> None:
        if attn == "triton" and self.dec_attn is None:
            from sqltune.generation.kernels import DecodeAttention  # Triton: CUDA only

            self.dec_attn = DecodeAttention(
                self.max_slots, self.nh, self.nkv, self.hd, self.seq_len, self.scale, self.device
            )
        self.attn = attn

    @property
    def reads_to_length(self) -> bool:
        """The decode attention reads each sequence's keys up to its own position (no length buckets)."""
        return self.attn == "triton"

    def _decode_backends(self):
        """Decode attention has a per-row mask: memory-efficient kernel (or math), never cuDNN/flash."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def _prefill_backends(self):
        """Flash (then memory-efficient) attention, never cuDNN: cuDNN builds an execution plan for every
        new (prompts, length) shape, ~50 ms each on an H200, and prefill shapes are rarely repeated."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def disable_compile(self) -> None:
        self.pre, self.post, self.head = pre_attn, post_attn, head

    def enable_compile(self) -> None:
        # One compiled graph serves every layer (weights and caches are arguments), every batch bucket and
        # prefill (tokens flattened to [N, hidden], the same shapes as decode). Automatic dynamic shapes
        # (dynamic=None), not dynamic=True: only the token dimension, which changes between calls, becomes
        # symbolic; head counts, head_dim, hidden and MLP sizes stay constants, so the kernels index with
        # constant strides (with everything symbolic the RoPE kernel ran ~10x under memory bandwidth).
        self.pre = torch.compile(pre_attn, dynamic=None, fullgraph=True)
        self.post = torch.compile(post_attn, dynamic=None, fullgraph=True)
        self.head = torch.compile(head, dynamic=None, fullgraph=True)

    # -- per-layer pieces --------------------------------------------------------------------------

    def _layer_pre(self, i: int, x, delta, cos, sin, kc, vc, slots, pos):
        """Returns (residual, q [N, nh, hd]); K/V of the N tokens are written to (slots, pos) of layer i."""
        if self.fast:
            w = self.w[i]
            return self.pre(
                x,
                delta,
                w["ln1"],
                w["qkv"],
                w["b_qkv"],
                w["q_norm"],
                w["k_norm"],
                cos,
                sin,
                kc,
                vc,
                slots,
                pos,
                self.eps,
                self.nh,
                self.nkv,
                self.hd,
            )
        layer = self.layers[i]
        a = layer.self_attn
        x = x + delta
        h = layer.input_layernorm(x)
        n = x.shape[0]
        q = a.q_proj(h).reshape(n, self.nh, self.hd)
        k = a.k_proj(h).reshape(n, self.nkv, self.hd)
        v = a.v_proj(h).reshape(n, self.nkv, self.hd)
        if getattr(a, "q_norm", None) is not None:
            q, k = a.q_norm(q), a.k_norm(k)
        kc[slots, :, pos] = rope(k, cos, sin).to(kc.dtype)
        vc[slots, :, pos] = v.to(vc.dtype)
        return x, rope(q, cos, sin)

    def _layer_post(self, i: int, x, attn):
        """Returns (residual, MLP output)."""
        if self.fast:
            w = self.w[i]
            return self.post(
                x,
                attn,
                w["o"],
                w["b_o"],
                w["ln2"],
                w["gu"],
                w["b_gu"],
                w["down"],
                w["b_down"],
                self.eps,
                w["inter"],
            )
        layer = self.layers[i]
        x = x + layer.self_attn.o_proj(attn)
        return x, layer.mlp(layer.post_attention_layernorm(x))

    def _greedy(self, x, delta):
        if self.fast:
            return self.head(x, delta, self.norm.weight, self.lm_head.weight, self.eps)
        return self.lm_head(self.norm(x + delta)).argmax(dim=-1)

    # -- passes ------------------------------------------------------------------------------------

    def prefill(self, ids, lengths, slots, kcs, vcs, past: int = 0):
        """Prefill ``ids`` [n, T] (right-padded) into cache slots ``slots`` [n] (a device tensor, so the
        pass can be captured in a CUDA graph); returns the next token of each prompt [n].

        The tokens are flattened to [n*T, hidden] so the per-layer math is the decode step's (the same
        compiled graphs, K/V written by the same scatter); only the attention is per prompt (causal SDPA).
        Padding positions write K/V past a prompt's end; decode overwrites them before attending to them.
        With ``past``, positions ``0..past-1`` of every slot already hold a prompt prefix: ``ids`` go to
        ``past..past+T-1`` and attend to the prefix too (causal, aligned to the last key).
        """
        n, T = ids.shape
        dev = ids.device
        x = self.embed(ids).reshape(n * T, -1)
        delta = torch.zeros_like(x)
        tok_slots = slots[:, None].expand(n, T).contiguous().view(n * T)  # materialised: same strides always
        pos = torch.arange(past, past + T, device=dev).repeat(n)
        cos = self.cos[pos][:, None, :]
        sin = self.sin[pos][:, None, :]
        # Causal, aligned to the last key: prompt token t sees the prefix and its own tokens up to t. (A plain
        # boolean mask: torch.nn.attention.bias would load torch._dynamo at import, seconds of cold start.)
        mask = torch.ones(T, past + T, dtype=torch.bool, device=dev).tril(diagonal=past) if past else None
        # Flash attention reads grouped K/V heads itself (no repeated copy of K and V per layer); it takes no
        # mask, so a cached prefix (masked) and the CPU repeat the heads instead.
        gqa = self.group > 1 and mask is None and self.device.type == "cuda" and self.dtype != torch.float32
        with self._prefill_backends():
            for i in range(self.nl):
                x, q = self._layer_pre(i, x, delta, cos, sin, kcs[i], vcs[i], tok_slots, pos)
                q = q.reshape(n, T, self.nh, self.hd).transpose(1, 2)
                k = kcs[i][:, :, : past + T].index_select(0, slots)  # [n, nkv, past + T, hd]
                v = vcs[i][:, :, : past + T].index_select(0, slots)
                if gqa:
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=True)
                else:
                    if self.group > 1:
                        k = k.repeat_interleave(self.group, dim=1)
                        v = v.repeat_interleave(self.group, dim=1)
                    if mask is None:
                        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
                    else:
                        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
                x, delta = self._layer_post(i, x, o.transpose(1, 2).reshape(n * T, self.nh * self.hd))
        last = torch.arange(n, device=dev) * T + lengths - 1
        return self._greedy(x[last], delta[last])

    def decode(self, tokens, pos, kcs, vcs, L: int, bidx, arange_l):
        """One decode step for the first B slots (B = len(tokens)) over cache positions < L."""
        B = tokens.shape[0]
        x = self.embed(tokens)  # [B, hidden]
        delta = torch.zeros_like(x)
        cos = self.cos[pos][:, None, :]
        sin = self.sin[pos][:, None, :]
        mask = None
        if not self.reads_to_length:
            # Additive mask, built once per step: 0 where a key position is filled, -inf after it.
            mask = torch.zeros((), dtype=x.dtype, device=x.device).masked_fill(
                arange_l[:L][None, :] > pos[:, None], float("-inf")
            )[:, None, None, :]  # [B, 1, 1, L]
        for i in range(self.nl):
            x, q = self._layer_pre(i, x, delta, cos, sin, kcs[i], vcs[i], bidx, pos)  # q [B, nh, hd]
            o = self._decode_attn(q, kcs[i], vcs[i], pos, B, L, mask)
            x, delta = self._layer_post(i, x, o.reshape(B, self.nh * self.hd))
        return self._greedy(x, delta)

    def mixed(self, tokens, pos, ids, lengths, slots, kcs, vcs, L: int, bidx, arange_l):
        """One decode step for the first B slots (``tokens``/``pos`` [B]) and the prefill of right-padded
        prompts ``ids`` [n, T] into ``slots`` [n], in one pass; returns the next tokens [B + n] (the B
        running sequences first, then the first token of each prompt).

        The running sequences' step rides on the prefill's matrix products (decode alone is bound by
        reading the weights, prefill by compute), so admitting new requests no longer pauses decoding.
        Per token the math is :meth:`decode`'s and :meth:`prefill`'s; only the attention is split."""
        B = tokens.shape[0]
        n, T = ids.shape
        dev = ids.device
        x = torch.cat([self.embed(tokens), self.embed(ids).reshape(n * T, -1)])
        delta = torch.zeros_like(x)
        pf_pos = torch.arange(T, device=dev).repeat(n)
        all_pos = torch.cat([pos, pf_pos])
        all_slots = torch.cat([bidx, slots[:, None].expand(n, T).reshape(n * T)])
        cos = self.cos[all_pos][:, None, :]
        sin = self.sin[all_pos][:, None, :]
        mask = None
        if not self.reads_to_length:
            mask = torch.zeros((), dtype=x.dtype, device=dev).masked_fill(
                arange_l[:L][None, :] > pos[:, None], float("-inf")
            )[:, None, None, :]
        for i in range(self.nl):
            x, q = self._layer_pre(i, x, delta, cos, sin, kcs[i], vcs[i], all_slots, all_pos)
            od = self._decode_attn(q[:B], kcs[i], vcs[i], pos, B, L, mask).reshape(B, self.nh * self.hd)
            qp = q[B:].reshape(n, T, self.nh, self.hd).transpose(1, 2)
            k = kcs[i][:, :, :T].index_select(0, slots)
            v = vcs[i][:, :, :T].index_select(0, slots)
            if self.group > 1:
                k = k.repeat_interleave(self.group, dim=1)
                v = v.repeat_interleave(self.group, dim=1)
            with self._prefill_backends():
                op = F.scaled_dot_product_attention(qp, k, v, is_causal=True, scale=self.scale)
            o = torch.cat([od, op.transpose(1, 2).reshape(n * T, self.nh * self.hd)])
            x, delta = self._layer_post(i, x, o)
        rows = torch.cat([torch.arange(B, device=dev), B + torch.arange(n, device=dev) * T + lengths - 1])
        return self._greedy(x[rows], delta[rows])

    def _decode_attn(self, q, kc, vc, pos, B: int, L: int, mask):
        if self.attn == "triton":
            return self.dec_attn(q, kc, vc, pos)
        keys = kc[:B, :, :L]  # [B, nkv, L, hd]
        vals = vc[:B, :, :L]
        qg = q.reshape(B, self.nkv, self.group, self.hd)  # grouped-query heads share their K/V
        if self.attn == "math":
            s = (qg @ keys.transpose(-1, -2)) * self.scale + mask
            return s.softmax(-1, dtype=torch.float32).to(qg.dtype) @ vals
        with self._decode_backends():
            return F.scaled_dot_product_attention(qg, keys, vals, attn_mask=mask, scale=self.scale)


__all__ = ["LlamaPasses"]
