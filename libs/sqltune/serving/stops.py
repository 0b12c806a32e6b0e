"""Where generated text is complete, as data: a :class:`TextStop` crosses to an engine in another process
(``ServeArgs.engine_process``) and is bound there to that process's tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqltune.prompts import statement_stop


@dataclass(frozen=True)
class TextStop:
    """The end of the first top-level SQL statement (no ``strings``), or the first of ``strings``."""

    strings: tuple[str, ...] = ()

    def bind(self, decode: Callable[[list[int]], str]) -> BoundStop:
        """The engine's ``text_stop`` callable: tokens so far -> how many to keep (None: not complete)."""
        return BoundStop(self, decode)


class BoundStop:
    """A :class:`TextStop` with a tokenizer's decode; ``spec`` is what travels to another process."""

    __slots__ = ("decode", "spec")

    def __init__(self, spec: TextStop, decode: Callable[[list[int]], str]):
        self.spec, self.decode = spec, decode

    def __call__(self, tokens: list[int]) -> int | None:
        stops = self.spec.strings
        if not stops:
            return statement_stop(tokens, self.decode)
        if not any(s in self.decode(tokens) for s in stops):
            return None
        keep = len(tokens)
        while keep > 1 and any(s in self.decode(tokens[: keep - 1]) for s in stops):
            keep -= 1
        return keep


__all__ = ["BoundStop", "TextStop"]
