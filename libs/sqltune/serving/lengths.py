"""Every request-length rule of the server, in one place: output tokens, messages, question, evidence,
schema, rendered prompt, and prompt + output against the engine's cache row.

The replica applies them (it has the tokenizer) before anything reaches the engine; a broken rule is a
:class:`Rejected` carrying the :class:`~sqltune.serving.protocol.Rejection` the ingress answers with
(the field, the limit, the status). The body size is capped earlier, by the ingress's middleware
(:mod:`sqltune.serving.limits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqltune.errors import SqltuneError
from sqltune.generation.request import sequence_error
from sqltune.serving.config import ServeArgs
from sqltune.serving.protocol import Rejection


class Rejected(SqltuneError):
    """A request breaks a length rule; :attr:`rejection` is the answer for the client."""

    def __init__(self, rejection: Rejection):
        super().__init__(rejection.message)
        self.rejection = rejection


def _too_long(param: str, message: str, code: str = "too_long", status: int = 400) -> Rejected:
    return Rejected(Rejection(status, param, message, code))


@dataclass(frozen=True)
class LengthLimits:
    default_max_new_tokens: int
    max_new_tokens_cap: int
    max_question_tokens: int
    max_schema_tokens: int
    prompt_token_cap: int
    max_messages: int
    seq_len: int
    """Longest prompt + output: the engine's cache row (as the engine rounded it) or the model's context
    length, whichever is shorter."""

    @classmethod
    def from_args(cls, args: ServeArgs, seq_len: int, context_length: int | None = None) -> LengthLimits:
        """The configured caps, bounded by the model's own ``context_length`` (its position count):
        prompt + output never exceeds it, whatever the configured caps add up to."""
        row = min(seq_len, context_length) if context_length else seq_len
        prompt_cap = min(args.prompt_token_cap, row - 1)
        return cls(
            default_max_new_tokens=args.default_max_new_tokens,
            max_new_tokens_cap=args.max_new_tokens_cap,
            max_question_tokens=min(args.max_question_tokens, prompt_cap),
            max_schema_tokens=min(args.max_schema_tokens, prompt_cap),
            prompt_token_cap=prompt_cap,
            max_messages=args.max_messages,
            seq_len=row,
        )

    def new_tokens(self, value: int | None, param: str) -> int:
        """The output budget: the default when not given, refused above the cap."""
        if value is None:
            return self.default_max_new_tokens
        if value > self.max_new_tokens_cap:
            raise _too_long(
                param, f"{param} is {value}; the limit is {self.max_new_tokens_cap}", "too_large", 422
            )
        return value

    def messages(self, count: int) -> None:
        if count > self.max_messages:
            raise _too_long(
                "messages", f"{count} messages; the limit is {self.max_messages}", "invalid_request"
            )

    def sql_inputs(
        self, count_tokens: Callable[[str], int], question: str, schema: str, evidence: str | None
    ) -> None:
        """Question and evidence against the question cap, the schema against the schema cap."""
        n = count_tokens(question)
        if n > self.max_question_tokens:
            raise _too_long("question", f"question is {n} tokens; the limit is {self.max_question_tokens}")
        if evidence:
            n = count_tokens(evidence)
            if n > self.max_question_tokens:
                raise _too_long(
                    "evidence", f"evidence is {n} tokens; the limit is {self.max_question_tokens}"
                )
        n = count_tokens(schema)
        if n > self.max_schema_tokens:
            raise _too_long("schema", f"schema is {n} tokens; the limit is {self.max_schema_tokens}")

    def prompt(
        self, prompt_tokens: int, max_new_tokens: int, *, param: str, code: str, new_param: str
    ) -> None:
        """The rendered prompt against the prompt cap (naming ``param``), then prompt + output against the
        cache row (naming ``new_param``, the output budget's field)."""
        if prompt_tokens > self.prompt_token_cap:
            raise _too_long(
                param, f"{param}: the prompt is {prompt_tokens} tokens; the limit is {self.prompt_token_cap}", code
            )
        too_long = sequence_error(prompt_tokens, max_new_tokens, self.seq_len)
        if too_long:
            raise _too_long(new_param, too_long)


__all__ = ["LengthLimits", "Rejected"]
