"""The HTTP request and response bodies (pydantic): ``/v1/sql`` and OpenAI's chat completion.

They are the OpenAPI document's schemas; the ingress turns them into the replica protocol's requests.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from sqltune.serving.http_errors import INVALID_UNICODE


def _valid_unicode(value: str) -> str:
    """Text must be encodable as UTF-8: JSON's ``\\ud800`` escapes can spell lone surrogates, which no
    tokenizer (and no JSON response) can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            INVALID_UNICODE,
            "invalid Unicode: a lone surrogate ({char}) at character {at}; send valid UTF-8 text "
            "(a character outside the BMP is one surrogate pair in JSON, e.g. \\ud83d\\ude00)",
            {"char": f"U+{ord(value[exc.start]):04X}", "at": exc.start},
        ) from None
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]
"""A request string that must be valid Unicode (a lone surrogate is a 400 naming the field)."""


class RepairRequest(BaseModel):
    """Execute-and-repair for one /v1/sql request (sqltune.agent.repair)."""

    model_config = ConfigDict(extra="forbid")

    max_rounds: int = Field(2, ge=0, description="Repair rounds after the first answer (capped by the server).")
    candidates: int = Field(
        1, ge=1, description="First-round candidates voting by execution result; above 1 they are sampled."
    )
    retry_on_empty: bool = Field(False, description="Treat an empty result as an error to repair.")
    temperature: float = Field(0.7, gt=0, le=2, description="Sampling temperature of extra candidates.")
    seed: int = Field(0, ge=0, description="Seed of sampled candidates (candidate i: seed + i).")


class SQLRequest(BaseModel):
    """Text-to-SQL request. Give either ``schema`` (CREATE TABLE text) or ``database`` (a configured name)."""

    model_config = ConfigDict(extra="forbid")

    question: Text = Field(..., description="The natural-language question.", examples=["How many customers?"])
    schema_text: Text | None = Field(
        None, alias="schema", description="CREATE TABLE statements of the database."
    )
    database: Text | None = Field(
        None, description="Name of a database configured on the server (args.databases)."
    )
    tables: list[Text] | None = Field(
        None,
        description="With 'database': put only these of its tables in the prompt (schema linking done by "
        "the caller; a model trained on per-question table subsets wants the same here).",
        examples=[["customers", "orders"]],
    )
    dialect: Text | None = Field(
        None, description="sqlite | duckdb | postgres (default: the database's, else sqlite)."
    )
    evidence: Text | None = Field(None, description="Optional hint / domain knowledge (BIRD 'evidence').")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Most tokens to generate (capped by the server)."
    )
    execute: bool = Field(False, description="Run the SQL on 'database' (read-only sandbox; never a write).")
    repair: RepairRequest | None = Field(
        None,
        description="Check the SQL (analysis + the engine's compile step, and a read-only run on 'database') "
        "and regenerate it with the error in the prompt until it passes or the rounds run out.",
    )
    link: bool | None = Field(
        None,
        description="Schema linking: true keeps the tables relevant to the question, false never links (a "
        "schema over the limit is a 400), absent: link only a schema over the limit (server setting).",
    )

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class SQLResponse(BaseModel):
    sql: str
    dialect: str
    valid: bool = Field(description="The SQL parses as exactly one statement in the dialect.")
    read_only: bool = Field(description="A single query with no writes, DDL, file or session access.")
    unknown_tables: list[str]
    unknown_columns: list[str]
    cleaned: bool = Field(description="Text besides the SQL (fences, prose, trailing text) was removed.")
    model: str
    latency_ms: float
    usage: Usage
    finish_reason: str | None = None
    executed: bool | None = Field(None, description="With execute: whether the SQL was run.")
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    truncated: bool | None = None
    execution_error: str | None = None
    reasons: list[str] | None = Field(None, description="Why the SQL is not read-only (when it is not).")
    debug: dict[str, Any] | None = None
    repair: dict[str, Any] | None = Field(
        None, description="With repair: passed, status, rounds_used and every round (SQL, status, error)."
    )
    linking: dict[str, Any] | None = Field(None, description="When the schema was linked: the tables kept.")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Text
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    """OpenAI chat completion request (fields the server does not use are accepted and ignored).

    Decoding is greedy unless ``temperature`` > 0; then ``top_p`` and ``seed`` apply, and ``n`` choices
    are sampled with seeds ``seed``, ``seed + 1``, ... (the same request and seed give the same answer).
    """

    model_config = ConfigDict(extra="allow")

    model: Text | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, description="0 or absent: greedy; above 0: sampled.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass (with temperature > 0).")
    n: int | None = Field(None, ge=1, description="Choices to return (capped by the server's max_choices).")
    seed: int | None = Field(None, ge=0, description="Seed of sampled choices (absent: a random one).")
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    stop: Text | list[Text] | None = None
    ignore_eos: bool = Field(False, description="Extension (as in vLLM): generate exactly max_tokens tokens.")


__all__ = [
    "ChatMessage", "ChatRequest", "ContentPart", "RepairRequest", "SQLRequest", "SQLResponse", "Text", "Usage",
]
