"""The one prompt builder shared by training, evaluation and serving, and generation cleaning.

A :class:`PromptTemplate` is saved inside every artifact (``prompt_template.json``) so that serving
builds exactly the prompt training used. Prompts are chat messages rendered with the tokenizer's chat
template; for training, :func:`tokenize_for_training` returns ids and labels with the prompt masked,
so the loss falls on the SQL (and the end-of-turn token) only.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqltune.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sqltune.data.record import Example

TEMPLATE_FILE = "prompt_template.json"
IGNORE_INDEX = -100

STRICT_SYSTEM = (
    "You are a text-to-SQL assistant. Given a database schema and a question, reply with exactly one "
    "{dialect} SQL query that answers it, using only the tables and columns in the schema. "
    "Reply with the SQL only: no explanation, no markdown, no code fences."
)
PLAIN_SYSTEM = "You are a helpful assistant that writes {dialect} SQL."

DIALECT_NAMES = {"sqlite": "SQLite", "duckdb": "DuckDB", "postgres": "PostgreSQL", "postgresql": "PostgreSQL"}


@dataclass(frozen=True)
class PromptTemplate:
    """How a (schema, question, evidence) triple becomes chat messages.

    ``mode="strict"`` uses the SQL-only system instruction; ``"plain"`` a generic one (to measure how
    much the instruction matters for base models).
    """

    name: str = "sqltune-chat-v1"
    mode: Literal["strict", "plain"] = "strict"
    system: str | None = None
    user: str = "Schema:\n{schema}\n\n{evidence}Question: {question}"
    evidence_prefix: str = "Hint: "

    def system_text(self, dialect: str) -> str:
        base = self.system if self.system is not None else (STRICT_SYSTEM if self.mode == "strict" else PLAIN_SYSTEM)
        return base.format(dialect=DIALECT_NAMES.get(dialect, dialect))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptTemplate:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"prompt template: unknown keys {sorted(unknown)}; valid keys: {sorted(names)}")
        if data.get("mode", "strict") not in ("strict", "plain"):
            raise ConfigError(f"prompt template mode {data.get('mode')!r}: choose 'strict' or 'plain'")
        return cls(**data)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TEMPLATE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PromptTemplate:
        path = Path(directory) / TEMPLATE_FILE
        if not path.is_file():
            raise ConfigError(f"{path} is missing: the artifact carries no prompt template; re-export it")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg})") from None
        return cls.from_dict(data)


def build_messages(
    question: str,
    schema: str,
    *,
    dialect: str = "sqlite",
    evidence: str | None = None,
    template: PromptTemplate | None = None,
) -> list[dict[str, str]]:
    """Chat messages (system + user) for one question."""
    template = template or PromptTemplate()
    if not question or not question.strip():
        raise DataError("question is empty; pass the natural-language question to translate")
    evidence_block = f"{template.evidence_prefix}{evidence.strip()}\n" if evidence and evidence.strip() else ""
    user = template.user.format(schema=schema.strip(), question=question.strip(), evidence=evidence_block)
    return [
        {"role": "system", "content": template.system_text(dialect)},
        {"role": "user", "content": user},
    ]


REPAIR_FEEDBACK = (
    "That query failed: {error}\n"
    "Reply with a corrected {dialect} query that answers the question: SQL only."
)


def repair_messages(
    messages: list[dict[str, str]], failed_sql: str, error: str, *, dialect: str = "sqlite"
) -> list[dict[str, str]]:
    """The conversation that asks for a corrected query: the original prompt, the failed SQL as the
    assistant's answer, and the error as the user's reply (:data:`REPAIR_FEEDBACK`)."""
    feedback = REPAIR_FEEDBACK.format(error=" ".join(error.split()), dialect=DIALECT_NAMES.get(dialect, dialect))
    return [*messages, {"role": "assistant", "content": failed_sql.strip()}, {"role": "user", "content": feedback}]


def example_messages(example: Example, template: PromptTemplate | None = None) -> list[dict[str, str]]:
    return build_messages(
        example.question, example.schema, dialect=example.dialect, evidence=example.evidence, template=template
    )


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text up to where the assistant's answer starts."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "use an instruct model or set tokenizer.chat_template"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def end_of_turn(tokenizer: Any) -> str:
    """The text that closes the assistant turn in the chat template (ChatML: ``<|im_end|>``)."""
    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "XSQLX"}], tokenize=False
    )
    tail = probe.split("XSQLX", 1)[1]
    # Keep the end-of-turn marker and drop trailing whitespace/newlines the template adds after it.
    return tail.rstrip() or (tokenizer.eos_token or "")


@dataclass(frozen=True)
class PromptPair:
    prompt: str
    target: str


def build_pair(example: Example, tokenizer: Any, template: PromptTemplate | None = None) -> PromptPair:
    """The rendered prompt and the training target (the SQL plus the end-of-turn marker)."""
    prompt = render_prompt(tokenizer, example_messages(example, template))
    return PromptPair(prompt=prompt, target=example.sql.strip() + end_of_turn(tokenizer))


def tokenize_for_training(
    example: Example, tokenizer: Any, template: PromptTemplate | None = None, *, max_length: int | None = None
) -> dict[str, list[int]] | None:
    """``input_ids`` and ``labels`` (prompt positions set to -100), or None if it exceeds ``max_length``.

    Prompt and target are tokenized separately and concatenated, so the mask boundary is exact even
    where a BPE merge could otherwise straddle it.
    """
    pair = build_pair(example, tokenizer, template)
    prompt_ids = tokenizer(pair.prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(pair.target, add_special_tokens=False)["input_ids"]
    ids = list(prompt_ids) + list(target_ids)
    if max_length is not None and len(ids) > max_length:
        return None
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(target_ids)
    return {"input_ids": ids, "labels": labels}


# --- cleaning generations --------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:sql|sqlite|postgresql|postgres|duckdb)?[ \t]*\n?(.*?)(?:```|$)", re.S | re.I)
_SQL_START = re.compile(r"\b(WITH|SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|ATTACH|COPY|VALUES)\b", re.I)
_SPECIAL = re.compile(r"<\|[^|>]*\|>")


@dataclass(frozen=True)
class Cleaned:
    sql: str
    cleaned: bool
    """True when anything besides surrounding whitespace had to be removed."""
    rest: str = ""
    """The SQL statements that followed the first one (``;``-joined), empty when there were none."""


def first_semicolon(text: str) -> int:
    """Index of the first ``;`` outside quotes and ``--`` comments (the end of the statement), or -1."""
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
        elif ch == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            if j < 0:
                return -1
            i = j
            continue
        elif ch == ";":
            return i
        i += 1
    return -1



def statement_stop(tokens: list[int], decode: Callable[[list[int]], str]) -> int | None:
    """How many of ``tokens`` to keep so that the decoded text ends with the first top-level ``;`` (the token
    that completes it), or None while no statement has ended. Serving and ``sqltune ask`` stop decoding on it."""
    if first_semicolon(decode(tokens)) < 0:
        return None
    keep = len(tokens)
    while keep > 1 and first_semicolon(decode(tokens[: keep - 1])) >= 0:
        keep -= 1
    return keep

def _first_statement(text: str) -> str:
    """Text up to and excluding the first top-level semicolon."""
    end = first_semicolon(text)
    return text if end < 0 else text[:end]


_STATEMENT_START = re.compile(r"\s*(?:--[^\n]*\n\s*)*\(*\s*" + _SQL_START.pattern, re.I)


def _following_statements(text: str) -> str:
    """The statements after the first top-level semicolon of ``text`` (prose and empty ones skipped)."""
    out = []
    end = first_semicolon(text)
    while end >= 0:
        text = text[end + 1:]
        end = first_semicolon(text)
        piece = text if end < 0 else text[:end]
        if _STATEMENT_START.match(piece):
            out.append(re.split(r"\n\s*\n", piece.strip(), maxsplit=1)[0].strip())
    return "; ".join(out)


def clean_sql(text: str) -> Cleaned:
    """Extract one SQL statement from a model generation.

    Handles code fences, leading prose ("Here is the query:"), chat special tokens, and trailing text
    after the statement. Only the first statement is kept, so stacked statements never reach execution
    through cleaning (the read-only guard still checks what is left).
    """
    raw = text
    body = _SPECIAL.split(text, maxsplit=1)[0] if _SPECIAL.search(text) else text
    fence = _FENCE.search(body)
    if fence:
        body = fence.group(1)
    start = _SQL_START.search(body)
    if start and body[: start.start()].strip():
        body = body[start.start():]
    stmt = _first_statement(body)
    # Prose after the statement on its own paragraph (no semicolon): cut at the first blank line.
    parts = re.split(r"\n\s*\n", stmt.strip(), maxsplit=1)
    stmt = parts[0]
    sql = stmt.strip()
    baseline = raw.strip().rstrip(";").strip()
    rest = _following_statements(body) if sql and len(parts) == 1 else ""
    return Cleaned(sql=sql, cleaned=sql != baseline, rest=rest)
