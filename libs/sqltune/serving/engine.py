"""The replica's generation engine: continuous batching of greedy decoding over a static KV cache.

Design (correctness first, then speed):

* **Slots.** The KV cache is preallocated once: ``[layers, slots, kv_heads, seq_len, head_dim]`` for keys
  and values. Each running sequence owns one slot; running sequences always occupy slots ``0..n-1``
  (when one finishes, the last one is moved into its hole), so a decode step only touches the first
  ``n`` slots.
* **Continuous batching.** A background thread runs the scheduler. Between decode chunks it admits every
  queued request (up to the free slots): their prompts are prefilled together (right padding, causal
  attention) straight into their slots, and they join the running batch at the next step. Requests that
  arrive while others decode therefore share batches with them; nothing waits for a batch to drain.
* **No host sync per token.** A decode step reads the current token and position of every slot from
  device buffers, writes the new K/V at that position, and writes the next token back to the device
  buffers (and into an output buffer). ``decode_chunk`` steps run back to back; only then does the host
  copy the new tokens once and check the stop conditions (end of turn, end of statement, length).
* **One layer function for prefill and decode.** Tokens are flattened to ``[N, hidden]`` with a (slot,
  position) per token; the pre-attention function adds the residual, normalises, projects, rotates and
  scatters K/V into the cache. On CUDA it is ``torch.compile``d with automatic dynamic shapes (only N is
  symbolic), so one compiled graph serves every layer, every batch bucket and prefill.
* **Attention.** Decode: a Triton split-K kernel (:mod:`.kernels`) that reads each sequence's keys only up
  to its own position (SDPA/math fallbacks attend over a padded length bucket with a mask). Prefill:
  causal flash SDPA per prompt (never cuDNN, which plans every new shape).
* **CUDA graphs.** The decode step is captured per batch bucket (and cache-length bucket on the SDPA
  fallback), and single-prompt prefill per prompt-length bucket (prefill of one prompt is launch-bound).
* **Fallbacks.** Llama-family models (Qwen2/Qwen2.5, Qwen3, Llama, Mistral without sliding windows) use
  the fast path. Quantized (bitsandbytes) or unmerged-adapter models run the same scheduler with their
  own modules (no weight fusion, no graphs). Any other architecture gets :class:`GenerateEngine`
  (dynamic batching around ``model.generate``).

The engine knows nothing about HTTP or Ray: :class:`GenRequest` in, callbacks out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("qwen2", "qwen3", "llama", "mistral")


class EngineError(RuntimeError):
    """A request cannot be served by the engine (too long, engine stopped, generation failed)."""


@dataclass
class GenRequest:
    """One generation. ``on_update(req, new_tokens, finished)`` is called from the engine thread."""

    prompt_ids: list[int]
    max_new_tokens: int
    stop_ids: frozenset[int] = frozenset()
    """Token ids that end the generation (excluded from the output). Empty: forced length."""
    text_stop: Callable[[list[int]], int | None] | None = None
    """Given the tokens so far, the number of tokens to keep when the text is complete (else None)."""
    on_update: Callable[[GenRequest, list[int], bool], None] | None = None

    # Filled in by the engine.
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = ""
    error: str | None = None
    max_batch: int = 0
    """The largest decode batch this request was part of."""
    prefill_batch: int = 0
    submitted_at: float = 0.0
    started_at: float = 0.0
    first_token_at: float = 0.0
    finished_at: float = 0.0
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return bool(self.finish_reason)


@dataclass
class EngineConfig:
    max_slots: int = 32
    seq_len: int = 2048
    decode_chunk: int = 0  # 0: 16 on CUDA, 1 on CPU
    batch_wait_s: float = 0.0
    max_prefill_tokens: int = 0  # 0: 16384 on CUDA, 4096 on CPU
    cuda_graphs: bool = True
    compile: str = "auto"  # auto | on | off
    attn: str = "auto"  # auto (triton on CUDA half precision, else sdpa) | triton | sdpa | math


def _bucket_sizes(limit: int, start: int) -> list[int]:
    sizes, s = [], start
    while s < limit:
        sizes.append(s)
        s *= 2
    sizes.append(limit)
    return sizes


def _prefill_buckets(seq_len: int) -> list[int]:
    """Prompt lengths that get a captured single-prompt prefill graph (longer prompts run eagerly)."""
    return list(range(64, min(seq_len, 1024) + 1, 64)) + list(range(1280, min(seq_len, 2048) + 1, 256))


def _ceil_bucket(value: int, buckets: list[int]) -> int:
    for b in buckets:
        if b >= value:
            return b
    return buckets[-1]


# --------------------------------------------------------------------------------- layer math (pure)


def _rms(x, w, eps: float):
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(dtype)


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def _pre_attn(
    x, delta, ln_w, w_qkv, b_qkv, q_norm_w, k_norm_w, cos, sin, kc, vc, slots, pos, eps: float, nh, nkv, hd
):
    """Residual add -> RMSNorm -> fused QKV -> (Qwen3 head norms) -> RoPE -> K/V stored at (slot, pos).

    x, delta: [N, hidden] (the residual stream and the previous layer's MLP output, added here so the
    add and the norm are one kernel); returns (x + delta, q [N, nh, hd]).
    """
    x = x + delta
    h = _rms(x, ln_w, eps)
    qkv = F.linear(h, w_qkv, b_qkv)
    n = x.shape[0]
    v = qkv[:, (nh + nkv) * hd :].reshape(n, nkv, hd)
    if q_norm_w is None:
        # Queries and keys are rotated together: one RoPE pass instead of two.
        qk = _rope(qkv[:, : (nh + nkv) * hd].reshape(n, nh + nkv, hd), cos, sin)
        q, k = qk.split([nh, nkv], dim=1)
    else:
        q = _rope(_rms(qkv[:, : nh * hd].reshape(n, nh, hd), q_norm_w, eps), cos, sin)
        k = _rope(_rms(qkv[:, nh * hd : (nh + nkv) * hd].reshape(n, nkv, hd), k_norm_w, eps), cos, sin)
    # Written in place (inductor re-inplaces the scatter), fused with the RoPE that produces k.
    kc[slots, :, pos] = k
    vc[slots, :, pos] = v
    return x, q


def _post_attn(x, attn, w_o, b_o, ln_w, w_gu, b_gu, w_down, b_down, eps: float, inter: int):
    """o_proj + residual -> RMSNorm -> fused gate/up -> SiLU * up -> down. Returns (residual, MLP output):
    the final residual add happens in the next layer's pre-attention kernel (or the head)."""
    x = x + F.linear(attn, w_o, b_o)
    h = _rms(x, ln_w, eps)
    gu = F.linear(h, w_gu, b_gu)
    g, u = gu.split([inter, inter], dim=-1)
    return x, F.linear(F.silu(g) * u, w_down, b_down)


def _head(x, delta, norm_w, lm_w, eps: float):
    """Last residual add, final norm, logits, greedy token."""
    return F.linear(_rms(x + delta, norm_w, eps), lm_w).argmax(dim=-1)


def resolve_attn(attn: str, device: Any, dtype: Any) -> str:
    """auto: the Triton split-K kernel on CUDA in half precision when Triton imports, else SDPA."""
    if attn not in ("auto", "triton"):
        return attn
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        try:
            from sqltune.serving import kernels  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - Triton missing or broken: SDPA still works
            if attn == "triton":
                log.warning("Triton decode attention unavailable (%s); using SDPA", exc)
            return "sdpa"
        return "triton"
    if attn == "triton":
        log.warning("Triton decode attention needs CUDA and fp16/bf16; using SDPA")
    return "sdpa"


# ------------------------------------------------------------------------------------------ the model


class _LlamaRunner:
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
        self.pre, self.post, self.head = _pre_attn, _post_attn, _head

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
            from sqltune.serving.kernels import DecodeAttention

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
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def _prefill_backends(self):
        """Flash (then memory-efficient) attention, never cuDNN: cuDNN builds an execution plan for every
        new (prompts, length) shape, ~50 ms each on an H200, and prefill shapes are rarely repeated."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def disable_compile(self) -> None:
        self.pre, self.post, self.head = _pre_attn, _post_attn, _head

    def enable_compile(self) -> None:
        # One compiled graph serves every layer (weights and caches are arguments), every batch bucket and
        # prefill (tokens flattened to [N, hidden], the same shapes as decode). Automatic dynamic shapes
        # (dynamic=None), not dynamic=True: only the token dimension, which changes between calls, becomes
        # symbolic; head counts, head_dim, hidden and MLP sizes stay constants, so the kernels index with
        # constant strides (with everything symbolic the RoPE kernel ran ~10x under memory bandwidth).
        self.pre = torch.compile(_pre_attn, dynamic=None, fullgraph=True)
        self.post = torch.compile(_post_attn, dynamic=None, fullgraph=True)
        self.head = torch.compile(_head, dynamic=None, fullgraph=True)

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
        kc[slots, :, pos] = _rope(k, cos, sin).to(kc.dtype)
        vc[slots, :, pos] = v.to(vc.dtype)
        return x, _rope(q, cos, sin)

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

    def prefill(self, ids, lengths, slots, kcs, vcs):
        """Prefill ``ids`` [n, T] (right-padded) into cache slots ``slots`` [n] (a device tensor, so the
        pass can be captured in a CUDA graph); returns the next token of each prompt [n].

        The tokens are flattened to [n*T, hidden] so the per-layer math is the decode step's (the same
        compiled graphs, K/V written by the same scatter); only the attention is per prompt (causal SDPA).
        Padding positions write K/V past a prompt's end; decode overwrites them before attending to them.
        """
        n, T = ids.shape
        dev = ids.device
        x = self.embed(ids).reshape(n * T, -1)
        delta = torch.zeros_like(x)
        tok_slots = slots[:, None].expand(n, T).contiguous().view(n * T)  # materialised: same strides always
        pos = torch.arange(T, device=dev).repeat(n)
        cos = self.cos[pos][:, None, :]
        sin = self.sin[pos][:, None, :]
        for i in range(self.nl):
            x, q = self._layer_pre(i, x, delta, cos, sin, kcs[i], vcs[i], tok_slots, pos)
            q = q.reshape(n, T, self.nh, self.hd).transpose(1, 2)
            k = kcs[i][:, :, :T].index_select(0, slots)  # [n, nkv, T, hd]
            v = vcs[i][:, :, :T].index_select(0, slots)
            if self.group > 1:
                k = k.repeat_interleave(self.group, dim=1)
                v = v.repeat_interleave(self.group, dim=1)
            with self._prefill_backends():
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
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


# ------------------------------------------------------------------------------------------ the engine


class _Seq:
    __slots__ = ("req", "cache_len", "remaining")

    def __init__(self, req: GenRequest, cache_len: int):
        self.req = req
        self.cache_len = cache_len  # tokens whose K/V are in the cache (positions 0..cache_len-1)
        self.remaining = req.max_new_tokens


class Engine:
    """Continuous-batching greedy engine over a static slot KV cache (see module docstring)."""

    def __init__(self, model: Any, tokenizer: Any = None, config: EngineConfig | None = None):
        cfg = dataclasses.replace(config or EngineConfig())
        if cfg.seq_len >= 128:
            cfg.seq_len = -(-cfg.seq_len // 128) * 128  # aligned cache rows for the attention kernels
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.is_cuda = self.device.type == "cuda"
        # 16 on CUDA: measured on an H200 against 8, +15-20% tokens/s at 16 concurrent, the same single-
        # request latency; the cost is up to 15 wasted steps after a stop (a finished row rides along).
        self.chunk = cfg.decode_chunk or (16 if self.is_cuda else 1)
        self.max_prefill_tokens = cfg.max_prefill_tokens or (16384 if self.is_cuda else 4096)
        self.runner = _LlamaRunner(model, cfg, self.device)
        r = self.runner
        S, L = cfg.max_slots, cfg.seq_len
        # One tensor per layer (not views of one block): the compiled layer math then sees the same
        # tensor metadata (no storage offset) for every layer, so one graph serves them all.
        shape = (S, r.nkv, L, r.hd)
        self.k_cache = [torch.zeros(shape, dtype=r.dtype, device=self.device) for _ in range(r.nl)]
        self.v_cache = [torch.zeros(shape, dtype=r.dtype, device=self.device) for _ in range(r.nl)]
        # Inference tensors, like the index tensors prefill creates, so the compiled layer math sees the
        # same dispatch keys from both (else one more compiled variant). Only touched in inference mode.
        with torch.inference_mode():
            self.tokens_buf = torch.zeros(S, dtype=torch.long, device=self.device)
            self.pos_buf = torch.zeros(S, dtype=torch.long, device=self.device)
            self.out_buf = torch.zeros(S, max(self.chunk, 1), dtype=torch.long, device=self.device)
            self.step_buf = torch.zeros(1, dtype=torch.long, device=self.device)
            self.arange_s = torch.arange(S, device=self.device)
            self.arange_l = torch.arange(L, device=self.device)
            # Single-prompt prefill graphs (per length bucket) read their inputs from these.
            self.pf_buckets = _prefill_buckets(L)
            self.pf_ids = torch.zeros(1, max(self.pf_buckets, default=1), dtype=torch.long, device=self.device)
            self.pf_len = torch.zeros(1, dtype=torch.long, device=self.device)
            self.pf_slot = torch.zeros(1, dtype=torch.long, device=self.device)
        self.batch_buckets = _bucket_sizes(S, 1)
        self.use_graphs = bool(cfg.cuda_graphs and self.is_cuda and r.fast)
        want_compile = cfg.compile == "on" or (cfg.compile == "auto" and self.is_cuda)
        self.compiled = False
        if want_compile and r.fast:
            try:
                r.enable_compile()
                self.compiled = True
            except Exception as exc:  # noqa: BLE001 - compile is an optimisation, never required
                log.warning("torch.compile unavailable (%s); running the layers eagerly", exc)
        self._graphs: dict[tuple[int, int], Any] = {}
        self._pf_graphs: dict[int, tuple[Any, Any]] = {}  # length bucket -> (graph, next-token output)
        self._graph_pool = None
        self._queue: queue.Queue[GenRequest | None] = queue.Queue()
        self._active: list[_Seq] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.stats_counts: dict[str, Any] = {
            "decode_batch_sizes": Counter(),
            "prefill_batch_sizes": Counter(),
            "requests": 0,
            "generated_tokens": 0,
            "decode_steps": 0,
            "errors": 0,
            "prefill_s": 0.0,
            "decode_s": 0.0,
        }
        self.on_batch: Callable[[str, int], None] | None = None
        self.ready = False

    @property
    def len_buckets(self) -> list[int]:
        """Cache lengths the decode attention is specialised for (one CUDA graph per batch bucket each)."""
        L = self.cfg.seq_len
        return [L] if self.runner.reads_to_length else _bucket_sizes(L, min(256, L))

    # -- public API --------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        parts = ["fused" if self.runner.fast else "modules", f"attn-{self.runner.attn}"]
        if self.compiled:
            parts.append("compiled")
        if self.use_graphs:
            parts.append("cuda-graphs")
        return "+".join(parts)

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sqltune-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, req: GenRequest) -> GenRequest:
        if self._stop.is_set():
            raise EngineError("the engine is stopped")
        total = len(req.prompt_ids) + req.max_new_tokens
        if not req.prompt_ids:
            raise EngineError("empty prompt")
        if total > self.cfg.seq_len:
            raise EngineError(
                f"prompt ({len(req.prompt_ids)} tokens) + max_new_tokens ({req.max_new_tokens}) exceeds the "
                f"engine's sequence length {self.cfg.seq_len}"
            )
        if req.max_new_tokens < 1:
            raise EngineError("max_new_tokens must be at least 1")
        req.submitted_at = time.perf_counter()
        self._queue.put(req)
        return req

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        *,
        stop_ids=frozenset(),
        text_stop=None,
        timeout: float | None = None,
    ) -> list[GenRequest]:
        """Submit every prompt at once and wait for all of them (benchmarks, warm-up, tests)."""
        done = threading.Semaphore(0)

        def cb(_r, _t, finished):
            if finished:
                done.release()

        reqs = [GenRequest(list(p), max_new_tokens, frozenset(stop_ids), text_stop, cb) for p in prompts]
        for r in reqs:
            self.submit(r)
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in reqs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not done.acquire(timeout=left):
                raise EngineError("generation timed out")
        return reqs

    def _record(self, kind: str, size: int, times: int = 1) -> None:
        with self._lock:
            self.stats_counts[f"{kind}_batch_sizes"][size] += times
        if self.on_batch:
            try:
                self.on_batch(kind, size)
            except Exception:  # noqa: BLE001 - metrics must never break generation
                log.debug("on_batch hook failed", exc_info=True)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = dict(self.stats_counts)
            s["decode_batch_sizes"] = Counter(s["decode_batch_sizes"])
            s["prefill_batch_sizes"] = Counter(s["prefill_batch_sizes"])
        return {
            "mode": self.mode,
            "device": str(self.device),
            "max_slots": self.cfg.max_slots,
            "seq_len": self.cfg.seq_len,
            "decode_chunk": self.chunk,
            "active": len(self._active),
            "queued": self._queue.qsize(),
            "requests": s["requests"],
            "generated_tokens": s["generated_tokens"],
            "decode_steps": s["decode_steps"],
            "errors": s["errors"],
            # Wall time of the scheduler's prefill and decode phases (each ends in its host sync).
            "prefill_s": round(s.get("prefill_s", 0.0), 4),
            "decode_s": round(s.get("decode_s", 0.0), 4),
            "decode_batch_sizes": {str(k): v for k, v in sorted(s["decode_batch_sizes"].items())},
            "prefill_batch_sizes": {str(k): v for k, v in sorted(s["prefill_batch_sizes"].items())},
            "max_decode_batch": max(s["decode_batch_sizes"], default=0),
            "cuda_graphs": len(self._graphs),
            "prefill_graphs": len(self._pf_graphs),
        }

    def warmup(self, capture: bool = True) -> None:
        """Compile (or fall back to eager), capture the CUDA graphs of every bucket, then run a few
        generations through the scheduler. Call before :meth:`start` (or while the engine is idle)."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            try:
                self._trial()
            except Exception as exc:  # noqa: BLE001 - fall back step by step: eager layers, then math attention
                err: Exception | None = exc
                if self.compiled:
                    log.warning(
                        "compiled step failed (%s: %s); running the layers eagerly", type(exc).__name__, exc
                    )
                    self.runner.disable_compile()
                    self.compiled = False
                    try:
                        self._trial()
                        err = None
                    except Exception as exc2:  # noqa: BLE001
                        err = exc2
                for fallback in ("sdpa", "math"):
                    if err is None or self.runner.attn == "math" or self.runner.attn == fallback:
                        continue
                    log.warning(
                        "decode attention %s failed (%s: %s); using %s",
                        self.runner.attn,
                        type(err).__name__,
                        err,
                        fallback,
                    )
                    self.runner.set_attn(fallback)
                    try:
                        self._trial()
                        err = None
                    except Exception as exc3:  # noqa: BLE001
                        err = exc3
                if err is not None:
                    raise err
            if self.use_graphs and capture:
                self._capture_all()
        log.info("engine warm-up (%s) took %.1fs", self.mode, time.perf_counter() - t0)
        # Exercise prefill + decode end to end through the scheduler.
        was_running = self._thread is not None
        if not was_running:
            self.start()
        self.generate(
            [[1, 2, 3, 4]] * min(2, self.cfg.max_slots), max_new_tokens=min(4, self.cfg.seq_len - 4)
        )
        self.generate([[5] * 8], max_new_tokens=2)
        self.reset_stats()
        self.ready = True

    def reset_stats(self) -> None:
        with self._lock:
            self.stats_counts["decode_batch_sizes"].clear()
            self.stats_counts["prefill_batch_sizes"].clear()
            self.stats_counts.update(requests=0, generated_tokens=0, decode_steps=0, prefill_s=0.0, decode_s=0.0)

    # -- scheduler ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        if self.is_cuda and self.device.index is not None:
            torch.cuda.set_device(self.device)
        with torch.inference_mode():
            while not self._stop.is_set():
                try:
                    new = self._collect()
                    if new:
                        t0 = time.perf_counter()
                        self._prefill(new)
                        self.stats_counts["prefill_s"] += time.perf_counter() - t0
                    if self._active:
                        t0 = time.perf_counter()
                        self._decode_chunk()
                        self.stats_counts["decode_s"] += time.perf_counter() - t0
                except Exception as exc:  # noqa: BLE001 - never let one failure kill the replica
                    log.exception("engine step failed")
                    self.stats_counts["errors"] += 1
                    self._fail_all(f"generation failed: {type(exc).__name__}: {exc}")
            self._fail_all("the engine stopped")
        while True:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                break
            if req is not None:
                self._finish(req, "error", error="the engine stopped")

    def _collect(self) -> list[GenRequest]:
        free = self.cfg.max_slots - len(self._active)
        out: list[GenRequest] = []
        if free <= 0:
            return out
        if not self._active:
            try:
                req = self._queue.get(timeout=0.1)
            except queue.Empty:
                return out
            if req is None:
                return out
            out.append(req)
            deadline = time.perf_counter() + self.cfg.batch_wait_s
            while len(out) < free:
                left = deadline - time.perf_counter()
                try:
                    req = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if req is None:
                    break
                out.append(req)
        while len(out) < free:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                break
            if req is not None:
                out.append(req)
        live = []
        for r in out:
            if r.cancelled:
                self._finish(r, "cancelled")
            else:
                live.append(r)
        return live

    def _prefill(self, reqs: list[GenRequest]) -> None:
        reqs = sorted(reqs, key=lambda r: len(r.prompt_ids))
        groups: list[list[GenRequest]] = [[]]
        for r in reqs:
            g = groups[-1]
            width = max([len(x.prompt_ids) for x in g] + [len(r.prompt_ids)])
            if g and width * (len(g) + 1) > self.max_prefill_tokens:
                groups.append([r])
            else:
                g.append(r)
        now = time.perf_counter()
        for g in groups:
            slot0 = len(self._active)
            n = len(g)
            T = max(len(r.prompt_ids) for r in g)
            ids = torch.zeros(n, T, dtype=torch.long)
            for i, r in enumerate(g):
                ids[i, : len(r.prompt_ids)] = torch.tensor(r.prompt_ids, dtype=torch.long)
                r.started_at = now
                r.prefill_batch = n
            lengths = torch.tensor([len(r.prompt_ids) for r in g], dtype=torch.long)
            try:
                first, len_d = self._run_prefill(ids, lengths, slot0)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory: fail these, keep serving others
                log.exception("prefill of %d requests failed", n)
                self.stats_counts["errors"] += 1
                for r in g:
                    self._finish(r, "error", error=f"prefill failed: {type(exc).__name__}: {exc}")
                continue
            self.tokens_buf[slot0 : slot0 + n].copy_(first)
            self.pos_buf[slot0 : slot0 + n].copy_(len_d)
            first_host = first.cpu().tolist()  # the one sync per prefill (.cpu() waits without the GIL)
            self.stats_counts["requests"] += n
            self._record("prefill", n)
            t = time.perf_counter()
            for r, tok in zip(g, first_host):
                r.first_token_at = t
                seq = _Seq(r, len(r.prompt_ids))
                self._active.append(seq)
                self._accept(seq, [tok])
        self._compact()

    def _run_prefill(self, ids, lengths, slot0: int):
        """One prompt that fits a captured bucket: replay its graph (prefill is CPU-bound at this size:
        ~24 ms of launches for ~5 ms of GPU work at 320 tokens). Several prompts: the eager pass."""
        n, T = ids.shape
        if n == 1 and self._pf_graphs and T <= self.pf_buckets[-1]:
            graph, out = self._pf_graphs[_ceil_bucket(T, self.pf_buckets)]
            self.pf_ids[0, :T].copy_(ids[0])  # positions past T keep stale ids: padding, never attended
            self.pf_len.fill_(T)
            self.pf_slot.fill_(slot0)
            graph.replay()
            return out, self.pf_len
        len_d = lengths.to(self.device)
        first = self.runner.prefill(
            ids.to(self.device), len_d, self.arange_s[slot0 : slot0 + n], self.k_cache, self.v_cache
        )
        return first, len_d

    def _accept(self, seq: _Seq, toks: list[int]) -> None:
        """Append newly generated tokens to a sequence and decide whether it is finished."""
        req = seq.req
        if req.finished:
            return
        take: list[int] = []
        reason = ""
        for t in toks:
            if seq.remaining <= 0:
                reason = "length"
                break
            if t in req.stop_ids:
                reason = "stop"
                break
            take.append(t)
            seq.remaining -= 1
        if not reason and seq.remaining <= 0:
            reason = "length"
        req.tokens.extend(take)
        self.stats_counts["generated_tokens"] += len(take)
        if req.text_stop is not None and take:
            keep = req.text_stop(req.tokens)
            if keep is not None:
                extra = len(req.tokens) - keep
                if extra > 0:
                    del req.tokens[keep:]
                    take = take[: max(0, len(take) - extra)]
                reason = "stop"
        if req.cancelled and not reason:
            reason = "cancelled"
        if reason:
            self._finish(req, reason, new=take)
        elif req.on_update and take:
            req.on_update(req, take, False)

    def _finish(
        self, req: GenRequest, reason: str, *, error: str | None = None, new: list[int] | None = None
    ):
        if req.finished:
            return
        req.finish_reason = reason
        req.error = error
        req.finished_at = time.perf_counter()
        if req.on_update:
            try:
                req.on_update(req, new or [], True)
            except Exception:  # noqa: BLE001 - a broken callback must not stop the engine
                log.exception("request callback failed")

    def _compact(self) -> None:
        """Drop finished sequences; move the last running ones into the holes (slots stay 0..n-1)."""
        act = self._active
        if all(not s.req.finished for s in act):
            return
        keep = [s for s in act if not s.req.finished]
        n_new = len(keep)
        holes = [i for i in range(n_new) if act[i].req.finished]
        movers = [j for j in range(n_new, len(act)) if not act[j].req.finished]
        pairs = list(zip(holes, movers))
        if pairs:
            # Whole slot rows (contiguous), every layer in one multi-tensor copy instead of 2 x layers.
            dst = [c[i] for c in (*self.k_cache, *self.v_cache) for i, _ in pairs]
            src = [c[j] for c in (*self.k_cache, *self.v_cache) for _, j in pairs]
            torch._foreach_copy_(dst, src)
            to = torch.tensor([i for i, _ in pairs], device=self.device)
            frm = torch.tensor([j for _, j in pairs], device=self.device)
            self.tokens_buf[to] = self.tokens_buf[frm]
            self.pos_buf[to] = self.pos_buf[frm]
            for i, j in pairs:
                act[i] = act[j]
        del act[n_new:]
        self.pos_buf[n_new:].zero_()
        self.tokens_buf[n_new:].zero_()

    def _decode_chunk(self) -> None:
        n = len(self._active)
        B = _ceil_bucket(n, self.batch_buckets)
        steps = min(self.chunk, max(s.remaining for s in self._active))
        steps = max(1, steps)
        need = max(s.cache_len for s in self._active) + steps
        L = _ceil_bucket(min(need, self.cfg.seq_len), self.len_buckets)
        self.step_buf.zero_()
        for _ in range(steps):
            self._step(B, L)
        out = self.out_buf[:n, :steps].cpu().tolist()  # the one host sync per chunk, GIL released
        self.stats_counts["decode_steps"] += steps
        self._record("decode", n, steps)
        for seq, toks in zip(self._active, out):
            seq.cache_len += steps
            seq.req.max_batch = max(seq.req.max_batch, n)
            self._accept(seq, toks)
        self._compact()

    def _step(self, B: int, L: int) -> None:
        g = self._graphs.get((B, L)) if self.use_graphs else None
        if g is not None:
            g.replay()
        else:  # graphs are captured before serving only: a capture mid-flight would clobber live slots
            self._step_eager(B, L)

    def _step_eager(self, B: int, L: int) -> None:
        pos = self.pos_buf[:B]
        nxt = self.runner.decode(
            self.tokens_buf[:B], pos, self.k_cache, self.v_cache, L, self.arange_s[:B], self.arange_l
        )
        self.out_buf[:B].index_copy_(1, self.step_buf, nxt[:, None])
        self.tokens_buf[:B].copy_(nxt)
        # Clamped to the cache, not to L: a sequence whose next position is exactly L continues at L in the
        # next chunk (with a longer L); clamping to L - 1 rewrote its last position and decoded garbage.
        self.pos_buf[:B].copy_(torch.clamp(pos + 1, max=self.cfg.seq_len - 1))
        self.step_buf.add_(1)

    # -- CUDA graphs -------------------------------------------------------------------------------

    def _trial(self) -> None:
        """Prefill and decode on scratch state for the shapes serving uses (compiles every variant)."""
        S = self.cfg.max_slots
        T = min(8, self.cfg.seq_len // 2)
        for n in sorted({1, min(2, S)}):
            ids = torch.ones(n, T, dtype=torch.long, device=self.device)
            lengths = torch.full((n,), T, dtype=torch.long, device=self.device)
            self.runner.prefill(ids, lengths, self.arange_s[:n], self.k_cache, self.v_cache)
        if self.is_cuda:
            # Larger prefills load the GEMM kernels that real prompts select (first use costs ms each).
            L = self.cfg.seq_len
            for n, width in ((1, min(256, L)), (min(S, 8), min(512, L))):
                ids = torch.ones(n, width, dtype=torch.long, device=self.device)
                lengths = torch.full((n,), width, dtype=torch.long, device=self.device)
                self.runner.prefill(ids, lengths, self.arange_s[:n], self.k_cache, self.v_cache)
        for B in sorted({1, min(2, S), S}):
            self.pos_buf[:B].fill_(T)
            self.step_buf.zero_()
            self._step_eager(B, self.len_buckets[0])
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
        self.pos_buf.zero_()
        self.tokens_buf.zero_()
        self.step_buf.zero_()

    def _capture(self, B: int, L: int):
        saved = (self.tokens_buf.clone(), self.pos_buf.clone(), self.step_buf.clone(), self.out_buf.clone())
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        s = torch.cuda.Stream(device=self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            for _ in range(2):  # warm-up on a side stream (compiles, autotunes) before capture
                self.pos_buf[:B].zero_()
                self._step_eager(B, L)
        torch.cuda.current_stream(self.device).wait_stream(s)
        self.pos_buf[:B].zero_()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._graph_pool):
            self._step_eager(B, L)
        torch.cuda.synchronize(self.device)
        for buf, old in zip((self.tokens_buf, self.pos_buf, self.step_buf, self.out_buf), saved):
            buf.copy_(old)
        self._graphs[(B, L)] = g
        return g

    def _capture_all(self) -> None:
        t0 = time.perf_counter()
        try:
            for L in self.len_buckets:
                for B in self.batch_buckets:
                    self._capture(B, L)
        except Exception as exc:  # noqa: BLE001 - fall back to eager steps rather than failing to start
            log.warning("CUDA graph capture failed (%s); decoding without graphs", exc)
            self.use_graphs = False
            self._graphs.clear()
            return
        t1 = time.perf_counter()
        try:
            for T in self.pf_buckets:
                self._capture_prefill(T)
        except Exception as exc:  # noqa: BLE001 - prefill then runs eagerly (slower to first token only)
            log.warning("prefill graph capture failed (%s); prefilling eagerly", exc)
            self._pf_graphs.clear()
        log.info(
            "captured %d decode graphs in %.1fs and %d prefill graphs in %.1fs",
            len(self._graphs),
            t1 - t0,
            len(self._pf_graphs),
            time.perf_counter() - t1,
        )

    def _capture_prefill(self, T: int) -> None:
        self.pf_len.fill_(T)
        self.pf_slot.zero_()  # captures write scratch K/V into slot 0 (nothing is running yet)
        args = (self.pf_ids[:, :T], self.pf_len, self.pf_slot, self.k_cache, self.v_cache)
        s = torch.cuda.Stream(device=self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            self.runner.prefill(*args)
        torch.cuda.current_stream(self.device).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._graph_pool):
            out = self.runner.prefill(*args)
        torch.cuda.synchronize(self.device)
        self._pf_graphs[T] = (g, out)

    def _fail_all(self, message: str) -> None:
        for seq in self._active:
            self._finish(seq.req, "error", error=message)
        self._active.clear()
        self.pos_buf.zero_()
        self.tokens_buf.zero_()


# ------------------------------------------------------------------------------ fallback: generate()


class GenerateEngine:
    """Dynamic batching around ``model.generate`` for architectures the slot engine does not know.

    Same interface as :class:`Engine`; requests that arrive while a batch runs wait for the next one.
    """

    def __init__(self, model: Any, tokenizer: Any, config: EngineConfig | None = None):
        self.cfg = config or EngineConfig()
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self._queue: queue.Queue[GenRequest | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats_counts: dict[str, Any] = {
            "decode_batch_sizes": Counter(),
            "prefill_batch_sizes": Counter(),
            "requests": 0,
            "generated_tokens": 0,
            "decode_steps": 0,
            "errors": 0,
        }
        self.on_batch: Callable[[str, int], None] | None = None
        self._lock = threading.Lock()
        self._active: list[_Seq] = []
        self._graphs: dict = {}
        self.ready = False
        self.mode = "generate"
        self.chunk = 0

    start = Engine.start
    stop = Engine.stop
    submit = Engine.submit
    generate = Engine.generate
    reset_stats = Engine.reset_stats
    _record = Engine._record

    def stats(self) -> dict[str, Any]:
        out = Engine.stats(self)  # type: ignore[arg-type]
        out.pop("cuda_graphs", None)
        return out

    def warmup(self, capture: bool = True) -> None:
        self.start()
        self.generate([[1, 2, 3]], max_new_tokens=2)
        self.ready = True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if first is None:
                continue
            batch = [first]
            deadline = time.perf_counter() + self.cfg.batch_wait_s
            while len(batch) < self.cfg.max_slots:
                left = deadline - time.perf_counter()
                try:
                    r = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if r is not None:
                    batch.append(r)
            batch = [r for r in batch if not r.cancelled]
            if not batch:
                continue
            try:
                with torch.inference_mode():
                    self._run(batch)
            except Exception as exc:  # noqa: BLE001
                log.exception("generate failed")
                self.stats_counts["errors"] += 1
                for r in batch:
                    Engine._finish(self, r, "error", error=f"generation failed: {exc}")  # type: ignore[arg-type]

    def _run(self, batch: list[GenRequest]) -> None:
        n = len(batch)
        width = max(len(r.prompt_ids) for r in batch)
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer is not None and self.tokenizer.pad_token_id is not None
            else 0
        )
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids) :] = 1
            r.started_at = time.perf_counter()
            r.prefill_batch = n
            r.max_batch = n
        stops = sorted(set().union(*[r.stop_ids for r in batch]))
        max_new = max(r.max_new_tokens for r in batch)
        kwargs: dict[str, Any] = {"eos_token_id": stops} if stops else {"min_new_tokens": max_new}
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=pad,
            **kwargs,
        )
        self.stats_counts["requests"] += n
        self._record("prefill", n)
        self._record("decode", n)
        for i, r in enumerate(batch):
            r.first_token_at = time.perf_counter()
            seq = _Seq(r, len(r.prompt_ids))
            Engine._accept(self, seq, out[i, width:].tolist())  # type: ignore[arg-type]
            if not r.finished:
                Engine._finish(self, r, "length")  # type: ignore[arg-type]


def build_engine(model: Any, tokenizer: Any, config: EngineConfig) -> Engine | GenerateEngine:
    """The slot engine for Llama-family models, :class:`GenerateEngine` for anything else."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        PeftModel = ()  # type: ignore[assignment]
    if PeftModel and isinstance(model, PeftModel):
        quantized = getattr(model.get_base_model(), "is_quantized", False) or getattr(
            model.get_base_model(), "quantization_method", None
        )
        if not quantized:
            model = model.merge_and_unload()  # LoRA folded into the weights: the fast path applies
        else:
            model = model.get_base_model()  # LoRA layers stay in place; module path calls them
    hf = getattr(model, "config", None)
    mtype = getattr(hf, "model_type", "")
    sliding = bool(getattr(hf, "use_sliding_window", False)) or (
        mtype == "mistral"
        and getattr(hf, "sliding_window", None) not in (None, 0)
        and getattr(hf, "sliding_window", 0) < config.seq_len
    )
    rope_type = ""
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is not None:
        rope_type = str(getattr(rotary, "rope_type", "default"))
    ok = (
        mtype in SUPPORTED_TYPES
        and not sliding
        and rotary is not None
        and "dynamic" not in rope_type
        and "longrope" not in rope_type
        and getattr(hf, "hidden_act", "silu") == "silu"
    )
    if not ok:
        log.info("model type %r is not on the slot engine's fast path; using generate()", mtype)
        return GenerateEngine(model, tokenizer, config)
    return Engine(model, tokenizer, config)


__all__ = ["Engine", "EngineConfig", "EngineError", "GenRequest", "GenerateEngine", "build_engine"]
