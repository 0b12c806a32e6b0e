"""A tiny Qwen2-architecture causal LM and a BPE tokenizer trained locally, for CPU tests and the demo.

No hub access is needed: the tokenizer is trained with ``tokenizers`` on a corpus (by default the
embedded dataset's prompts and SQL), the model is a randomly initialised ``Qwen2ForCausalLM``, and both
are saved with ``save_pretrained`` so every consumer loads them through the normal ``from_pretrained``
path, exactly like a real Qwen2.5 checkpoint (same module names: q/k/v/o_proj, gate/up/down_proj).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqltune.config import Config, param
from sqltune.errors import missing

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
    seed: int = param(0, "Seed for the tokenizer corpus order and the weight initialisation.")

    def validate(self) -> None:
        from sqltune.errors import ConfigError

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


def default_corpus(seed: int = 0) -> list[str]:
    """Texts the tokenizer learns from: the embedded dataset's prompts and SQL, rendered as ChatML."""
    from sqltune.data.embedded import embedded_examples
    from sqltune.prompts import PromptTemplate, build_messages

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
    out_dir: str | Path, cfg: TinyModelConfig | None = None, corpus: Iterable[str] | None = None
) -> Path:
    """Train the tokenizer, build the model, ``save_pretrained`` both into ``out_dir``; returns it."""
    cfg = cfg or TinyModelConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus is not None else default_corpus(cfg.seed)
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    model = build_model(cfg, tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tiny_model.yaml").write_text(cfg.to_yaml())
    n = sum(p.numel() for p in model.parameters())
    log.info("built tiny Qwen2 model at %s: %.2fM parameters, vocab %d", out, n / 1e6, len(tokenizer))
    return out
