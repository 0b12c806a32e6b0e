"""Export: merge an adapter into its base and publish merged (bf16/fp16), int8, NF4 and adapter artifacts.

- :class:`ExportConfig` (``jobs/configs/export-*.yaml``) and :func:`run_export`.
- :func:`merge_adapter`, :func:`measure_merge_choices` (what the merge base choice costs, in logits).
- :func:`export_quantized` (bitsandbytes int8 / NF4, serialised or quantized on load).
"""

from __future__ import annotations

from sqltune.export.config import ExportConfig
from sqltune.export.merge import measure_merge_choices, merge_adapter
from sqltune.export.quantize import export_quantized
from sqltune.export.run import ExportResult, run_export

__all__ = ["ExportConfig", "ExportResult", "export_quantized", "measure_merge_choices", "merge_adapter", "run_export"]
