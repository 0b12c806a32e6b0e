"""int8 (bitsandbytes LLM.int8) and NF4 artifacts made from a merged model directory.

transformers 5 with bitsandbytes 0.50 serialises both 8-bit and 4-bit weights, on CPU as on GPU
(``save_pretrained`` writes the quantized tensors, their scales and ``quantization_config`` into
``config.json``; ``from_pretrained`` loads them back quantized). That is the default
(``serialization="quantized"``). Where serialisation fails (other versions, other backends), the
``on_load`` form saves the merged 16-bit weights and records the quantization in
``sqltune_artifact.json``: :func:`sqltune.models.loading.load_for_inference` quantizes such an artifact
while loading it, so consumers see the same kind either way. The artifact says which form it holds
(``serialization``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from sqltune.errors import ConfigError, ModelError
from sqltune.export.merge import _quiet, nf4_config

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin")
SKIP_COPY = {"sqltune_artifact.json", "manifest.json"}


def torch_dtype(name: str):
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def bnb_config(precision: str, *, dtype: str = "bf16", double_quant: bool = True):
    from transformers import BitsAndBytesConfig

    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if precision == "nf4":
        return nf4_config(torch_dtype(dtype), double_quant)
    raise ConfigError(f"export.precision={precision!r} is not a quantized precision: use int8 or nf4")


def _copy_side_files(src: Path, dst: Path, *, weights: bool, skip: frozenset[str] | set[str] = SKIP_COPY) -> None:
    """Copy tokenizer, template and config files (and, with ``weights``, the weights too)."""
    for item in src.iterdir():
        if not item.is_file() or item.name in skip or (dst / item.name).exists():
            continue
        is_weight = item.name.endswith(WEIGHT_SUFFIXES) or item.name.endswith(".index.json")
        if is_weight and not weights:
            continue
        shutil.copy2(item, dst / item.name)


def export_quantized(
    merged_dir: str | Path,
    out_dir: str | Path,
    precision: str,
    *,
    dtype: str = "bf16",
    device: str = "cpu",
    double_quant: bool = True,
    serialization: str = "auto",
) -> dict[str, Any]:
    """Write the ``precision`` ("int8" or "nf4") artifact of ``merged_dir`` into ``out_dir``.

    Returns what was done: ``{"serialization": "quantized"|"on_load", "quantization_config": {...},
    "fallback_reason": str|None}``; the caller records it in ``sqltune_artifact.json``.
    """
    from transformers import AutoModelForCausalLM

    src, out = Path(merged_dir), Path(out_dir)
    qcfg = bnb_config(precision, dtype=dtype, double_quant=double_quant)
    modes = ["quantized", "on_load"] if serialization == "auto" else [serialization]
    fallback_reason = None
    for mode in modes:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        if mode == "on_load":
            _copy_side_files(src, out, weights=True)
            break
        try:
            with _quiet():
                model = AutoModelForCausalLM.from_pretrained(
                    src, quantization_config=qcfg, dtype=torch_dtype(dtype),
                    device_map={"": 0 if device == "cuda" else device},
                )
                model.save_pretrained(out)
            del model
            _copy_side_files(src, out, weights=False)
            break
        except Exception as exc:  # noqa: BLE001 - any serialisation failure triggers the documented fallback
            if serialization != "auto":
                raise ModelError(f"{precision} export of {src} failed ({mode}): {exc}") from exc
            fallback_reason = f"{type(exc).__name__}: {exc}"
            log.warning("%s serialisation failed (%s); saving merged weights to be quantized on load", precision,
                        fallback_reason)
    return {
        "serialization": mode,
        "quantization_config": qcfg.to_dict(),
        "fallback_reason": fallback_reason,
    }
