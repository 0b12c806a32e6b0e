"""The engine in a process of its own (engine_process): the replica's answers are the in-process engine's,
cancellation and sampled decoding cross over, a dead engine process fails its requests instead of hanging
them, and over real HTTP the Ray Serve app answers as the main one does."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
from serve_helpers import side_app

from sqltune.generation.request import EngineError, Sampling
from sqltune.serving.config import ServeArgs
from sqltune.serving.engine_process import EngineProcess
from sqltune.serving.protocol import ChatGeneration, ChatMessageText, Completion, Rejection, SqlGeneration, StreamDelta
from sqltune.serving.replica import ModelServer

SCHEMA = "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, country TEXT);"
QUESTIONS = ["How many customers are there?", "List the customer names.", "Which customers live in Germany?"]


def _args(model, **kw) -> ServeArgs:
    return ServeArgs.from_args({"model_uri": str(model), "max_batch_size": 4, **kw})


@pytest.fixture(scope="module")
def servers(taught_model):
    local = ModelServer(_args(taught_model))
    remote = ModelServer(_args(taught_model, engine_process=True))
    try:
        yield local, remote
    finally:
        local.shutdown()
        remote.shutdown()


def _chat(content: str, **kw) -> ChatGeneration:
    return ChatGeneration(messages=(ChatMessageText("user", content),), **kw)


async def _in_flight(server: ModelServer) -> None:
    """Until the replica has handed a request to its engine process (a tiny model's 300 tokens take longer)."""
    deadline = time.monotonic() + 30
    while not server.engine._pending:
        assert time.monotonic() < deadline, "the request never reached the engine process"
        await asyncio.sleep(0.001)


def _same(a, b) -> None:
    assert isinstance(a, Completion) and isinstance(b, Completion), (a, b)
    assert (a.text, a.finish_reason, a.prompt_tokens, a.completion_tokens) == (
        b.text, b.finish_reason, b.prompt_tokens, b.completion_tokens
    )


def test_answers_are_the_in_process_engines(servers):
    local, remote = servers
    assert isinstance(remote.engine, EngineProcess) and remote.engine.running
    assert remote.info().ready and remote.info().device == local.info().device
    assert set(remote.info().startup) == set(local.info().startup) | {"process_s"}
    assert remote.info().startup["process_s"] > 0

    async def both(make):
        return await asyncio.gather(make(local), make(remote))

    for q in QUESTIONS:
        _same(*asyncio.run(both(lambda s, q=q: s.sql(SqlGeneration(question=q, schema=SCHEMA, dialect="sqlite")))))
        _same(*asyncio.run(both(lambda s, q=q: s.chat(_chat(q, max_tokens=12)))))
        # A stop string, forced length and a seeded sampled generation cross to the engine process too.
        _same(*asyncio.run(both(lambda s, q=q: s.chat(_chat(q, max_tokens=12, stop=("customers",))))))
        _same(*asyncio.run(both(lambda s, q=q: s.chat(_chat(q, max_tokens=6, ignore_eos=True)))))
        sampled = Sampling(temperature=0.8, seed=7)
        _same(*asyncio.run(both(lambda s, q=q: s.chat(_chat(q, max_tokens=8, sampling=sampled)))))


def test_concurrent_requests_and_streams_match(servers):
    local, remote = servers

    async def run(s):
        answers = await asyncio.gather(*(s.chat(_chat(q, max_tokens=10)) for q in QUESTIONS * 3))
        deltas = [item.text async for item in s.chat_stream(_chat(QUESTIONS[0], max_tokens=10))
                  if isinstance(item, StreamDelta)]
        return answers, deltas

    (la, ld), (ra, rd) = asyncio.run(run(local)), asyncio.run(run(remote))
    for a, b in zip(la, ra):
        _same(a, b)
    assert ld == rd and "".join(rd)
    remote.reset_stats()
    asyncio.run(remote.chat(_chat(QUESTIONS[1], max_tokens=4)))
    stats = remote.stats()
    assert stats["requests"] == 1 and stats["generated_tokens"] >= 1, stats


def test_a_cancelled_request_stops_in_the_engine_process(servers):
    _, remote = servers

    async def cancel_one():
        task = asyncio.ensure_future(remote.chat(_chat(QUESTIONS[0], max_tokens=300, ignore_eos=True)))
        await _in_flight(remote)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    remote.reset_stats()
    asyncio.run(cancel_one())
    deadline = time.monotonic() + 30
    while remote.engine._pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not remote.engine._pending  # the engine process finished it (cancelled) and said so
    assert remote.stats()["generated_tokens"] < 300  # cut short there, not run to its length
    again = asyncio.run(remote.chat(_chat(QUESTIONS[1], max_tokens=4)))
    assert isinstance(again, Completion) and again.completion_tokens >= 1, again


def test_a_dead_engine_process_fails_requests_instead_of_hanging(taught_model):
    server = ModelServer(_args(taught_model, engine_process=True, warmup=False))
    try:

        async def kill_mid_generation():
            task = asyncio.ensure_future(server.chat(_chat(QUESTIONS[0], max_tokens=300, ignore_eos=True)))
            await _in_flight(server)
            os.kill(server.engine.pid, signal.SIGKILL)
            return await asyncio.wait_for(task, 60)

        failed = asyncio.run(kill_mid_generation())
        assert isinstance(failed, Rejection) and failed.status == 500, failed
        assert "engine process exited" in failed.message
        assert not server.engine.running
        later = asyncio.run(server.chat(_chat(QUESTIONS[1], max_tokens=4)))
        assert isinstance(later, Rejection) and later.status == 503 and later.code == "engine_unavailable", later
    finally:
        server.shutdown()


def test_an_engine_process_that_cannot_load_says_why(tmp_path):
    with pytest.raises(EngineError, match=r"engine process did not start: ModelError: .*not found"):
        ModelServer(_args(tmp_path / "no-such-model", engine_process=True))


def test_shutdown_leaves_no_engine_process(taught_model):
    server = ModelServer(_args(taught_model, engine_process=True, warmup=False))
    proc = server.engine._proc
    server.shutdown()
    assert proc.poll() is not None


@pytest.mark.ray
def test_the_ray_serve_app_answers_with_its_engine_in_a_process_of_its_own(ray_serve, taught_model, server):
    with side_app(ray_serve["base"], taught_model, "engine-process", max_batch_size=4, engine_process=True) as base:
        body = {"messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": 8}
        got = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        want = httpx.post(f"{server['base']}/v1/chat/completions", json=body, headers=server["headers"], timeout=120)
        assert got.status_code == 200 and want.status_code == 200, (got.text, want.text)
        assert got.json()["choices"][0]["message"] == want.json()["choices"][0]["message"]
        assert got.json()["usage"] == want.json()["usage"]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_the_engine_process_ends_when_its_replica_is_killed(taught_model, tmp_path):
    """A replica killed outright (SIGKILL: no shutdown) leaves no engine process holding the device."""
    import subprocess
    import sys

    script = tmp_path / "replica.py"
    script.write_text(
        "import sys, time\n"
        "from sqltune.serving.config import ServeArgs\n"
        "from sqltune.serving.engine_process import EngineProcess\n"
        f"e = EngineProcess(ServeArgs.from_args({{'model_uri': {str(taught_model)!r}, 'warmup': False}}))\n"
        "print(e.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    replica = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(replica.stdout.readline())
        assert not _gone(child)
        replica.kill()
        replica.wait()
        deadline = time.monotonic() + 20
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _gone(child)
    finally:
        replica.kill()
