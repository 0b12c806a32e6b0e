"""A tiny Qwen2-architecture causal LM and a BPE tokenizer trained locally, for CPU tests and the demo.

No hub access is needed: the tokenizer is trained with ``tokenizers`` on a corpus (by default the
embedded dataset's prompts and SQL), the model is a randomly initialised ``Qwen2ForCausalLM``, and both
are saved with ``save_pretrained`` so every consumer loads them through the normal ``from_pretrained``
path, exactly like a real Qwen2.5 checkpoint (same module names: q/k/v/o_proj, gate/up/down_proj).

Optionally (``induction_steps > 0``, what the demo uses) the random model is pre-trained, in full, on
sequences of *random token ids* in which spans repeat: predicting a repeat needs an induction circuit
(find the earlier occurrence of the current token, copy what followed it), the generic in-context copying
that real pre-trained bases have and that a text-to-SQL model uses to copy values from the question. The
sequences hold no text, SQL or data, so the base still knows nothing of the task. Measured on an H200
(docs/benchmarks.md): QLoRA from a random base starts copying values after
~600-1,500 steps of 16 examples; after 1,000 such pre-training steps of 32 x 32 tokens (the demo's) it does
by ~150-250 and reaches 0.72-0.80 whole-SQL accuracy by 500.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqltune.config import Config, load_config, param
from sqltune.data.embedded import embedded_examples
from sqltune.errors import ConfigError, missing
from sqltune.log import setup_logging
from sqltune.models.loading import cpu_has_fast_bf16
from sqltune.prompts import PromptTemplate, build_messages

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen2.5's pre-tokenizer split (transformers' Qwen2Tokenizer uses the same).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5's ChatML template, reduced to what sqltune uses (system/user/assistant turns).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class TinyModelConfig(Config):
    """Shape of the tiny model; the defaults build a ~4M-parameter model in seconds."""

    vocab_size: int = param(2048, "BPE vocabulary size (special tokens included).", min=300)
    hidden_size: int = param(256, "Hidden size; a multiple of 64 keeps NF4 blocks aligned.", min=64)
    num_layers: int = param(4, "Transformer layers.", min=1)
    num_heads: int = param(4, "Attention heads.", min=1)
    num_kv_heads: int = param(2, "Key/value heads (grouped-query attention, as in Qwen2.5).", min=1)
    intermediate_size: int = param(704, "MLP width.", min=64)
    max_position_embeddings: int = param(2048, "Longest sequence the model accepts.", min=128)
    rope_theta: float = param(10000.0, "RoPE base; smaller values give more high-frequency (position-sharp) pairs.",
                              min=1.0)
    seed: int = param(0, "Seed for the tokenizer corpus order, the weight initialisation and pre-training.")
    induction_steps: int = param(
        0, "Pre-train the random model for this many steps on random token spans that repeat (induction / "
        "in-context copying); 0 = leave it random.", min=0,
    )
    induction_batch: int = param(16, "Sequences per induction pre-training step.", min=1)
    induction_length: int = param(32, "Tokens per induction pre-training sequence.", min=4)
    induction_lr: float = param(1e-3, "Peak AdamW learning rate of the induction pre-training (2e-3 and up "
                                      "were measured to undo its benefit).", min=0.0)
    induction_precision: Literal["fp32", "bf16", "auto"] = param(
        "fp32", "Matmul precision of the induction pre-training: fp32, bf16 autocast (fp32 master weights), or "
        "auto = bf16 on a CPU with native bf16 (AVX-512 BF16/AMX; 32 x 32-token steps 0.19 -> 0.13 s on 2 "
        "cores) and fp32 elsewhere (GPU, and AVX2 CPUs where bf16 is emulated and ~13x slower).",
    )

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads {self.num_heads} must be divisible by num_kv_heads {self.num_kv_heads}")


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer with ChatML."""
    try:
        from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast
    except ImportError as exc:  # pragma: no cover - exercised only without the model extra
        raise missing("transformers/tokenizers", "model") from exc

    tok = Tokenizer(models.BPE(unk_token=None))
    # Merges are learned on pre-tokens that isolate whitespace runs, punctuation, "_" and single digits, so
    # no merge ever joins a space or a quote to a word: "Netherlands" keeps the same ids in the question and
    # in 'Netherlands' in the SQL. (Qwen's own BPE glues the leading space or quote to the word, which a tiny
    # random model cannot learn to copy across in a few minutes.)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s+|[^\w\s]|_|\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Then it pre-tokenizes exactly as Qwen2.5 does (NFC, Qwen's split regex: digits one by one). For a
    # qwen2 config transformers' AutoTokenizer builds Qwen2Tokenizer, which imposes these two whatever
    # tokenizer.json says; saving them makes tokenizer.json, AutoTokenizer and sqltune's load_tokenizer
    # tokenize alike. With the merges above, the result equals the isolating split (a test pins it).
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=2048,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_model(cfg: TinyModelConfig, tokenizer):
    """A randomly initialised Qwen2ForCausalLM matching the tokenizer."""
    try:
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM
    except ImportError as exc:  # pragma: no cover
        raise missing("torch/transformers", "model") from exc

    torch.manual_seed(cfg.seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def induction_batch(vocab: Any, batch: int, length: int, generator: Any) -> tuple[Any, Any]:
    """``(input_ids, labels)`` of ``batch`` sequences of random spans of 2-12 tokens, about half repeats.

    A repeat copies an earlier span of the same sequence; labels are set on a repeat's tokens after its
    first (which nothing predicts) and -100 elsewhere, so the loss rewards induction alone.
    """
    import torch

    ids, labels = [], []
    for _ in range(batch):
        seq: list[int] = []
        lab: list[int] = []
        spans: list[list[int]] = []
        while len(seq) < length:
            if spans and float(torch.rand(1, generator=generator)) < 0.5:
                span = spans[int(torch.randint(len(spans), (1,), generator=generator))]
                lab += [-100] + span[1:]
            else:
                n = int(torch.randint(2, 13, (1,), generator=generator))
                span = vocab[torch.randint(len(vocab), (n,), generator=generator)].tolist()
                spans.append(span)
                lab += [-100] * len(span)
            seq += span
        ids.append(seq[:length])
        labels.append(lab[:length])
    return torch.tensor(ids), torch.tensor(labels)


def pretrain_induction(model: Any, tokenizer: Any, cfg: TinyModelConfig, make_batch: Any = None) -> list[float]:
    """Full-parameter AdamW pre-training of ``model`` on :func:`induction_batch` sequences; returns the losses.

    Warm-up over 30 steps, then linear decay to 0, on the model's device, in ``cfg.induction_precision``.
    On 2 AVX-512 cores a step of 32 x 32 tokens takes about 0.19 s in fp32 and 0.13 s under bf16 autocast
    (16 x 32 in fp32: 0.1 s; 0.2 s on an AVX2-only CPU). ``make_batch(vocab, batch, length, generator)`` replaces
    :func:`induction_batch` (benchmarks/tiny_recipe.py compares other sequence layouts).
    """
    import torch

    make_batch = make_batch or induction_batch
    device = next(model.parameters()).device
    precision = cfg.induction_precision
    if precision == "auto":
        precision = "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    special = set(tokenizer.all_special_ids)
    vocab = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.induction_steps
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.induction_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * max(0.0, 1 - s / steps))
    model.train()
    losses: list[float] = []
    for step in range(1, steps + 1):
        ids, labels = make_batch(vocab, cfg.induction_batch, cfg.induction_length, gen)
        with autocast():
            loss = model(input_ids=ids.to(device), labels=labels.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 100 == 0 or step == steps:
            log.info("induction pre-training step %d/%d: loss %.3f", step, steps, sum(losses[-50:]) / len(losses[-50:]))
    model.eval()
    log.info("induction pre-training done (%s)", precision)
    return losses


def default_corpus(seed: int = 0) -> list[str]:
    """Texts the tokenizer learns from: the embedded dataset's prompts and SQL, rendered as ChatML."""
    template = PromptTemplate()
    texts: list[str] = []
    for ex in embedded_examples(seed=seed):
        for msg in build_messages(ex.question, ex.schema, dialect=ex.dialect, evidence=ex.evidence, template=template):
            texts.append(msg["content"])
        texts.append(ex.sql)
        for sql in ex.extra.get("sql_by_dialect", {}).values():
            texts.append(sql)
    return texts


def build_tiny_model(
    out_dir: str | Path,
    cfg: TinyModelConfig | None = None,
    corpus: Iterable[str] | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Train the tokenizer, build the model (pre-trained if asked), ``save_pretrained`` both into ``out_dir``.

    With ``cache_dir``, a pre-trained model is kept there under a key of its config and tokenizer, and a
    later build with the same key copies it instead of pre-training again.
    """
    cfg = cfg or TinyModelConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus is not None else default_corpus(cfg.seed)
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    tokenizer.save_pretrained(out)
    (out / "tiny_model.yaml").write_text(cfg.to_yaml())
    cached = None
    if cache_dir is not None and cfg.induction_steps:
        key = hashlib.sha256((out / "tokenizer.json").read_bytes() + cfg.to_yaml().encode()).hexdigest()[:16]
        cached = Path(cache_dir) / f"tiny-{key}"
        if (cached / "model.safetensors").is_file():
            for name in ("model.safetensors", "config.json", "generation_config.json"):
                shutil.copy2(cached / name, out / name)
            log.info("tiny model: pre-trained weights from the cache %s", cached)
            return out
    model = build_model(cfg, tokenizer)
    if cfg.induction_steps:
        pretrain_induction(model, tokenizer, cfg)
    model.save_pretrained(out, safe_serialization=True)
    if cached is not None:
        tmp = cached.with_name(cached.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(out, tmp)
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)  # whole or absent: an interrupted build never leaves a partial cache entry
    n = sum(p.numel() for p in model.parameters())
    log.info("built tiny Qwen2 model at %s: %.2fM parameters, vocab %d", out, n / 1e6, len(tokenizer))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m sqltune.models.tiny --config jobs/configs/tiny-base.yaml --out DIR [key=value ...]``."""
    ap = argparse.ArgumentParser(description="Build the tiny Qwen2 base model (tokenizer + weights) into --out.")
    ap.add_argument("--config", default=None, help="TinyModelConfig YAML (e.g. jobs/configs/tiny-base.yaml)")
    ap.add_argument("--out", required=True, help="output directory (save_pretrained layout)")
    ap.add_argument("--cache-dir", default=None, help="keep/reuse pre-trained weights here")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. induction_steps=0")
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(TinyModelConfig, args.config, args.overrides)
    build_tiny_model(args.out, cfg, cache_dir=args.cache_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
