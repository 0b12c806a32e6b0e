"""The fallback engine: dynamic batching around ``model.generate`` for architectures the slot engine does
not know (see :func:`sqltune.generation.engine.build_engine`).

Same interface as :class:`~sqltune.generation.engine.Engine` (both are
:class:`~sqltune.generation.base.BaseEngine`); requests that arrive while a batch runs wait for the next.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from sqltune.generation.base import BaseEngine, Seq
from sqltune.generation.request import EngineConfig, GenRequest

log = logging.getLogger(__name__)


class GenerateEngine(BaseEngine):
    """Greedy ``model.generate`` over batches of queued requests (left padding)."""

    def __init__(self, model: Any, tokenizer: Any, config: EngineConfig | None = None):
        super().__init__(model, tokenizer, config or EngineConfig(), chunk=0)

    @property
    def mode(self) -> str:
        return "generate"

    def warmup(self, capture: bool = True) -> None:
        self.start()
        self.generate([[1, 2, 3]], max_new_tokens=2)
        self.ready = True

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            try:
                with torch.inference_mode():
                    self._run(batch)
            except Exception as exc:  # noqa: BLE001 - never let one failure kill the replica
                log.exception("generate failed")
                self.stats_counts["errors"] += 1
                for r in batch:
                    self._finish(r, "error", error=f"generation failed: {exc}")
        self._drain("the engine stopped")

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
            seq = Seq(r, len(r.prompt_ids))
            self._accept(seq, out[i, width:].tolist())
            if not r.finished:
                self._finish(r, "length")


__all__ = ["GenerateEngine"]
