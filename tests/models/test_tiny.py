from __future__ import annotations

import pytest

from sqltune.errors import ConfigError
from sqltune.models.tiny import TinyModelConfig


def test_tiny_model_loads_through_from_pretrained(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    ids = tok("SELECT name FROM customers", return_tensors="pt")["input_ids"]
    assert tok.decode(ids[0]) == "SELECT name FROM customers"
    with torch.no_grad():
        out = model(ids)
    assert out.logits.shape == (1, ids.shape[1], len(tok))


def test_tiny_build_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from sqltune.models.tiny import build_tiny_model

    cfg = TinyModelConfig(vocab_size=300, hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                          intermediate_size=64)
    corpus = ["SELECT a FROM t WHERE b = 1"] * 10
    a = load_file(build_tiny_model(tmp_path / "a", cfg, corpus) / "model.safetensors")
    b = load_file(build_tiny_model(tmp_path / "b", cfg, corpus) / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_tiny_config_validation():
    with pytest.raises(ConfigError, match="hidden_size 100 must be divisible by num_heads 3"):
        TinyModelConfig.from_dict({"hidden_size": 100, "num_heads": 3, "num_kv_heads": 1})


@pytest.mark.parametrize("precision", ["fp32", "nf4", "int8"])
def test_load_for_inference_and_generate(tiny_model_dir, precision):
    from sqltune.generation.generate import generate_batch, prompts_for
    from sqltune.models.loading import load_for_inference

    lm = load_for_inference(str(tiny_model_dir), precision=precision, device="cpu")
    prompts = prompts_for(lm.tokenizer, [{"question": "How many?", "schema": "CREATE TABLE t (a INT)"}] * 2,
                          lm.template)
    gens = generate_batch(lm.model, lm.tokenizer, prompts, max_new_tokens=5)
    assert len(gens) == 2 and all(0 <= g.output_tokens <= 5 for g in gens)
    # Greedy decoding of identical prompts in one batch gives identical text.
    assert gens[0].text == gens[1].text
    if precision == "nf4":
        import bitsandbytes as bnb

        assert isinstance(lm.model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)


def test_missing_model_path_is_named():
    from sqltune.errors import ModelError
    from sqltune.models.loading import resolve_source

    with pytest.raises(ModelError, match=r"model './nowhere' not found"):
        resolve_source("./nowhere")


def test_tiny_tokenizer_is_the_same_through_every_loader(tiny_model_dir):
    """tokenizer.json, AutoTokenizer (which builds Qwen2Tokenizer for a qwen2 config and imposes Qwen's
    pre-tokenizer) and sqltune's load_tokenizer split alike: digits one by one, a value keeps its ids in
    the question and inside the SQL's quotes."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from sqltune.models.loading import load_tokenizer

    text = "Orders of Karin Hernandez in 2024 with total_amount > 50?\nWHERE c.name = 'Karin Hernandez'"
    raw = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")).encode(text).ids
    assert AutoTokenizer.from_pretrained(tiny_model_dir)(text, add_special_tokens=False)["input_ids"] == raw
    tok = load_tokenizer(str(tiny_model_dir))
    assert tok(text, add_special_tokens=False)["input_ids"] == raw
    pieces = tok.convert_ids_to_tokens(raw)
    assert pieces[pieces.index("2"):pieces.index("2") + 4] == ["2", "0", "2", "4"]
    name_ids = tok(" Karin Hernandez", add_special_tokens=False)["input_ids"][1:]
    quoted_ids = tok("'Karin Hernandez'", add_special_tokens=False)["input_ids"][1:-1]
    assert name_ids == quoted_ids


def test_load_tokenizer_keeps_a_generic_checkpoints_own_pre_tokenizer(tmp_path, tiny_model_dir):
    """A checkpoint declaring the generic backend is tokenized by its tokenizer.json, not by the tokenizer
    class transformers associates with the model type."""
    import json
    import shutil

    from tokenizers import Tokenizer, pre_tokenizers

    from sqltune.models.loading import load_tokenizer

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, ckpt)
    tj = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    tj.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=False)])
    tj.save(str(ckpt / "tokenizer.json"))
    assert json.loads((ckpt / "tokenizer_config.json").read_text())["tokenizer_class"] in (
        "TokenizersBackend", "PreTrainedTokenizerFast")
    text = "SELECT 2024"
    assert load_tokenizer(str(ckpt))(text, add_special_tokens=False)["input_ids"] == tj.encode(text).ids


def test_induction_batch_labels_only_the_predictable_part_of_repeats():
    import torch

    from sqltune.models.tiny import induction_batch

    vocab = torch.arange(10, 1010)
    ids, labels = induction_batch(vocab, batch=8, length=64, generator=torch.Generator().manual_seed(0))
    assert ids.shape == labels.shape == (8, 64)
    assert ((ids >= 10) & (ids < 1010)).all()
    for seq, lab in zip(ids.tolist(), labels.tolist()):
        # Every labelled token continues an earlier occurrence of its predecessor with the same token:
        # exactly what an induction head can predict; the rest is -100.
        targets = [i for i, y in enumerate(lab) if y != -100]
        assert targets, "about half of the spans are repeats"
        for i in targets:
            assert lab[i] == seq[i]
            assert any(seq[j] == seq[i - 1] and seq[j + 1] == seq[i] for j in range(i - 1))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_induction_pretraining_learns_to_copy_and_is_cached(tmp_path, precision):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from sqltune.models.loading import load_tokenizer
    from sqltune.models.tiny import build_tiny_model, induction_batch

    corpus = [f"SELECT c{i} FROM t{i % 7} WHERE v = {i} AND name = 'n{i * 7}'" for i in range(300)]
    shape = dict(vocab_size=400, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)

    def repeat_loss(path) -> float:
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = load_tokenizer(str(path))
        vocab = torch.tensor([i for i in range(len(tok)) if i not in set(tok.all_special_ids)])
        ids, labels = induction_batch(vocab, 32, 32, torch.Generator().manual_seed(123))
        with torch.no_grad():
            return float(model(input_ids=ids, labels=labels).loss)

    random_base = build_tiny_model(tmp_path / "random", TinyModelConfig(**shape), corpus)
    cfg = TinyModelConfig(**shape, induction_steps=150, induction_lr=3e-3, induction_precision=precision)
    cache = tmp_path / "cache"
    trained = build_tiny_model(tmp_path / "trained", cfg, corpus, cache_dir=cache)
    before, after = repeat_loss(random_base), repeat_loss(trained)
    assert after < before - 0.5, (before, after)
    # A second build with the same config and tokenizer copies the cached weights.
    (entry,) = list(cache.iterdir())
    again = build_tiny_model(tmp_path / "again", cfg, corpus, cache_dir=cache)
    a, b = load_file(trained / "model.safetensors"), load_file(again / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    assert entry.name.startswith("tiny-") and not list(cache.glob("*.tmp"))


def test_tiny_base_preset_loads_and_documents_its_command():
    from pathlib import Path

    from sqltune.config import load_config

    path = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "tiny-base.yaml"
    cfg = load_config(TinyModelConfig, path)
    assert cfg.induction_steps > 0 and cfg.hidden_size == 256 and cfg.num_layers == 4
    assert "python -m sqltune.models.tiny --config jobs/configs/tiny-base.yaml --out" in path.read_text()
