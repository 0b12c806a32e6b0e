"""The model runner: the slot KV cache, the device buffers, and the passes that run over them.

* **Slots.** The KV cache is preallocated once: per layer ``[slots, kv_heads, seq_len, head_dim]`` for
  keys and values. The scheduler keeps running sequences in slots ``0..n-1``; :meth:`ModelRunner.move_slots`
  moves whole slot rows when it compacts them.
* **No host sync per token.** A decode step reads the current token and position of every slot from
  device buffers, writes the new K/V at that position, and writes the next token back to the device
  buffers (and into an output buffer). :meth:`ModelRunner.decode` runs a chunk of steps back to back,
  then copies the new tokens to the host once.
* **Launch, then wait.** :meth:`ModelRunner.launch_decode` and :meth:`ModelRunner.prefill` only queue
  work on the device (inputs go through pinned memory without a host sync); :meth:`ModelRunner.wait`
  blocks for a launched chunk's tokens and :meth:`ModelRunner.first_tokens` for a prefill's. The scheduler
  can therefore queue a prefill behind a running decode chunk while the device is still busy with it.
* **CUDA graphs.** The decode step is captured per batch bucket (and cache-length bucket on the SDPA
  fallback), and single-prompt prefill per prompt-length bucket (prefill of one prompt is launch-bound).
  Graphs are captured before serving only: a capture mid-flight would clobber live slots.

The runner knows nothing about requests, queues or threads: that is :mod:`.engine`'s scheduler.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from sqltune.generation.passes import LlamaPasses
from sqltune.generation.request import EngineConfig

log = logging.getLogger(__name__)


def bucket_sizes(limit: int, start: int) -> list[int]:
    sizes, s = [], start
    while s < limit:
        sizes.append(s)
        s *= 2
    sizes.append(limit)
    return sizes


def prefill_buckets(seq_len: int) -> list[int]:
    """Prompt lengths that get a captured single-prompt prefill graph (longer prompts run eagerly)."""
    return list(range(64, min(seq_len, 1024) + 1, 64)) + list(range(1280, min(seq_len, 2048) + 1, 256))


def prefill_widths(limit: int) -> list[int]:
    """Prompts per captured prefill graph (powers of two up to ``limit``; a group of other sizes is split)."""
    return [w for w in (1, 2, 4, 8, 16) if w <= limit]


# Several prompts per prefill graph only up to this length: longer groups are compute-bound, not launch-bound,
# and every graph costs warm-up time.
MULTI_PROMPT_GRAPH_TOKENS = 512


def ceil_bucket(value: int, buckets: list[int]) -> int:
    for b in buckets:
        if b >= value:
            return b
    return buckets[-1]


class Launched:
    """Device work queued by the runner: its results land in (pinned) host memory when ``event`` fires."""

    __slots__ = ("host", "event", "rows", "cols", "start", "end")

    def __init__(self, host, event, rows: int, cols: int = 0, start=None, end=None):
        self.host, self.event, self.rows, self.cols = host, event, rows, cols
        self.start, self.end = start, end  # CUDA timing events around a decode chunk

    def done(self) -> bool:
        return self.event is None or bool(self.event.query())

    def gpu_seconds(self) -> float | None:
        """Device time of the timed work (after waiting for it); None when it was not timed."""
        if self.start is None or self.end is None:
            return None
        return self.start.elapsed_time(self.end) / 1e3


class ModelRunner:
    """Slot KV cache + device buffers + compiled layers + CUDA graphs of one Llama-family model."""

    def __init__(self, model: Any, cfg: EngineConfig, device: Any, chunk: int):
        self.cfg = cfg
        self.device = device
        self.is_cuda = device.type == "cuda"
        self.chunk = chunk
        self.passes = LlamaPasses(model, cfg, device)
        r = self.passes
        S, L = cfg.max_slots, cfg.seq_len
        # One tensor per layer (not views of one block): the compiled layer math then sees the same
        # tensor metadata (no storage offset) for every layer, so one graph serves them all. Rows past the
        # slots hold cached prompt prefixes (EngineConfig.prefix_cache); decoding never reads them.
        self.pf_widths = prefill_widths(min(S, cfg.prefill_graph_prompts))
        # One more row past the slots and prefix rows: where the padding rows of a multi-prompt prefill graph
        # write their K/V.
        self.scratch_row = S + cfg.prefix_cache
        shape = (S + cfg.prefix_cache + (1 if len(self.pf_widths) > 1 else 0), r.nkv, L, r.hd)
        self.k_cache = [torch.zeros(shape, dtype=r.dtype, device=device) for _ in range(r.nl)]
        self.v_cache = [torch.zeros(shape, dtype=r.dtype, device=device) for _ in range(r.nl)]
        # Inference tensors, like the index tensors prefill creates, so the compiled layer math sees the
        # same dispatch keys from both (else one more compiled variant). Only touched in inference mode.
        with torch.inference_mode():
            self.tokens_buf = torch.zeros(S, dtype=torch.long, device=device)
            self.pos_buf = torch.zeros(S, dtype=torch.long, device=device)
            self.out_buf = torch.zeros(S, max(chunk, 1), dtype=torch.long, device=device)
            self.step_buf = torch.zeros(1, dtype=torch.long, device=device)
            self.arange_s = torch.arange(S, device=device)
            self.arange_l = torch.arange(L, device=device)
            # Prefill graphs (per prompts x length bucket) read their inputs from these.
            self.pf_buckets = prefill_buckets(L)
            W = max(self.pf_widths, default=1)
            self.pf_ids = torch.zeros(W, max(self.pf_buckets, default=1), dtype=torch.long, device=device)
            self.pf_len = torch.zeros(W, dtype=torch.long, device=device)
            self.pf_slot = torch.zeros(W, dtype=torch.long, device=device)
        # Where a chunk's new tokens are copied without a host sync (pinned: the copy is asynchronous).
        self.out_host = torch.zeros(S, max(chunk, 1), dtype=torch.long, pin_memory=self.is_cuda)
        self.batch_buckets = bucket_sizes(S, 1)
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
        # (prompts, length bucket) -> (graph, next-token output)
        self._pf_graphs: dict[tuple[int, int], tuple[Any, Any]] = {}
        self._graph_pool = None

    @property
    def len_buckets(self) -> list[int]:
        """Cache lengths the decode attention is specialised for (one CUDA graph per batch bucket each)."""
        L = self.cfg.seq_len
        return [L] if self.passes.reads_to_length else bucket_sizes(L, min(256, L))

    @property
    def mode(self) -> str:
        parts = ["fused" if self.passes.fast else "modules", f"attn-{self.passes.attn}"]
        if self.compiled:
            parts.append("compiled")
        if self.use_graphs:
            parts.append("cuda-graphs")
        return "+".join(parts)

    @property
    def graph_counts(self) -> tuple[int, int]:
        """(decode graphs, prefill graphs) captured."""
        return len(self._graphs), len(self._pf_graphs)

    # -- warm-up -----------------------------------------------------------------------------------

    def prepare(self, capture: bool = True) -> None:
        """Compile (or fall back to eager), then capture the CUDA graphs of every bucket.

        Falls back step by step when a trial fails: eager layers, then SDPA, then math attention.
        :attr:`startup` then holds the seconds of each part (``compile_s``: the trial steps, compiling
        where compiled; ``capture_s``: the CUDA graphs)."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            try:
                self._trial()
            except Exception as exc:  # noqa: BLE001 - fall back step by step (see below)
                err: Exception | None = exc
                if self.compiled:
                    log.warning(
                        "compiled step failed (%s: %s); running the layers eagerly", type(exc).__name__, exc
                    )
                    self.passes.disable_compile()
                    self.compiled = False
                    try:
                        self._trial()
                        err = None
                    except Exception as exc2:  # noqa: BLE001
                        err = exc2
                for fallback in ("sdpa", "math"):
                    if err is None or self.passes.attn == "math" or self.passes.attn == fallback:
                        continue
                    log.warning(
                        "decode attention %s failed (%s: %s); using %s",
                        self.passes.attn,
                        type(err).__name__,
                        err,
                        fallback,
                    )
                    self.passes.set_attn(fallback)
                    try:
                        self._trial()
                        err = None
                    except Exception as exc3:  # noqa: BLE001
                        err = exc3
                if err is not None:
                    raise err
            t1 = time.perf_counter()
            if self.use_graphs and capture:
                self._capture_all()
        self.startup = {"compile_s": round(t1 - t0, 2), "capture_s": round(time.perf_counter() - t1, 2)}

    # -- prefill -----------------------------------------------------------------------------------

    def prefill(self, ids, lengths, slot0: int, past: int = 0):
        """Prefill right-padded prompts ``ids`` [n, T] into slots ``slot0..slot0+n-1``; returns the device
        tensors (first generated token [n], cache lengths [n]) for :meth:`load_slots`. With ``past``, the
        slots already hold that many positions (a cached prefix) and ``ids`` are the rest of each prompt.

        One prompt that fits a captured bucket replays its graph (prefill is CPU-bound at this size:
        ~24 ms of launches for ~5 ms of GPU work at 320 tokens). Several prompts: the eager pass."""
        n, T = ids.shape
        if past:
            len_d = self.to_device(lengths) + past
            first = self.passes.prefill(
                self.to_device(ids), len_d - past, self.arange_s[slot0 : slot0 + n], self.k_cache, self.v_cache,
                past=past,
            )
            return first, len_d
        if self.prefill_is_graphed(n, T):
            w = ceil_bucket(n, self.pf_widths)
            graph, out = self._pf_graphs[(w, ceil_bucket(T, self.pf_buckets))]
            # Positions past T keep stale ids: padding, never attended. Rows past n are padding prompts that
            # write into the scratch row.
            self.pf_ids[:n, :T].copy_(self.to_device(ids))
            meta = torch.full((2, w), self.scratch_row, dtype=torch.long)
            meta[0].fill_(T)
            meta[0, :n] = lengths
            meta[1, :n] = torch.arange(slot0, slot0 + n)
            meta = self.to_device(meta)
            self.pf_len[:w].copy_(meta[0])
            self.pf_slot[:w].copy_(meta[1])
            graph.replay()
            return out[:n], self.pf_len[:n]
        len_d = self.to_device(lengths)
        first = self.passes.prefill(
            self.to_device(ids), len_d, self.arange_s[slot0 : slot0 + n], self.k_cache, self.v_cache
        )
        return first, len_d

    def to_device(self, t):
        """A host tensor on the device without waiting for the device (pinned memory, asynchronous copy):
        a plain copy would first wait for every kernel already queued, such as a running decode chunk."""
        if not self.is_cuda or t.device.type != "cpu":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)

    def prefill_is_graphed(self, n: int, T: int) -> bool:
        """Whether :meth:`prefill` of ``n`` prompts of width ``T`` replays a captured graph (else eager)."""
        if not self._pf_graphs or n > self.pf_widths[-1] or T > self.pf_buckets[-1]:
            return False
        return (ceil_bucket(n, self.pf_widths), ceil_bucket(T, self.pf_buckets)) in self._pf_graphs

    def timer(self):
        """A CUDA timing event recorded now (None off CUDA): pass it as ``start`` to time queued work."""
        if not self.is_cuda:
            return None
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        return start

    def elapsed(self, start) -> float:
        """Device seconds from a :meth:`timer` to the work queued so far (waits for it; 0 off CUDA)."""
        if start is None:
            return 0.0
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def load_slots(self, slot0: int, first, len_d, start=None) -> Launched:
        """Make prefilled slots decodable (next token, next position) and start copying their first tokens to
        the host; :meth:`first_tokens` waits for them. ``start``: a :meth:`timer` from before the prefill."""
        n = first.shape[0]
        self.tokens_buf[slot0 : slot0 + n].copy_(first)
        self.pos_buf[slot0 : slot0 + n].copy_(len_d)
        if not self.is_cuda:
            return Launched(first, None, n)
        end = None
        if start is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
        host = torch.empty(n, dtype=torch.long, pin_memory=True)
        host.copy_(first, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return Launched(host, event, n, 0, start, end)

    def first_tokens(self, launched: Launched) -> list[int]:
        """The first tokens of a prefill started by :meth:`load_slots` (waits for the device, GIL released)."""
        if launched.event is not None:
            launched.event.synchronize()
        return launched.host.tolist()

    # -- decode ------------------------------------------------------------------------------------

    def decode(self, n: int, steps: int, need: int) -> list[list[int]]:
        """``steps`` decode steps for slots ``0..n-1`` whose caches need ``need`` positions; returns the
        new tokens per slot (one host sync for the whole chunk)."""
        return self.wait(self.launch_decode(n, steps, need))

    def launch_decode(self, n: int, steps: int, need: int) -> Launched:
        """Queue ``steps`` decode steps for slots ``0..n-1`` (caches needing ``need`` positions) and the copy of
        their new tokens to the host; :meth:`wait` returns them (and the chunk's device time is timed)."""
        B = ceil_bucket(n, self.batch_buckets)
        L = ceil_bucket(min(need, self.cfg.seq_len), self.len_buckets)
        start = self.timer()
        end = torch.cuda.Event(enable_timing=True) if start is not None else None
        self.step_buf.zero_()
        for _ in range(steps):
            self._step(B, L)
        if not self.is_cuda:
            return Launched(self.out_buf, None, n, steps)
        if end is not None:
            end.record()
        self.out_host[:n].copy_(self.out_buf[:n], non_blocking=True)  # whole rows: one contiguous copy
        event = torch.cuda.Event()
        event.record()
        return Launched(self.out_host, event, n, steps, start, end)

    def wait(self, launched: Launched) -> list[list[int]]:
        """The new tokens per slot of a chunk from :meth:`launch_decode` (waits for the device, GIL released)."""
        if launched.event is not None:
            launched.event.synchronize()
        return launched.host[: launched.rows, : launched.cols].tolist()

    def mixed(self, n: int, need: int, ids, lengths) -> tuple[list[int], list[int]]:
        """One decode step for slots ``0..n-1`` (caches needing ``need`` positions) fused with the prefill
        of right-padded prompts ``ids`` [m, T] into slots ``n..n+m-1``; leaves every slot decodable and
        returns (the running slots' new tokens, the prompts' first tokens) with one host sync."""
        m = ids.shape[0]
        L = ceil_bucket(min(need, self.cfg.seq_len), self.len_buckets)
        pos = self.pos_buf[:n]
        len_d = self.to_device(lengths)
        nxt = self.passes.mixed(
            self.tokens_buf[:n],
            pos,
            self.to_device(ids),
            len_d,
            self.arange_s[n : n + m],
            self.k_cache,
            self.v_cache,
            L,
            self.arange_s[:n],
            self.arange_l,
        )
        self.tokens_buf[: n + m].copy_(nxt)
        self.pos_buf[:n].copy_(torch.clamp(pos + 1, max=self.cfg.seq_len - 1))
        self.pos_buf[n : n + m].copy_(len_d)
        host = nxt.cpu().tolist()  # the one host sync of the fused step
        return host[:n], host[n:]

    def move_slots(self, pairs: list[tuple[int, int]]) -> None:
        """Copy slot rows ``j`` into ``i`` for every ``(i, j)`` (cache, next token, position)."""
        if not pairs:
            return
        # Whole slot rows (contiguous), every layer in one multi-tensor copy instead of 2 x layers.
        dst = [c[i] for c in (*self.k_cache, *self.v_cache) for i, _ in pairs]
        src = [c[j] for c in (*self.k_cache, *self.v_cache) for _, j in pairs]
        torch._foreach_copy_(dst, src)
        to = torch.tensor([i for i, _ in pairs], device=self.device)
        frm = torch.tensor([j for _, j in pairs], device=self.device)
        self.tokens_buf[to] = self.tokens_buf[frm]
        self.pos_buf[to] = self.pos_buf[frm]

    def copy_rows(self, pairs: list[tuple[int, int]], length: int) -> None:
        """Copy cache positions ``0..length-1`` of row ``j`` into row ``i`` for every ``(i, j)``, in every
        layer (slots and prefix rows alike; one multi-tensor copy)."""
        if not pairs or length <= 0:
            return
        caches = (*self.k_cache, *self.v_cache)
        dst = [c[i, :, :length] for c in caches for i, _ in pairs]
        src = [c[j, :, :length] for c in caches for _, j in pairs]
        torch._foreach_copy_(dst, src)

    def clear_from(self, n: int) -> None:
        """Slots ``n..`` hold nothing: position and token 0."""
        self.pos_buf[n:].zero_()
        self.tokens_buf[n:].zero_()

    # -- steps and CUDA graphs ---------------------------------------------------------------------

    def _step(self, B: int, L: int) -> None:
        g = self._graphs.get((B, L)) if self.use_graphs else None
        if g is not None:
            g.replay()
        else:  # graphs are captured before serving only: a capture mid-flight would clobber live slots
            self._step_eager(B, L)

    def _step_eager(self, B: int, L: int) -> None:
        pos = self.pos_buf[:B]
        nxt = self.passes.decode(
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
            self.passes.prefill(ids, lengths, self.arange_s[:n], self.k_cache, self.v_cache)
        if self.is_cuda:
            # Larger prefills load the GEMM kernels that real prompts select (first use costs ms each).
            L = self.cfg.seq_len
            for n, width in ((1, min(256, L)), (min(S, 8), min(512, L))):
                ids = torch.ones(n, width, dtype=torch.long, device=self.device)
                lengths = torch.full((n,), width, dtype=torch.long, device=self.device)
                self.passes.prefill(ids, lengths, self.arange_s[:n], self.k_cache, self.v_cache)
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
            for w in self.pf_widths:
                for T in self.pf_buckets:
                    if w == 1 or T <= MULTI_PROMPT_GRAPH_TOKENS:
                        self._capture_prefill(w, T)
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

    def _capture_prefill(self, w: int, T: int) -> None:
        self.pf_len[:w].fill_(T)
        # Captures write scratch K/V into slots 0..w-1 (nothing is running yet).
        self.pf_slot[:w].copy_(self.arange_s[:w])
        args = (self.pf_ids[:w, :T], self.pf_len[:w], self.pf_slot[:w], self.k_cache, self.v_cache)
        s = torch.cuda.Stream(device=self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            self.passes.prefill(*args)
        torch.cuda.current_stream(self.device).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._graph_pool):
            out = self.passes.prefill(*args)
        torch.cuda.synchronize(self.device)
        self._pf_graphs[(w, T)] = (g, out)


__all__ = ["Launched", "ModelRunner", "bucket_sizes", "ceil_bucket", "prefill_buckets", "prefill_widths"]
