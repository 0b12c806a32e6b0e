"""Model variants: something that turns a batch of (question, schema, dialect, evidence) into SQL text.

Local kinds (``base``, ``adapter``, ``merged``, ``int8``, ``nf4``) load through
:func:`sqltune.models.loading.load_for_inference` (which reads the artifact's prompt template) and decode
greedily with :func:`sqltune.generation.generate.generate_batch`, or with the serving engine
(``generation.engine``). ``http`` POSTs the same chat messages to any
OpenAI-compatible ``{url}/v1/chat/completions`` (temperature 0), sqltune's own server included.
Each variant applies its own prompt mode (strict SQL-only instruction, or plain).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqltune.errors import ConfigError, ModelError
from sqltune.evaluation.config import VariantConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Output:
    """One generation, as it travels back from a Ray actor."""

    text: str
    latency_s: float
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None  # no output: what went wrong (the example is recorded and counts as wrong)
    error_category: str | None = None  # http_error | http_timeout | generation_error
    repair_rounds: int | None = None  # with repair_rounds: the repair rounds this example used
    repair_passed: bool | None = None  # ... and whether its final SQL passed the loop's checks


def failed_output(category: str, error: str, latency_s: float = 0.0) -> Output:
    """The output of an example the variant could not answer."""
    return Output(text="", latency_s=latency_s, error=error, error_category=category)


def with_mode(template: Any, mode: str) -> Any:
    """The artifact's template with the variant's prompt mode applied.

    strict keeps the artifact's template (its own system text, if it has one); plain swaps the system
    instruction for the generic one, whatever the artifact had.
    """
    if mode == "plain":
        return dataclasses.replace(template, mode="plain", system=None)
    if template.mode != "strict":
        return dataclasses.replace(template, mode="strict", system=None)
    return template


class LocalVariant:
    """A model loaded in this process (inside a Ray actor in the runner)."""

    def __init__(self, cfg: VariantConfig, *, device: str = "auto", engine_slots: int = 0):
        self.cfg = cfg
        self.device = device
        self.engine_slots = engine_slots
        self.engine: Any = None
        self.loaded: Any = None
        self.template: Any = None

    def precision(self) -> str:
        return self.cfg.kind if self.cfg.kind in ("int8", "nf4") else self.cfg.precision

    def load(self) -> dict[str, Any]:
        from sqltune.models.loading import load_for_inference

        start = time.perf_counter()
        kwargs: dict[str, Any] = {"precision": self.precision(), "device": self.device, "name": self.cfg.name}
        if self.cfg.kind == "adapter":
            kwargs["base_uri"] = self.cfg.base_model or None
        self.loaded = load_for_inference(self.cfg.model, **kwargs)
        artifact_kind = self.loaded.info.get("kind")
        is_adapter = artifact_kind == "adapter" or hasattr(self.loaded.model, "peft_config")
        if self.cfg.kind == "adapter" and not is_adapter:
            raise ModelError(f"variant {self.cfg.name}: kind=adapter but {self.cfg.model} is not an adapter artifact")
        if self.cfg.kind != "adapter" and is_adapter:
            raise ModelError(
                f"variant {self.cfg.name}: {self.cfg.model} is an adapter; use kind=adapter (or the merged export)"
            )
        self.template = with_mode(self.loaded.template, self.cfg.prompt_mode)
        if self.engine_slots:
            from sqltune.generation.engine import build_engine
            from sqltune.generation.request import EngineConfig

            self.engine = build_engine(self.loaded.model, self.loaded.tokenizer,
                                       EngineConfig(max_slots=self.engine_slots, seq_len=2048))
            self.engine.warmup()  # compiles/captures where it does (CUDA), then starts the scheduler
        self._warmup()
        return {
            "load_s": time.perf_counter() - start,
            "device": self.loaded.device,
            "artifact_kind": artifact_kind or "base",
            "artifact": {k: self.loaded.info.get(k) for k in ("base_model", "precision", "merge_base",
                                                             "serialization", "run_name") if k in self.loaded.info},
            "prompt_template": self.template.to_dict(),
            "parameters": int(sum(p.numel() for p in self.loaded.model.parameters())),
        }

    def _warmup(self) -> None:
        """One short generation, so one-time costs (kernels, allocations) are not in the first batch's latency."""
        from sqltune.generation.generate import generate_batch, prompts_for

        item = {"question": "How many rows?", "schema": "CREATE TABLE t (a INTEGER);", "dialect": "sqlite"}
        prompts = prompts_for(self.loaded.tokenizer, [item], self.template)
        generate_batch(self.loaded.model, self.loaded.tokenizer, prompts, max_new_tokens=2)

    def generate(self, items: list[dict[str, Any]], max_new_tokens: int) -> list[Output]:
        from sqltune.generation.generate import generate_batch, prompts_for

        if self.cfg.repair_rounds:
            return self._repair_generate(items, max_new_tokens)
        prompts = prompts_for(self.loaded.tokenizer, items, self.template)
        if self.engine is not None:
            return self._engine_generate(prompts, max_new_tokens)
        gens = generate_batch(self.loaded.model, self.loaded.tokenizer, prompts, max_new_tokens=max_new_tokens)
        return [Output(g.text, g.latency_s, g.prompt_tokens, g.output_tokens) for g in gens]

    def _repair_generate(self, items: list[dict[str, Any]], max_new_tokens: int) -> list[Output]:
        """The execute-and-repair loop over the batch (each round's open examples decoded together);
        every row's latency is the batch's wall time, as with generate(). Its token counts are summed
        over every round the example took: every token decoded in the variant's wall time counts, so
        tokens/s means what it means for a variant without repair."""
        from sqltune.agent.repair import Generated, RepairConfig, repair_many, target_for
        from sqltune.generation.generate import generate_batch
        from sqltune.prompts import build_messages, render_prompt

        tok = self.loaded.tokenizer

        def generate(conversations: list[list[dict[str, str]]], _samplings: list[Any]) -> list[Generated]:
            prompts = [render_prompt(tok, c) for c in conversations]
            if self.engine is not None:
                outs = self._engine_generate(prompts, max_new_tokens)
            else:
                outs = generate_batch(self.loaded.model, tok, prompts, max_new_tokens=max_new_tokens)
            return [Generated(o.text, o.prompt_tokens, o.output_tokens) for o in outs]

        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            sessions = [
                (build_messages(it["question"], it["schema"], dialect=it.get("dialect", "sqlite"),
                                evidence=it.get("evidence"), template=self.template),
                 stack.enter_context(target_for(it.get("dialect", "sqlite"), it["schema"], it.get("db"))))
                for it in items
            ]
            results = repair_many(generate, sessions, RepairConfig(max_rounds=self.cfg.repair_rounds))
        wall = time.perf_counter() - start
        return [Output(r.final.raw, wall, r.prompt_tokens, r.output_tokens, repair_rounds=r.rounds_used,
                       repair_passed=r.passed) for r in results]

    def _engine_generate(self, prompts: list[str], max_new_tokens: int) -> list[Output]:
        from sqltune.generation.generate import stop_token_ids

        tok = self.loaded.tokenizer
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        reqs = self.engine.generate(ids, max_new_tokens, stop_ids=frozenset(stop_token_ids(tok)))
        out = []
        for prompt, req in zip(ids, reqs):
            if req.error:
                out.append(failed_output("generation_error", f"generation failed: {req.error}"))
                continue
            out.append(Output(tok.decode(req.tokens, skip_special_tokens=True), req.finished_at - req.submitted_at,
                              len(prompt), len(req.tokens)))
        return out

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
        self.loaded = None


class HttpVariant:
    """An OpenAI-compatible chat-completions endpoint."""

    def __init__(self, cfg: VariantConfig, *, token: str | None = None):
        from sqltune.prompts import PromptTemplate

        self.cfg = cfg
        self.token = token
        self.template = with_mode(PromptTemplate(), cfg.prompt_mode)
        self.client: Any = None
        self.base = cfg.url.rstrip("/")
        if self.base.endswith("/v1"):
            self.base = self.base[: -len("/v1")]

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def load(self) -> dict[str, Any]:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover
            from sqltune.errors import missing

            raise missing("httpx", "eval") from exc
        if self.cfg.api_key_env and not self.token:
            raise ConfigError(
                f"variant {self.cfg.name}: environment variable {self.cfg.api_key_env} (api_key_env) is not set "
                "in the evaluation job's environment"
            )
        start = time.perf_counter()
        self.client = httpx.Client(timeout=self.cfg.timeout_s, headers=self._headers())
        models: list[str] = []
        try:
            resp = self.client.get(f"{self.base}/v1/models")
        except httpx.HTTPError as exc:
            raise ModelError(f"variant {self.cfg.name}: endpoint {self.base} is unreachable: {exc}") from None
        if resp.status_code in (401, 403):
            raise ModelError(
                f"variant {self.cfg.name}: endpoint {self.base} refused the credentials (HTTP {resp.status_code}); "
                f"check {self.cfg.api_key_env or 'api_key_env'}"
            )
        if resp.status_code == 200:
            try:
                models = [m.get("id") for m in resp.json().get("data", []) if isinstance(m, dict)]
            except ValueError:
                models = []
        return {"load_s": time.perf_counter() - start, "device": "remote", "artifact_kind": "http",
                "endpoint": self.base, "served_models": models, "prompt_template": self.template.to_dict()}

    def _one(self, item: dict[str, Any], max_new_tokens: int) -> Output:
        import httpx

        from sqltune.prompts import build_messages

        messages = build_messages(item["question"], item["schema"], dialect=item.get("dialect", "sqlite"),
                                  evidence=item.get("evidence"), template=self.template)
        body = {"model": self.cfg.api_model or self.cfg.name, "messages": messages, "temperature": 0,
                "max_tokens": max_new_tokens, "stream": False}
        last, category = "", "http_error"
        first = time.perf_counter()
        attempts = self.cfg.retries + 1
        for attempt in range(attempts):
            start = time.perf_counter()
            try:
                resp = self.client.post(f"{self.base}/v1/chat/completions", json=body)
            except httpx.TimeoutException as exc:
                last, category = f"{type(exc).__name__}: {exc or 'no answer'} after {self.cfg.timeout_s:g}s", "http_timeout"
            except httpx.HTTPError as exc:
                last, category = f"{type(exc).__name__}: {exc}", "http_error"
            else:
                elapsed = time.perf_counter() - start
                if resp.status_code == 200:
                    return self._parse(resp, elapsed)
                last, category = f"HTTP {resp.status_code}: {resp.text[:300]}", "http_error"
                if resp.status_code not in (429, 500, 502, 503, 504):
                    attempts = attempt + 1
                    break
            if attempt < self.cfg.retries:
                time.sleep(min(2.0, 0.25 * 2**attempt))
        # One example without an answer: recorded with its category and counted wrong; the variant goes on.
        return failed_output(category, f"{self.base}/v1/chat/completions failed after {attempts} attempt(s): {last}",
                             time.perf_counter() - first)

    def _parse(self, resp: Any, elapsed: float) -> Output:
        try:
            data = resp.json()
            text = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return failed_output("http_error", f"not an OpenAI chat completion response ({exc}): {resp.text[:200]}",
                                 elapsed)
        usage = data.get("usage") or {}
        return Output(text=text, latency_s=elapsed, prompt_tokens=usage.get("prompt_tokens"),
                      output_tokens=usage.get("completion_tokens"))

    def generate(self, items: list[dict[str, Any]], max_new_tokens: int) -> list[Output]:
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(items)) or 1) as pool:
            return list(pool.map(lambda it: self._one(it, max_new_tokens), items))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def make_variant(cfg: VariantConfig, *, device: str = "auto", token: str | None = None, engine_slots: int = 0):
    """The variant object for ``cfg``; ``engine_slots`` > 0 decodes local models with the serving engine."""
    if cfg.kind == "http":
        return HttpVariant(cfg, token=token)
    return LocalVariant(cfg, device=device, engine_slots=engine_slots)
