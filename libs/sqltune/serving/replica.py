"""The model replica: loads the artifact, owns the engine, turns requests into prompts and tokens.

:class:`ModelServer` is plain Python (no Ray): the ``SQLModel`` deployment wraps it, tests and the
benchmark can use it directly. It speaks :mod:`sqltune.serving.protocol`: its request methods take a
typed request and never raise for a bad one; they return a
:class:`~sqltune.serving.protocol.Rejection` naming the field, which the ingress turns into a 4xx.
Every length rule is :class:`~sqltune.serving.lengths.LengthLimits`'.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqltune.errors import IntegrityError, SqltuneError
from sqltune.generation.generate import stop_token_ids
from sqltune.generation.request import EngineError, GenRequest, Sampling
from sqltune.models.loading import load_tokenizer_and_template
from sqltune.prompts import build_messages, render_prompt
from sqltune.serving.config import ServeArgs
from sqltune.serving.engine_process import EngineProcess, EngineUnavailable, context_length, load_engine
from sqltune.serving.lengths import LengthLimits, Rejected
from sqltune.serving.stops import TextStop
from sqltune.serving.protocol import (
    BatchInfo,
    ChatGeneration,
    Completion,
    Rejection,
    ReplicaInfo,
    SqlGeneration,
    StreamDelta,
    StreamEnd,
    StreamItem,
    Timing,
)
from sqltune.storage import verify

log = logging.getLogger(__name__)


def verify_artifact(uri: str, *, require_manifest: bool = False) -> None:
    """Check a local artifact against its manifest (s3:// artifacts are verified when fetched)."""
    if uri.startswith("s3://"):
        return
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
    if not path.is_dir():
        return  # load_for_inference reports missing paths (and hub ids) itself
    if (path / "manifest.json").is_file():
        verify(str(path))
        log.info("verified %s against its manifest", path)
    elif require_manifest:
        raise IntegrityError(f"{path} has no manifest.json; publish it with sqltune.storage.publish")
    else:
        log.warning("%s has no manifest.json: serving it unverified (publish artifacts for production)", path)


def _batch(req: GenRequest) -> BatchInfo:
    return BatchInfo(max_decode_batch=req.max_batch, prefill_batch=req.prefill_batch)


def _timing(req: GenRequest, handler_start: float) -> Timing:
    """The engine's times of ``req``, and the replica's handling since ``handler_start`` (until now)."""

    def ms(a: float, b: float) -> float:
        return round(max(0.0, (b - a)) * 1000, 2) if a and b else 0.0

    return Timing(
        queue_ms=ms(req.submitted_at, req.started_at),
        ttft_ms=ms(req.submitted_at, req.first_token_at),
        total_ms=ms(req.submitted_at, req.finished_at),
        handler_ms=ms(handler_start, time.perf_counter()),
        handler_end_unix=time.time(),
    )


class ModelServer:
    """Loaded model + tokenizer + prompt template + generation engine of one replica."""

    def __init__(self, args: ServeArgs | dict[str, Any]):
        self.args = args if isinstance(args, ServeArgs) else ServeArgs.from_args(args)
        a = self.args
        t0 = time.perf_counter()
        if a.gil_switch_ms:
            sys.setswitchinterval(a.gil_switch_ms / 1000)
        verify_artifact(a.model_uri)
        if a.base_model_uri:
            verify_artifact(a.base_model_uri)
        self.model: Any = None  # in this process only without engine_process (sampled decoding uses it)
        if a.engine_process:
            engine = EngineProcess(a)
            self.tokenizer, self.template = load_tokenizer_and_template(a.model_uri, base_uri=a.base_model_uri)
            self.context_length, self.device, artifact = engine.context_length, engine.device, engine.info
            self.startup = dict(engine.startup)
        else:
            local = load_engine(a)
            engine, loaded = local.engine, local.loaded
            self.model, self.tokenizer, self.template = loaded.model, loaded.tokenizer, loaded.template
            self.context_length, self.device, artifact = local.context_length, loaded.device, loaded.info
            self.startup = dict(local.startup)
        self.engine = engine
        self.artifact = {k: artifact.get(k) for k in ("kind", "base_model", "precision", "run_name")}
        self.name = a.served_name
        self.stop_ids = frozenset(stop_token_ids(self.tokenizer))
        self.limits = LengthLimits.from_args(a, self.engine.cfg.seq_len, self.context_length)
        self.load_s = time.perf_counter() - t0
        log.info("model %s ready in %.1fs (engine %s%s)", self.name, self.load_s, self.engine.mode,
                 ", own process" if a.engine_process else "")

    # -- info ------------------------------------------------------------------------------------

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(
            model=self.name,
            ready=bool(self.engine.ready),
            engine=self.engine.mode,
            device=self.device,
            artifact=dict(self.artifact),
            template=getattr(self.template, "name", ""),
            load_s=round(self.load_s, 2),
            startup=dict(self.startup),
        )

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

    def _submit(self, req: GenRequest, new_param: str) -> None:
        if not self.engine.running:
            raise Rejected(Rejection(503, None, "the model replica's generation engine is not running; Ray Serve "
                                     "replaces the replica", "engine_unavailable"))
        try:
            self.engine.submit(req)
        except EngineUnavailable as exc:
            raise Rejected(Rejection(503, None, str(exc), "engine_unavailable")) from None
        except EngineError as exc:
            raise Rejected(Rejection(400, new_param, str(exc), "too_long")) from None

    async def _run(self, req: GenRequest, new_param: str) -> GenRequest:
        """Submit ``req`` (its ``on_update`` is set here) and wait until it finishes."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def done(r: GenRequest, _new: list[int], finished: bool) -> None:
            if finished:
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(r))

        req.on_update = done
        self._submit(req, new_param)
        try:
            await fut
        except asyncio.CancelledError:
            self.engine.cancel(req)
            raise
        if req.error:
            raise Rejected(Rejection(500, None, req.error, "generation_failed"))
        return req

    async def _sample(self, req: GenRequest, sampling: Sampling) -> GenRequest:
        """A sampled generation (:mod:`sqltune.generation.sampling`) beside the greedy engine, in a thread (in
        the engine process with ``engine_process``)."""
        from sqltune.generation.sampling import sample_tokens

        req.submitted_at = req.started_at = time.perf_counter()
        kwargs = dict(max_new_tokens=req.max_new_tokens, sampling=sampling, stop_ids=req.stop_ids,
                      pad_token_id=self.tokenizer.pad_token_id, text_stop=req.text_stop)
        try:
            if self.model is None:
                tokens, finish = await asyncio.to_thread(self.engine.sample, req.prompt_ids, **kwargs)
            else:
                tokens, finish = await asyncio.to_thread(sample_tokens, self.model, req.prompt_ids, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a failed generation is this request's 500, not the server's
            log.exception("sampled generation failed")
            raise Rejected(Rejection(500, None, f"generation failed: {type(exc).__name__}", "generation_failed"))
        req.tokens, req.finish_reason = tokens, finish
        req.first_token_at = req.finished_at = time.perf_counter()
        return req

    # -- text-to-SQL ------------------------------------------------------------------------------

    async def sql(self, request: SqlGeneration) -> Completion | Rejection:
        """Generate SQL for a question over a schema (the raw model text; the ingress cleans it)."""
        try:
            return await self._sql(request, time.perf_counter())
        except Rejected as exc:
            return exc.rejection

    async def _sql(self, request: SqlGeneration, start: float) -> Completion:
        max_new = self.limits.new_tokens(request.max_new_tokens, "max_new_tokens")
        self.limits.sql_inputs(self.count_tokens, request.question, request.schema, request.evidence)
        try:
            messages = build_messages(
                request.question,
                request.schema,
                dialect=request.dialect,
                evidence=request.evidence,
                template=self.template,
            )
            messages += [{"role": m.role, "content": m.content} for m in request.history]
            prompt = render_prompt(self.tokenizer, messages)
        except SqltuneError as exc:
            raise Rejected(Rejection(400, "question", str(exc))) from None
        ids = self._encode(prompt)
        self.limits.prompt(len(ids), max_new, param="schema", code="too_long", new_param="max_new_tokens")
        req = GenRequest(ids, max_new, self.stop_ids, TextStop().bind(self._decode))
        if request.sampling.greedy:
            req = await self._run(req, "max_new_tokens")
        else:
            req = await self._sample(req, request.sampling)
        return Completion(
            text=self._decode(req.tokens),
            finish_reason=req.finish_reason,
            prompt_tokens=len(ids),
            completion_tokens=len(req.tokens),
            model=self.name,
            batch=_batch(req),
            timing=_timing(req, start),
        )

    # -- chat --------------------------------------------------------------------------------------

    def _chat_request(self, request: ChatGeneration) -> GenRequest:
        """The engine request of a chat completion (lengths checked, the chat template applied)."""
        max_new = self.limits.new_tokens(request.max_tokens, request.max_tokens_param)
        self.limits.messages(len(request.messages))
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a template error is the request's fault (e.g. odd roles)
            raise Rejected(
                Rejection(400, "messages", f"cannot render the messages with the chat template: {exc}")
            ) from None
        ids = self._encode(prompt)
        self.limits.prompt(
            len(ids),
            max_new,
            param="messages",
            code="context_length_exceeded",
            new_param=request.max_tokens_param,
        )
        stops = tuple(s for s in request.stop if s)
        return GenRequest(
            ids,
            max_new,
            frozenset() if request.ignore_eos else self.stop_ids,
            TextStop(stops).bind(self._decode) if stops else None,
        )

    async def chat(self, request: ChatGeneration) -> Completion | Rejection:
        """A chat completion: the text (cut at the first stop string), the finish reason, usage."""
        start = time.perf_counter()
        try:
            req = self._chat_request(request)
            if request.sampling.greedy:
                req = await self._run(req, request.max_tokens_param)
            else:
                req = await self._sample(req, request.sampling)
        except Rejected as exc:
            return exc.rejection
        text = self._decode(req.tokens)
        finish = "length" if req.finish_reason == "length" else "stop"
        for s in (s for s in request.stop if s):
            if s in text:
                text = text[: text.index(s)]
                finish = "stop"
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=len(req.prompt_ids),
            completion_tokens=len(req.tokens),
            model=self.name,
            batch=_batch(req),
            timing=_timing(req, start),
        )

    async def chat_stream(self, request: ChatGeneration) -> AsyncIterator[StreamItem]:
        """:class:`StreamDelta` items as text becomes final, then one :class:`StreamEnd` (or a Rejection)."""
        try:
            req = self._chat_request(request)
        except Rejected as exc:
            yield exc.rejection
            return
        if not request.sampling.greedy:  # sampled decoding is not incremental: one delta, then the end
            done = await self.chat(request)
            if isinstance(done, Rejection):
                yield done
                return
            if done.text:
                yield StreamDelta(done.text)
            yield StreamEnd(done.finish_reason, done.prompt_tokens, done.completion_tokens, done.batch)
            return
        stops = [s for s in request.stop if s]
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def update(r: GenRequest, _new: list[int], finished: bool) -> None:
            snapshot = list(r.tokens)
            loop.call_soon_threadsafe(q.put_nowait, (snapshot, finished))

        req.on_update = update
        try:
            self._submit(req, request.max_tokens_param)
        except Rejected as exc:
            yield exc.rejection
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
                    yield StreamDelta(text[len(sent) :], model=self.name)
                    sent = text
                if finished:
                    break
        except asyncio.CancelledError:
            self.engine.cancel(req)
            raise
        if req.error:
            yield Rejection(500, None, req.error, "generation_failed")
            return
        yield StreamEnd(
            finish_reason="length" if req.finish_reason == "length" else "stop",
            prompt_tokens=len(req.prompt_ids),
            completion_tokens=len(req.tokens),
            batch=_batch(req),
            model=self.name,
        )


__all__ = ["ModelServer", "context_length", "verify_artifact"]
