"""Typed config of the evaluation job (``python -m jobs.evaluate``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sqltune.config import Config, param
from sqltune.data.spec import DatasetSpec
from sqltune.errors import ConfigError, SQLError
from sqltune.sql import canonical_dialect

VariantKind = Literal["base", "adapter", "merged", "int8", "nf4", "http"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass
class DatasetConfig(DatasetSpec):
    """Which examples are scored. The dataset and split fields are the training job's ``data`` section's (one
    :class:`~sqltune.data.spec.DatasetSpec`), so the same values select exactly the test split training held out."""

    split: Literal["train", "validation", "test", "all"] = param("test", "Which split of the deterministic split to score.")
    limit: int | None = param(
        None, "Score a seeded sample of at most this many examples of the split (null: all of it).", min=1
    )
    sample_seed: int = param(0, "Seed of the sample taken when limit is set.")
    dialect: str | None = param(
        None, "Score in this dialect (sqlite, duckdb, postgres) instead of each example's own: gold SQL comes from "
        "extra.sql_by_dialect when the dataset has it, else it is transpiled. Usually set together with db."
    )
    db: str | None = param(
        None, "Run every example on this database instead of its own: a SQLite/DuckDB file (relative paths are "
        "resolved against the dataset folder) or a postgresql:// DSN."
    )
    exclude_missing_databases: bool = param(
        False, "When an example's database is missing or unreadable: false = fail before generating, listing "
        "them; true = score without those examples (the report's headline says how many were left out)."
    )

    def validate(self) -> None:
        super().validate()
        if self.dialect is not None:
            try:
                self.dialect = canonical_dialect(self.dialect)
            except SQLError as exc:  # it names the valid choices
                raise ConfigError(f"dialect: {exc}") from None


@dataclass
class VariantConfig(Config):
    """One model variant to score. Local kinds load through sqltune.models.loading; ``http`` calls any
    OpenAI-compatible endpoint (sqltune's own server included)."""

    name: str = param("", "Unique name, shown in the report (letters, digits, . _ + -).")
    kind: VariantKind = param(
        "merged",
        "base: a base model; adapter: base + adapter (unmerged); merged: a merged export; int8 / nf4: a quantized "
        "export (or any model, quantized on load); http: an OpenAI-compatible endpoint.",
    )
    model: str = param(
        "", "The artifact: a local dir, s3:// prefix or hub id (for adapter: the adapter artifact). Unused for http."
    )
    base_model: str = param("", "adapter only: the base model; empty: the base recorded in the adapter.")
    prompt_mode: Literal["strict", "plain"] = param(
        "strict", "strict: the SQL-only system instruction; plain: a generic assistant instruction."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8", "nf4"] = param(
        "auto", "Weights precision for base/adapter/merged (auto: bf16 on GPU, fp32 on CPU); for kind=adapter, nf4 "
        "loads the base in NF4, as QLoRA training saw it. kind=int8/nf4 always use their own."
    )
    url: str = param("", "http only: the endpoint's base URL; requests go to {url}/v1/chat/completions.")
    api_model: str = param("", "http only: the 'model' field of each request (empty: the variant name).")
    api_key_env: str = param("", "http only: name of the environment variable holding the bearer token (empty: none).")
    timeout_s: float = param(60.0, "http only: timeout of one request, in seconds.", min=0.1)
    retries: int = param(2, "http only: retries of a request that failed with a connection error, 429 or 5xx.", min=0)
    concurrency: int = param(8, "http only: concurrent requests in flight.", min=1)
    repair_rounds: int = param(
        0, "Execute-and-repair rounds after the first answer (sqltune.agent.repair; local kinds): the variant "
        "scores the loop's final SQL, report.json's variants.<name>.repair gives the rounds used, and its latency "
        "includes them. Pair it with the same model at 0 to compare with and without repair.", min=0, max=5,
    )

    def validate(self) -> None:
        if not _NAME.match(self.name or ""):
            raise ConfigError(f"name: {self.name!r} must be 1-64 characters of letters, digits, '.', '_', '+', '-'")
        if self.kind == "http" and self.repair_rounds:
            raise ConfigError(f"{self.name}: repair_rounds applies to local kinds only, not kind=http")
        if self.kind == "http":
            if not self.url.startswith(("http://", "https://")):
                raise ConfigError(f"{self.name}: url: {self.url!r} must start with http:// or https:// for kind=http")
        elif not self.model:
            raise ConfigError(f"{self.name}: model: required for kind={self.kind} (a local dir, s3:// prefix or hub id)")
        if self.base_model and self.kind != "adapter":
            raise ConfigError(f"{self.name}: base_model applies to kind=adapter only")
        if self.api_key_env and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.api_key_env):
            raise ConfigError(f"{self.name}: api_key_env: {self.api_key_env!r} is not an environment variable name")


@dataclass
class GenerationConfig(Config):
    """Decoding: greedy, batched."""

    max_new_tokens: int = param(192, "Longest generated SQL, in tokens.", min=1, max=4096)
    batch_size: int = param(16, "Prompts per generate() call (local variants) or per request wave (http).", min=1)
    engine: bool = param(
        False, "Decode local variants with the serving engine (continuous batching over a static KV cache, "
        "batch_size slots: the server's code path) instead of transformers' generate(). Each request then "
        "stops on its own and its latency is its own; ~1.6-2x faster for the tiny model on CPU.",
    )


@dataclass
class RayConfig(Config):
    """How variants are spread over the Ray cluster: one actor per variant."""

    address: str | None = param(
        None, "Ray address; null: the RAY_ADDRESS of `ray job submit`, else a local Ray started for this run."
    )
    use_gpu: Literal["auto", "always", "never"] = param(
        "auto", "One GPU per local-model actor: auto when the cluster has GPUs; always fails fast without them."
    )
    num_cpus_per_actor: float = param(1.0, "CPUs per local-model actor (also its torch thread count).", min=0.01)
    num_gpus_per_actor: float = param(1.0, "GPUs per local-model actor when GPUs are used.", min=0.01)
    http_num_cpus: float = param(0.1, "CPUs reserved by each http variant's actor (it mostly waits).", min=0.0)
    local_num_cpus: int | None = param(None, "CPUs of the local Ray started when there is no cluster (null: all).", min=1)
    load_timeout_s: float = param(1800.0, "A variant whose model has not loaded after this long is reported failed.", min=1)
    max_parallel: int | None = param(
        None, "At most this many variants run at once (null: all). On a shared CPU machine, 1 gives latency and "
        "tokens/s without contention between variants; with one GPU per variant, null.", min=1
    )


@dataclass
class MetricsConfig(Config):
    """Scoring settings."""

    exec_timeout_s: float = param(5.0, "Sandbox timeout per query (gold and predicted).", min=0.1)
    max_rows: int = param(10000, "Row cap per query; a gold result over it is a gold failure.", min=1)
    float_tol: float = param(1e-6, "Relative/absolute tolerance when comparing numbers in results.", min=0.0)
    bootstrap_samples: int = param(1000, "Bootstrap resamples for the execution-accuracy confidence interval.", min=10)
    bootstrap_seed: int = param(0, "Seed of the bootstrap.")
    confidence: float = param(0.95, "Confidence level of the interval.", min=0.5, max=0.999)
    hybrid_partial_weight: float = param(0.7, "Hybrid score without an execution match: this x ROUGE-L.", min=0.0, max=1.0)
    statements: Literal["all", "first"] = param(
        "all", "all: output holding more than one SQL statement is wrong (category multiple_statements), as the "
        "official Spider/BIRD evaluators score it; first: score its first statement only (the report says so)."
    )
    isolation: Literal["process", "none"] = param(
        "process", "process: SQLite/DuckDB queries run in a pool of worker processes, killed at exec_timeout_s "
        "even inside one long builtin call; none: in this process (the engine's own interrupt only)."
    )
    exec_workers: int = param(2, "Worker processes of the execution pool (isolation=process).", min=1, max=64)
    context_db: bool = param(
        True, "Examples without a database but with CREATE/INSERT context (sql-create-context, gretel): execute "
        "on an in-memory SQLite built from that context; false = AST equivalence only.",
    )


@dataclass
class AgreementConfig(Config):
    """Variants that should behave identically (adapter vs merged) are compared and flagged."""

    pairs: list[list[str]] = param(
        [], "Pairs of variant names to compare, e.g. [[adapter, merged]]; empty: every adapter x merged pair "
        "(variants with repair_rounds left out)."
    )
    max_disagreement: float = param(0.05, "Flag a pair when more than this share of outputs differ.", min=0.0, max=1.0)
    max_accuracy_diff: float = param(0.02, "Flag a pair when execution accuracies differ by more than this.", min=0.0, max=1.0)


@dataclass
class TrackingConfig(Config):
    """Experiment tracking (MLflow). metrics.json beside a training's adapter and an evaluation's report.json
    hold the same numbers."""

    backend: Literal["auto", "mlflow", "file", "none"] = param(
        "auto", "auto = MLflow when MLFLOW_TRACKING_URI is set, else none; file = a local MLflow file store."
    )
    experiment: str = param("sqltune", "MLflow experiment name.")
    file_store: str = param("mlruns", "Directory of the local file store (backend=file).")


@dataclass
class EvalTrackingConfig(TrackingConfig):
    """Where the evaluation is tracked: into the training's MLflow run when it is known, else a run of its own."""

    run_id: str = param(
        "", "The training's MLflow run to log into; empty: the run tagged with an adapter this evaluation scores "
        "(a kind=adapter variant's model, or <run_uri>/adapter), else a new run named after eval_name."
    )


@dataclass
class EvalConfig(Config):
    """Score several model variants on one dataset split and publish a report."""

    eval_name: str = param("", "Name of this evaluation; the report goes to <output_uri>/<eval_name>/.")
    output_uri: str = param("", "Where reports are published: a local path or s3:// prefix.")
    run_uri: str = param("", "Substituted for {run} in variants' model/base_model, e.g. s3://sqltune/runs/tiny.")
    base_uri: str = param("", "Substituted for {base} in variants' model/base_model, e.g. s3://sqltune/models/tiny-base.")
    dataset: DatasetConfig = param(DatasetConfig(), "The examples to score.")
    variants: list[VariantConfig] = param([], "The variants to score (at least one).")
    generation: GenerationConfig = param(GenerationConfig(), "Decoding settings.")
    ray: RayConfig = param(RayConfig(), "Ray placement.")
    metrics: MetricsConfig = param(MetricsConfig(), "Scoring settings.")
    agreement: AgreementConfig = param(AgreementConfig(), "Agreement checks between variants that should be identical.")
    tracking: EvalTrackingConfig = param(EvalTrackingConfig(), "MLflow tracking of the metrics, report and plots.")
    plots: bool = param(True, "Write PNG plots (matplotlib) into the report.")
    overwrite: bool = param(False, "Replace a report already published under the same eval_name.")
    work_dir: str = param("", "Local staging directory for the report; empty: a temporary directory.")
    max_failed_fraction: float = param(
        0.2, "A variant whose share of failed examples (HTTP error after retries, generation error) exceeds this "
        "is reported failed; below it, each failed example counts as wrong and the variant goes on.",
        min=0.0, max=1.0,
    )
    fail_on_variant_error: bool = param(
        False, "Exit non-zero (3) after publishing when a variant failed (the report is published either way)."
    )

    def validate(self) -> None:
        if not _NAME.match(self.eval_name or ""):
            raise ConfigError(f"eval_name: {self.eval_name!r} must be 1-64 characters of letters, digits, '.', '_', '+', '-'")
        if not self.output_uri:
            raise ConfigError("output_uri: required (a local path or s3:// prefix where the report is published)")
        if not self.variants:
            raise ConfigError("variants: at least one variant is required")
        for v in self.variants:
            for fld in ("model", "base_model"):
                value = getattr(v, fld)
                for key, sub in (("{run}", self.run_uri), ("{base}", self.base_uri)):
                    if key in value:
                        if not sub:
                            raise ConfigError(
                                f"variants.{v.name}.{fld}: {value!r} uses {key} but {key[1:-1]}_uri is empty; "
                                f"set {key[1:-1]}_uri=<uri>"
                            )
                        value = value.replace(key, sub.rstrip("/"))
                setattr(v, fld, value)
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"variants: duplicate names {dupes}; each variant needs its own name")
        for pair in self.agreement.pairs:
            if len(pair) != 2:
                raise ConfigError(f"agreement.pairs: {pair!r} must name exactly two variants")
            for name in pair:
                if name not in names:
                    raise ConfigError(f"agreement.pairs: {name!r} is not a variant; variants: {names}")

    def agreement_pairs(self) -> list[tuple[str, str]]:
        if self.agreement.pairs:
            return [(a, b) for a, b in self.agreement.pairs]
        # A repair variant answers differently from the same model without repair, by design: not a pair.
        adapters = [v.name for v in self.variants if v.kind == "adapter" and not v.repair_rounds]
        merged = [v.name for v in self.variants if v.kind == "merged" and not v.repair_rounds]
        return [(a, m) for a in adapters for m in merged]
