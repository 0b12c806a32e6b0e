"""Export: merge an adapter into its base and publish merged (bf16/fp16), int8, NF4 and adapter artifacts.

- :class:`ExportConfig` (``jobs/configs/export-*.yaml``) and :func:`run_export`.
- :func:`merge_adapter`, :func:`measure_merge_choices` (what the merge base choice costs, in logits).
- :func:`export_quantized` (bitsandbytes int8 / NF4, serialised or quantized on load).
"""

from __future__ import annotations

import importlib
from typing import Any

from sqltune.export.config import ExportConfig

# The rest needs torch: imported on first use, so that reading the config (the CLI, configdoc) stays light.
_LAZY = {
    "ExportResult": "sqltune.export.run",
    "export_quantized": "sqltune.export.quantize",
    "measure_merge_choices": "sqltune.export.merge",
    "merge_adapter": "sqltune.export.merge",
    "run_export": "sqltune.export.run",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)

__all__ = ["ExportConfig", "ExportResult", "export_quantized", "measure_merge_choices", "merge_adapter", "run_export"]
