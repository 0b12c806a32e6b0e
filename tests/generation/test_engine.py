"""The engines against transformers' own greedy ``generate`` (no Ray, CPU, tiny model)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from sqltune.generation import EngineConfig, EngineError, GenRequest
from sqltune.generation.base import BaseEngine
from sqltune.generation.engine import Engine, build_engine, decode_once
from sqltune.generation.fallback import GenerateEngine
from sqltune.generation.passes import LlamaPasses

from engine_helpers import arrive_while_a_chunk_runs, wait_finished


def _model(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # Random init gives near-flat logits; widen the weights so greedy choices are far from ties.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend on a busy CPU
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _model(tiny_model_dir)
    texts = [
        "SELECT name FROM customers WHERE country = 'Germany'",
        "How many orders were shipped?",
        "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER)",
        "Which customers?",
        "SELECT COUNT(*) FROM orders WHERE status = 'shipped' AND total > 10",
        "x",
    ]
    prompts = [tok(t)["input_ids"] for t in texts]
    ref = []
    with torch.no_grad():
        for p in prompts:
            out = model.generate(
                torch.tensor([p]), max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0
            )
            ref.append(out[0, len(p) :].tolist())
    return {"dir": tiny_model_dir, "tok": tok, "prompts": prompts, "ref": ref}


def _engine(setup, **kw) -> Engine:
    cfg = EngineConfig(**{"max_slots": 4, "seq_len": 96, "decode_chunk": 3, **kw})
    return build_engine(_model(setup["dir"]), setup["tok"], cfg).start()


def test_matches_generate_with_more_requests_than_slots(setup):
    eng = _engine(setup)
    try:
        assert isinstance(eng, Engine) and eng.mode == "fused+attn-sdpa"
        res = eng.generate(setup["prompts"], 16, timeout=60)
        assert [r.tokens for r in res] == setup["ref"]
        assert all(r.finish_reason == "length" for r in res)
        stats = eng.stats()
        assert stats["max_decode_batch"] == 4  # 6 requests over 4 slots: a full batch, then the rest
        assert stats["errors"] == 0 and stats["active"] == 0
    finally:
        eng.stop()


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_decoding_across_a_cache_length_bucket_matches_generate(setup, chunk):
    """Prompts ending just below the first cache-length bucket (256) decode on into the next one."""
    tok = setup["tok"]
    model = _model(setup["dir"])
    text = " ".join(f"c{i} = {i}" for i in range(400))
    base = tok(text)["input_ids"]
    assert len(base) >= 255
    prompts = [base[:n] for n in (244, 250, 253, 255)]
    ref = []
    with torch.no_grad():
        for p in prompts:
            out = model.generate(
                torch.tensor([p]), max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0
            )
            ref.append(out[0, len(p) :].tolist())
    eng = build_engine(model, tok, EngineConfig(max_slots=4, seq_len=640, decode_chunk=chunk)).start()
    try:
        assert eng.runner.len_buckets == [256, 512, 640]
        together = eng.generate(prompts, 20, timeout=120)
        alone = [eng.generate([p], 20, timeout=120)[0] for p in prompts]
        assert [r.tokens for r in together] == ref
        assert [r.tokens for r in alone] == ref
    finally:
        eng.stop()


def test_staggered_arrivals_join_the_running_batch(setup):
    eng = _engine(setup, decode_chunk=1)
    try:
        # Different lengths: slots get compacted. Each request arrives while the previous one is still
        # decoding (submitted from its callback after its 2nd token), however fast the steps run.
        reqs = [GenRequest(p, 16 - 2 * i) for i, p in enumerate(setup["prompts"][:4])]

        def submit_next(i):
            def cb(req, _new, _finished):
                if i + 1 < len(reqs) and not reqs[i + 1].submitted_at and len(req.tokens) >= 2:
                    eng.submit(reqs[i + 1])

            return cb

        for i, r in enumerate(reqs):
            r.on_update = submit_next(i)
        eng.submit(reqs[0])
        deadline = time.time() + 60
        while not all(r.finished for r in reqs) and time.time() < deadline:
            time.sleep(0.01)
        for i, r in enumerate(reqs):
            assert r.tokens == setup["ref"][i][: 16 - 2 * i]
        assert max(r.max_batch for r in reqs) > 1
    finally:
        eng.stop()


@pytest.mark.parametrize("mixed", [True, False])
def test_arrivals_mid_decode_prefill_in_the_decode_pass_match_generate(setup, mixed):
    """Three requests arrive together while two decode: with mixed prefill the running two take a token
    in the prefill's pass; tokens are those of generate() either way."""
    eng = _engine(setup, max_slots=6, decode_chunk=1, mixed_prefill=mixed)
    try:
        first = [GenRequest(p, 16) for p in setup["prompts"][:2]]
        later = [GenRequest(p, 12) for p in setup["prompts"][2:5]]
        started = threading.Event()

        def cb(req, _new, _finished):
            if len(req.tokens) >= 3 and not started.is_set():
                started.set()
                for r in later:
                    eng.submit(r)

        first[0].on_update = cb
        eng.reset_stats()
        for r in first:
            eng.submit(r)
        deadline = time.time() + 60
        while not all(r.finished for r in first + later) and time.time() < deadline:
            time.sleep(0.01)
        assert [r.tokens for r in first] == setup["ref"][:2]
        assert [r.tokens for r in later] == [ref[:12] for ref in setup["ref"][2:5]]
        stats = eng.stats()
        assert stats["errors"] == 0
        assert (stats["mixed_steps"] >= 1) is mixed
        assert stats["generated_tokens"] == 2 * 16 + 3 * 12
    finally:
        eng.stop()


class _Overlapping(Engine):
    """Overlapped admission on the CPU (where the device is synchronous, so it is off by default): the
    scheduler's path is the one CUDA takes, only without the overlap in time."""

    overlap = True


@pytest.mark.parametrize("prefix_cache", [0, 2])
def test_arrivals_queued_behind_a_running_chunk_match_generate(setup, prefix_cache):
    """Requests that arrive while a chunk runs are prefilled behind it into the slots after the running
    ones and join the next chunk; with others finishing meanwhile (compaction) tokens are generate()'s."""
    cfg = EngineConfig(max_slots=6, seq_len=96, decode_chunk=3, prefix_cache=prefix_cache)
    eng = _Overlapping(_model(setup["dir"]), setup["tok"], cfg).start()
    try:
        first = [GenRequest(p, 16 - 5 * i) for i, p in enumerate(setup["prompts"][:2])]
        later = [GenRequest(p, 12) for p in setup["prompts"][2:6]]
        arrive_while_a_chunk_runs(eng, later, lambda: len(first[0].tokens) >= 3)
        eng.reset_stats()
        for r in first:
            eng.submit(r)
        wait_finished(first + later)
        assert [r.tokens for r in first] == [ref[: 16 - 5 * i] for i, ref in enumerate(setup["ref"][:2])]
        assert [r.tokens for r in later] == [ref[:12] for ref in setup["ref"][2:6]]
        stats = eng.stats()
        assert stats["errors"] == 0 and stats["active"] == 0
        assert stats["overlapped_prefills"] >= 1
        assert stats["generated_tokens"] == 16 + 11 + 4 * 12
        # Afterwards the engine serves as before (slots and buffers consistent).
        assert [r.tokens for r in eng.generate(setup["prompts"], 16, timeout=60)] == setup["ref"]
    finally:
        eng.stop()


def test_admission_waits_for_company_while_others_decode(setup):
    """With ``admit_wait_s``, requests arriving while another decodes are held until they fill the free
    slots, then prefilled as one group; tokens are those of generate()."""
    eng = _engine(setup, max_slots=3, decode_chunk=1, seq_len=128, admit_wait_s=600)
    try:
        long = GenRequest(setup["prompts"][0], 48)
        a, b = (GenRequest(p, 12) for p in setup["prompts"][1:3])
        seen: dict[str, float] = {}

        def cb(req, _new, _finished):
            n = len(req.tokens)
            if n == 3 and not a.submitted_at:
                eng.submit(a)
            if n == 12 and not b.submitted_at:
                seen["a_started_before_b"] = a.started_at  # several chunk ends later: still queued
                eng.submit(b)

        long.on_update = cb
        eng.submit(long)
        deadline = time.time() + 60
        while not all(r.finished for r in (long, a, b)) and time.time() < deadline:
            time.sleep(0.01)
        assert seen["a_started_before_b"] == 0.0
        assert a.prefill_batch == b.prefill_batch == 2
        assert [a.tokens, b.tokens] == [ref[:12] for ref in setup["ref"][1:3]]
        assert long.tokens[:16] == setup["ref"][0]
    finally:
        eng.stop()


def test_admission_hold_ends_when_the_oldest_has_waited(setup):
    eng = build_engine(_model(setup["dir"]), setup["tok"], EngineConfig(max_slots=4, seq_len=96, admit_wait_s=5))
    try:
        for p in setup["prompts"][:2]:
            eng.submit(GenRequest(p, 4))
        assert eng._hold_back(free=3)  # two queued for three free slots, both just arrived
        assert not eng._hold_back(free=2)  # they fill the free slots
        oldest = eng._queue.queue[0]
        oldest.submitted_at -= 6
        assert not eng._hold_back(free=3)  # the oldest has waited longer than admit_wait_s
        eng.cfg.admit_wait_s = 0
        oldest.submitted_at += 6
        assert not eng._hold_back(free=3)  # off: admitted at the next chunk end
    finally:
        eng.stop()


def test_decode_once_matches_generate_batch(setup):
    """The one-off engine (validation during training decodes with it on GPU) gives generate()'s texts."""
    from sqltune.generation.generate import generate_batch

    tok, model = setup["tok"], _model(setup["dir"])
    prompts = ["How many orders were shipped?", "Which customers?", "x", "SELECT name FROM customers"]
    expected = [g.text for g in generate_batch(model, tok, prompts, max_new_tokens=12)]
    assert decode_once(model, tok, prompts, 12, max_slots=2) == expected
    assert decode_once(model, tok, [], 12) == []


@pytest.mark.parametrize("chunk", [1, 3])
def test_prefix_cache_hits_give_generates_tokens(setup, chunk):
    """Prompts sharing a long prefix (a schema) with different endings: the first one fills the prefix
    store, the others copy the shared positions and prefill only the rest, alone, together and mid-decode;
    every output is generate()'s."""
    tok = setup["tok"]
    model = _model(setup["dir"])
    shared = tok("CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT, "
                 "total REAL); CREATE TABLE customers (customer_id INTEGER, name TEXT, country TEXT);")["input_ids"]
    assert len(shared) >= 40
    prompts = [shared + tok(q)["input_ids"] for q in (
        " How many orders?", " Which customers live in Germany?", " x", " Total per status", " Names")]
    ref = []
    with torch.no_grad():
        for p in prompts:
            out = model.generate(torch.tensor([p]), max_new_tokens=10, min_new_tokens=10, do_sample=False,
                                 pad_token_id=0)
            ref.append(out[0, len(p):].tolist())
    eng = build_engine(model, tok, EngineConfig(max_slots=4, seq_len=160, decode_chunk=chunk, prefix_cache=2))
    eng.start()
    try:
        assert eng.generate(prompts[:1], 10, timeout=60)[0].tokens == ref[0]
        assert eng.stats()["prefix_hit_tokens"] == 0
        together = eng.generate(prompts[1:4], 10, timeout=60)
        assert [r.tokens for r in together] == ref[1:4]
        hits = eng.stats()["prefix_hit_tokens"]
        assert hits >= 3 * 32  # the shared blocks came from the store
        # An arrival while another decodes also starts from the store.
        late = GenRequest(prompts[4], 10)
        first = GenRequest(prompts[0], 10, on_update=lambda r, t, f: len(r.tokens) >= 2 and not late.submitted_at
                           and eng.submit(late))
        eng.submit(first)
        deadline = time.time() + 60
        while not (first.finished and late.finished) and time.time() < deadline:
            time.sleep(0.01)
        assert [first.tokens, late.tokens] == [ref[0], ref[4]]
        stats = eng.stats()
        assert stats["prefix_hit_tokens"] > hits and stats["errors"] == 0
    finally:
        eng.stop()


def test_stop_tokens_and_text_stops(setup):
    ref = setup["ref"]
    stop = ref[0][5]
    eng = _engine(setup)
    try:
        res = eng.generate(setup["prompts"], 16, stop_ids={stop})
        for r, expected in zip(res, ref):
            cut = expected.index(stop) if stop in expected else len(expected)
            assert r.tokens == expected[:cut]
            assert r.finish_reason == ("stop" if stop in expected else "length")
        # A text stop keeps exactly the tokens it asks for, even mid-chunk.
        res = eng.generate(setup["prompts"][:2], 16, text_stop=lambda toks: 4 if len(toks) >= 4 else None)
        assert [r.tokens for r in res] == [ref[0][:4], ref[1][:4]]
        assert all(r.finish_reason == "stop" for r in res)
    finally:
        eng.stop()


def test_module_path_and_generate_fallback_agree(setup, monkeypatch):
    monkeypatch.setattr(LlamaPasses, "_can_fuse", lambda self: False)
    eng = _engine(setup)
    try:
        assert eng.mode.startswith("modules")
        assert [r.tokens for r in eng.generate(setup["prompts"], 16)] == setup["ref"]
    finally:
        eng.stop()
    fallback = GenerateEngine(_model(setup["dir"]), setup["tok"], EngineConfig(max_slots=8, seq_len=96))
    fallback.start()
    try:
        res = fallback.generate(setup["prompts"][:1], 16)
        assert res[0].tokens == setup["ref"][0]
        # One base class: the fallback reports the same stats as the slot engine, minus its graphs.
        assert isinstance(fallback, BaseEngine) and isinstance(eng, BaseEngine)
        stats = fallback.stats()
        assert stats["mode"] == "generate" and stats["requests"] == 1 and stats["generated_tokens"] == 16
        assert "cuda_graphs" not in stats and fallback.running
    finally:
        fallback.stop()


def test_rejects_too_long_and_cancels(setup):
    eng = _engine(setup)
    try:
        with pytest.raises(EngineError, match="sequence length"):
            eng.submit(GenRequest(list(range(1, 90)), 16))
        with pytest.raises(EngineError, match="empty"):
            eng.submit(GenRequest([], 4))
        done = threading.Event()
        req = GenRequest(setup["prompts"][0], 64, on_update=lambda r, t, f: f and done.set())
        req.cancelled = True
        eng.submit(req)
        assert done.wait(30)
        assert req.finish_reason == "cancelled"
        # The engine keeps serving afterwards.
        assert eng.generate(setup["prompts"][:1], 16)[0].tokens == setup["ref"][0]
    finally:
        eng.stop()


def test_a_failed_prefill_fails_its_requests_and_the_engine_serves_on(setup):
    eng = _engine(setup, max_slots=6)
    bad = setup["prompts"][3]
    prefill = eng.runner.prefill

    def flaky(ids, lengths, slot0, past=0):
        if any(row[: len(bad)].tolist() == bad for row in ids):
            raise RuntimeError("CUDA out of memory (simulated)")
        return prefill(ids, lengths, slot0, past)

    eng.runner.prefill = flaky
    try:
        res = eng.generate([setup["prompts"][3]], 16, timeout=60)
        assert res[0].finish_reason == "error" and "prefill failed: RuntimeError" in res[0].error
        res = eng.generate(setup["prompts"][:3], 16, timeout=60)
        assert [r.tokens for r in res] == setup["ref"][:3]
        assert eng.stats()["errors"] == 1
    finally:
        eng.stop()


def test_a_device_failure_with_prefills_in_flight_fails_them_too(setup):
    """Requests whose prefill was queued behind a chunk that then fails are finished with the error (a
    client never waits forever), and the engine serves on."""
    cfg = EngineConfig(max_slots=6, seq_len=96, decode_chunk=3)
    eng = _Overlapping(_model(setup["dir"]), setup["tok"], cfg).start()
    later = [GenRequest(p, 8) for p in setup["prompts"][2:4]]
    wait = eng.runner.wait
    arrived = arrive_while_a_chunk_runs(eng, later, lambda: True)

    def broken_wait(launched):
        if arrived.is_set() and eng._in_flight:
            raise RuntimeError("device lost (simulated)")
        return wait(launched)

    eng.runner.wait = broken_wait
    try:
        first = eng.generate(setup["prompts"][:2], 16, timeout=60)
        wait_finished(later, timeout=30)
        assert all(r.finish_reason == "error" and "device lost" in r.error for r in first + later)
        eng.runner.wait = wait
        assert [r.tokens for r in eng.generate(setup["prompts"][:2], 16, timeout=60)] == setup["ref"][:2]
    finally:
        eng.stop()
