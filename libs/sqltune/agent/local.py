"""A model loaded in this process, as the repair loop's *generate* function (``sqltune ask``, evaluation).

Loading is :func:`~sqltune.models.loading.load_for_inference` (the artifact's prompt template comes
with it) and greedy decoding is the serving engine's, stopping at the end of the turn or of the first
statement, as the server's ``/v1/sql`` does. Sampled candidates (self-consistency, a repair round that
repeats itself) decode with transformers' ``generate`` under a seeded generator.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqltune.agent.repair import Conversation, Sampling
from sqltune.prompts import render_prompt, statement_stop

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 288
"""Generation limit of :class:`LocalModel` and ``sqltune ask --max-new-tokens``: room for the longest gold
query of the embedded set (280 tokens of the demo's tokenizer in its PostgreSQL form, 266 in SQLite) and
the end-of-turn token, the limit the demo's evaluation (``jobs/configs/eval-tiny.yaml``) decodes with.
Decoding stops at the end of the first statement, so a well-formed answer never pays for the room."""


@dataclass
class Timing:
    calls: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0


class LocalModel:
    """Loaded model + tokenizer + template + engine; call it with conversations and their sampling."""

    def __init__(self, uri: str, *, base_uri: str | None = None, precision: str = "auto", device: str = "auto",
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, slots: int = 8, seq_len: int = 4096):
        from sqltune.generation import EngineConfig
        from sqltune.generation.engine import build_engine
        from sqltune.generation.generate import stop_token_ids
        from sqltune.models.loading import load_for_inference

        self.loaded = load_for_inference(uri, base_uri=base_uri, precision=precision, device=device)  # type: ignore[arg-type]
        self.tokenizer = self.loaded.tokenizer
        self.template = self.loaded.template
        self.max_new_tokens = max_new_tokens
        self.seq_len = seq_len
        self.stop_ids = frozenset(stop_token_ids(self.tokenizer))
        self.engine = build_engine(self.loaded.model, self.tokenizer,
                                   EngineConfig(max_slots=max(1, slots), seq_len=seq_len))
        self.engine.start()
        self.engine.ready = True
        self.timing = Timing()

    # -- the generate function of the repair loop ---------------------------------------------------

    def __call__(self, conversations: list[Conversation], samplings: list[Sampling]) -> list[str]:
        start = time.perf_counter()
        prompts = [self._encode(render_prompt(self.tokenizer, c)) for c in conversations]
        out: list[str | None] = [None] * len(prompts)
        greedy = [i for i, s in enumerate(samplings) if s.greedy]
        if greedy:
            reqs = self.engine.generate([prompts[i] for i in greedy], self._budget(prompts, greedy),
                                        stop_ids=self.stop_ids, text_stop=self._statement_stop)
            for i, req in zip(greedy, reqs):
                if req.error:
                    from sqltune.errors import ModelError

                    raise ModelError(f"generation failed: {req.error}")
                out[i] = self._decode(req.tokens)
                self.timing.output_tokens += len(req.tokens)
        for i, s in enumerate(samplings):
            if not s.greedy:
                out[i] = self._sample(prompts[i], s)
        self.timing.calls += 1
        self.timing.seconds += time.perf_counter() - start
        self.timing.prompt_tokens += sum(len(p) for p in prompts)
        return [o or "" for o in out]

    def messages(self, question: str, schema: str, *, dialect: str, evidence: str | None = None) -> Conversation:
        from sqltune.prompts import build_messages

        return build_messages(question, schema, dialect=dialect, evidence=evidence, template=self.template)

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text)) if text else 0

    def close(self) -> None:
        self.engine.stop()

    # -- helpers ------------------------------------------------------------------------------------

    def _budget(self, prompts: list[list[int]], idx: list[int]) -> int:
        longest = max(len(prompts[i]) for i in idx)
        room = self.seq_len - longest
        if room < 1:
            from sqltune.errors import ModelError

            raise ModelError(f"the prompt is {longest} tokens; this model's context here is {self.seq_len}")
        return min(self.max_new_tokens, room)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _statement_stop(self, tokens: list[int]) -> int | None:
        """End of statement: keep tokens up to the one that completes the first top-level ``;``."""
        return statement_stop(tokens, self._decode)

    def _sample(self, prompt: list[int], s: Sampling) -> str:
        from sqltune.generation.sampling import sample_tokens

        tokens, _ = sample_tokens(self.loaded.model, prompt, max_new_tokens=self._budget([prompt], [0]),
                                  sampling=s, stop_ids=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
                                  text_stop=self._statement_stop)
        self.timing.output_tokens += len(tokens)
        return self._decode(tokens)


def load_local(uri: str, **kwargs: Any) -> LocalModel:
    return LocalModel(uri, **kwargs)
