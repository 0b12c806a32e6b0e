"""The model replica: loads the artifact, owns the engine, turns requests into prompts and tokens.

:class:`ModelServer` is plain Python (no Ray): the ``SQLModel`` deployment in ``serve/app.py`` wraps it,
tests and the benchmark can use it directly. Its request methods are coroutines that never raise for a
bad request: they return ``{"error": {...}}`` naming the field, which the ingress turns into a 4xx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from sqltune.prompts import first_semicolon
from sqltune.serving.config import ServeArgs

log = logging.getLogger(__name__)


def request_error(
    status: int, param: str | None, message: str, code: str = "invalid_request"
) -> dict[str, Any]:
    return {"error": {"status": status, "param": param, "message": message, "code": code}}


def verify_artifact(uri: str, *, require_manifest: bool = False) -> None:
    """Check a local artifact against its manifest (s3:// artifacts are verified when fetched)."""
    if uri.startswith("s3://"):
        return
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
    if not path.is_dir():
        return  # load_for_inference reports missing paths (and hub ids) itself
    if (path / "manifest.json").is_file():
        from sqltune.storage import verify

        verify(str(path))
        log.info("verified %s against its manifest", path)
    elif require_manifest:
        from sqltune.errors import IntegrityError

        raise IntegrityError(f"{path} has no manifest.json; publish it with sqltune.storage.publish")
    else:
        log.warning("%s has no manifest.json: serving it unverified (publish artifacts for production)", path)


class ModelServer:
    """Loaded model + tokenizer + prompt template + generation engine of one replica."""

    def __init__(self, args: ServeArgs | dict[str, Any]):
        from sqltune.generation.generate import stop_token_ids
        from sqltune.models.loading import load_for_inference
        from sqltune.generation.engine import build_engine
        from sqltune.generation.request import EngineConfig

        self.args = args if isinstance(args, ServeArgs) else ServeArgs.from_args(args)
        a = self.args
        t0 = time.perf_counter()
        verify_artifact(a.model_uri)
        if a.base_model_uri:
            verify_artifact(a.base_model_uri)
        loaded = load_for_inference(
            a.model_uri, base_uri=a.base_model_uri, precision=a.precision, device=a.device, name=a.served_name
        )
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.template = loaded.template
        self.name = a.served_name
        self.stop_ids = frozenset(stop_token_ids(self.tokenizer))
        cfg = EngineConfig(
            max_slots=a.max_batch_size,
            seq_len=a.seq_len,
            decode_chunk=a.decode_chunk,
            batch_wait_s=a.batch_wait_timeout_s,
            cuda_graphs=a.cuda_graphs,
            compile=a.compile,
        )
        self.engine = build_engine(loaded.model, self.tokenizer, cfg)
        if a.warmup:
            self.engine.warmup()  # compiles, captures CUDA graphs, then starts the scheduler
        else:
            self.engine.start()
            self.engine.ready = True
        self.load_s = time.perf_counter() - t0
        log.info("model %s ready in %.1fs (engine %s)", self.name, self.load_s, self.engine.mode)

    # -- info ------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "ready": bool(self.engine.ready),
            "engine": self.engine.mode,
            "device": self.loaded.device,
            "artifact": {k: self.loaded.info.get(k) for k in ("kind", "base_model", "precision", "run_name")},
            "template": getattr(self.template, "name", ""),
            "load_s": round(self.load_s, 2),
        }

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def reset_stats(self) -> None:
        self.engine.reset_stats()

    def shutdown(self) -> None:
        self.engine.stop()

    # -- helpers ---------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def _encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _statement_stop(self, tokens: list[int]) -> int | None:
        """End of statement: keep tokens up to the one that completes the first top-level ``;``."""
        text = self._decode(tokens)
        if first_semicolon(text) < 0:
            return None
        keep = len(tokens)
        while keep > 1 and first_semicolon(self._decode(tokens[: keep - 1])) >= 0:
            keep -= 1
        return keep

    def _string_stop(self, stops: list[str]):
        def check(tokens: list[int]) -> int | None:
            text = self._decode(tokens)
            if not any(s in text for s in stops):
                return None
            keep = len(tokens)
            while keep > 1 and any(s in self._decode(tokens[: keep - 1]) for s in stops):
                keep -= 1
            return keep

        return check

    async def _run(
        self, prompt_ids: list[int], max_new_tokens: int, text_stop=None, ignore_eos: bool = False
    ):
        from sqltune.generation.request import EngineError, GenRequest

        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def done(req, _new, finished):
            if finished:
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(req))

        req = GenRequest(
            prompt_ids, max_new_tokens, frozenset() if ignore_eos else self.stop_ids, text_stop, done
        )
        try:
            self.engine.submit(req)
        except EngineError as exc:
            return None, request_error(400, "max_new_tokens", str(exc), "too_long")
        try:
            await fut
        except asyncio.CancelledError:
            req.cancelled = True
            raise
        if req.error:
            return None, request_error(500, None, req.error, "generation_failed")
        return req, None

    @staticmethod
    def _timing(req) -> dict[str, Any]:
        def ms(a: float, b: float) -> float:
            return round(max(0.0, (b - a)) * 1000, 2) if a and b else 0.0

        return {
            "queue_ms": ms(req.submitted_at, req.started_at),
            "ttft_ms": ms(req.submitted_at, req.first_token_at),
            "total_ms": ms(req.submitted_at, req.finished_at),
        }

    # -- text-to-SQL ------------------------------------------------------------------------------

    def _check_sql_caps(self, question: str, schema: str, evidence: str | None) -> dict[str, Any] | None:
        a = self.args
        n = self.count_tokens(question)
        if n > a.max_question_tokens:
            return request_error(
                400, "question", f"question is {n} tokens; the limit is {a.max_question_tokens}", "too_long"
            )
        if evidence:
            n = self.count_tokens(evidence)
            if n > a.max_question_tokens:
                return request_error(
                    400,
                    "evidence",
                    f"evidence is {n} tokens; the limit is {a.max_question_tokens}",
                    "too_long",
                )
        n = self.count_tokens(schema)
        if n > a.max_schema_tokens:
            return request_error(
                400, "schema", f"schema is {n} tokens; the limit is {a.max_schema_tokens}", "too_long"
            )
        return None

    async def sql(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Generate SQL for ``{"question", "schema", "dialect", "evidence"?, "max_new_tokens"}``."""
        from sqltune.errors import SqltuneError
        from sqltune.prompts import build_messages, render_prompt

        question = payload["question"]
        schema = payload["schema"]
        evidence = payload.get("evidence")
        err = self._check_sql_caps(question, schema, evidence)
        if err:
            return err
        try:
            messages = build_messages(
                question, schema, dialect=payload["dialect"], evidence=evidence, template=self.template
            )
            prompt = render_prompt(self.tokenizer, messages)
        except SqltuneError as exc:
            return request_error(400, "question", str(exc))
        ids = self._encode(prompt)
        if len(ids) > self.args.prompt_token_cap:
            return request_error(
                400,
                "schema",
                f"the prompt is {len(ids)} tokens; the limit is {self.args.prompt_token_cap}",
                "too_long",
            )
        req, err = await self._run(ids, int(payload["max_new_tokens"]), self._statement_stop)
        if err:
            return err
        return {
            "text": self._decode(req.tokens),
            "finish_reason": req.finish_reason,
            "prompt_tokens": len(ids),
            "completion_tokens": len(req.tokens),
            "batch": {"max_decode_batch": req.max_batch, "prefill_batch": req.prefill_batch},
            "timing": self._timing(req),
            "model": self.name,
        }

    # -- chat --------------------------------------------------------------------------------------

    def _chat_prompt(self, payload: dict[str, Any]) -> tuple[list[int] | None, dict[str, Any] | None]:
        messages = payload["messages"]
        try:
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a template error is the request's fault (e.g. odd roles)
            return None, request_error(
                400, "messages", f"cannot render the messages with the chat template: {exc}"
            )
        ids = self._encode(prompt)
        if len(ids) > self.args.prompt_token_cap:
            return None, request_error(
                400,
                "messages",
                f"the prompt is {len(ids)} tokens; the limit is {self.args.prompt_token_cap}",
                "context_length_exceeded",
            )
        return ids, None

    async def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``{"messages": [...], "max_tokens": int, "stop": [str]?}`` -> text, finish reason, usage."""
        ids, err = self._chat_prompt(payload)
        if err:
            return err
        stops = [s for s in (payload.get("stop") or []) if s]
        req, err = await self._run(
            ids,
            int(payload["max_tokens"]),
            self._string_stop(stops) if stops else None,
            ignore_eos=bool(payload.get("ignore_eos")),
        )
        if err:
            return err
        text = self._decode(req.tokens)
        finish = "length" if req.finish_reason == "length" else "stop"
        for s in stops:
            if s in text:
                text = text[: text.index(s)]
                finish = "stop"
        return {
            "text": text,
            "finish_reason": finish,
            "prompt_tokens": len(ids),
            "completion_tokens": len(req.tokens),
            "batch": {"max_decode_batch": req.max_batch, "prefill_batch": req.prefill_batch},
            "timing": self._timing(req),
            "model": self.name,
        }

    async def chat_stream(self, payload: dict[str, Any]):
        """Async generator of ``{"delta": str}`` items, then ``{"finish_reason", "usage"}`` (or an error)."""
        from sqltune.generation.request import EngineError, GenRequest

        ids, err = self._chat_prompt(payload)
        if err:
            yield err
            return
        stops = [s for s in (payload.get("stop") or []) if s]
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def update(r, _new, finished):
            snapshot = list(r.tokens)
            loop.call_soon_threadsafe(q.put_nowait, (snapshot, finished))

        req = GenRequest(
            ids,
            int(payload["max_tokens"]),
            frozenset() if payload.get("ignore_eos") else self.stop_ids,
            self._string_stop(stops) if stops else None,
            update,
        )
        try:
            self.engine.submit(req)
        except EngineError as exc:
            yield request_error(400, "max_tokens", str(exc), "too_long")
            return
        sent = ""
        try:
            while True:
                tokens, finished = await q.get()
                text = self._decode(tokens)
                cut = len(text)
                for s in stops:
                    if s in text:
                        cut = min(cut, text.index(s))
                if not finished:
                    # Hold back an incomplete UTF-8 character and anything that may be a stop's prefix.
                    while cut > 0 and text[cut - 1] == "\ufffd":
                        cut -= 1
                    hold = max((len(s) - 1 for s in stops), default=0)
                    cut = max(len(sent), cut - hold) if hold else cut
                text = text[:cut]
                if len(text) > len(sent) and text.startswith(sent):
                    yield {"delta": text[len(sent) :]}
                    sent = text
                if finished:
                    break
        except asyncio.CancelledError:
            req.cancelled = True
            raise
        if req.error:
            yield request_error(500, None, req.error, "generation_failed")
            return
        yield {
            "finish_reason": "length" if req.finish_reason == "length" else "stop",
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(req.tokens)},
            "batch": {"max_decode_batch": req.max_batch, "prefill_batch": req.prefill_batch},
        }
