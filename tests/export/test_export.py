"""Export: merged == base + adapter, the merge-base choice measured, int8/NF4 serialised, every artifact published."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sqltune.errors import ConfigError, StorageError
from sqltune.export import ExportConfig, measure_merge_choices, merge_adapter, run_export
from sqltune.export.merge import attach_adapter, load_base, logit_diff, logits_of, probe_inputs
from sqltune.models.loading import load_causal_lm, load_for_inference, load_tokenizer, read_artifact_info
from sqltune.prompts import PromptTemplate

ROOT = Path(__file__).resolve().parents[2]


def _probe(tiny_adapter):
    tok = load_tokenizer(str(tiny_adapter))
    return probe_inputs(tok, PromptTemplate.load(tiny_adapter))


def test_merged_logits_equal_base_plus_adapter_fp32(tiny_base, tiny_adapter):
    inputs = _probe(tiny_adapter)
    unmerged = attach_adapter(load_base(str(tiny_base), how="original", device="cpu"), str(tiny_adapter))
    ref = logits_of(unmerged, inputs)
    base_only = logits_of(load_base(str(tiny_base), how="original", device="cpu"), inputs)
    merged = logits_of(merge_adapter(str(tiny_base), str(tiny_adapter), merge_base="original"), inputs)
    d = logit_diff(merged, ref, inputs["attention_mask"])
    assert d["max_abs_logit_diff"] < 1e-4, d
    assert d["top1_agreement"] == 1.0
    # ...and the adapter really changes the model (otherwise the check above proves nothing).
    assert logit_diff(base_only, ref, inputs["attention_mask"])["max_abs_logit_diff"] > 1e-2


def test_merged_with_trainable_embeddings(tiny_base, tmp_path):
    from adapter_fixture import build_adapter

    adapter = build_adapter(tiny_base, tmp_path / "emb" / "adapter", modules_to_save=["embed_tokens"], steps=3)
    inputs = _probe(adapter)
    ref = logits_of(attach_adapter(load_base(str(tiny_base), how="original", device="cpu"), str(adapter)), inputs)
    merged = merge_adapter(str(tiny_base), str(adapter))
    merged.save_pretrained(tmp_path / "m")
    reloaded = logits_of(load_causal_lm(str(tmp_path / "m"), precision="fp32", device="cpu"), inputs)
    assert logit_diff(reloaded, ref, inputs["attention_mask"])["max_abs_logit_diff"] < 1e-4


def test_merge_base_choice_is_measured(tiny_base, tiny_adapter):
    tok = load_tokenizer(str(tiny_adapter))
    report = measure_merge_choices(str(tiny_base), str(tiny_adapter), tok, PromptTemplate.load(tiny_adapter))
    vs_nf4 = report["vs_nf4_adapter"]
    print("merge choice vs adapter on NF4 base:", json.dumps(vs_nf4, indent=1))
    # Merging onto the de-quantized base reproduces what QLoRA training saw far more closely.
    assert vs_nf4["dequantized"]["mean_abs_logit_diff"] < vs_nf4["original"]["mean_abs_logit_diff"] / 5
    assert report["closest_to_training"] == "dequantized"
    # The original merge equals the adapter on the full-precision base (merge correctness).
    assert report["vs_fp32_adapter"]["original"]["max_abs_logit_diff"] < 1e-4


def test_export_publishes_every_format_locally(tiny_base, tiny_adapter, tmp_path):
    from sqltune.storage import verify

    out = tmp_path / "exports"
    cfg = ExportConfig.from_dict({"adapter": str(tiny_adapter), "output_uri": str(out), "run_name": "tiny-run",
                                  "dtype": "fp32", "device": "cpu"})
    result = run_export(cfg)
    assert set(result.artifacts) == {"merged", "int8", "nf4", "adapter"}
    for fmt, uri in result.artifacts.items():
        assert uri == str(out / "tiny-run" / fmt)
        verify(uri)  # manifest present and every hash right
        info = read_artifact_info(uri)
        assert info["kind"] == fmt
        assert (Path(uri) / "prompt_template.json").is_file()
        assert (Path(uri) / "tokenizer_config.json").is_file()
    merged = out / "tiny-run" / "merged"
    info = read_artifact_info(merged)
    assert info["base_model"] == str(tiny_base) and info["merge_base"] == "original" and info["precision"] == "fp32"
    assert info["metrics"]["saved_vs_unmerged"]["max_abs_logit_diff"] < 1e-4  # fp32 export == base + adapter
    assert "merge_choices" in info["metrics"]
    assert list(merged.glob("*.safetensors"))
    for q, layer in (("int8", "Linear8bitLt"), ("nf4", "Linear4bit")):
        qinfo = read_artifact_info(out / "tiny-run" / q)
        # transformers 5 + bitsandbytes 0.50 serialise 8-bit and 4-bit weights on CPU.
        assert qinfo["serialization"] == "quantized", qinfo.get("fallback_reason")
        cfg_json = json.loads((out / "tiny-run" / q / "config.json").read_text())
        assert cfg_json["quantization_config"]["quant_method"] == "bitsandbytes"
        assert qinfo["metrics"]["vs_unmerged_adapter"]["top1_agreement"] > 0.5
        loaded = load_for_inference(str(out / "tiny-run" / q), device="cpu")
        assert type(loaded.model.model.layers[0].self_attn.q_proj).__name__ == layer
    # The adapter is published as it is.
    assert (out / "tiny-run" / "adapter" / "adapter_model.safetensors").read_bytes() == (
        tiny_adapter / "adapter_model.safetensors").read_bytes()
    # A second export to the same place is refused before any work.
    with pytest.raises(StorageError, match="already holds a published artifact"):
        run_export(cfg)


def test_quantize_on_load_form(tiny_base, tiny_adapter, tmp_path):
    cfg = ExportConfig.from_dict({"adapter": str(tiny_adapter), "output_uri": str(tmp_path), "run_name": "r",
                                  "formats": ["int8"], "quantized_serialization": "on_load",
                                  "measure_merge": False, "device": "cpu"})
    result = run_export(cfg)
    assert list(result.artifacts) == ["int8"]
    qdir = tmp_path / "r" / "int8"
    info = read_artifact_info(qdir)
    assert info["serialization"] == "on_load" and info["quantization_config"]["load_in_8bit"] is True
    assert "quantization_config" not in json.loads((qdir / "config.json").read_text())
    loaded = load_for_inference(str(qdir), device="cpu")  # quantizes while loading
    assert type(loaded.model.model.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"
    assert not (tmp_path / "r" / "merged").exists()  # only what was asked for is published


def test_export_through_s3(tiny_base, tiny_adapter, export_s3):
    from sqltune.storage import fetch, publish

    run = "s3://sqltune-export/runs/s3run"
    publish(tiny_adapter, f"{run}/adapter", kind="adapter")
    cfg = ExportConfig.from_dict({"adapter": f"{run}/adapter", "formats": ["merged", "adapter"],
                                  "measure_merge": False, "device": "cpu"})
    assert cfg.destination() == run
    result = run_export(cfg)
    assert result.artifacts == {"merged": f"{run}/merged"}
    assert "adapter" in result.skipped  # already published at the destination: not copied onto itself
    local = fetch(f"{run}/merged")
    assert read_artifact_info(local)["kind"] == "merged"
    loaded = load_for_inference(f"{run}/merged", device="cpu")
    assert loaded.template == PromptTemplate.load(tiny_adapter)


def test_config_errors():
    with pytest.raises(ConfigError, match="adapter: required"):
        ExportConfig.from_dict({})
    with pytest.raises(ConfigError, match="merge_base"):
        ExportConfig.from_dict({"adapter": "x/adapter", "merge_base": "nf4"})
    with pytest.raises(ConfigError, match="output_uri: required"):
        ExportConfig.from_dict({"adapter": "somewhere/else"})


def test_cli_errors_exit_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "libs")}
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.export", "--config", "jobs/configs/export-tiny.yaml", "merge_base=bogus"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert "merge_base" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.export", f"adapter={tmp_path}/missing/adapter"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
