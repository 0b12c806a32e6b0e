"""Which prompt prefixes have their keys and values kept on the device, and where (no torch here).

Text-to-SQL prompts repeat most of themselves: the system prompt and the schema of a database come before
every question about it. The runner keeps a few extra cache rows beside the slots; :class:`PrefixStore`
decides what they hold. A prefix is remembered in whole blocks of ``block`` tokens, each block named by a
hash chained over every block before it, so a new prompt matches the longest run of leading blocks that
some row holds, even when that row's own prompt went on differently (same schema, another question).

The scheduler (:mod:`.engine`) asks :meth:`PrefixStore.lookup` before a prefill, copies the matched
positions from the row into the request's slot and prefills only the rest; after the prefill it offers the
prompt's leading blocks back with :meth:`PrefixStore.insert`. Rows read in one admission round are
:meth:`pinned <PrefixStore.pin>`, so an insert in the same round never overwrites a row still to be copied.
"""

from __future__ import annotations

from collections import OrderedDict


class PrefixStore:
    """Leading blocks of recent prompts in ``rows`` device rows, least recently used evicted first."""

    def __init__(self, rows: int, block: int = 16):
        self.rows = rows
        self.block = block
        self._tokens: dict[int, tuple[int, ...]] = {}  # row -> the prefix it holds
        self._hashes: dict[int, list[int]] = {}  # row -> its block hashes, in order
        self._where: dict[int, int] = {}  # block-chain hash -> the newest row holding it
        self._lru: OrderedDict[int, None] = OrderedDict((r, None) for r in range(rows))
        self._pinned: set[int] = set()

    def _chain(self, tokens: list[int] | tuple[int, ...], blocks: int) -> list[int]:
        out, h = [], 0
        for b in range(blocks):
            h = hash((h, tuple(tokens[b * self.block : (b + 1) * self.block])))
            out.append(h)
        return out

    def usable(self, length: int) -> int:
        """The longest prefix of a ``length``-token prompt that may come from a row: whole blocks, and at
        least one token left to prefill (its logits give the first generated token)."""
        return ((length - 1) // self.block) * self.block if length > 1 else 0

    def lookup(self, tokens: list[int]) -> tuple[int | None, int]:
        """(row, matched tokens) for the longest run of leading blocks held by a row; (None, 0) if none."""
        best_row, best = None, 0
        for k, h in enumerate(self._chain(tokens, self.usable(len(tokens)) // self.block), start=1):
            row = self._where.get(h)
            if row is None:
                break
            n = k * self.block
            if tuple(tokens[:n]) != self._tokens[row][:n]:  # a hash collision: stop at what is certain
                break
            best_row, best = row, n
        if best_row is not None:
            self._lru.move_to_end(best_row)
        return best_row, best

    def pin(self, row: int) -> None:
        self._pinned.add(row)

    def unpin_all(self) -> None:
        self._pinned.clear()

    def insert(self, tokens: list[int], length: int) -> int | None:
        """Take a row for ``tokens[:length]`` (whole blocks) and return it, to be filled by the caller;
        None when a row already holds all of it, or every row is pinned."""
        length = (length // self.block) * self.block
        if length <= 0:
            return None
        row, held = self.lookup(tokens[: length + 1])
        if row is not None and held >= length:
            return None
        victim = next((r for r in self._lru if r not in self._pinned), None)
        if victim is None:
            return None
        for h in self._hashes.pop(victim, []):
            if self._where.get(h) == victim:
                del self._where[h]
        hashes = self._chain(tokens, length // self.block)
        self._tokens[victim] = tuple(tokens[:length])
        self._hashes[victim] = hashes
        for h in hashes:
            self._where[h] = victim  # the newest row: the last to be evicted
        self._lru.move_to_end(victim)
        return victim


__all__ = ["PrefixStore"]
