"""The export job: adapter (+ base) -> merged, int8, NF4 and adapter artifacts, each published with a manifest.

Everything is built in a local staging directory first and published only when every requested format
was built and checked, so a failed export publishes nothing. Each format is its own artifact at
``<destination>/<format>/`` (``manifest.json`` written last by :func:`sqltune.storage.publish`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune.errors import ModelError, StorageError
from sqltune.export.config import ExportConfig
from sqltune.export.merge import (
    adapter_base,
    attach_adapter,
    load_base,
    logit_diff,
    logits_of,
    measure_merge_choices,
    merge_adapter,
    probe_inputs,
)
from sqltune.export.quantize import _copy_side_files, export_quantized, torch_dtype
from sqltune.models.loading import (
    best_device,
    load_causal_lm,
    load_tokenizer,
    read_artifact_info,
    resolve_source,
    write_artifact_info,
)
from sqltune.prompts import TEMPLATE_FILE, PromptTemplate
from sqltune.storage import MANIFEST_NAME, exists, is_s3, join, publish

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    destination: str
    artifacts: dict[str, str] = field(default_factory=dict)  # format -> published URI
    skipped: dict[str, str] = field(default_factory=dict)  # format -> why it was not published again
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # format -> its sqltune_artifact.json

    def summary(self) -> str:
        lines = [f"export published to {self.destination}"]
        for fmt, uri in self.artifacts.items():
            lines.append(f"  {fmt:8s} {uri}")
        for fmt, why in self.skipped.items():
            lines.append(f"  {fmt:8s} (not published: {why})")
        merge = self.info.get("merged", {}).get("metrics", {}).get("merge_choices")
        if merge:
            vs = merge["vs_nf4_adapter"]
            lines.append(
                "  merge base vs adapter on NF4 base (mean |logit diff|): "
                + ", ".join(f"{k} {v['mean_abs_logit_diff']:.4g}" for k, v in vs.items())
                + f"; closest to training: {merge['closest_to_training']}"
            )
        return "\n".join(lines)


def _same_uri(a: str, b: str) -> bool:
    if is_s3(a) or is_s3(b):
        return a.rstrip("/") == b.rstrip("/")
    return Path(a.removeprefix("file://")).resolve() == Path(b.removeprefix("file://")).resolve()


def _check_destinations(cfg: ExportConfig, dest: str) -> dict[str, str]:
    """Fail before any work if a destination already holds an artifact (and overwrite is off)."""
    skipped = {}
    for fmt in cfg.formats:
        uri = join(dest, fmt)
        if fmt == "adapter" and _same_uri(uri, cfg.adapter):
            skipped[fmt] = "the adapter is already published there"
            continue
        if not cfg.overwrite and exists(join(uri, MANIFEST_NAME)):
            raise StorageError(
                f"{uri} already holds a published artifact; pass overwrite=true or choose another output_uri/run_name"
            )
    return skipped


@dataclass
class ExportPlan:
    """What :func:`setup` resolved and checked before any model is loaded."""

    cfg: ExportConfig
    destination: str
    skipped: dict[str, str]
    adapter_dir: Path
    base_uri: str
    base_dir: str
    device: str
    template: Any
    tokenizer: Any


def setup(cfg: ExportConfig) -> ExportPlan:
    """Fail fast: destinations free (or overwrite), adapter fetched and verified, base model found."""
    dest = cfg.destination()
    skipped = _check_destinations(cfg, dest)
    adapter_dir = Path(resolve_source(cfg.adapter))
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"{cfg.adapter} holds no adapter_config.json: not a PEFT adapter artifact")
    base_uri = cfg.base_model or adapter_base(adapter_dir)
    if not base_uri:
        raise ModelError(f"adapter {cfg.adapter} records no base model; pass base_model=<dir, s3:// or hub id>")
    base_dir = resolve_source(base_uri)
    device = best_device(cfg.device)
    if (adapter_dir / TEMPLATE_FILE).is_file():
        template = PromptTemplate.load(adapter_dir)
    else:
        log.warning("adapter %s has no %s; the exports get the default template", cfg.adapter, TEMPLATE_FILE)
        template = PromptTemplate()
    tok_src = str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    return ExportPlan(cfg=cfg, destination=dest, skipped=skipped, adapter_dir=adapter_dir, base_uri=base_uri,
                      base_dir=base_dir, device=device, template=template, tokenizer=load_tokenizer(tok_src))


def run_export(cfg: ExportConfig) -> ExportResult:
    """``run(setup(cfg))``: run the export described by ``cfg``; returns where each artifact was published."""
    return run(setup(cfg))


def run(plan: ExportPlan) -> ExportResult:
    """Build every requested format in a staging directory, then publish each (nothing on failure)."""
    start = time.perf_counter()
    cfg, dest = plan.cfg, plan.destination
    adapter_dir, base_uri, base_dir, device = plan.adapter_dir, plan.base_uri, plan.base_dir, plan.device
    template, tokenizer = plan.template, plan.tokenizer
    result = ExportResult(destination=dest)
    result.skipped.update(plan.skipped)
    common = {"base_model": base_uri, "adapter": cfg.adapter, "run_name": dest.rstrip("/").rsplit("/", 1)[-1],
              "config": cfg.to_dict()}

    stage_root = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="sqltune-export-"))
    stage_root.mkdir(parents=True, exist_ok=True)
    try:
        staged: dict[str, Path] = {}
        wanted = [f for f in cfg.formats if f not in result.skipped]
        merged_dir = stage_root / "merged"
        if any(f in wanted for f in ("merged", "int8", "nf4")):
            log.info("merging %s onto %s (%s weights)", cfg.adapter, base_uri, cfg.merge_base)
            metrics: dict[str, Any] = {}
            merged = merge_adapter(base_dir, str(adapter_dir), merge_base=cfg.merge_base, device=device,
                                   double_quant=cfg.double_quant)
            merged.to(torch_dtype(cfg.dtype))
            if merged_dir.exists():
                shutil.rmtree(merged_dir)
            merged.save_pretrained(merged_dir)
            del merged
            tokenizer.save_pretrained(merged_dir)
            template.save(merged_dir)
            inputs = probe_inputs(tokenizer, template)
            if cfg.measure_merge:
                metrics["merge_choices"] = measure_merge_choices(
                    base_dir, str(adapter_dir), tokenizer, template, device=device, double_quant=cfg.double_quant)
            ref = None
            if cfg.verify:
                how = "original" if cfg.merge_base == "original" else "dequantized"
                ref = logits_of(attach_adapter(load_base(base_dir, how=how, device=device,
                                                         double_quant=cfg.double_quant), str(adapter_dir)), inputs)
                reloaded = logits_of(load_causal_lm(str(merged_dir), precision="fp32", device=device), inputs)
                metrics["saved_vs_unmerged"] = logit_diff(reloaded, ref, inputs["attention_mask"])
            write_artifact_info(merged_dir, kind="merged", precision=cfg.dtype, merge_base=cfg.merge_base,
                                metrics=metrics, **common)
            staged["merged"] = merged_dir
            for q in ("int8", "nf4"):
                if q not in wanted:
                    continue
                qdir = stage_root / q
                log.info("building the %s artifact", q)
                done = export_quantized(merged_dir, qdir, q, dtype=cfg.dtype, device=device,
                                        double_quant=cfg.double_quant, serialization=cfg.quantized_serialization)
                qmetrics: dict[str, Any] = {}
                if cfg.verify:
                    qlogits = logits_of(load_causal_lm(str(qdir), precision=q, device=device), inputs)
                    if ref is None:
                        ref = logits_of(load_causal_lm(str(merged_dir), precision="fp32", device=device), inputs)
                    qmetrics["vs_unmerged_adapter"] = logit_diff(qlogits, ref, inputs["attention_mask"])
                write_artifact_info(qdir, kind=q, precision=q, merged_from_precision=cfg.dtype,
                                    merge_base=cfg.merge_base, metrics=qmetrics, **done, **common)
                staged[q] = qdir
        if "adapter" in wanted:
            adir = stage_root / "adapter"
            if adir.exists():
                shutil.rmtree(adir)
            adir.mkdir()
            _copy_side_files(adapter_dir, adir, weights=True, skip={"manifest.json"})  # as it is
            staged["adapter"] = adir

        # Publish only once everything is built: a failure above publishes nothing.

        for fmt in [f for f in cfg.formats if f in staged]:
            uri = join(dest, fmt)
            info = read_artifact_info(staged[fmt])
            publish(staged[fmt], uri, kind=fmt, overwrite=cfg.overwrite,
                    metadata={"base_model": base_uri, "adapter": cfg.adapter, "format": fmt})
            result.artifacts[fmt] = uri
            result.info[fmt] = info
    finally:
        if not cfg.work_dir:
            shutil.rmtree(stage_root, ignore_errors=True)
    log.info("export finished in %.1fs", time.perf_counter() - start)
    return result
