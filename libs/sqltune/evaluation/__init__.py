"""Batch evaluation: score model variants on a dataset split and publish a report.

- :class:`EvalConfig` (``jobs/configs/eval-*.yaml``) and :func:`run_evaluation` (the job).
- :mod:`~sqltune.evaluation.metrics`: per-example metrics (:func:`score_example`, :func:`rouge_l`).
- :mod:`~sqltune.evaluation.aggregate`: per-variant/per-category aggregates, bootstrap CI, agreement.
- :mod:`~sqltune.evaluation.variants`: base/adapter/merged/int8/nf4 models and OpenAI-compatible endpoints.
- :mod:`~sqltune.evaluation.runner`: one Ray actor per variant, in parallel.
- :mod:`~sqltune.evaluation.report`: report.json (schema in its docstring), report.md, plots, predictions.jsonl.
"""

from __future__ import annotations

from sqltune.evaluation.config import (
    AgreementConfig,
    DatasetConfig,
    EvalConfig,
    GenerationConfig,
    MetricsConfig,
    RayConfig,
    VariantConfig,
)
from sqltune.evaluation.metrics import ExampleScore, rouge_l, score_example, sql_tokens
from sqltune.evaluation.run import EvalResult, load_eval_examples, run_evaluation

__all__ = [
    "AgreementConfig", "DatasetConfig", "EvalConfig", "EvalResult", "ExampleScore", "GenerationConfig",
    "MetricsConfig", "RayConfig", "VariantConfig", "load_eval_examples", "rouge_l", "run_evaluation",
    "score_example", "sql_tokens",
]
