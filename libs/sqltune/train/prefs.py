"""Preference pairs for DPO: read from a JSONL file (validated line by line) or built from the model's samples.

Every pair is checked in the SQL sandbox on its question's database (file, DSN, or the in-memory database
of its CREATE/INSERT context) before it is trained on: the chosen SQL must score 1.0 against the reference
query (an execution match, or AST equivalence where there is no database), the rejected SQL must not. A pair
that fails the check is left out and counted by reason; a line that is not a valid pair is an error naming
the file and line.

A line of a pairs file::

    {"question": "...", "schema": "CREATE TABLE ...", "chosen": "SELECT ...", "rejected": "SELECT ...",
     "db": "path/or/dsn (optional)", "dialect": "sqlite (optional)", "evidence": "(optional)",
     "gold": "reference SQL (optional; default chosen)", "id": "(optional)"}

Built from samples (no file): for each training question, ``dpo.samples_per_prompt`` completions are
sampled; chosen is a sample that matches on execution, else the gold SQL; rejected is the lowest-reward
sample that does not match. A question whose samples all match gives no pair.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Sequence

from sqltune.errors import ConfigError, DataError

_REQUIRED = ("question", "chosen", "rejected")
_OPTIONAL = ("schema", "db", "dialect", "evidence", "gold", "id")


def _reward_spec(settings: Any) -> Any:
    from sqltune.train.rewards import RewardSpec

    return RewardSpec(timeout_s=settings.reward_timeout_s, workers=settings.reward_workers)


def parse_pairs_file(path: str) -> list[dict[str, Any]]:
    """Read and validate the lines of a pairs file (local path or s3:// URI); raises DataError naming
    ``file:line`` and the problem. Returns ``{"example": Example dict, "chosen", "rejected", "line"}``."""
    from sqltune import storage
    from sqltune.data.record import Example

    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        raise DataError(f"dpo.pairs_file {path!r}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"dpo.pairs_file {path!r}: not UTF-8 text ({exc})") from None
    pairs: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object with {', '.join(_REQUIRED)}")
        for key in _REQUIRED:
            if key not in row:
                raise DataError(f"{where}: missing {key!r}; a pair needs {', '.join(_REQUIRED)}")
            if not isinstance(row[key], str) or not row[key].strip():
                raise DataError(f"{where}: {key!r} must be a non-empty string")
        unknown = sorted(set(row) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise DataError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(_REQUIRED + _OPTIONAL)}")
        for key in _OPTIONAL:
            if row.get(key) is not None and not isinstance(row[key], str):
                raise DataError(f"{where}: {key!r} must be a string")
        if row["chosen"].strip() == row["rejected"].strip():
            raise DataError(f"{where}: chosen and rejected are the same SQL")
        db = row.get("db")
        if db and "://" not in db and not os.path.isabs(db):
            db = os.path.join(os.path.dirname(os.path.abspath(path)), db) if "://" not in path else db
        ex = Example(
            id=str(row.get("id") or f"pair-{n}"), question=row["question"], schema=row.get("schema") or "",
            sql=row.get("gold") or row["chosen"], dialect=row.get("dialect") or "sqlite", db=db,
            evidence=row.get("evidence"),
        )
        pairs.append({"example": ex.to_dict(), "chosen": row["chosen"], "rejected": row["rejected"], "line": n})
    if not pairs:
        raise DataError(f"dpo.pairs_file {path!r}: no pairs (the file is empty)")
    return pairs


def check_pairs(pairs: Sequence[dict[str, Any]], settings: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Keep the pairs whose chosen SQL scores 1.0 and whose rejected SQL does not, in the sandbox."""
    from sqltune.data.record import Example
    from sqltune.train.rewards import score_completions

    spec = _reward_spec(settings)
    examples = [Example.from_dict(p["example"]) for p in pairs]
    texts = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    rewards = score_completions(texts, examples + examples, spec, deadline_s=60 + 4 * spec.timeout_s * len(pairs))
    kept, dropped = [], Counter()
    for i, p in enumerate(pairs):
        chosen, rejected = rewards[i], rewards[len(pairs) + i]
        if chosen.hybrid < 1.0:
            dropped[f"chosen_{chosen.category or 'not_matching'}"] += 1
        elif rejected.hybrid >= 1.0:
            dropped["rejected_matches"] += 1
        else:
            kept.append(p)
    return kept, {"read": len(pairs), "kept": len(kept), "dropped": dict(dropped)}


def load_pairs(path: str, settings: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Parse, validate and sandbox-check a pairs file (``dpo.max_pairs`` applies after the check)."""
    pairs, info = check_pairs(parse_pairs_file(path), settings)
    if not pairs:
        raise DataError(f"dpo.pairs_file {path!r}: none of its {info['read']} pairs passed the sandbox check "
                        f"({info['dropped']}); chosen must match the reference on execution, rejected must not")
    if settings.max_pairs:
        pairs = pairs[: settings.max_pairs]
    info["file"] = path
    return pairs, info


def pairs_from_samples(examples: Sequence[Any], samples: Sequence[Sequence[str]], settings: Any
                       ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Pairs from sampled completions (``samples[i]`` are completions of ``examples[i]``), checked in the
    sandbox: chosen = a matching sample (else the gold SQL), rejected = the worst non-matching sample."""
    from sqltune.train.rewards import score_completions

    flat = [c for group in samples for c in group]
    owners = [ex for ex, group in zip(examples, samples) for _ in group]
    rewards = score_completions(flat, owners, _reward_spec(settings),
                                deadline_s=60 + 4 * settings.reward_timeout_s * max(1, len(flat)))
    pairs, stats = [], Counter()
    k = 0
    for ex, group in zip(examples, samples):
        scored = list(zip(group, rewards[k : k + len(group)]))
        k += len(group)
        good = [c for c, r in scored if r.hybrid >= 1.0]
        bad = sorted(((c, r) for c, r in scored if r.hybrid < 1.0 and c.strip()), key=lambda cr: cr[1].value)
        if not bad:
            stats["all_samples_match"] += 1
            continue
        chosen = good[0] if good else ex.sql
        stats["chosen_from_sample" if good else "chosen_gold"] += 1
        pairs.append({"example": ex.to_dict(), "chosen": chosen, "rejected": bad[0][0]})
    stats["pairs"] = len(pairs)
    return pairs, dict(stats)


def check_init_adapter(cfg: Any) -> None:
    """``model.init_adapter`` is a published adapter whose LoRA shape is ``lora.*``; raises ConfigError
    naming the key to change."""
    from sqltune import storage

    uri = cfg.model.init_adapter
    try:
        adapter = json.loads(storage.read_bytes(storage.join(uri, "adapter_config.json")))
    except FileNotFoundError:
        raise ConfigError(f"model.init_adapter {uri!r}: no adapter_config.json there; give a published sqltune "
                          "adapter (<output_uri>/<run_name>/adapter)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.init_adapter {uri!r}: cannot read its adapter_config.json ({exc})") from None
    want = {"r": adapter.get("r"), "alpha": adapter.get("lora_alpha"),
            "target_modules": sorted({m.rsplit(".", 1)[-1] for m in adapter.get("target_modules") or []}),
            # PEFT records a tied module under its full name too (model.embed_tokens): compare the last parts
            "modules_to_save": sorted({m.rsplit(".", 1)[-1] for m in adapter.get("modules_to_save") or []})}
    have = {"r": cfg.lora.r, "alpha": cfg.lora.alpha, "target_modules": sorted(set(cfg.lora.target_modules)),
            "modules_to_save": sorted({m.rsplit(".", 1)[-1] for m in cfg.lora.modules_to_save})}
    for key, value in want.items():
        if value is None:
            continue
        if (float(value) != float(have[key])) if key == "alpha" else (value != have[key]):
            raise ConfigError(f"lora.{key}: {have[key]!r} differs from model.init_adapter's {value!r}; "
                              f"set lora.{key} to the adapter's value")


__all__ = ["check_init_adapter", "check_pairs", "load_pairs", "pairs_from_samples", "parse_pairs_file"]
