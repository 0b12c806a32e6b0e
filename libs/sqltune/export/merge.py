"""Merging a LoRA adapter into its base model, and measuring what the choice of merge base costs.

QLoRA trains the adapter against the NF4-quantized base: the forward pass training saw is
``dequant(quant(W)) x + B A x``. Merging ``B A`` into the original weights gives ``W + B A``, which differs
from what training saw by the quantization error of ``W``; merging into ``dequant(quant(W))`` reproduces
the training-time forward pass exactly, but carries the quantization error into a 16-bit model. Which one
serves better is an empirical question, so the choice is explicit (``merge_base``) and
:func:`measure_merge_choices` reports the logit difference of each choice against the adapter on the
NF4 base (and, as a correctness check, against the adapter on the full-precision base).
"""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqltune.errors import ModelError, missing

try:
    import torch
except ImportError as exc:  # pragma: no cover - torch comes with the model extra
    raise missing("torch", "model") from exc

log = logging.getLogger(__name__)

# Prompts used to compare logits; rendered with the adapter's prompt template and tokenizer.
PROBE_ITEMS = [
    {
        "question": "How many customers signed up in 2024?",
        "schema": "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, country TEXT, signup_date DATE);",
        "sql": "SELECT COUNT(*) FROM customers WHERE signup_date >= '2024-01-01' AND signup_date < '2025-01-01'",
    },
    {
        "question": "What is the total revenue per product category?",
        "schema": (
            "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, category TEXT, price REAL);\n"
            "CREATE TABLE order_items (order_id INTEGER, product_id INTEGER, quantity INTEGER, unit_price REAL);"
        ),
        "sql": (
            "SELECT p.category, SUM(oi.quantity * oi.unit_price) AS revenue FROM order_items oi "
            "JOIN products p ON p.id = oi.product_id GROUP BY p.category"
        ),
    },
    {
        "question": "List the ten customers with the highest churn probability.",
        "schema": "CREATE TABLE churn_predictions (customer_id INTEGER, churn_probability REAL, scored_at DATE);",
        "sql": "SELECT customer_id FROM churn_predictions ORDER BY churn_probability DESC LIMIT 10",
    },
    {
        "question": "Which subscriptions are active?",
        "schema": "CREATE TABLE subscriptions (id INTEGER, customer_id INTEGER, plan TEXT, status TEXT);",
        "sql": "SELECT id FROM subscriptions WHERE status = 'active'",
    },
]


@contextmanager
def _quiet():
    """Silence the per-call bitsandbytes/transformers warnings that flood CPU runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def nf4_config(compute_dtype: Any, double_quant: bool = True):
    """The bitsandbytes NF4 config QLoRA training uses (block size 64, optional double quantization)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_base(source: str, *, how: str, device: str, double_quant: bool = True):
    """The base model in fp32, prepared for ``how``:

    - ``original``: the checkpoint's weights, upcast to fp32;
    - ``nf4``: quantized to NF4 (fp32 compute), the forward pass QLoRA training saw;
    - ``dequantized``: quantized to NF4 and de-quantized back to fp32 ``nn.Linear`` weights.
    """
    from transformers import AutoModelForCausalLM

    try:
        with _quiet():
            if how == "original":
                model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
                model.to(device)
            elif how in ("nf4", "dequantized"):
                dev_map = {"": 0 if device == "cuda" else device}
                model = AutoModelForCausalLM.from_pretrained(
                    source, dtype=torch.float32, device_map=dev_map,
                    quantization_config=nf4_config(torch.float32, double_quant),
                )
                if how == "dequantized":
                    model = model.dequantize()
                    model.to(torch.float32)
            else:
                raise ValueError(f"unknown base preparation {how!r}")
    except OSError as exc:
        raise ModelError(f"cannot load base model from {source!r}: {exc}") from None
    model.eval()
    return model


def attach_adapter(model, adapter_dir: str):
    """``PeftModel.from_pretrained`` with a ModelError naming the adapter on failure."""
    try:
        from peft import PeftModel
    except ImportError as exc:  # pragma: no cover
        raise missing("peft", "model") from exc
    try:
        with _quiet():
            peft_model = PeftModel.from_pretrained(model, adapter_dir)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"cannot apply adapter {adapter_dir!r} to its base model: {exc}") from None
    peft_model.eval()
    return peft_model


def merge_adapter(base_dir: str, adapter_dir: str, *, merge_base: str = "original", device: str = "cpu",
                  double_quant: bool = True):
    """Base + adapter merged with ``merge_and_unload``, in fp32 (cast by the caller before saving)."""
    how = "original" if merge_base == "original" else "dequantized"
    base = load_base(base_dir, how=how, device=device, double_quant=double_quant)
    peft_model = attach_adapter(base, adapter_dir)
    with _quiet():
        merged = peft_model.merge_and_unload()
    merged.eval()
    # A de-quantized base still carries its quantization_config; the merged model is plain 16-bit.
    for attr in ("quantization_config",):
        if hasattr(merged.config, attr):
            delattr(merged.config, attr)
    for attr in ("is_quantized", "is_loaded_in_4bit", "is_loaded_in_8bit"):
        if getattr(merged, attr, False):
            try:
                setattr(merged, attr, False)
            except AttributeError:
                pass
    if getattr(merged, "hf_quantizer", None) is not None:
        merged.hf_quantizer = None
    return merged


def probe_inputs(tokenizer, template=None) -> dict[str, Any]:
    """Tokenized probe prompts (each prompt followed by its gold SQL, so the SQL positions count too)."""
    from sqltune.generation.generate import prompts_for

    prompts = prompts_for(tokenizer, PROBE_ITEMS, template)
    texts = [p + it["sql"] for p, it in zip(prompts, PROBE_ITEMS)]
    tokenizer.padding_side = "right"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def logits_of(model, inputs: dict[str, Any]):
    device = next(model.parameters()).device
    with torch.inference_mode(), _quiet():
        out = model(**{k: v.to(device) for k, v in inputs.items()})
    return out.logits.float().cpu()


def logit_diff(a, b, mask) -> dict[str, float]:
    """Max and mean absolute logit difference over real (non-pad) positions, and top-1 agreement."""
    m = mask.bool()
    diff = (a - b).abs()[m]
    agree = (a.argmax(-1) == b.argmax(-1))[m].float().mean()
    return {
        "max_abs_logit_diff": float(diff.max()) if diff.numel() else 0.0,
        "mean_abs_logit_diff": float(diff.mean()) if diff.numel() else 0.0,
        "top1_agreement": float(agree) if m.any() else 1.0,
        "positions": int(m.sum()),
    }


def measure_merge_choices(base_dir: str, adapter_dir: str, tokenizer, template=None, *, device: str = "cpu",
                          double_quant: bool = True) -> dict[str, Any]:
    """Logit differences of each merge choice, all computed in fp32 on the same probe prompts.

    Reference ``nf4_adapter``: the adapter applied (unmerged) to the NF4 base with fp32 compute, the
    forward pass QLoRA training optimised. Also reported: ``fp32_adapter`` (the adapter unmerged on the
    original base) against the original merge, which must agree to float rounding (a correctness check
    of the merge itself).
    """
    inputs = probe_inputs(tokenizer, template)
    mask = inputs["attention_mask"]
    ref_nf4 = logits_of(attach_adapter(load_base(base_dir, how="nf4", device=device, double_quant=double_quant),
                                       adapter_dir), inputs)
    ref_fp32 = logits_of(attach_adapter(load_base(base_dir, how="original", device=device), adapter_dir), inputs)
    merged = {
        choice: logits_of(merge_adapter(base_dir, adapter_dir, merge_base=choice, device=device,
                                        double_quant=double_quant), inputs)
        for choice in ("original", "dequantized")
    }
    result = {
        "reference": "adapter unmerged on the NF4 base (fp32 compute): the forward pass QLoRA training saw",
        "vs_nf4_adapter": {choice: logit_diff(lg, ref_nf4, mask) for choice, lg in merged.items()},
        "vs_fp32_adapter": {choice: logit_diff(lg, ref_fp32, mask) for choice, lg in merged.items()},
        "probes": len(PROBE_ITEMS),
        "double_quant": double_quant,
    }
    closer = min(result["vs_nf4_adapter"], key=lambda c: result["vs_nf4_adapter"][c]["mean_abs_logit_diff"])
    result["closest_to_training"] = closer
    return result


def adapter_base(adapter_dir: str | Path) -> str | None:
    """The base model an adapter records: sqltune_artifact.json's base_model, else PEFT's config."""
    from sqltune.models.loading import read_artifact_info

    info = read_artifact_info(adapter_dir)
    if info.get("base_model"):
        return str(info["base_model"])
    cfg = Path(adapter_dir) / "adapter_config.json"
    if cfg.is_file():
        base = json.loads(cfg.read_text()).get("base_model_name_or_path")
        return str(base) if base else None
    return None
