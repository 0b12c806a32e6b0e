"""The slot engine's CUDA-only paths against transformers' greedy ``generate``: captured prefill graphs of
several prompts and admission overlapped with a running decode chunk (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from sqltune.generation import EngineConfig, GenRequest
from sqltune.generation.engine import Engine, build_engine

from engine_helpers import arrive_while_a_chunk_runs, wait_finished

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and overlap need a GPU")


def _model(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # widened weights: greedy choices far from ties
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model.cuda()


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _model(tiny_model_dir)
    words = "SELECT name FROM customers WHERE country = 'Germany' AND total > 10 ORDER BY name".split()
    # Seven prompts of different lengths (two length buckets): prefill groups split into graph widths.
    prompts = [tok(" ".join(words[: 3 + 2 * i] * (1 + i // 3)))["input_ids"] for i in range(7)]
    ref = []
    with torch.no_grad():
        for p in prompts:
            out = model.generate(
                torch.tensor([p], device="cuda"), max_new_tokens=20, min_new_tokens=20, do_sample=False,
                pad_token_id=0,
            )
            ref.append(out[0, len(p) :].tolist())
    return {"model": model, "tok": tok, "prompts": prompts, "ref": ref}


def _engine(setup, **kw) -> Engine:
    cfg = EngineConfig(**{"max_slots": 16, "seq_len": 160, "compile": "off", **kw})
    eng = build_engine(setup["model"], setup["tok"], cfg)
    assert isinstance(eng, Engine)
    eng.warmup()
    return eng


def test_multi_prompt_prefill_graphs_match_generate(setup):
    eng = _engine(setup)
    try:
        assert {(w, 64) for w in (1, 2, 4, 8)} <= set(eng.runner._pf_graphs)
        assert eng.runner.prefill_is_graphed(7, 100) and not eng.runner.prefill_is_graphed(9, 100)
        eng.reset_stats()
        res = eng.generate(setup["prompts"], 20, timeout=120)
        assert [r.tokens for r in res] == setup["ref"]
        # Seven prompts at once: split into graph widths (4 + 2 + 1 within the length buckets), no padding.
        assert sum(int(k) * v for k, v in eng.stats()["prefill_batch_sizes"].items()) == 7
        assert max(int(k) for k in eng.stats()["prefill_batch_sizes"]) <= 4
    finally:
        eng.stop()


@pytest.mark.parametrize("prefill_graph_prompts", [8, 1])
def test_arrivals_during_a_chunk_are_prefilled_behind_it(setup, prefill_graph_prompts):
    """Requests submitted while a chunk runs on the device are prefilled behind it (graphs or eager passes)
    and join the next chunk; tokens are generate()'s."""
    eng = _engine(setup, prefill_graph_prompts=prefill_graph_prompts)
    try:
        assert eng.overlap
        first = [GenRequest(p, 20) for p in setup["prompts"][:2]]
        later = [GenRequest(p, 20) for p in setup["prompts"][2:]]
        arrive_while_a_chunk_runs(eng, later, lambda: bool(first[0].tokens))
        eng.reset_stats()
        for r in first:
            eng.submit(r)
        wait_finished(first + later, timeout=120)
        assert [r.tokens for r in first + later] == setup["ref"]
        stats = eng.stats()
        assert stats["errors"] == 0 and stats["overlapped_prefills"] >= 1
        assert stats["device_s"] > 0
    finally:
        eng.stop()
