"""Training data: tokenized examples (loss on the SQL only), per-rank batch plans, and collation.

* :func:`tokenize_examples` runs the shared prompt builder (:func:`sqltune.prompts.tokenize_for_training`)
  over every example; prompt positions carry label -100, so only SQL (and end-of-turn) tokens carry loss.
* :class:`BatchPlan` decides, for every epoch, which micro-batches each data-parallel rank trains on. It is
  a pure function of (seed, epoch, world size), so a restored worker recomputes it and skips to the
  optimizer step it stopped at: the data position is the step number. Every rank gets the same number of
  micro-batches (DDP needs that), the minimum over ranks.
* Two batch layouts: dynamic padding (a batch is padded to its longest row) and padding-free packing
  (examples concatenated into one row of at most ``pack_tokens`` tokens, ``position_ids`` restarting at 0
  for each example: transformers then builds a block-diagonal causal mask, or flash-attention varlen
  kernels on GPU, so no example attends to another).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sqltune.errors import ConfigError
from sqltune.prompts import IGNORE_INDEX, PromptTemplate, tokenize_for_training

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedSet:
    rows: list[dict[str, list[int]]]
    """Each row: ``input_ids`` and ``labels`` (prompt positions -100)."""
    dropped: int
    """Examples longer than ``max_length`` (left out)."""

    @property
    def lengths(self) -> list[int]:
        return [len(r["input_ids"]) for r in self.rows]


def tokenize_examples(
    examples: Sequence[Any], tokenizer: Any, template: PromptTemplate, max_length: int
) -> TokenizedSet:
    rows: list[dict[str, list[int]]] = []
    dropped = 0
    for ex in examples:
        item = tokenize_for_training(ex, tokenizer, template, max_length=max_length)
        if item is None:
            dropped += 1
            continue
        if not any(label != IGNORE_INDEX for label in item["labels"]):
            dropped += 1
            continue
        rows.append(item)
    if dropped:
        log.warning("dropped %d of %d examples longer than max_length=%d tokens", dropped, len(examples), max_length)
    return TokenizedSet(rows=rows, dropped=dropped)


def pack_greedy(order: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Group indices (kept in ``order``) into rows of at most ``budget`` tokens, first fit over open rows."""
    rows: list[list[int]] = []
    room: list[int] = []
    for idx in order:
        n = lengths[idx]
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(idx)
                room[r] -= n
                break
        else:
            rows.append([idx])
            room.append(budget - n)
    return rows


@dataclass(frozen=True)
class BatchPlan:
    """Which examples form each micro-batch of each rank in each epoch (deterministic)."""

    lengths: tuple[int, ...]
    world_size: int
    batch_size: int
    grad_accum: int
    seed: int
    packing: bool = False
    pack_tokens: int = 4096
    pack_rows: int = 1

    def _rank_batches(self, epoch: int, rank: int) -> list[Any]:
        order = list(range(len(self.lengths)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        mine = order[rank :: self.world_size]
        if self.packing:
            rows = pack_greedy(mine, self.lengths, self.pack_tokens)
            r = self.pack_rows
            return [rows[i : i + r] for i in range(0, len(rows) - r + 1, r)]
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def micro_batches(self, epoch: int, rank: int) -> list[Any]:
        """This rank's micro-batches for ``epoch``, truncated to what every rank has (whole steps only).

        A micro-batch is a list of example indices (dynamic padding), or with packing a list of
        ``pack_rows`` rows, each a list of example indices totalling at most ``pack_tokens`` tokens.
        """
        per_rank = [self._rank_batches(epoch, r) for r in range(self.world_size)]
        n = min(len(b) for b in per_rank)
        n -= n % self.grad_accum
        return per_rank[rank][:n]

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the same for every rank; epoch 0 decides for packing)."""
        return len(self.micro_batches(0, 0)) // self.grad_accum

    def total_steps(self, epochs: float, max_steps: int | None) -> int:
        if max_steps:
            return max_steps
        return max(1, math.ceil(epochs * self.steps_per_epoch()))

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, index of the next micro-batch in that epoch) after ``step`` optimizer steps."""
        spe = self.steps_per_epoch()
        if spe <= 0:
            raise ConfigError("the training split is smaller than one optimizer step on every rank: "
                              "lower train.batch_size or train.grad_accum")
        return step // spe, (step % spe) * self.grad_accum


def collate_padded(rows: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` tensors (padding to the longest row)."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_packed(rows: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
    """One padding-free row: examples concatenated, ``position_ids`` restarting at 0 for each example.

    No attention mask is passed: transformers detects the position restarts and masks attention across
    examples (only without a KV cache, so the forward pass needs ``use_cache=False``, as in training). The first label of every example is -100 so no loss crosses an example boundary (the
    prompt is masked anyway; this also holds for callers that would not mask it).
    """
    ids: list[int] = []
    pos: list[int] = []
    labels: list[int] = []
    for r in rows:
        n = len(r["input_ids"])
        ids.extend(r["input_ids"])
        pos.extend(range(n))
        lab = list(r["labels"])
        lab[0] = IGNORE_INDEX
        labels.extend(lab)
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([pos], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
    }


def collate_packed_rows(
    rows: Sequence[Sequence[dict[str, list[int]]]], row_tokens: int, pad_id: int
) -> dict[str, Any]:
    """Several packed rows of exactly ``row_tokens`` tokens (a ``[rows, row_tokens]`` batch, no attention mask).

    Each row is :func:`collate_packed` of its examples; the unused tail of a row is filled with a separate
    pad segment (positions restarting at 0, labels -100) that no real token attends to. ``real_tokens``
    of the result counts the examples' tokens only.
    """
    out: dict[str, list[Any]] = {"input_ids": [], "position_ids": [], "labels": []}
    real = 0
    for group in rows:
        one = collate_packed(group)
        n = one["input_ids"].shape[1]
        real += n
        if n > row_tokens:
            raise ValueError(f"a packed row holds {n} tokens, more than row_tokens={row_tokens}")
        tail = row_tokens - n
        for key, fill in (("input_ids", pad_id), ("labels", IGNORE_INDEX)):
            out[key].append(torch.cat([one[key][0], torch.full((tail,), fill, dtype=torch.long)]))
        out["position_ids"].append(torch.cat([one["position_ids"][0], torch.arange(tail, dtype=torch.long)]))
    batch = {k: torch.stack(v) for k, v in out.items()}
    batch["real_tokens"] = real
    return batch


def collate(items: Sequence[Any], *, packing: bool, pad_id: int, pack_tokens: int = 0) -> dict[str, Any]:
    """A micro-batch from tokenized rows (padding) or from rows of rows (packing, see BatchPlan)."""
    if not packing:
        return collate_padded(items, pad_id)
    if len(items) == 1:
        return collate_packed(items[0])
    return collate_packed_rows(items, pack_tokens, pad_id)


def count_tokens(batch: dict[str, Any]) -> tuple[int, int]:
    """(real tokens, target tokens) of a collated batch; padding is not counted."""
    if "real_tokens" in batch:
        real = int(batch["real_tokens"])
    elif "attention_mask" in batch:
        real = int(batch["attention_mask"].sum())
    else:
        real = int(batch["input_ids"].numel())
    targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return real, targets


def eval_batches(n: int, rank: int, world_size: int, batch_size: int) -> list[list[int]]:
    """Validation indices of one rank (round robin), in batches; ranks may get different counts."""
    mine = list(range(rank, n, world_size))
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
