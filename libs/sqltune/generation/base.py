"""What every engine shares: the request queue, the scheduler thread, token acceptance, stop rules, stats.

:class:`BaseEngine` owns the life cycle (:meth:`~BaseEngine.start`, :meth:`~BaseEngine.stop`), admission
(:meth:`~BaseEngine.submit`, which checks lengths), the blocking :meth:`~BaseEngine.generate`, and how
new tokens end a request (stop tokens, text stops, length, cancellation). A subclass supplies the
scheduler loop (:meth:`~BaseEngine._loop`) and :meth:`~BaseEngine.warmup`:

- :class:`sqltune.generation.engine.Engine` - continuous batching over a slot KV cache;
- :class:`sqltune.generation.fallback.GenerateEngine` - dynamic batching around ``model.generate``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqltune.generation.request import EngineConfig, EngineError, GenRequest, check_request

log = logging.getLogger(__name__)


class Seq:
    """A running request: how much of it is in the cache and how many tokens it may still take."""

    __slots__ = ("req", "cache_len", "remaining")

    def __init__(self, req: GenRequest, cache_len: int):
        self.req = req
        self.cache_len = cache_len  # tokens whose K/V are in the cache (positions 0..cache_len-1)
        self.remaining = req.max_new_tokens


class BaseEngine:
    """Queue, scheduler thread, admission and stop rules shared by the engines (see the module doc)."""

    def __init__(self, model: Any, tokenizer: Any, cfg: EngineConfig, chunk: int):
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.chunk = chunk
        self._queue: queue.Queue[GenRequest | None] = queue.Queue()
        self._active: list[Seq] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.stats_counts: dict[str, Any] = {
            "decode_batch_sizes": Counter(),
            "prefill_batch_sizes": Counter(),
            "requests": 0,
            "generated_tokens": 0,
            "decode_steps": 0,
            "mixed_steps": 0,
            "overlapped_prefills": 0,
            "prefill_tokens": 0,
            "prefix_hit_tokens": 0,
            "errors": 0,
            "prefill_s": 0.0,
            "decode_s": 0.0,
            "device_s": 0.0,
        }
        self.on_batch: Callable[[str, int], None] | None = None
        self.ready = False

    # -- to implement ------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """How the engine generates (in stats and the replica's info)."""
        raise NotImplementedError

    def _loop(self) -> None:
        """The scheduler thread: take queued requests and generate until :meth:`stop`."""
        raise NotImplementedError

    def warmup(self, capture: bool = True) -> None:
        """Prepare (compile, capture graphs where the engine does), start, and run a few generations."""
        raise NotImplementedError

    def _extra_stats(self) -> dict[str, Any]:
        return {}

    # -- public API --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The scheduler thread is alive (the replica's health check)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> BaseEngine:
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
        check_request(req, self.cfg.seq_len)
        req.submitted_at = time.perf_counter()
        self._queue.put(req)
        return req

    def cancel(self, req: GenRequest) -> None:
        """Stop ``req`` at its next chunk end (or before it starts); it finishes with ``cancelled``."""
        req.cancelled = True

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
            # Decode steps that ran inside a prefill pass (new requests admitted without pausing decode).
            "mixed_steps": s["mixed_steps"],
            # Prefill groups queued behind a running decode chunk (EngineConfig.overlap).
            "overlapped_prefills": s["overlapped_prefills"],
            # Prompt tokens prefilled, and prompt tokens whose K/V came from the prefix cache instead.
            "prefill_tokens": s["prefill_tokens"],
            "prefix_hit_tokens": s["prefix_hit_tokens"],
            "errors": s["errors"],
            # Wall time of the scheduler's prefill and decode phases (each ends in its host sync).
            "prefill_s": round(s.get("prefill_s", 0.0), 4),
            "decode_s": round(s.get("decode_s", 0.0), 4),
            # Device time of the decode chunks and prefills (CUDA events; 0 elsewhere): against the wall time
            # it says how long the device waited for the host.
            "device_s": round(s.get("device_s", 0.0), 4),
            "decode_batch_sizes": {str(k): v for k, v in sorted(s["decode_batch_sizes"].items())},
            "prefill_batch_sizes": {str(k): v for k, v in sorted(s["prefill_batch_sizes"].items())},
            "max_decode_batch": max(s["decode_batch_sizes"], default=0),
            **self._extra_stats(),
        }

    def reset_stats(self) -> None:
        with self._lock:
            self.stats_counts["decode_batch_sizes"].clear()
            self.stats_counts["prefill_batch_sizes"].clear()
            self.stats_counts.update(
                requests=0, generated_tokens=0, decode_steps=0, mixed_steps=0, overlapped_prefills=0, prefill_s=0.0,
                decode_s=0.0, device_s=0.0,
                prefill_tokens=0, prefix_hit_tokens=0,
            )

    # -- for the schedulers ------------------------------------------------------------------------

    def _accept(self, seq: Seq, toks: list[int]) -> None:
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

    def _collect(self) -> list[GenRequest]:
        """Queued requests for the free slots: waits (up to ``batch_wait_s`` for company) only when idle;
        cancelled ones are finished here, never run."""
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
        elif self._hold_back(free):
            return out
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

    def _hold_back(self, free: int) -> bool:
        """While others decode: keep queued requests waiting for company (``admit_wait_s``) until they
        fill the ``free`` slots or the oldest has waited long enough."""
        wait = self.cfg.admit_wait_s
        if wait <= 0:
            return False
        with self._queue.mutex:  # a consistent look at the queue without taking anything from it
            queued = [r for r in self._queue.queue if r is not None]
            stopping = len(queued) < len(self._queue.queue)
        if stopping or not queued or len(queued) >= free:
            return False
        return time.perf_counter() - queued[0].submitted_at < wait

    def _drain(self, message: str) -> None:
        """Finish every request still queued (the engine stopped)."""
        while True:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                break
            if req is not None:
                self._finish(req, "error", error=message)


__all__ = ["BaseEngine", "Seq"]
