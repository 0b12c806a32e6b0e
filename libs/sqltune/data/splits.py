"""Deterministic, stratified, group-aware train/validation/test splits.

The same examples and seed give the same split whatever order the examples come in: examples are
put in a canonical order (by id, then content), gathered into groups (``group_by``), each group is
given one stratum, groups are shuffled per stratum with a seed derived from ``seed`` and the stratum
name, and dealt to the split furthest below its target share of that stratum.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from sqltune.data.record import Example
from sqltune.errors import ConfigError

__all__ = ["Splits", "split_examples", "evidence_bucket", "Stratify"]

Stratify = Literal["category", "difficulty", "evidence_length", "none"]
SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def __iter__(self) -> Iterator[list[Example]]:
        return iter((self.train, self.validation, self.test))

    def __getitem__(self, name: str) -> list[Example]:
        if name not in SPLIT_NAMES:
            raise KeyError(f"{name!r} is not one of {SPLIT_NAMES}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLIT_NAMES}


def evidence_bucket(example: Example) -> str:
    """BIRD-style stratum by evidence length in words: none, short (<=8), medium (<=20), long."""
    words = len((example.evidence or "").split())
    if words == 0:
        return "none"
    if words <= 8:
        return "short"
    if words <= 20:
        return "medium"
    return "long"


def _canonical_key(ex: Example) -> tuple[str, ...]:
    return (ex.id, ex.question, ex.sql, ex.schema, ex.db or "", ex.category or "", ex.difficulty or "")


def _key_fn(group_by: str | Callable[[Example], object] | None) -> Callable[[Example], str] | None:
    if group_by is None:
        return None
    if callable(group_by):
        return lambda ex: str(group_by(ex))
    name = str(group_by)
    fields = set(Example.__dataclass_fields__)

    def key(ex: Example) -> str:
        if name in fields:
            value = getattr(ex, name)
        elif name.startswith("extra.") or name in ex.extra:
            value = ex.extra.get(name.removeprefix("extra.") if name.startswith("extra.") else name)
        else:
            value = None
        # an example without the key is its own group
        return f"\x00{ex.id}" if value is None else f"k:{value}"

    return key


def _stratum_fn(stratify: str) -> Callable[[Example], str]:
    if stratify == "category":
        return lambda ex: ex.category or "unknown"
    if stratify == "difficulty":
        return lambda ex: ex.difficulty or "unknown"
    if stratify == "evidence_length":
        return evidence_bucket
    return lambda ex: "all"


def split_examples(
    examples: Sequence[Example],
    *,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: Stratify = "category",
    group_by: str | Callable[[Example], object] | None = None,
) -> Splits:
    """Split ``examples`` into train/validation/test.

    ``ratios`` are the three shares (summing to 1; a 0 leaves that split empty). ``stratify`` keeps
    each stratum's proportions in every split: by ``category``, ``difficulty``, ``evidence_length``
    (BIRD; see :func:`evidence_bucket`) or ``none``; a missing label is the stratum ``unknown``.
    ``group_by`` (an Example field name such as ``"question"``, a key of ``extra`` such as
    ``"template_key"``/``"db_id"``, or a function of an Example) keeps all examples sharing a key in
    one split; a group's stratum is its most common label. Each split is returned in canonical order.
    """
    if stratify not in get_args(Stratify):
        raise ConfigError(f"stratify={stratify!r} is not one of: {', '.join(get_args(Stratify))}")
    ratios = [float(r) for r in ratios]
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(f"ratios must be three non-negative shares summing to 1, got {tuple(ratios)}")

    ordered = sorted(examples, key=_canonical_key)
    key_of = _key_fn(group_by)
    stratum_of = _stratum_fn(stratify)

    groups: dict[str, list[Example]] = {}
    for idx, ex in enumerate(ordered):
        key = key_of(ex) if key_of else f"\x00{idx}"
        groups.setdefault(key, []).append(ex)

    strata: dict[str, list[str]] = {}
    for key, members in groups.items():
        counts = Counter(stratum_of(ex) for ex in members)
        label = min(counts, key=lambda s: (-counts[s], s))
        strata.setdefault(label, []).append(key)

    parts: list[list[Example]] = [[], [], []]
    global_filled = [0, 0, 0]
    for label in sorted(strata):
        keys = sorted(strata[label], key=lambda k: (_canonical_key(groups[k][0]), k))
        random.Random(f"sqltune-split:{seed}:{label}").shuffle(keys)
        total = sum(len(groups[k]) for k in keys)
        targets = [r * total for r in ratios]
        filled = [0, 0, 0]
        for key in keys:
            size = len(groups[key])
            assigned = sum(global_filled) + size

            # the split furthest below its target share of this stratum; ties go to the split furthest
            # below its share of everything assigned so far (so coarse groups do not always favour
            # validation over test), then to the earlier split
            def need(i: int) -> tuple[float, float, int]:
                if ratios[i] <= 0:
                    return (float("-inf"), float("-inf"), -i)
                return (round(targets[i] - filled[i], 9), round(ratios[i] * assigned - global_filled[i], 9), -i)

            best = max(range(3), key=need)
            parts[best].extend(groups[key])
            filled[best] += size
            global_filled[best] += size

    return Splits(*(sorted(p, key=_canonical_key) for p in parts))
