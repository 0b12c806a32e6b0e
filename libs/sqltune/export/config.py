"""Typed config of the export job (``python -m jobs.export``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqltune.config import Config, param
from sqltune.errors import ConfigError
from sqltune.storage import join

ExportFormat = Literal["merged", "int8", "nf4", "adapter"]


@dataclass
class ExportConfig(Config):
    """Merge a LoRA/QLoRA adapter into its base model and publish merged, int8, NF4 and adapter artifacts."""

    adapter: str = param("", "The adapter artifact: a local directory or an s3:// prefix (training's <output_uri>/<run_name>/adapter).")
    base_model: str = param(
        "", "Base model (local dir, s3:// prefix or hub id); empty: the base_model recorded in the adapter's sqltune_artifact.json."
    )
    output_uri: str = param(
        "", "Where to publish (local path or s3://); artifacts land in <output_uri>/<run_name>/<format>/. "
        "Empty: beside the adapter (its parent prefix), when the adapter URI ends in /adapter."
    )
    run_name: str = param("", "Run name under output_uri; empty: the adapter's parent folder name.")
    formats: list[ExportFormat] = param(
        ["merged", "int8", "nf4", "adapter"], "Artifacts to publish: merged (16-bit), int8 (LLM.int8), nf4, adapter (as is)."
    )
    dtype: Literal["bf16", "fp16", "fp32"] = param(
        "bf16", "Precision of the merged model's saved weights (fp32 for exactness checks; int8/nf4 keep it for unquantized parts)."
    )
    merge_base: Literal["original", "dequantized"] = param(
        "original",
        "Merge the adapter onto the original 16/32-bit base weights ('original') or onto the base quantized to NF4 "
        "and de-quantized again ('dequantized': the weights QLoRA training actually saw).",
    )
    double_quant: bool = param(True, "NF4 double quantization, for the de-quantized merge base, the NF4 export and the measurement.")
    quantized_serialization: Literal["auto", "quantized", "on_load"] = param(
        "auto",
        "int8/nf4 artifacts: 'quantized' saves bitsandbytes-quantized weights; 'on_load' saves the merged 16-bit weights "
        "and records the quantization so loading quantizes; 'auto' tries 'quantized' and falls back to 'on_load'.",
    )
    measure_merge: bool = param(
        True,
        "Measure logit differences on probe prompts between the adapter on the NF4 base (what QLoRA training saw), the "
        "adapter on the full-precision base, and both merge choices; recorded in merged/sqltune_artifact.json.",
    )
    verify: bool = param(True, "Reload every exported artifact, check it runs, and record its logit difference to the merged model.")
    device: Literal["auto", "cpu", "cuda"] = param("auto", "Where merging and quantization run (cuda when available for auto).")
    overwrite: bool = param(False, "Replace artifacts already published at the destination.")
    work_dir: str = param("", "Local staging directory; empty: a temporary directory removed afterwards.")

    def validate(self) -> None:
        if not self.adapter:
            raise ConfigError("adapter: required; pass adapter=<local dir or s3:// prefix of the adapter artifact>")
        if not self.formats:
            raise ConfigError("formats: empty; choose any of merged, int8, nf4, adapter")
        if len(set(self.formats)) != len(self.formats):
            raise ConfigError(f"formats: {self.formats} lists a format twice")
        if self.run_name and not self.output_uri:
            raise ConfigError("run_name is set but output_uri is empty; set output_uri too")
        if not self.output_uri and not self.adapter.rstrip("/").endswith("/adapter"):
            raise ConfigError(
                f"output_uri: required, because adapter {self.adapter!r} does not end in /adapter (so the run's prefix "
                "cannot be derived); pass output_uri=<s3:// or path> run_name=<name>"
            )

    def destination(self) -> str:
        """``<output_uri>/<run_name>``: the prefix under which each format is published."""
        if self.output_uri:
            run = self.run_name or _parent_name(self.adapter)
            return join(self.output_uri, run) if run else self.output_uri
        return self.adapter.rstrip("/")[: -len("/adapter")]


def _parent_name(uri: str) -> str:
    parts = uri.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-1] == "adapter":
        return parts[-2]
    return ""
