"""Training data: loss on the SQL only, batch plans per rank, padding and padding-free packing."""

from __future__ import annotations

import pytest

from sqltune.prompts import IGNORE_INDEX, PromptTemplate, end_of_turn
from sqltune.train.data import BatchPlan, collate_packed, collate_padded, count_tokens, tokenize_examples


@pytest.fixture(scope="module")
def examples(embedded_dir):
    from sqltune.data import load_dataset

    return load_dataset(embedded_dir, format="embedded")[:24]


@pytest.fixture(scope="module")
def tokenizer(train_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(train_base)


def test_only_sql_tokens_carry_loss(examples, tokenizer):
    rows = tokenize_examples(examples, tokenizer, PromptTemplate(), 2048).rows
    assert len(rows) == len(examples)
    for ex, row in zip(examples, rows):
        ids, labels = row["input_ids"], row["labels"]
        first = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
        # Everything before the answer is masked; everything from it on is trained, and it is the SQL.
        assert all(lab == IGNORE_INDEX for lab in labels[:first])
        assert labels[first:] == ids[first:]
        prompt = tokenizer.decode(ids[:first])
        assert prompt.endswith("<|im_start|>assistant\n") and ex.question in prompt and ex.sql not in prompt
        target = tokenizer.decode(ids[first:])
        assert target == ex.sql.strip() + end_of_turn(tokenizer)


def test_too_long_examples_are_dropped_and_counted(examples, tokenizer):
    lengths = tokenize_examples(examples, tokenizer, PromptTemplate(), 4096).lengths
    cut = sorted(lengths)[len(lengths) // 2]
    ts = tokenize_examples(examples, tokenizer, PromptTemplate(), cut)
    assert ts.dropped == sum(n > cut for n in lengths) > 0
    assert max(ts.lengths) <= cut


def test_dynamic_padding_counts_real_tokens_only(examples, tokenizer):
    rows = tokenize_examples(examples[:4], tokenizer, PromptTemplate(), 2048).rows
    batch = collate_padded(rows, tokenizer.pad_token_id)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (4, width)
    real, targets = count_tokens(batch)
    assert real == sum(len(r["input_ids"]) for r in rows)
    assert targets == sum(sum(lab != IGNORE_INDEX for lab in r["labels"]) for r in rows)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("packing", [False, True])
def test_batch_plan_shards_disjointly_with_equal_steps(packing):
    lengths = tuple(100 + (i * 37) % 400 for i in range(101))
    plan = BatchPlan(lengths, world_size=2, batch_size=4, grad_accum=2, seed=3, packing=packing, pack_tokens=1000)
    for epoch in (0, 1):
        a, b = plan.micro_batches(epoch, 0), plan.micro_batches(epoch, 1)
        assert len(a) == len(b) and len(a) % 2 == 0 and a
        if packing:  # a micro-batch is a list of rows (pack_rows=1: one row)
            assert all(len(batch) == 1 for batch in a + b)
            assert all(sum(lengths[i] for i in batch[0]) <= 1000 for batch in a + b)
            a, b = [batch[0] for batch in a], [batch[0] for batch in b]
        ia = {i for batch in a for i in batch}
        ib = {i for batch in b for i in batch}
        assert not ia & ib
    assert plan.micro_batches(0, 0) != plan.micro_batches(1, 0)  # reshuffled per epoch
    spe = plan.steps_per_epoch()
    assert plan.position(0) == (0, 0) and plan.position(spe + 1) == (1, 2)
    assert plan.total_steps(2.5, None) == -(-5 * spe // 2)


def test_packed_rows_do_not_attend_across_examples(examples, tokenizer, train_base):
    """Logits of examples packed into one row equal those of each example alone."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(train_base, attn_implementation="sdpa").eval()
    rows = tokenize_examples(examples[:3], tokenizer, PromptTemplate(), 2048).rows
    packed = collate_packed(rows)
    assert packed["input_ids"].shape[0] == 1
    starts = [0]
    for r in rows:
        starts.append(starts[-1] + len(r["input_ids"]))
    assert [int(packed["position_ids"][0, s]) for s in starts[:-1]] == [0, 0, 0]
    # No label crosses a boundary: each example's first position is masked.
    assert all(int(packed["labels"][0, s]) == IGNORE_INDEX for s in starts[:-1])
    with torch.no_grad():
        joint = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        for k, r in enumerate(rows):
            alone = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
            torch.testing.assert_close(joint[starts[k] : starts[k + 1]], alone, atol=2e-4, rtol=1e-3)


def test_fast_step_pieces_match_the_plain_loss(examples, tokenizer, train_base):
    """Chunked loss == the model's loss; packed rows (padded tails) == the same examples unpacked;
    selective checkpointing gives the same gradients."""
    import torch
    from transformers import AutoModelForCausalLM

    from sqltune.train.data import collate_packed_rows
    from sqltune.train.fast import chunked_lm_loss, enable_selective_checkpointing

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(train_base, attn_implementation="sdpa").train()
    rows = tokenize_examples(examples[:6], tokenizer, PromptTemplate(), 2048).rows
    padded = collate_padded(rows, tokenizer.pad_token_id)
    _, targets = count_tokens(padded)
    plain = model(**padded, use_cache=False, num_items_in_batch=targets).loss
    chunked = chunked_lm_loss(model, padded, num_items=targets, chunk_tokens=64)
    torch.testing.assert_close(chunked, plain, atol=1e-4, rtol=1e-4)

    row_len = max(sum(len(r["input_ids"]) for r in rows[i::2]) for i in range(2)) + 7
    packed = collate_packed_rows([rows[0::2], rows[1::2]], row_len, tokenizer.pad_token_id)
    assert packed["input_ids"].shape == (2, row_len)
    assert count_tokens(packed)[0] == sum(len(r["input_ids"]) for r in rows)
    batch = {k: v for k, v in packed.items() if k != "real_tokens"}
    packed_loss = chunked_lm_loss(model, batch, num_items=targets, chunk_tokens=64)
    torch.testing.assert_close(packed_loss, plain, atol=1e-4, rtol=1e-4)

    plain.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    assert enable_selective_checkpointing(model) == model.config.num_hidden_layers
    model(**padded, use_cache=False, num_items_in_batch=targets).loss.backward()
    for p, g in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


def test_packed_sdpa_matches_masked_sdpa_and_falls_back_outside_training(examples, tokenizer, train_base):
    """Per-example SDPA of packed rows == transformers' SDPA over the row with its block-diagonal mask,
    loss and gradients; in eval mode and in generation it is SDPA itself."""
    import torch
    from transformers import AutoModelForCausalLM

    from sqltune.train.data import collate_packed_rows
    from sqltune.train.fast import PACKED_SDPA, register_packed_sdpa

    register_packed_sdpa()
    rows = tokenize_examples(examples[:6], tokenizer, PromptTemplate(), 2048).rows
    row_len = max(sum(len(r["input_ids"]) for r in rows[i::2]) for i in range(2)) + 7
    batch = {k: v for k, v in collate_packed_rows([rows[0::2], rows[1::2]], row_len, tokenizer.pad_token_id).items()
             if k != "real_tokens"}
    losses, grads = {}, {}
    for impl in ("sdpa", PACKED_SDPA):
        model = AutoModelForCausalLM.from_pretrained(train_base, attn_implementation=impl).train()
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        losses[impl], grads[impl] = loss.detach(), [p.grad for p in model.parameters()]
        model.eval()
        with torch.no_grad():
            prompt = torch.tensor([rows[0]["input_ids"][:20]])
            gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        losses[impl + "-gen"] = gen
    torch.testing.assert_close(losses[PACKED_SDPA], losses["sdpa"], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads[PACKED_SDPA], grads["sdpa"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert torch.equal(losses[PACKED_SDPA + "-gen"], losses["sdpa-gen"])


def test_packed_seqlens_flatten_rows_into_example_boundaries():
    import torch

    from sqltune.train.fast import packed_kwargs, packed_seqlens

    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])
    cu, longest = packed_seqlens(pos)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 5, 6, 10, 12] and longest == 4
    assert packed_seqlens(torch.tensor([[1, 2, 0]])) is None  # a row that does not start an example
    kw = packed_kwargs(pos, "cpu")
    assert kw["cu_seq_lens_q"] is kw["cu_seq_lens_k"] and kw["max_length_q"] == kw["max_length_k"] == 4


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="varlen flash attention needs CUDA")
def test_varlen_flash_matches_per_example_sdpa_on_cuda():
    """On CUDA, forward_loss passes the packed boundaries and attention is one varlen flash call: the same
    loss and gradients (bf16 rounding) as SDPA run per example."""
    import random

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sqltune.train.data import collate_packed_rows
    from sqltune.train.fast import PACKED_SDPA, chunked_lm_loss, packed_kwargs, register_packed_sdpa
    from sqltune.train.loop import forward_loss

    register_packed_sdpa()
    rng = random.Random(0)
    rows = []
    for n in (37, 90, 15, 64, 120, 8):
        ids = [rng.randrange(3, 500) for _ in range(n)]
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]})
    batch = collate_packed_rows([rows[0::2], rows[1::2]], 200, 0)
    _, targets = count_tokens(batch)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    cfg._attn_implementation = PACKED_SDPA
    model = Qwen2ForCausalLM(cfg).to("cuda", torch.bfloat16).train()
    tensors = {k: v.cuda() for k, v in batch.items() if k != "real_tokens"}
    out = {}
    for name, extra in (("per-example", {}), ("varlen", packed_kwargs(batch["position_ids"], "cuda"))):
        model.zero_grad()
        loss = chunked_lm_loss(model, {**tensors, **extra}, num_items=targets, chunk_tokens=64)
        loss.backward()
        out[name] = (loss.detach().float(), [p.grad.float().clone() for p in model.parameters()])
    torch.testing.assert_close(out["varlen"][0], out["per-example"][0], atol=2e-2, rtol=2e-2)
    for a, b in zip(out["varlen"][1], out["per-example"][1]):
        assert torch.linalg.norm(a - b) <= 0.05 * torch.linalg.norm(b) + 1e-6
    with torch.no_grad():  # the job's step passes the boundaries by itself on CUDA
        job = forward_loss(model, batch, "cuda", num_items=targets, chunk_tokens=64)
        varlen = chunked_lm_loss(model, {**tensors, **packed_kwargs(batch["position_ids"], "cuda")},
                                 num_items=targets, chunk_tokens=64)
    assert torch.equal(job, varlen)
