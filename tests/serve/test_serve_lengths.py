"""The server's length rules (one place: sqltune.serving.lengths), each naming the field and the limit."""

from __future__ import annotations

import pytest

from sqltune.serving.config import ServeArgs
from sqltune.serving.lengths import LengthLimits, Rejected

ARGS = ServeArgs.from_args(
    {
        "model_uri": "/m",
        "default_max_new_tokens": 16,
        "max_new_tokens_cap": 32,
        "max_question_tokens": 5,
        "max_schema_tokens": 10,
        "max_messages": 2,
    }
)


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture()
def limits() -> LengthLimits:
    return LengthLimits.from_args(ARGS, seq_len=300)


def _refused(call, *args, **kwargs):
    with pytest.raises(Rejected) as info:
        call(*args, **kwargs)
    return info.value.rejection


def test_output_budget_defaults_and_caps(limits):
    assert limits.new_tokens(None, "max_tokens") == 16
    assert limits.new_tokens(32, "max_tokens") == 32
    r = _refused(limits.new_tokens, 33, "max_completion_tokens")
    assert (r.status, r.param, r.code) == (422, "max_completion_tokens", "too_large")
    assert r.message == "max_completion_tokens is 33; the limit is 32"


def test_question_evidence_schema_and_messages(limits):
    limits.sql_inputs(words, "a b c d e", "x " * 10, None)
    r = _refused(limits.sql_inputs, words, "a b c d e f", "x", None)
    assert (r.status, r.param, r.code, r.message) == (
        400,
        "question",
        "too_long",
        "question is 6 tokens; the limit is 5",
    )
    assert _refused(limits.sql_inputs, words, "q", "x", "e " * 6).param == "evidence"
    assert _refused(limits.sql_inputs, words, "q", "x " * 11, None).param == "schema"
    limits.messages(2)
    assert _refused(limits.messages, 3).message == "3 messages; the limit is 2"


def test_prompt_cap_then_cache_row(limits):
    cap = ARGS.prompt_token_cap  # 5 + 10 + 256
    limits.prompt(cap, 29, param="schema", code="too_long", new_param="max_new_tokens")
    r = _refused(
        limits.prompt, cap + 1, 1, param="messages", code="context_length_exceeded", new_param="max_tokens"
    )
    assert (r.status, r.param, r.code) == (400, "messages", "context_length_exceeded")
    # Within the prompt cap, but prompt + output exceed the engine's cache row: the output budget's field.
    r = _refused(limits.prompt, cap, 30, param="schema", code="too_long", new_param="max_new_tokens")
    assert (r.status, r.param) == (400, "max_new_tokens")
    assert "exceeds the engine's sequence length 300" in r.message
