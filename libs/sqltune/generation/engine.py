"""The continuous-batching engine: a slot scheduler over :class:`~sqltune.generation.runner.ModelRunner`.

* **Continuous batching.** A background thread runs the scheduler. Between decode chunks it admits every
  queued request (up to the free slots): their prompts are prefilled together (right padding, causal
  attention) straight into their slots, and they join the running batch at the next step. Requests that
  arrive while others decode therefore share batches with them; nothing waits for a batch to drain.
* **Overlapped admission (CUDA).** With ``EngineConfig.overlap`` (on by default), the prefill of requests
  that arrive while a chunk runs is queued behind it shortly before the chunk is expected to end, so its
  launch on the host overlaps the chunk on the device; they join the next chunk. Groups of up to
  ``prefill_graph_prompts`` prompts replay captured prefill graphs (:mod:`.runner`).
* **Mixed prefill (opt-in).** With ``EngineConfig.mixed_prefill``, when requests arrive while others
  decode, the first eager prefill pass also carries one decode step of the running sequences (their tokens
  ride on the prefill's matrix products); a single prompt with a captured prefill graph is prefilled on its
  own (the graph is cheaper than an eager pass). Off by default: it measured slower (see the config doc).
* **Prefix cache (opt-in).** With ``EngineConfig.prefix_cache``, a few cache rows beyond the slots keep the
  leading blocks of recent prompts (:mod:`.prefix`); an admitted prompt that starts the same way (the
  system prompt and schema of text-to-SQL prompts) gets those positions copied into its slot and prefills
  only the rest. Groups are formed per cached length; one prompt with a captured full-length prefill graph
  uses the graph instead.
* **Slots stay 0..n-1.** When a sequence finishes, the last running one is moved into its hole, so a
  decode step only touches the first ``n`` slots.
* **Stop checks per chunk.** ``decode_chunk`` steps run on the device back to back; only then are the
  new tokens checked against the stop conditions (end of turn, end of statement, length).
* **Fallbacks.** Llama-family models (Qwen2/Qwen2.5, Qwen3, Llama, Mistral without sliding windows) use
  this engine; :func:`build_engine` gives any other architecture
  :class:`~sqltune.generation.fallback.GenerateEngine` (dynamic batching around ``model.generate``).

The engine knows nothing about HTTP or Ray: :class:`~sqltune.generation.request.GenRequest` in, callbacks
out.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch

from sqltune.generation.base import BaseEngine, Seq
from sqltune.generation.fallback import GenerateEngine
from sqltune.generation.generate import stop_token_ids
from sqltune.generation.prefix import PrefixStore
from sqltune.generation.request import EngineConfig, GenRequest
from sqltune.generation.runner import ModelRunner

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("qwen2", "qwen3", "llama", "mistral")


class _Pending:
    """A prefill group queued on the device: its requests, first tokens (host list, or launched work to wait
    for), cached prefix length and prefilled tokens."""

    __slots__ = ("group", "first", "past", "tokens")

    def __init__(self, group: list[GenRequest], first: Any, past: int, tokens: int):
        self.group, self.first, self.past, self.tokens = group, first, past, tokens


class Engine(BaseEngine):
    """Continuous-batching greedy engine over a static slot KV cache (see the module doc)."""

    def __init__(self, model: Any, tokenizer: Any = None, config: EngineConfig | None = None):
        cfg = dataclasses.replace(config or EngineConfig())
        if cfg.seq_len >= 128:
            cfg.seq_len = -(-cfg.seq_len // 128) * 128  # aligned cache rows for the attention kernels
        device = next(model.parameters()).device
        is_cuda = device.type == "cuda"
        # 16 on CUDA: measured on an H200 against 8, +15-20% tokens/s at 16 concurrent, the same single-
        # request latency; the cost is up to 15 wasted steps after a stop (a finished row rides along).
        super().__init__(model, tokenizer, cfg, cfg.decode_chunk or (16 if is_cuda else 1))
        self.is_cuda = is_cuda
        self.max_prefill_tokens = cfg.max_prefill_tokens or (16384 if is_cuda else 4096)
        self.runner = ModelRunner(model, cfg, device, self.chunk)
        self.prefixes = PrefixStore(cfg.prefix_cache) if cfg.prefix_cache > 0 else None
        self._in_flight: list[_Pending] = []  # prefills launched, first tokens not yet taken
        self._step_s = 0.0  # device seconds per decode step (moving average)
        self._launch_s = 0.01  # host seconds to launch a prefill (moving average)

    @property
    def mode(self) -> str:
        return self.runner.mode

    @property
    def overlap(self) -> bool:
        """Whether arrivals are admitted while a chunk runs (needs an asynchronous device; mixed prefill is
        the alternative to it)."""
        return bool(self.cfg.overlap and self.is_cuda and not self.cfg.mixed_prefill)

    def _extra_stats(self) -> dict[str, Any]:
        decode_graphs, prefill_graphs = self.runner.graph_counts
        return {"cuda_graphs": decode_graphs, "prefill_graphs": prefill_graphs}

    @property
    def startup(self) -> dict[str, float]:
        """Seconds of the warm-up's parts (compile, graph capture); empty before :meth:`warmup`."""
        return dict(getattr(self.runner, "startup", {}))

    def warmup(self, capture: bool = True) -> None:
        """Compile (or fall back to eager), capture the CUDA graphs of every bucket, then run a few
        generations through the scheduler. Call before :meth:`start` (or while the engine is idle)."""
        t0 = time.perf_counter()
        self.runner.prepare(capture)
        log.info("engine warm-up (%s) took %.1fs", self.mode, time.perf_counter() - t0)
        # Exercise prefill + decode end to end through the scheduler.
        if self._thread is None:
            self.start()
        self.generate(
            [[1, 2, 3, 4]] * min(2, self.cfg.max_slots), max_new_tokens=min(4, self.cfg.seq_len - 4)
        )
        self.generate([[5] * 8], max_new_tokens=2)
        self.reset_stats()
        self.ready = True

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
                        admitting = self._decode_chunk()
                        self.stats_counts["decode_s"] += time.perf_counter() - t0 - admitting
                        self.stats_counts["prefill_s"] += admitting
                except Exception as exc:  # noqa: BLE001 - never let one failure kill the replica
                    log.exception("engine step failed")
                    self.stats_counts["errors"] += 1
                    self._fail_all(f"generation failed: {type(exc).__name__}: {exc}")
            self._fail_all("the engine stopped")
        self._drain("the engine stopped")

    def _prefill(self, reqs: list[GenRequest]) -> None:
        """Prefill ``reqs`` into the slots after the running sequences and wait for their first tokens."""
        for pending in self._launch_prefill(reqs, len(self._active)):
            self._complete_group(pending)
        self._compact()

    def _launch_prefill(self, reqs: list[GenRequest], slot0: int) -> list[_Pending]:
        """Queue the prefill of ``reqs`` into slots ``slot0..`` (grouped, see :meth:`_groups`) without waiting
        for the device; :meth:`_complete_group` then takes each group's first tokens."""
        self._mixed_done = False  # at most one mixed pass per admission round
        store = self.prefixes
        hits: dict[int, tuple[int, int]] = {}  # id(request) -> (prefix row, cached positions)
        if store is not None:
            for r in reqs:
                row, held = store.lookup(r.prompt_ids)
                if row is not None:
                    hits[id(r)] = (row, held)
                    store.pin(row)  # read in this round: no insert below may overwrite it
        out: list[_Pending] = []
        try:
            for past, g in self._groups(reqs, {k: v[1] for k, v in hits.items()}):
                pending = self._launch_group(g, past, hits, slot0)
                if pending is not None:
                    out.append(pending)
                    self._in_flight.append(pending)
                    slot0 += len(g)
        except Exception as exc:
            # The loop fails what is running and in flight; the rest of this round must not be forgotten.
            for r in reqs:
                if not any(r is x for p in self._in_flight for x in p.group):
                    self._finish(r, "error", error=f"prefill failed: {type(exc).__name__}: {exc}")
            raise
        finally:
            if store is not None:
                store.unpin_all()
        return out

    def _groups(self, reqs: list[GenRequest], past: dict[int, int]) -> list[tuple[int, list[GenRequest]]]:
        """Prefill groups: the same cached prefix length, at most ``max_prefill_tokens`` padded tokens."""
        def rest(r: GenRequest) -> int:
            return len(r.prompt_ids) - past.get(id(r), 0)

        groups: list[tuple[int, list[GenRequest]]] = []
        for r in sorted(reqs, key=lambda r: (past.get(id(r), 0), rest(r))):
            p = past.get(id(r), 0)
            if groups and groups[-1][0] == p:
                g = groups[-1][1]
                if max(rest(x) for x in g + [r]) * (len(g) + 1) <= self.max_prefill_tokens:
                    g.append(r)
                    continue
            groups.append((p, [r]))
        return [piece for past_g in groups for piece in self._graph_pieces(*past_g)]

    def _graph_pieces(self, past: int, g: list[GenRequest]) -> list[tuple[int, list[GenRequest]]]:
        """A group that captured prefill graphs can take, split into their widths (powers of two, largest
        first: no padding prompts); any other group as it is."""
        widths = self.runner.pf_widths
        T = max(len(r.prompt_ids) for r in g)
        if past or len(g) == 1 or not self.runner.prefill_is_graphed(len(g), T):
            return [(past, g)]
        pieces, i = [], 0
        for w in reversed(widths):
            while len(g) - i >= w:
                pieces.append((past, g[i : i + w]))
                i += w
        return pieces

    def _launch_group(
        self, g: list[GenRequest], past: int, hits: dict[int, tuple[int, int]], slot0: int
    ) -> _Pending | None:
        """Queue one group's prefill into slots ``slot0..``; None when it failed (its requests are finished
        with the error, the other requests keep going)."""
        n = len(g)
        if past and n == 1 and self.runner.prefill_is_graphed(1, len(g[0].prompt_ids)):
            past = 0  # one prompt: its captured full-length graph is cheaper than an eager pass over the rest
        T = max(len(r.prompt_ids) for r in g) - past
        # One tensor from one padded list: each torch call gives up the GIL, which the replica's request
        # loop may then hold for a whole switch interval.
        ids = torch.tensor([r.prompt_ids[past:] + [0] * (T + past - len(r.prompt_ids)) for r in g], dtype=torch.long)
        now = time.perf_counter()
        for r in g:
            r.started_at = now
            r.prefill_batch = n
        lengths = torch.tensor([len(r.prompt_ids) - past for r in g], dtype=torch.long)
        # The first eager prefill carries one decode step of the running sequences (see EngineConfig).
        mixed = (
            self.cfg.mixed_prefill
            and not self._mixed_done
            and not past
            and slot0 > 0
            and slot0 == len(self._active)
            and not self.runner.prefill_is_graphed(n, T)
        )
        start = self.runner.timer()
        try:
            if past:
                rows = self.cfg.max_slots
                self.runner.copy_rows([(slot0 + i, rows + hits[id(r)][0]) for i, r in enumerate(g)], past)
            if mixed:
                self._mixed_done = True
                first: Any = self._mixed_step(ids, lengths)
                self.stats_counts["device_s"] += self.runner.elapsed(start)  # the fused pass has synced
            else:
                first_d, len_d = self.runner.prefill(ids, lengths, slot0, past)
                first = self.runner.load_slots(slot0, first_d, len_d, start)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: fail these, keep serving others
            log.exception("prefill of %d requests failed", n)
            self.stats_counts["errors"] += 1
            for r in g:
                self._finish(r, "error", error=f"prefill failed: {type(exc).__name__}: {exc}")
            if mixed:
                raise  # the running sequences' step failed with it: the loop fails them
            return None
        self._remember(g, slot0, past)  # queued after the prefill on the device: copies what it wrote
        return _Pending(g, first, past, int(lengths.sum()))

    def _complete_group(self, pending: _Pending) -> None:
        """Wait for a launched group's first tokens; its requests join the running batch (in slot order)."""
        g = pending.group
        if isinstance(pending.first, list):
            first = pending.first
        else:
            first = self.runner.first_tokens(pending.first)  # raises: still in flight, the loop fails it
            gpu = pending.first.gpu_seconds()
            if gpu is not None:
                self.stats_counts["device_s"] += gpu
        self._in_flight.remove(pending)
        n = len(g)
        self.stats_counts["requests"] += n
        self.stats_counts["prefix_hit_tokens"] += pending.past * n
        self.stats_counts["prefill_tokens"] += pending.tokens
        self._record("prefill", n)
        t = time.perf_counter()
        for r, tok in zip(g, first):
            r.first_token_at = t
            seq = Seq(r, len(r.prompt_ids))
            self._active.append(seq)
            self._accept(seq, [tok])

    def _remember(self, g: list[GenRequest], slot0: int, past: int) -> None:
        """Offer each prompt's leading blocks to the prefix store (copied from its slot into a free row)."""
        store = self.prefixes
        if store is None:
            return
        by_length: dict[int, list[tuple[int, int]]] = {}
        for i, r in enumerate(g):
            keep = store.usable(len(r.prompt_ids))
            if keep > past:
                row = store.insert(r.prompt_ids, keep)
                if row is not None:
                    by_length.setdefault(keep, []).append((self.cfg.max_slots + row, slot0 + i))
        for keep, pairs in by_length.items():
            self.runner.copy_rows(pairs, keep)

    def _mixed_step(self, ids, lengths) -> list[int]:
        """One decode step of the running sequences fused with the prefill of ``ids`` into the slots after
        them; the running sequences take their token here; returns the prompts' first tokens."""
        act = self._active
        n = len(act)
        need = max(s.cache_len for s in act) + 1
        dec, first = self.runner.mixed(n, need, ids, lengths)
        self.stats_counts["decode_steps"] += 1
        self.stats_counts["mixed_steps"] += 1
        self._record("decode", n)
        for seq, tok in zip(act, dec):
            seq.cache_len += 1
            seq.req.max_batch = max(seq.req.max_batch, n)
            self._accept(seq, [tok])
        return first

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
        self.runner.move_slots(pairs)
        for i, j in pairs:
            act[i] = act[j]
        del act[n_new:]
        self.runner.clear_from(n_new)

    def _decode_chunk(self) -> float:
        """One chunk of decode steps (admitting arrivals meanwhile when overlapping); returns the seconds
        spent on those arrivals' prefill (launch and wait), which the caller counts as prefill time."""
        act = self._active
        n = len(act)
        steps = min(self.chunk, max(s.remaining for s in act))
        steps = max(1, steps)
        need = max(s.cache_len for s in act) + steps
        launched = self.runner.launch_decode(n, steps, need)
        early, admitting = self._admit_during(launched, steps) if self.overlap else ([], 0.0)
        out = self.runner.wait(launched)
        gpu = launched.gpu_seconds()
        if gpu is not None:
            self.stats_counts["device_s"] += gpu
            self._step_s = 0.8 * self._step_s + 0.2 * gpu / steps if self._step_s else gpu / steps
        self.stats_counts["decode_steps"] += steps
        self._record("decode", n, steps)
        for seq, toks in zip(act[:n], out):
            seq.cache_len += steps
            seq.req.max_batch = max(seq.req.max_batch, n)
            self._accept(seq, toks)
        if early:
            t0 = time.perf_counter()
            for pending in early:
                self._complete_group(pending)
            admitting += time.perf_counter() - t0
            self.stats_counts["overlapped_prefills"] += len(early)
        self._compact()
        return admitting

    def _admit_during(self, launched: Any, steps: int) -> tuple[list[_Pending], float]:
        """While a decode chunk runs on the device: shortly before it is expected to end, queue the prefill
        of the requests that arrived meanwhile behind it, into the slots after the running ones. Their
        prefill then starts as soon as the chunk ends (its host-side launch overlapped the chunk) and they
        join the next chunk. Requests arriving later are admitted after the chunk, as usual. Returns the
        launched groups and the seconds their launch took."""
        if len(self._active) >= self.cfg.max_slots:
            return [], 0.0
        # One sleep, not polling: each wake-up of this thread takes the GIL from the replica's request
        # handling. Slightly early (0.9 of the expected chunk): a chunk that ends first idles the device.
        left = 0.9 * self._step_s * steps - self._launch_s - 0.002
        if left > 0 and not launched.done():
            time.sleep(left)
        new = self._collect()
        if not new:
            return [], 0.0
        t0 = time.perf_counter()
        pending = self._launch_prefill(new, len(self._active))
        took = time.perf_counter() - t0
        self._launch_s = 0.8 * self._launch_s + 0.2 * took
        return pending, took

    def _fail_all(self, message: str) -> None:
        for pending in self._in_flight:
            for r in pending.group:
                self._finish(r, "error", error=message)
        self._in_flight.clear()
        for seq in self._active:
            self._finish(seq.req, "error", error=message)
        self._active.clear()
        self.runner.clear_from(0)


def build_engine(model: Any, tokenizer: Any, config: EngineConfig) -> Engine | GenerateEngine:
    """The slot engine for Llama-family models, :class:`GenerateEngine` for anything else."""
    # A PEFT model, recognised without importing peft (with bitsandbytes it costs seconds of a replica's
    # start, and only adapter artifacts need it: their loader imports it).
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
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


def decode_once(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, *, max_slots: int = 64
) -> list[str] | None:
    """Greedy completions of rendered ``prompts`` (ending at the end of turn) through a slot engine built
    for this call and stopped after it: CUDA graphs, no ``torch.compile`` (its cost would not pay back
    for one batch). None for a model off the slot engine's fast path (``generate()`` batches it better)."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if not ids:
        return []
    cfg = EngineConfig(
        max_slots=min(max_slots, len(ids)), seq_len=max(len(i) for i in ids) + max_new_tokens, compile="off"
    )
    engine = build_engine(model, tokenizer, cfg)
    if not isinstance(engine, Engine):
        return None
    try:
        engine.warmup()
        reqs = engine.generate(ids, max_new_tokens, stop_ids=frozenset(stop_token_ids(tokenizer)))
    finally:
        engine.stop()
    return [tokenizer.decode(r.tokens, skip_special_tokens=True) for r in reqs]


__all__ = ["SUPPORTED_TYPES", "Engine", "build_engine", "decode_once"]
