"""sqltune.train.model: what build_model trains in, on CPU."""

from __future__ import annotations

import contextlib

import pytest

from sqltune.config import load_config
from sqltune.train.config import TrainConfig


@pytest.mark.parametrize(
    ("mode", "compute", "expected"),
    [("qlora", "auto", None), ("qlora", "bf16", "bfloat16"), ("full", "auto", None), ("full", "bf16", "bfloat16")],
)
def test_cpu_autocast_only_when_bf16_is_asked_for(train_base, mode, compute, expected):
    import torch

    from sqltune.train.model import build_model

    overrides = [f"model.base={train_base}", f"model.mode={mode}", f"model.compute_dtype={compute}"]
    if mode == "full":
        overrides.append("lora.modules_to_save=[]")
    built = build_model(load_config(TrainConfig, None, overrides), "cpu")
    assert (str(built.autocast_dtype).replace("torch.", "") if built.autocast_dtype else None) == expected
    # Trainable weights stay fp32 master copies; autocast only lowers the matmuls.
    assert all(p.dtype == torch.float32 for p in built.model.parameters() if p.requires_grad)
    ids = built.tokenizer("SELECT 1", return_tensors="pt")["input_ids"]
    ctx = torch.autocast("cpu", dtype=built.autocast_dtype) if built.autocast_dtype else contextlib.nullcontext()
    with ctx:
        loss = built.model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
