"""What an engine takes and gives back: :class:`GenRequest` in, callbacks out; :class:`EngineConfig`.

Plain dataclasses (no torch), so HTTP and Ray code can build requests without loading the model stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqltune.errors import SqltuneError


class EngineError(SqltuneError, RuntimeError):
    """A request cannot be served by the engine (engine stopped, empty prompt, generation timed out)."""


@dataclass
class GenRequest:
    """One generation. ``on_update(req, new_tokens, finished)`` is called from the engine thread."""

    prompt_ids: list[int]
    max_new_tokens: int
    stop_ids: frozenset[int] = frozenset()
    """Token ids that end the generation (excluded from the output). Empty: forced length."""
    text_stop: Callable[[list[int]], int | None] | None = None
    """Given the tokens so far, the number of tokens to keep when the text is complete (else None)."""
    on_update: Callable[[GenRequest, list[int], bool], None] | None = None

    # Filled in by the engine.
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = ""
    error: str | None = None
    max_batch: int = 0
    """The largest decode batch this request was part of."""
    prefill_batch: int = 0
    submitted_at: float = 0.0
    started_at: float = 0.0
    first_token_at: float = 0.0
    finished_at: float = 0.0
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return bool(self.finish_reason)


@dataclass(frozen=True)
class Sampling:
    """How one generation decodes: greedy (``temperature == 0``, the engine's path) or sampled with a seed
    (:func:`sqltune.generation.sampling.sample_tokens`)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


GREEDY = Sampling()


def sequence_error(prompt_tokens: int, max_new_tokens: int, seq_len: int) -> str | None:
    """Why a prompt plus its output cannot fit a cache row of ``seq_len`` tokens (None: it fits).

    The engines refuse such a request at submission; the server checks it first with the same words."""
    if prompt_tokens + max_new_tokens > seq_len:
        return (
            f"prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"engine's sequence length {seq_len}"
        )
    return None


def check_request(req: GenRequest, seq_len: int) -> None:
    """Raise :class:`EngineError` for a request no engine of ``seq_len`` positions can run (every engine's
    submit checks this, in its own process or before sending it to an engine process)."""
    if not req.prompt_ids:
        raise EngineError("empty prompt")
    too_long = sequence_error(len(req.prompt_ids), req.max_new_tokens, seq_len)
    if too_long:
        raise EngineError(too_long)
    if req.max_new_tokens < 1:
        raise EngineError("max_new_tokens must be at least 1")


@dataclass
class EngineConfig:
    max_slots: int = 32
    seq_len: int = 2048
    decode_chunk: int = 0  # 0: 16 on CUDA, 1 on CPU
    batch_wait_s: float = 0.0
    admit_wait_s: float = 0.0
    """While others decode, hold queued requests back until they fill the free slots or the oldest has
    waited this long (0: admit whatever is queued at every chunk end). Fewer, larger prefill groups: each
    group pauses every running sequence for a prefill pass, so many small ones cost more decode time."""
    max_prefill_tokens: int = 0  # 0: 16384 on CUDA, 4096 on CPU
    mixed_prefill: bool = False
    """Admit new requests in the same pass as one decode step of the running ones (decoding does not pause
    for a prefill); a single prompt with a captured prefill graph is prefilled on its own instead. Off by
    default: on an H200 (Qwen2.5-3B shape, 64 closed-loop clients) it measured 7,938 tokens/s against
    8,528 without (docs/benchmarks.md)."""
    overlap: bool = True
    """On CUDA: while a decode chunk runs, queue the prefill of the requests that arrived meanwhile behind
    it, shortly before the chunk ends (the prefill's launch on the host overlaps the chunk on the device),
    so they join the next chunk without the device waiting for the host. Off (or with ``mixed_prefill``):
    arrivals are prefilled only after the chunk's tokens are back."""
    prefix_cache: int = 0
    """Device rows that keep recent prompt prefixes (0: off). A prompt whose leading 16-token blocks one of
    them holds gets those positions copied into its slot and prefills only the rest (text-to-SQL prompts
    share the system prompt and the schema). Each row costs one slot's cache."""
    cuda_graphs: bool = True
    prefill_graph_prompts: int = 8
    """Most prompts per captured prefill graph (per length bucket up to 512 tokens; one prompt up to 2,048):
    groups of up to this many prompts are prefilled by replaying graphs (split into powers of two) instead
    of launching every kernel from Python, which costs more host time than the device's work for a few
    prompts. 1: single prompts only; 0: no prefill graphs. More graphs cost warm-up time."""
    compile: str = "auto"  # auto | on | off
    attn: str = "auto"  # auto (triton on CUDA half precision, else sdpa) | triton | sdpa | math


__all__ = ["GREEDY", "EngineConfig", "EngineError", "GenRequest", "Sampling", "check_request", "sequence_error"]
