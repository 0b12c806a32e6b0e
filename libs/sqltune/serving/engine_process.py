"""The model replica's engine: loaded in the replica's process, or in a process of its own.

:func:`load_engine` loads the artifact and starts a warmed-up engine. With ``ServeArgs.engine_process`` the
replica instead starts ``python -m sqltune.serving.engine_process``, which calls :func:`load_engine`, and talks
to it through :class:`EngineProcess`, which offers the engine's interface (submit, cancel, stats, ...). The
replica's request handling (Ray Serve's calls, chat templates, tokenization) and the engine's scheduler then
each have a GIL of their own, as vLLM's engine core has. Requests cross as plain data (prompt ids, limits,
stop ids, a :class:`~sqltune.serving.stops.TextStop`); the engine process sends back, in batches, the new
tokens of each request, the final state of each finished one, and its batch events.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from sqltune.generation.engine import build_engine
from sqltune.generation.request import EngineConfig, EngineError, GenRequest, Sampling, check_request
from sqltune.log import setup_logging
from sqltune.models.loading import LoadedModel, load_for_inference
from sqltune.serving.config import ServeArgs
from sqltune.serving.stops import TextStop

log = logging.getLogger(__name__)

# What the engine process sends back of a finished request (besides its tokens). Not submitted_at: the
# replica's own, so the queue and first-token times include the crossing (perf_counter is one clock system-wide).
FINAL_FIELDS = ("finish_reason", "error", "max_batch", "prefill_batch", "started_at", "first_token_at",
                "finished_at")


class EngineUnavailable(EngineError):
    """The engine process is gone (or going): the replica answers 503 and Ray Serve replaces it."""


def context_length(model: Any) -> int | None:
    """The number of positions the model accepts (None when its config does not say)."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    value = getattr(cfg, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


@dataclass
class LocalEngine:
    loaded: LoadedModel
    engine: Any
    context_length: int | None
    startup: dict[str, float]


def load_engine(a: ServeArgs) -> LocalEngine:
    """Load ``a.model_uri`` and start its engine (warmed up unless ``a.warmup`` is off)."""
    t0 = time.perf_counter()
    loaded = load_for_inference(
        a.model_uri, base_uri=a.base_model_uri, precision=a.precision, device=a.device, name=a.served_name
    )
    t_weights = time.perf_counter()
    ctx = context_length(loaded.model)
    cfg = EngineConfig(
        max_slots=a.max_batch_size,
        seq_len=min(a.seq_len, ctx) if ctx else a.seq_len,
        decode_chunk=a.decode_chunk,
        batch_wait_s=a.batch_wait_timeout_s,
        admit_wait_s=a.admit_wait_s,
        prefix_cache=a.prefix_cache,
        overlap=a.overlap,
        cuda_graphs=a.cuda_graphs,
        prefill_graph_prompts=a.prefill_graph_prompts,
        compile=a.compile,
    )
    engine = build_engine(loaded.model, loaded.tokenizer, cfg)
    if a.warmup:
        engine.warmup()  # compiles, captures CUDA graphs, then starts the scheduler
    else:
        engine.start()
        engine.ready = True
    startup = {
        "weights_s": round(t_weights - t0, 2),
        "engine_s": round(time.perf_counter() - t_weights, 2),
        **getattr(engine, "startup", {}),
    }
    return LocalEngine(loaded, engine, ctx, startup)


# ------------------------------------------------------------------------------------ the replica's side


class EngineProcess:
    """An engine in a child process, behind the engine's interface. Starting it waits until the child has
    loaded the model and warmed the engine up; a child that fails to start raises :class:`EngineError`
    with its reason. If the child dies later, every open request finishes with an error and
    :attr:`running` turns false (the replica's health check)."""

    def __init__(self, args: ServeArgs):
        t0 = time.perf_counter()
        mine, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sqltune.serving.engine_process", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
        )
        theirs.close()
        self._conn = Connection(mine.detach())
        try:
            self._conn.send(args)
            kind, payload = self._conn.recv()  # blocks until the child is ready, failed, or gone
        except (EOFError, OSError):
            kind, payload = "failed", f"it exited with code {self._proc.wait()} (its log is the replica's)"
        if kind != "ready":
            self._conn.close()
            self._proc.wait()
            raise EngineError(f"the engine process did not start: {payload}")
        self.cfg: EngineConfig = payload["cfg"]
        self.mode: str = payload["mode"]
        self.startup: dict[str, float] = dict(payload["startup"])
        # The child's own start (interpreter, imports) beside its load and warm-up.
        own = self.startup.get("weights_s", 0.0) + self.startup.get("engine_s", 0.0)
        self.startup["process_s"] = round(max(0.0, time.perf_counter() - t0 - own), 2)
        self.context_length: int | None = payload["context_length"]
        self.device: str = payload["device"]
        self.info: dict[str, Any] = payload["info"]
        self.ready = True
        self.on_batch: Callable[[str, int], None] | None = None
        self._pending: dict[int, GenRequest] = {}
        self._rids: dict[int, int] = {}  # id(request) -> request id, while it runs
        self._calls: dict[int, list[Any]] = {}
        self._ids = itertools.count()
        self._send_lock = threading.Lock()
        self._dead: str | None = None
        self._reader = threading.Thread(target=self._read, name="sqltune-engine-replies", daemon=True)
        self._reader.start()

    @property
    def running(self) -> bool:
        return self._dead is None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def submit(self, req: GenRequest) -> GenRequest:
        if self._dead:
            raise EngineUnavailable(self._dead)
        check_request(req, self.cfg.seq_len)
        spec = self._stop_spec(req.text_stop)
        rid = next(self._ids)
        self._pending[rid] = req
        self._rids[id(req)] = rid
        req.submitted_at = time.perf_counter()
        try:
            self._send(("submit", rid, list(req.prompt_ids), req.max_new_tokens, tuple(req.stop_ids), spec))
        except EngineError:
            self._pending.pop(rid, None)
            self._rids.pop(id(req), None)
            raise
        return req

    def cancel(self, req: GenRequest) -> None:
        req.cancelled = True
        rid = self._rids.get(id(req))
        if rid is not None and self._dead is None:
            try:
                self._send(("cancel", rid))
            except EngineError:
                pass  # the child is gone: the request has failed already

    def sample(self, prompt_ids: list[int], *, max_new_tokens: int, sampling: Sampling, stop_ids,
               pad_token_id: int | None, text_stop=None) -> tuple[list[int], str]:
        """A sampled generation (:func:`sqltune.generation.sampling.sample_tokens`) in the engine process."""
        kwargs = dict(max_new_tokens=max_new_tokens, sampling=sampling, stop_ids=frozenset(stop_ids),
                      pad_token_id=pad_token_id)
        return self._call("sample", list(prompt_ids), kwargs, self._stop_spec(text_stop), timeout=None)

    def stats(self) -> dict[str, Any]:
        return self._call("stats")

    def reset_stats(self) -> None:
        self._call("reset_stats")

    def stop(self) -> None:
        if self._proc.poll() is None:
            try:
                self._send(("stop",))
                self._proc.wait(timeout=30)
            except (EngineError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        # The reader takes what the child sent before it exited, then ends on its closed socket.
        self._reader.join(timeout=10)
        self._conn.close()

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _stop_spec(text_stop) -> TextStop | None:
        if text_stop is None:
            return None
        spec = getattr(text_stop, "spec", None)
        if not isinstance(spec, TextStop):
            raise EngineError("a text stop must come from sqltune.serving.stops.TextStop.bind to reach the "
                              "engine process")
        return spec

    def _send(self, msg: tuple) -> None:
        try:
            with self._send_lock:
                self._conn.send(msg)
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(self._dead or f"the engine process is gone ({exc})") from None

    def _call(self, name: str, *args: Any, timeout: float | None = 60.0) -> Any:
        cid = next(self._ids)
        slot = [threading.Event(), False, None]
        self._calls[cid] = slot
        try:
            self._send(("call", cid, name, args))
        except EngineError:
            self._calls.pop(cid, None)
            raise
        if not slot[0].wait(timeout):
            self._calls.pop(cid, None)
            raise EngineError(f"the engine process did not answer {name} within {timeout}s")
        if not slot[1]:
            raise EngineError(slot[2])
        return slot[2]

    def _read(self) -> None:
        """Until the child's socket closes; then (or if this thread fails) every open request fails."""
        try:
            while True:
                msg = self._conn.recv()
                if msg[0] == "events":
                    for event in msg[1]:
                        self._event(event)
                elif msg[0] == "reply":
                    _, cid, ok, value = msg
                    slot = self._calls.pop(cid, None)
                    if slot is not None:
                        slot[1], slot[2] = ok, value
                        slot[0].set()
        except (EOFError, OSError):
            pass
        except Exception:  # noqa: BLE001 - a broken reply must not leave requests waiting forever
            log.exception("reading the engine process's replies failed")
            self._proc.kill()
        finally:
            try:
                code = self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
            self._fail(f"the engine process exited (code {code})")

    def _event(self, event: tuple) -> None:
        if event[0] == "b":
            if self.on_batch:
                try:
                    self.on_batch(event[1], event[2])
                except Exception:  # noqa: BLE001 - metrics must not stop the replies
                    log.debug("on_batch hook failed", exc_info=True)
            return
        _, rid, new, final = event
        req = self._pending.get(rid)
        if req is None:
            return
        if final is None:
            req.tokens.extend(new)
        else:
            del self._pending[rid]
            self._rids.pop(id(req), None)
            req.tokens = final.pop("tokens")
            for key, value in final.items():
                setattr(req, key, value)
        self._notify(req, new, final is not None)

    def _notify(self, req: GenRequest, new: list[int], finished: bool) -> None:
        if req.on_update:
            try:
                req.on_update(req, new, finished)
            except Exception:  # noqa: BLE001 - a broken callback must not stop the replies
                log.exception("request callback failed")

    def _fail(self, message: str) -> None:
        self._dead = self._dead or message
        self.ready = False
        for rid, req in list(self._pending.items()):
            self._pending.pop(rid, None)
            req.finish_reason, req.error, req.finished_at = "error", message, time.perf_counter()
            self._notify(req, [], True)
        self._rids.clear()
        for cid, slot in list(self._calls.items()):
            self._calls.pop(cid, None)
            slot[1], slot[2] = False, message
            slot[0].set()


# ------------------------------------------------------------------------------------ the engine's side


class _EngineSide:
    """In the engine process: runs the replica's requests on a local engine and sends the results back."""

    def __init__(self, conn: Connection, args: ServeArgs):
        self.conn = conn
        self.local = load_engine(args)
        self.engine = self.local.engine
        tok = self.local.loaded.tokenizer
        self.decode = lambda tokens: tok.decode(tokens, skip_special_tokens=True)
        self.reqs: dict[int, GenRequest] = {}
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.engine.on_batch = lambda kind, size: self.out.put(("b", kind, size))

    def run(self) -> None:
        sender = threading.Thread(target=self._send_loop, name="sqltune-engine-sender", daemon=True)
        sender.start()
        loaded = self.local.loaded
        self.out.put(("ready", {
            "cfg": self.engine.cfg, "mode": self.engine.mode, "startup": self.local.startup,
            "context_length": self.local.context_length, "device": loaded.device, "info": loaded.info,
        }))
        while True:
            try:
                if not self.conn.poll(1.0):
                    if not self.engine.running:  # the scheduler thread died: end, so the replica fails over
                        log.error("the engine's scheduler stopped; the engine process exits")
                        break
                    continue
                msg = self.conn.recv()
            except (EOFError, OSError):
                break  # the replica went away
            if msg[0] == "stop":
                break
            if msg[0] == "submit":
                self._submit(*msg[1:])
            elif msg[0] == "cancel":
                req = self.reqs.get(msg[1])
                if req is not None:
                    req.cancelled = True
            elif msg[0] == "call":
                self._call(*msg[1:])
        self.engine.stop()
        self.out.put(None)
        sender.join(timeout=10)

    def _submit(self, rid: int, ids: list[int], max_new: int, stop_ids: tuple, spec: TextStop | None) -> None:
        req = GenRequest(ids, max_new, frozenset(stop_ids), spec.bind(self.decode) if spec else None,
                         self._updates(rid))
        self.reqs[rid] = req
        try:
            self.engine.submit(req)
        except EngineError as exc:
            req.finish_reason, req.error = "error", str(exc)
            req.on_update(req, [], True)

    def _updates(self, rid: int) -> Callable[[GenRequest, list[int], bool], None]:
        def update(req: GenRequest, new: list[int], finished: bool) -> None:
            if not finished:
                self.out.put(("u", rid, list(new), None))
                return
            self.reqs.pop(rid, None)
            final = {"tokens": list(req.tokens), **{k: getattr(req, k) for k in FINAL_FIELDS}}
            self.out.put(("u", rid, list(new), final))

        return update

    def _call(self, cid: int, name: str, args: tuple) -> None:
        if name == "sample":  # a whole generation: in a thread, so the requests keep flowing
            threading.Thread(target=self._reply, args=(cid, self._sample, args), daemon=True).start()
        elif name == "stats":
            self._reply(cid, self.engine.stats, ())
        elif name == "reset_stats":
            self._reply(cid, self.engine.reset_stats, ())
        else:
            self.out.put(("reply", cid, False, f"unknown call {name!r}"))

    def _reply(self, cid: int, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self.out.put(("reply", cid, True, fn(*args)))
        except Exception as exc:  # noqa: BLE001 - the caller gets the error, the engine keeps serving
            log.exception("engine call failed")
            self.out.put(("reply", cid, False, f"{type(exc).__name__}: {exc}"))

    def _sample(self, ids: list[int], kwargs: dict[str, Any], spec: TextStop | None) -> tuple[list[int], str]:
        from sqltune.generation.sampling import sample_tokens

        stop = spec.bind(self.decode) if spec else None
        return sample_tokens(self.local.loaded.model, ids, text_stop=stop, **kwargs)

    def _send_loop(self) -> None:
        """One writer: whatever is queued goes out together, consecutive events in one message. If it fails,
        the process ends: the replica then fails every open request instead of waiting for them."""
        try:
            self._send_all()
        except BaseException:  # noqa: BLE001
            log.exception("the engine process cannot send to the replica")
            os._exit(1)

    def _send_all(self) -> None:
        done = False
        while not done:
            items = [self.out.get()]
            while True:
                try:
                    items.append(self.out.get_nowait())
                except queue.Empty:
                    break
            events: list[tuple] = []
            for item in items:
                if item is None:
                    done = True
                    break
                if item[0] in ("u", "b"):
                    events.append(item)
                    continue
                if events:
                    self._send(("events", events))
                    events = []
                self._send(item)
            if events:
                self._send(("events", events))

    def _send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except (OSError, ValueError):
            pass  # the replica is gone; the loop ends on its closed connection
        except Exception as exc:  # noqa: BLE001 - e.g. a reply value that does not pickle
            if msg[0] != "reply":
                raise
            log.exception("cannot send a reply to the replica")
            self.conn.send(("reply", msg[1], False, f"the reply could not be sent: {type(exc).__name__}: {exc}"))


def _exit_with(parent: int) -> None:
    """Ends this process when the replica that started it is gone (even while the model loads)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    """``python -m sqltune.serving.engine_process FD``: the engine process (started by :class:`EngineProcess`)."""
    argv = sys.argv[1:] if argv is None else argv
    setup_logging()
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="sqltune-parent-watch", daemon=True).start()
    conn = Connection(int(argv[0]))
    args: ServeArgs = conn.recv()
    if args.gil_switch_ms:
        sys.setswitchinterval(args.gil_switch_ms / 1000)
    try:
        side = _EngineSide(conn, args)
    except Exception as exc:  # noqa: BLE001 - the replica reports it: this process only says why
        log.exception("the engine process failed to start")
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1
    side.run()
    return 0


__all__ = ["EngineProcess", "EngineUnavailable", "LocalEngine", "context_length", "load_engine", "main"]

if __name__ == "__main__":
    sys.exit(main())
