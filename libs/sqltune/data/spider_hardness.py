"""Spider's official hardness levels (easy/medium/hard/extra), computed from the parsed ``sql`` field
of a Spider item exactly as ``evaluation.py`` of taoyds/spider does (quirks included), so loaded
examples carry the same ``difficulty`` labels the Spider leaderboard reports by."""

from __future__ import annotations

from typing import Any

_AGG_NONE = 0  # AGG_OPS.index('none')
_LIKE = 9  # WHERE_OPS.index('like')


def _has_agg(unit: Any) -> bool:
    return unit[0] != _AGG_NONE


def _count_agg(units: list[Any]) -> int:
    return len([u for u in units if _has_agg(u)])


def _nested(sql: dict[str, Any]) -> list[Any]:
    nested = []
    for cond_unit in sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]:
        if isinstance(cond_unit[3], dict):
            nested.append(cond_unit[3])
        if isinstance(cond_unit[4], dict):
            nested.append(cond_unit[4])
    for key in ("intersect", "except", "union"):
        if sql[key] is not None:
            nested.append(sql[key])
    return nested


def _component1(sql: dict[str, Any]) -> int:
    count = 0
    count += len(sql["where"]) > 0
    count += len(sql["groupBy"]) > 0
    count += len(sql["orderBy"]) > 0
    count += sql["limit"] is not None
    if len(sql["from"]["table_units"]) > 0:
        count += len(sql["from"]["table_units"]) - 1
    ao = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    count += len([t for t in ao if t == "or"])
    cond_units = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    count += len([c for c in cond_units if c[1] == _LIKE])
    return count


def _others(sql: dict[str, Any]) -> int:
    count = 0
    agg = _count_agg(sql["select"][1])
    agg += _count_agg(sql["where"][::2])
    agg += _count_agg(sql["groupBy"])
    if len(sql["orderBy"]) > 0:
        agg += _count_agg(
            [u[1] for u in sql["orderBy"][1] if u[1]] + [u[2] for u in sql["orderBy"][1] if u[2]]
        )
    agg += _count_agg(sql["having"])
    count += agg > 1
    count += len(sql["select"][1]) > 1
    count += len(sql["where"]) > 1
    count += len(sql["groupBy"]) > 1
    return count


def spider_hardness(sql: Any) -> str | None:
    """``easy``/``medium``/``hard``/``extra`` for a Spider ``sql`` dict; ``None`` if it is malformed."""
    try:
        c1, c2, other = _component1(sql), len(_nested(sql)), _others(sql)
    except (KeyError, IndexError, TypeError):
        return None
    if c1 <= 1 and other == 0 and c2 == 0:
        return "easy"
    if (other <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and other < 2 and c2 == 0):
        return "medium"
    if (
        (other > 2 and c1 <= 2 and c2 == 0)
        or (2 < c1 <= 3 and other <= 2 and c2 == 0)
        or (c1 <= 1 and other == 0 and c2 <= 1)
    ):
        return "hard"
    return "extra"
