"""Building the model to train: QLoRA (NF4 + LoRA), LoRA on a 16-bit base, or full fine-tuning.

QLoRA follows the recipe of the projects sqltune replaces: bitsandbytes NF4 with double quantization and
bf16 compute (fp16 on GPUs without bf16), then LoRA adapters on the configured modules (default every
linear projection). On bf16 GPUs the frozen non-quantized weights (embeddings, norms, head) stay bf16 and
the forward pass runs under bf16 autocast, with the LoRA weights kept as fp32 master copies.
``peft.prepare_model_for_kbit_training`` (used elsewhere) upcasts those frozen weights to fp32, which
makes the embeddings, hence the whole residual stream, attention and LoRA inputs fp32: on an H200 the
Qwen2.5-3B step ran at about half the speed with it (benchmarks/bench_train.py measures both). ``modules_to_save`` trains whole modules with
the adapter (the tiny model's embeddings); with tied input/output embeddings the trainable copy stays
tied (``ensure_weight_tying``), so a merged export keeps the tie.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch

from sqltune.errors import ConfigError, ModelError, missing
from sqltune.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    model: Any
    tokenizer: Any
    base_dir: str
    trainable_params: int
    total_params: int
    compute_dtype: Any
    autocast_dtype: Any | None
    """dtype for ``torch.autocast`` in the forward pass (every mode on bf16 GPUs, full on fp16 GPUs;
    full/QLoRA on CPU when ``model.compute_dtype`` asks for bf16), or None."""


def compute_dtype(cfg: TrainConfig, device: str):
    choice = cfg.model.compute_dtype
    if choice == "fp32":
        return torch.float32
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp16":
        return torch.float16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # CPU: NF4 de-quantizes into this dtype for its matmuls. bf16 only where the CPU runs it natively
    # (AVX-512 BF16 / AMX); elsewhere it is emulated and ~13x slower than fp32. LoRA/full on CPU train in
    # fp32 (see build_model).
    from sqltune.models.loading import cpu_has_fast_bf16

    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def _device_map(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return {"": index}
    return {"": "cpu"}


def build_model(cfg: TrainConfig, device: str, base_dir: str | None = None) -> BuiltModel:
    """Load the base model from ``cfg.model.base`` (or an already-resolved ``base_dir``) ready to train."""
    try:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    except ImportError as exc:  # pragma: no cover
        raise missing("torch/transformers", "train") from exc
    from sqltune.models.loading import load_tokenizer, resolve_source

    local = base_dir or resolve_source(cfg.model.base)
    tokenizer = load_tokenizer(local)
    mode = cfg.model.mode
    cdtype = compute_dtype(cfg, device)
    on_gpu = device.startswith("cuda")
    # bf16 GPUs: frozen weights stay bf16 and the forward runs under bf16 autocast (LoRA's fp32 master
    # weights then take bf16 inputs; without autocast peft casts every LoRA input to fp32).
    fast16 = on_gpu and cdtype == torch.bfloat16
    kwargs: dict[str, Any] = {}
    if cfg.model.attn_implementation:
        from sqltune.train.fast import PACKED_SDPA, register_packed_sdpa

        if cfg.model.attn_implementation == PACKED_SDPA:
            register_packed_sdpa()
        kwargs["attn_implementation"] = cfg.model.attn_implementation
    autocast = None
    if cfg.model.liger:
        from sqltune.train.fast import apply_liger

        if not apply_liger(getattr(_read_config(local), "model_type", "")):
            log.warning("model.liger=true but liger_kernel is not installed (or not for this model); continuing without")
    if mode == "qlora":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise missing("bitsandbytes", "train") from exc
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=cfg.model.double_quant,
            bnb_4bit_compute_dtype=cdtype,
            bnb_4bit_quant_storage=torch.uint8,
        )
        kwargs["device_map"] = _device_map(device)
        # Non-quantized weights (embeddings, norms, head) load in the compute dtype on GPU;
        # prepare_model_for_kbit_training then upcasts the trainable-sensitive ones to fp32.
        kwargs["dtype"] = cdtype if on_gpu else torch.float32
        # On CPU the fp32 LoRA/embedding matmuls dominate a tiny model's step; CPUs with AVX-512 BF16 or
        # AMX run them ~1.3x faster under bf16 autocast (docs/benchmarks.md), so a
        # bf16 compute dtype (auto picks it only on such CPUs) autocasts too.
        autocast = cdtype if (fast16 or (not on_gpu and cdtype == torch.bfloat16)) else None
    elif mode == "lora":
        # "Plain LoRA in bf16": a 16-bit frozen base on GPU; fp32 on CPU unless asked (CPU bf16 is slow).
        kwargs["dtype"] = cdtype if (on_gpu or cfg.model.compute_dtype != "auto") else torch.float32
        autocast = cdtype if fast16 else None
    else:  # full fine-tuning: fp32 master weights, bf16/fp16 autocast on GPU
        kwargs["dtype"] = torch.float32
        autocast = cdtype if (on_gpu or cfg.model.compute_dtype in ("bf16", "fp16")) else None
    try:
        model = AutoModelForCausalLM.from_pretrained(local, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load base model {cfg.model.base!r} from {local}: {exc}") from None
    if mode != "qlora":
        model.to(device)
    else:
        _keep_trainable_4bit_layout(model)
    model.config.use_cache = False
    gc_kwargs = {"use_reentrant": False}

    if mode == "qlora" and fast16:
        _freeze_16bit(model, cfg.model.gradient_checkpointing, gc_kwargs)
    elif mode == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.model.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
    elif cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        if mode == "lora":
            model.enable_input_require_grads()

    if mode in ("qlora", "lora"):
        model = _add_lora(model, cfg)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    if cfg.model.selective_checkpointing:
        from sqltune.train.fast import enable_selective_checkpointing

        enable_selective_checkpointing(model)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "model %s (%s, compute %s): %.2fM trainable of %.2fM parameters",
        cfg.model.base, mode, str(cdtype).replace("torch.", ""), trainable / 1e6, total / 1e6,
    )
    return BuiltModel(model, tokenizer, local, trainable, total, cdtype, autocast)


def _freeze_16bit(model: Any, checkpointing: bool, gc_kwargs: dict[str, Any]) -> None:
    """``prepare_model_for_kbit_training`` without its fp32 upcast: freeze every weight and enable
    (non-reentrant, so no input-gradient hook is needed) gradient checkpointing if asked."""
    for p in model.parameters():
        p.requires_grad_(False)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)


def _read_config(local: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(local)
    except (OSError, ValueError):
        return None


def _keep_trainable_4bit_layout(model: Any) -> None:
    """Stop bitsandbytes (>= 0.49) from repacking NF4 weights into its CPU inference layout.

    On CPUs with AVX512-BF16, ``Linear4bit.forward`` in eval mode without grad (our eval loss and greedy
    decoding) permanently converts the weight to a packed layout whose matmul has no autograd support;
    training after the first evaluation then fails ("a view of a leaf Variable ... in-place operation")
    or silently stops gradients through the frozen base. Training models keep the trainable layout.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _add_lora(model: Any, cfg: TrainConfig):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise missing("peft", "train") from exc
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [m for m in cfg.lora.target_modules if m not in names]
    if unknown:
        raise ConfigError(
            f"lora.target_modules: {unknown} not found in {cfg.model.base}; its module names include "
            f"{sorted(n for n in names if n.endswith('proj'))}"
        )
    unknown_save = [m for m in cfg.lora.modules_to_save if m not in names]
    if unknown_save:
        raise ConfigError(f"lora.modules_to_save: {unknown_save} not found in {cfg.model.base}")
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    touches_tied = any(m in ("embed_tokens", "lm_head") for m in cfg.lora.modules_to_save)
    lcfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        modules_to_save=list(cfg.lora.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
        ensure_weight_tying=tied and touches_tied,
    )
    return get_peft_model(model, lcfg)


def merged_copy(model: Any, dtype: Any, device: Any) -> Any | None:
    """A plain transformers model (no PEFT, no bitsandbytes) whose weights are the de-quantized base plus
    the LoRA deltas, in ``dtype`` on ``device``: what validation decodes with on GPU.

    Greedy decoding of the training model is bound by the host (every step walks ~250 PEFT/bitsandbytes
    modules): one validation of the Qwen2.5-3B preset on an H200 (eval loss on 160 examples, 64 examples
    decoded to 160 tokens in one batch) took 55 s with it. The merged copy decodes with plain modules. None when the model has parts this does not merge (modules_to_save).
    """
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    inner = unwrap(model)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    if any(type(m).__name__ == "ModulesToSaveWrapper" for m in base.modules()):
        return None

    def dense(layer: Any) -> Any:
        w = layer.weight
        if type(w).__name__ == "Params4bit":
            import bitsandbytes.functional as bnbf

            return bnbf.dequantize_4bit(w.data, w.quant_state).to(dtype)
        return w.data.to(dtype)

    cfg = copy.deepcopy(base.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    # Training turns the KV cache off in the config; a generation config derived from it would decode
    # without a cache (every step a forward over the whole sequence so far).
    cfg.use_cache = True
    with torch.device(device):
        plain = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    plain.generation_config.use_cache = True
    plain.eval()
    params = dict(plain.named_parameters())
    done: set[str] = set()
    with torch.no_grad():
        for name, mod in base.named_modules():
            if isinstance(mod, LoraLayer):
                layer = mod.get_base_layer()
                w = dense(layer)
                for adapter in mod.active_adapters:
                    if adapter in mod.lora_A:
                        w += mod.get_delta_weight(adapter).to(dtype)
            elif type(mod).__name__ == "Linear4bit" and name + ".weight" in params:
                layer, w = mod, dense(mod)
            else:
                continue
            params[name + ".weight"].copy_(w)
            done.add(name + ".weight")
            if getattr(layer, "bias", None) is not None:
                params[name + ".bias"].copy_(layer.bias.data)
                done.add(name + ".bias")
            del w
        for pname, p in base.named_parameters():
            if pname in params and pname not in done and ".base_layer." not in pname and "lora_" not in pname:
                params[pname].copy_(p.data)
                done.add(pname)
    plain.tie_weights()
    missing_names = [n for n in params if n not in done and not (n == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing_names:
        raise ModelError(f"merged validation copy: no weights for {missing_names[:3]}")
    return plain


def unwrap(model: Any) -> Any:
    """The model inside a DDP wrapper."""
    return getattr(model, "module", model)


def trainable_state(model: Any) -> dict[str, Any]:
    """Trainable tensors only (adapter + modules_to_save, or everything for full fine-tuning)."""
    inner = unwrap(model)
    return {n: p.detach().cpu().clone() for n, p in inner.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    inner = unwrap(model)
    params = dict(inner.named_parameters())
    missing_names = [n for n in state if n not in params]
    if missing_names:
        raise ModelError(
            f"checkpoint does not match the model: {len(missing_names)} tensors unknown (e.g. {missing_names[0]}); "
            "was the config (lora.r, target_modules, base) changed between runs of the same run_name?"
        )
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def save_for_publish(model: Any, tokenizer: Any, out_dir: str, mode: str) -> None:
    """PEFT adapter files (or the full model) plus the tokenizer, as the published artifact holds them."""
    inner = unwrap(model)
    inner.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
