"""The typed protocol between the HTTP ingress and a model replica.

The ingress calls the replica's methods with these requests and gets these responses back (pickled by
Ray between processes, or passed as they are in-process):

======================  ===================================  ===========================================
replica method          request                              response
======================  ===================================  ===========================================
``sql``                 :class:`SqlGeneration`               :class:`Completion` or :class:`Rejection`
``chat``                :class:`ChatGeneration`              :class:`Completion` or :class:`Rejection`
``chat_stream``         :class:`ChatGeneration`              :class:`StreamDelta` items, then one
                                                             :class:`StreamEnd` (or a :class:`Rejection`)
``info``                                                     :class:`ReplicaInfo`
``stats``                                                    the engine's counters (a JSON object)
``reset_stats``                                              ``None``
======================  ===================================  ===========================================

A request the replica refuses (too long, unrenderable messages) comes back as a :class:`Rejection`
value, not an exception: it names the field and the HTTP status the ingress answers with, and crosses
the Ray boundary unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqltune.generation.request import GREEDY, Sampling


@dataclass(frozen=True)
class ChatMessageText:
    role: str
    content: str


@dataclass(frozen=True)
class SqlGeneration:
    """Text-to-SQL: the question, the schema text going into the prompt, the dialect."""

    question: str
    schema: str
    dialect: str
    evidence: str | None = None
    max_new_tokens: int | None = None
    """None: the server's default; above the server's cap: refused with param ``max_new_tokens``."""
    history: tuple[ChatMessageText, ...] = ()
    """Turns after the prompt (a failed query as the assistant's, its error as the user's): a repair round."""
    sampling: Sampling = GREEDY
    """Greedy (the engine) or sampled (a self-consistency candidate)."""


@dataclass(frozen=True)
class ChatGeneration:
    """A chat completion over the model's own chat template."""

    messages: tuple[ChatMessageText, ...]
    max_tokens: int | None = None
    """None: the server's default; above the server's cap: refused, naming :attr:`max_tokens_param`."""
    max_tokens_param: str = "max_tokens"
    """The request field :attr:`max_tokens` came from (``max_tokens`` or ``max_completion_tokens``)."""
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    sampling: Sampling = GREEDY


@dataclass(frozen=True)
class BatchInfo:
    max_decode_batch: int = 0
    """The largest decode batch the request was part of."""
    prefill_batch: int = 0


@dataclass(frozen=True)
class Timing:
    queue_ms: float = 0.0
    """Waiting in the engine for a slot."""
    ttft_ms: float = 0.0
    """From submission to the engine to the first token."""
    total_ms: float = 0.0
    """From submission to the engine to the last token."""
    handler_ms: float = 0.0
    """The replica's whole handling: rendering the prompt, tokenizing, the engine, decoding the text."""
    handler_end_unix: float = 0.0
    """The replica's wall clock (``time.time()``) when its handling ended; 0 when not measured."""
    forward_ms: float = 0.0
    """From the ingress's call to the start of the replica's handling (the transport and the replica's own
    request machinery); set by the ingress's Ray backend, 0 elsewhere. Across nodes it includes the
    difference between their clocks."""
    return_ms: float = 0.0
    """From the end of the replica's handling until the ingress has the answer; as :attr:`forward_ms`."""


@dataclass(frozen=True)
class Completion:
    """A finished generation (``sql``: the raw model text, before cleaning and analysis)."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    batch: BatchInfo = field(default_factory=BatchInfo)
    timing: Timing = field(default_factory=Timing)


@dataclass(frozen=True)
class StreamDelta:
    text: str
    model: str = ""
    """The id of the model that generated it (a stream is served by one replica, so by one model)."""


@dataclass(frozen=True)
class StreamEnd:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    batch: BatchInfo = field(default_factory=BatchInfo)
    model: str = ""


@dataclass(frozen=True)
class Rejection:
    """The replica refused the request: the HTTP status, the offending field, a message naming the limit."""

    status: int
    param: str | None
    message: str
    code: str = "invalid_request"


@dataclass(frozen=True)
class ReplicaInfo:
    model: str
    ready: bool
    engine: str
    device: str
    artifact: dict[str, Any]
    template: str
    load_s: float
    startup: dict[str, float] = field(default_factory=dict)
    """Seconds of the start's parts: ``weights_s`` (verifying and loading the artifact), ``engine_s`` (building and
    warming the engine up), and on the slot engine ``compile_s`` and ``capture_s`` within it."""


StreamItem = StreamDelta | StreamEnd | Rejection


class Replica(Protocol):
    """What a model replica offers the ingress (``ModelServer`` and the ``SQLModel`` deployment around it)."""

    async def sql(self, request: SqlGeneration) -> Completion | Rejection: ...

    async def chat(self, request: ChatGeneration) -> Completion | Rejection: ...

    def chat_stream(self, request: ChatGeneration) -> Any: ...

    def info(self) -> ReplicaInfo: ...

    def stats(self) -> dict[str, Any]: ...

    def reset_stats(self) -> None: ...


__all__ = [
    "BatchInfo",
    "ChatGeneration",
    "ChatMessageText",
    "Completion",
    "Rejection",
    "Replica",
    "ReplicaInfo",
    "SqlGeneration",
    "StreamDelta",
    "StreamEnd",
    "StreamItem",
    "Timing",
]
