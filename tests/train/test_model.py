"""sqltune.train.model: what build_model trains in, on CPU."""

from __future__ import annotations

import contextlib

import pytest

from sqltune.config import load_config
from sqltune.train.config import TrainConfig


@pytest.mark.parametrize(
    ("mode", "compute", "fast_bf16", "expected"),
    [
        ("qlora", "auto", False, None),
        ("qlora", "auto", True, "bfloat16"),
        ("qlora", "bf16", False, "bfloat16"),
        ("full", "auto", True, None),
        ("full", "bf16", False, "bfloat16"),
    ],
)
def test_cpu_autocast_follows_the_compute_dtype(train_base, monkeypatch, mode, compute, fast_bf16, expected):
    """auto autocasts a QLoRA step to bf16 only on CPUs with native bf16 (elsewhere it is ~13x slower)."""
    import torch

    import sqltune.models.loading as loading
    from sqltune.train.model import build_model

    # The answer the CPU would give is what is varied here; the model is built for real either way.
    monkeypatch.setattr(loading, "cpu_has_fast_bf16", lambda: fast_bf16)
    overrides = [f"model.base={train_base}", f"model.mode={mode}", f"model.compute_dtype={compute}"]
    if mode == "full":
        overrides.append("lora.modules_to_save=[]")
    built = build_model(load_config(TrainConfig, None, overrides), "cpu")
    assert (str(built.autocast_dtype).replace("torch.", "") if built.autocast_dtype else None) == expected
    if mode == "qlora" and compute == "auto":
        assert built.compute_dtype == (torch.bfloat16 if fast_bf16 else torch.float32)
    # Trainable weights stay fp32 master copies; autocast only lowers the matmuls.
    assert all(p.dtype == torch.float32 for p in built.model.parameters() if p.requires_grad)
    ids = built.tokenizer("SELECT 1", return_tensors="pt")["input_ids"]
    ctx = torch.autocast("cpu", dtype=built.autocast_dtype) if built.autocast_dtype else contextlib.nullcontext()
    with ctx:
        loss = built.model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_merged_copy_decodes_like_the_adapter_model(train_base):
    """Validation's merged copy (de-quantized NF4 base + LoRA deltas, plain modules) gives the logits and
    the greedy tokens of the QLoRA model it was made from; with modules_to_save it declines (None)."""
    import torch

    from sqltune.train.model import build_model, merged_copy

    overrides = [f"model.base={train_base}", "model.mode=qlora", "model.compute_dtype=fp32", "lora.modules_to_save=[]"]
    built = build_model(load_config(TrainConfig, None, overrides), "cpu")
    model = built.model
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained adapter: non-zero deltas
    model.eval()
    plain = merged_copy(model, torch.float32, "cpu")
    assert not any("lora" in n for n, _ in plain.named_parameters())
    assert plain.generation_config.use_cache and not model.config.use_cache  # decodes with a KV cache
    ids = built.tokenizer("SELECT name FROM customers WHERE", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        got = plain(input_ids=ids).logits
        torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-3)
        kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": built.tokenizer.pad_token_id}
        assert torch.equal(plain.generate(ids, **kw), model.generate(input_ids=ids, **kw))
    with_embed = build_model(load_config(TrainConfig, None, [f"model.base={train_base}", "model.mode=qlora",
                                                             "lora.modules_to_save=[embed_tokens]"]), "cpu")
    assert merged_copy(with_embed.model, torch.float32, "cpu") is None
