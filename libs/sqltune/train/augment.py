"""Literal-swap augmentation: training copies of an example with its copied values replaced.

A text-to-SQL model must copy the question's values (``'Poland'``, ``2024``, ``0.7``) into the SQL. On a
templated set each slot takes only a few values, so a small model first learns to *guess* the frequent
value of a slot from the template, a cheap solution that sits for a long time before copying appears
(docs/benchmarks.md). A copy of the example whose values are swapped for others
(the same value in the question and in the SQL) makes guessing useless and copying the only way to lower
the loss, so it is learned far earlier. Only literals that appear verbatim in the question are swapped;
literals the SQL adds on its own (``'completed'``, ``'%Y'``) are left alone, and the schema never changes.

* numbers are replaced by a random number of the same shape (digit count, decimals);
* strings with digits (dates, ``'churn-v1.1'``) get random digits in the same places;
* other strings are replaced by another copied string of the training set with the same word count.

The copies are deterministic (a function of the seed) and are added to the training split only.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqltune.data.record import Example

_DIGIT = re.compile(r"\d")


def copied_literals(ex: Example) -> list[tuple[int, int, str, bool]]:
    """``(start, end, value, is_number)`` of the SQL literals whose value appears verbatim in the question.

    ``start``/``end`` delimit the literal in ``ex.sql`` (end exclusive, quotes included for strings).
    A SQL text sqlglot cannot tokenize has none.
    """
    from sqlglot.dialects import Dialect
    from sqlglot.tokens import TokenType

    try:
        tokens = Dialect.get_or_raise(ex.dialect).tokenize(ex.sql)
    except Exception:  # noqa: BLE001 - an untokenizable example is simply not augmented
        return []
    out = []
    for t in tokens:
        if t.token_type not in (TokenType.STRING, TokenType.NUMBER) or not t.text.strip():
            continue
        if "'" in t.text or not _occurs(t.text, ex.question):
            continue
        out.append((t.start, t.end + 1, t.text, t.token_type == TokenType.NUMBER))
    return out


def _pattern(value: str) -> re.Pattern[str]:
    # A whole value: not glued to a word character, nor to '-'/'.' followed by more of a word (so '2024' is
    # not found inside '2024-03-01' and '0.5' not inside '0.55').
    return re.compile(rf"(?<!\w)(?<![\w][-.]){re.escape(value)}(?!\w)(?![-.]\w)")


def _occurs(value: str, text: str) -> bool:
    return _pattern(value).search(text) is not None


def _random_like(value: str, rng: random.Random) -> str:
    """``value`` with every digit redrawn (a leading digit of a number-like run stays non-zero)."""
    out = []
    for i, ch in enumerate(value):
        if ch.isdigit():
            lead = (i == 0 or not value[i - 1].isdigit()) and i + 1 < len(value) and value[i + 1].isdigit()
            out.append(str(rng.randint(1, 9) if lead else rng.randint(0, 9)))
        else:
            out.append(ch)
    return "".join(out)


def _word_pools(examples: Sequence[Example]) -> dict[int, list[str]]:
    pools: dict[int, set[str]] = {}
    for ex in examples:
        for _, _, value, is_number in copied_literals(ex):
            if not is_number and not _DIGIT.search(value):
                pools.setdefault(len(value.split()), set()).add(value)
    return {k: sorted(v) for k, v in pools.items()}


def swap_literals(ex: Example, rng: random.Random, pools: dict[int, list[str]], *, suffix: str) -> Example | None:
    """A copy of ``ex`` with every copied literal replaced, or None when it has none (or no swap is possible)."""
    found = copied_literals(ex)
    if not found:
        return None
    taken = {value for _, _, value, _ in found}
    mapping: dict[str, str] = {}
    for _, _, value, is_number in found:
        if value in mapping:
            continue
        if is_number or _DIGIT.search(value):
            for _ in range(20):
                new = _random_like(value, rng)
                if new not in taken and not _occurs(new, ex.question):
                    break
            else:
                return None
        else:
            options = [w for w in pools.get(len(value.split()), []) if w not in taken and not _occurs(w, ex.question)]
            if not options:
                return None
            new = rng.choice(options)
        mapping[value] = new
        taken.add(new)
    sql = ex.sql
    for start, end, value, is_number in sorted(found, reverse=True):
        literal = mapping[value] if is_number else "'" + mapping[value] + "'"
        sql = sql[:start] + literal + sql[end:]
    question = ex.question
    # Longest first, so a value never rewrites part of a longer one already replaced.
    for value in sorted(mapping, key=len, reverse=True):
        question = _pattern(value).sub(lambda _m, v=mapping[value]: v, question)
    extra: dict[str, Any] = {k: v for k, v in ex.extra.items() if k != "sql_by_dialect"}
    extra["augmented_from"] = ex.id
    return replace(ex, id=f"{ex.id}~{suffix}", question=question, sql=sql, extra=extra)


def augment_examples(examples: Sequence[Example], copies: int, seed: int) -> list[Example]:
    """The examples followed by up to ``copies`` literal-swapped copies of each (those that have literals)."""
    if copies <= 0:
        return list(examples)
    pools = _word_pools(examples)
    rng = random.Random(f"sqltune-augment-{seed}")
    out = list(examples)
    for k in range(copies):
        for ex in examples:
            aug = swap_literals(ex, rng, pools, suffix=f"swap{k}")
            if aug is not None:
                out.append(aug)
    return out
