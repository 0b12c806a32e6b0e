"""Loading base models, adapters and exported variants, the same way in every job and the server.

Model sources: a local directory, an ``s3://`` prefix holding a published artifact (downloaded once per
node through :func:`sqltune.storage.fetch_cached` and verified against its manifest), or a hub id (only
when the machine has network; never in tests).

Every sqltune artifact directory carries ``sqltune_artifact.json`` (kind, base model, precision, the
resolved config) and ``prompt_template.json``; :func:`load_for_inference` reads both so that evaluation
and serving build exactly the prompt training used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqltune.errors import ModelError, ResourceError, missing
from sqltune.prompts import TEMPLATE_FILE, PromptTemplate
from sqltune.storage import fetch_cached

log = logging.getLogger(__name__)

ARTIFACT_FILE = "sqltune_artifact.json"
Precision = Literal["auto", "fp32", "bf16", "fp16", "int8", "nf4"]
ArtifactKind = Literal["base", "adapter", "merged", "int8", "nf4"]


def resolve_source(uri: str) -> str:
    """A local directory for ``uri``: s3 artifacts are fetched and verified; hub ids pass through."""
    if uri.startswith("s3://"):
        return str(fetch_cached(uri))
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {uri!r} is a file; pass the directory that holds config.json")
        return str(path)
    if uri.startswith((".", "/", "~")) or uri.count("/") != 1:
        raise ModelError(
            f"model {uri!r} not found: not a local directory, not s3://, and not a hub id of the form org/name"
        )
    return uri  # hub id: transformers downloads it when the machine has network


def read_artifact_info(path: str | Path) -> dict[str, Any]:
    """The ``sqltune_artifact.json`` of a directory, or ``{}`` for a plain Hugging Face checkpoint."""
    p = Path(path) / ARTIFACT_FILE
    if not p.is_file():
        return {}
    return json.loads(p.read_text())


def write_artifact_info(path: str | Path, *, kind: ArtifactKind, **info: Any) -> Path:
    p = Path(path) / ARTIFACT_FILE
    p.write_text(json.dumps({"kind": kind, **info}, indent=2, sort_keys=True, default=str) + "\n")
    return p


def best_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ResourceError(f"device={device!r} but no CUDA GPU is visible; set device=cpu or run on a GPU node")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX-512 BF16 or AMX).

    Elsewhere oneDNN emulates bf16: on a 2-core AVX2 EPYC a 2048x256x704 matmul ran at 2 GFLOP/s in
    bf16 against 94 in fp32, so a bf16 compute dtype there makes a CPU step ~13x slower, not faster.
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch builds without oneDNN
        return False


def compute_dtype(device: str):
    """bf16 where the hardware has it, fp16 on older GPUs; on CPU bf16 only where it is native, else fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def quantization_config(precision: Precision, device: str, *, double_quant: bool = True):
    """bitsandbytes config for int8 / nf4, or None for unquantized precisions."""
    if precision not in ("int8", "nf4"):
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise missing("bitsandbytes", "model") from exc
    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype(device),
    )


def torch_dtype(precision: Precision, device: str):
    import torch

    return {
        "fp32": torch.float32,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
    }.get(precision, compute_dtype(device) if device.startswith("cuda") else torch.float32)


# Classes a checkpoint declares when its tokenizer.json is the whole definition of its tokenizer.
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def declared_tokenizer_class(source: str) -> str | None:
    """``tokenizer_class`` from a local checkpoint's tokenizer_config.json (None if absent or remote)."""
    path = Path(source) / "tokenizer_config.json"
    try:
        return json.loads(path.read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return None


def load_tokenizer(source: str):
    """The checkpoint's tokenizer, exactly as its tokenizer.json defines it.

    transformers 5's ``AutoTokenizer`` picks the tokenizer class from the model type (``Qwen2Tokenizer``
    for a qwen2 config) and that class rebuilds the pre-tokenizer from Qwen's regex, silently replacing the
    one saved in tokenizer.json. Hub Qwen checkpoints declare ``Qwen2Tokenizer`` and are unaffected; a
    checkpoint that declares the generic backend (the tiny model sqltune builds, with its own
    pre-tokenizer) is loaded through it, so training, evaluation and serving tokenize as it was built.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if declared_tokenizer_class(source) in GENERIC_TOKENIZER_CLASSES:
        tok = PreTrainedTokenizerFast.from_pretrained(source)
    else:
        tok = AutoTokenizer.from_pretrained(source)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    source: str,
    *,
    precision: Precision = "auto",
    device: str = "auto",
    double_quant: bool = True,
    attn_implementation: str | None = None,
):
    """``AutoModelForCausalLM.from_pretrained`` with sqltune's precision/quantization conventions."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as exc:  # pragma: no cover
        raise missing("transformers", "model") from exc
    dev = best_device(device)
    qconfig = quantization_config(precision, dev, double_quant=double_quant)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(precision, dev)}
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = {"": dev if dev != "cuda" else 0} if dev.startswith("cuda") else {"": "cpu"}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ModelError(f"cannot load model from {source!r}: {exc}") from None
    if qconfig is None:
        model.to(dev)
    return model


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    template: Any
    info: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    name: str = ""


def _is_adapter(local: str, info: dict[str, Any]) -> bool:
    return info.get("kind") == "adapter" or (Path(local) / "adapter_config.json").is_file()


def _adapter_base(uri: str, info: dict[str, Any], base_uri: str | None) -> str:
    """The local base model of adapter ``uri``: ``base_uri``, else the base its artifact records."""
    base = base_uri or info.get("base_model")
    if not base:
        raise ModelError(f"adapter {uri!r} records no base model; pass base_uri=<base model dir or s3 uri>")
    return resolve_source(base)


def _tokenizer_and_template(local: str, tok_src: str) -> tuple[Any, PromptTemplate]:
    template = PromptTemplate.load(local) if (Path(local) / TEMPLATE_FILE).is_file() else PromptTemplate()
    return load_tokenizer(tok_src), template


def load_for_inference(
    uri: str,
    *,
    base_uri: str | None = None,
    precision: Precision = "auto",
    device: str = "auto",
    name: str | None = None,
) -> LoadedModel:
    """Load a base model, a merged/quantized export, or an adapter (onto ``base_uri`` or its recorded base).

    The prompt template comes from the artifact when it has one (adapters and exports always do).
    """
    local = resolve_source(uri)
    info = read_artifact_info(local) if Path(local).is_dir() else {}
    kind = info.get("kind", "base")
    dev = best_device(device)
    if _is_adapter(local, info):
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise missing("peft", "model") from exc
        base_local = _adapter_base(uri, info, base_uri)
        model = load_causal_lm(base_local, precision=precision, device=dev)
        model = PeftModel.from_pretrained(model, local)
        tok_src = local if (Path(local) / "tokenizer_config.json").is_file() else base_local
    else:
        if precision == "auto" and kind in ("int8", "nf4"):
            precision = kind  # the export's own quantization is in its config.json
        model = load_causal_lm(local, precision=precision, device=dev)
        tok_src = local
    model.eval()
    tokenizer, template = _tokenizer_and_template(local, tok_src)
    log.info("loaded %s (%s) on %s", uri, kind, dev)
    return LoadedModel(model=model, tokenizer=tokenizer, template=template, info=info, device=dev, name=name or uri)


def load_tokenizer_and_template(uri: str, *, base_uri: str | None = None) -> tuple[Any, PromptTemplate]:
    """The tokenizer and prompt template :func:`load_for_inference` gives for ``uri``, without the model."""
    local = resolve_source(uri)
    info = read_artifact_info(local) if Path(local).is_dir() else {}
    tok_src = local
    if _is_adapter(local, info) and not (Path(local) / "tokenizer_config.json").is_file():
        tok_src = _adapter_base(uri, info, base_uri)
    return _tokenizer_and_template(local, tok_src)
