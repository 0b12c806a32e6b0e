"""The evaluation job: load the split, check gold queries, run every variant, score, aggregate, publish.

    result = run(setup(cfg))             # cfg: EvalConfig; same as run_evaluation(cfg)
    print(result.table)                   # Model | Parseable | Exact | Exec (95% CI) | p50 | p95

The report is staged locally and published atomically (manifest last) to ``<output_uri>/<eval_name>/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune.data.spec import load_examples, sample_examples
from sqltune.errors import ConfigError, DataError, SqltuneError, StorageError
from sqltune.evaluation.config import DatasetConfig, EvalConfig
from sqltune.evaluation.databases import resolve_databases

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    report: dict[str, Any]
    uri: str
    table: str
    failed: list[str] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        return len(self.failed) == len(self.report["variants"])


# ------------------------------------------------------------------------------------------ dataset


def load_eval_examples(d: DatasetConfig) -> tuple[list[Any], dict[str, Any]]:
    """The examples to score: the configured split (the training job's split procedure), sampled to
    ``limit``, with the dialect/database overrides applied."""
    root = d.root()
    examples = load_examples(d)
    if not examples:
        raise DataError(f"dataset.source {d.source!r}: the dataset is empty")
    n_total = len(examples)
    if d.split != "all":
        examples = list(d.partition(examples)[d.split])
    if not examples:
        raise DataError(f"dataset: split {d.split!r} of {d.source!r} is empty (split_ratios {d.split_ratios})")
    examples = sample_examples(examples, d.limit, d.sample_seed)
    examples = [_override(ex, d, root) for ex in examples]
    return examples, {"source": d.source, "format": "embedded" if d.is_embedded else d.format,
                      "split": d.split, "n_total": n_total, "root": str(root) if root else None}


def _override(ex: Any, d: DatasetConfig, root: Path | None) -> Any:
    extra = dict(ex.extra)
    extra.setdefault("schema_dialect", ex.dialect)
    changes: dict[str, Any] = {"extra": extra}
    if d.dialect and d.dialect != ex.dialect:
        from sqltune.sql import transpile

        gold = (ex.extra.get("sql_by_dialect") or {}).get(d.dialect)
        if not gold:
            try:
                gold = transpile(ex.sql, ex.dialect, d.dialect)
            except Exception:  # noqa: BLE001 - left as is; the gold check reports it if it fails
                gold = ex.sql
        changes.update(dialect=d.dialect, sql=gold)
    if d.db:
        db = d.db
        if "://" not in db and not os.path.isabs(db) and root is not None and (root / db).exists():
            db = str(root / db)
        changes["db"] = db
    return dataclasses.replace(ex, **changes)


def _check_gold_grounding(examples: list[Any], schemas: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """Run the static checks on the gold queries themselves: a gold query flagged as not read-only or as
    naming unknown tables/columns means the check (or the dataset's schema text) is off for that example,
    so the hallucination and read-only rates of the models should be read with that in mind."""
    from sqltune.sql import analyze

    flagged = []
    for ex in examples:
        schema = schemas.get((ex.schema, ex.extra.get("schema_dialect", ex.dialect)))
        a = analyze(ex.sql, dialect=ex.dialect, schema=schema if schema is not None else ex.schema)
        if not a.parseable or not a.read_only or a.unknown_tables or a.unknown_columns:
            flagged.append({"id": ex.id, "parseable": a.parseable, "read_only": a.read_only,
                            "unknown_tables": a.unknown_tables, "unknown_columns": a.unknown_columns})
    if flagged:
        log.warning("%d gold queries are flagged by the static checks (see report.dataset.gold_flagged)", len(flagged))
    return {"n": len(flagged), "examples": flagged[:50]}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def database_state(examples: list[Any]) -> dict[str, dict[str, Any]]:
    """sha256 of every database file the examples use (server databases are listed, not hashed)."""
    from sqltune.evaluation.report import redact
    from sqltune.sql import engine_of

    out: dict[str, dict[str, Any]] = {}
    for db in sorted({ex.db for ex in examples if ex.db}):
        try:
            engine = engine_of(db)
        except Exception as exc:  # noqa: BLE001
            out[redact(db)] = {"engine": "unknown", "note": str(exc)}
            continue
        if engine == "postgres":
            out[redact(db)] = {"engine": engine, "note": "server database: not hashed (read-only role and transaction)"}
        elif os.path.isfile(db):
            out[db] = {"engine": engine, "sha256_before": _sha256(db)}
        else:
            out[db] = {"engine": engine, "note": "missing file"}
    return out


# ------------------------------------------------------------------------------------------ orchestration


def _check_destination(cfg: EvalConfig) -> str:
    from sqltune.storage import MANIFEST_NAME, exists, join

    uri = join(cfg.output_uri, cfg.eval_name)
    if not cfg.overwrite and exists(join(uri, MANIFEST_NAME)):
        raise StorageError(f"{uri} already holds a published report; pass overwrite=true or another eval_name")
    return uri


def _each(fn: Any, indices: Any, pool: Any) -> None:
    """``fn(i)`` for every index: from as many threads as the pool has workers (each thread mostly waits on
    its worker's pipe), else one after another (in-process engines share this process)."""
    if pool is None or pool.workers < 2:
        for i in indices:
            fn(i)
        return
    with ThreadPoolExecutor(max_workers=pool.workers) as ex:
        list(ex.map(fn, indices))


def _tracking_target(cfg: EvalConfig) -> dict[str, Any] | None:
    """The MLflow run to log into, resolved before anything runs (a run_id that is not there fails here)."""
    from sqltune.evaluation.tracking import resolve_eval_run

    try:
        return resolve_eval_run(cfg)
    except SqltuneError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow's own errors (unknown run, unreachable server)
        raise ConfigError(f"tracking: cannot use MLflow run {cfg.tracking.run_id or '(new)'} of experiment "
                          f"{cfg.tracking.experiment!r}: {type(exc).__name__}: {str(exc)[:300]}; fix tracking.run_id / "
                          "MLFLOW_TRACKING_URI, or set tracking.backend=none") from None


@dataclass
class EvalPlan:
    """What :func:`setup` prepared: everything checked before any model is loaded."""

    cfg: EvalConfig
    uri: str
    examples: list[Any]
    ds_info: dict[str, Any]
    databases: dict[str, dict[str, Any]]
    gold: list[Any]
    schemas: dict[tuple[str, str], Any]
    gold_flagged: dict[str, Any]
    started: float = 0.0
    pool: Any = None  # the SandboxPool SQLite/DuckDB queries run in (metrics.isolation=process)
    tracking: dict[str, Any] | None = None  # the MLflow run the evaluation logs into (None: tracking off)


def setup(cfg: EvalConfig) -> EvalPlan:
    """Checks and preparation that fail fast, before Ray starts: the destination, the dataset and its split,
    the databases (hashed), and one sandboxed run of every gold query."""
    from sqltune.evaluation.metrics import check_gold
    from sqltune.sql import Schema

    t0 = time.perf_counter()
    uri = _check_destination(cfg)
    tracking = _tracking_target(cfg)
    examples, ds_info = load_eval_examples(cfg.dataset)
    examples, excluded = resolve_databases(examples, cfg.dataset)
    if excluded["n_examples"]:
        log.warning("%d examples left out: their databases are missing or unreadable "
                    "(dataset.exclude_missing_databases=true): %s", excluded["n_examples"],
                    ", ".join(m["database"] for m in excluded["databases"]))
        if not examples:
            raise DataError("dataset: every example's database is missing or unreadable; nothing is left to score "
                            "(see the warning above for the list; fix dataset.databases_dir)")
    ds_info["excluded_missing_databases"] = excluded
    log.info("scoring %d examples (%s split of %s) with %d variants", len(examples), cfg.dataset.split,
             cfg.dataset.source, len(cfg.variants))
    databases = database_state(examples)
    m = cfg.metrics
    pool = None
    if m.isolation == "process" and any(ex.db and "://" not in ex.db for ex in examples):
        from sqltune.sql.isolated import SandboxPool

        pool = SandboxPool(workers=m.exec_workers)
    try:
        gold = [None] * len(examples)

        def check(i: int) -> None:
            gold[i] = check_gold(examples[i], exec_timeout_s=m.exec_timeout_s, max_rows=m.max_rows,
                                 context_db=m.context_db, pool=pool)

        _each(check, range(len(examples)), pool)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    n_context = sum(1 for ex, g in zip(examples, gold) if g is not None and not ex.db)
    if n_context:
        databases["in-memory context databases"] = {
            "engine": "sqlite-context", "note": f"{n_context} examples run on SQLite built from their CREATE/INSERT context"}
    schemas: dict[tuple[str, str], Any] = {}
    for ex in examples:
        key = (ex.schema, ex.extra.get("schema_dialect", ex.dialect))
        if key not in schemas:
            try:
                schemas[key] = Schema.from_ddl(ex.schema, dialect=key[1])
            except Exception:  # noqa: BLE001 - grounding then falls back to analyze's own parsing
                schemas[key] = None
    return EvalPlan(cfg=cfg, uri=uri, examples=examples, ds_info=ds_info, databases=databases, gold=gold,
                    schemas=schemas, gold_flagged=_check_gold_grounding(examples, schemas), started=t0, pool=pool,
                    tracking=tracking)


def run_evaluation(cfg: EvalConfig, *, progress: bool = True) -> EvalResult:
    """``run(setup(cfg))``."""
    return run(setup(cfg), progress=progress)


def run(plan: EvalPlan, *, progress: bool = True) -> EvalResult:
    """Generate with every variant (Ray actors), score, aggregate, and publish the report."""
    try:
        return _run(plan, progress=progress)
    finally:
        if plan.pool is not None:
            plan.pool.close()


def _run(plan: EvalPlan, *, progress: bool = True) -> EvalResult:
    from sqltune.evaluation.aggregate import agreement, by_category, repair_summary, summarize, too_many_failed
    from sqltune.evaluation.breakdown import group_aggregates, group_counts
    from sqltune.evaluation.metrics import score_example
    from sqltune.evaluation.report import comparison_table, dataset_hash, now_iso, redact, write_report
    from sqltune.evaluation.runner import run_variants
    from sqltune.storage import publish

    cfg, uri, examples, ds_info = plan.cfg, plan.uri, plan.examples, plan.ds_info
    databases, gold, schemas, gold_flagged = plan.databases, plan.gold, plan.schemas, plan.gold_flagged
    t0 = plan.started or time.perf_counter()
    n = len(examples)
    m = cfg.metrics
    items = [{"question": ex.question, "schema": ex.schema, "dialect": ex.dialect, "evidence": ex.evidence,
              "db": ex.db} for ex in examples]
    scores: dict[str, list[Any]] = {v.name: [None] * n for v in cfg.variants}

    def on_batch(name: str, start: int, outs: list[Any]) -> None:
        def one(i: int) -> None:
            out, ex = outs[i], examples[start + i]
            scores[name][start + i] = score_example(
                variant=name, example=ex, raw_output=out.text, gold=gold[start + i],
                schema=schemas.get((ex.schema, ex.extra.get("schema_dialect", ex.dialect))),
                latency_s=out.latency_s, prompt_tokens=out.prompt_tokens, output_tokens=out.output_tokens,
                exec_timeout_s=m.exec_timeout_s, max_rows=m.max_rows, float_tol=m.float_tol,
                partial_weight=m.hybrid_partial_weight, statements=m.statements,
                failure=(out.error_category or "generation_error", out.error) if out.error else None,
                pool=plan.pool,
            )

        _each(one, range(len(outs)), plan.pool)

    tokens = {v.name: os.environ.get(v.api_key_env) for v in cfg.variants if v.kind == "http" and v.api_key_env}
    runs = run_variants(cfg, items, on_batch=on_batch, tokens=tokens, progress=progress)

    for name, state in databases.items():
        if "sha256_before" in state:
            state["sha256_after"] = _sha256(name) if os.path.isfile(name) else None
            state["unchanged"] = state["sha256_after"] == state["sha256_before"]
            if not state["unchanged"]:
                log.error("database %s CHANGED during the evaluation: the sandbox failed", name)

    categories = sorted({ex.category or "uncategorized" for ex in examples})
    variants: dict[str, Any] = {}
    failures = []
    for v in cfg.variants:
        run = runs[v.name]
        entry: dict[str, Any] = {"kind": v.kind, "model": v.model or None, "url": v.url or None,
                                 "prompt_mode": v.prompt_mode, "status": run.status, "error": run.error,
                                 "failure": run.failure, "info": run.info, "elapsed_s": run.elapsed_s}
        if run.status == "ok":
            rows = scores[v.name]
            if any(r is None for r in rows):
                run.status, run.error, run.failure = "failed", "some examples were not scored", "aborted"
            else:
                entry["aggregate"] = summarize(rows, wall_s=run.wall_s, bootstrap_samples=m.bootstrap_samples,
                                               bootstrap_seed=m.bootstrap_seed, confidence=m.confidence)
                entry["aggregate"]["peak_memory_mb"] = run.info.get("peak_memory_mb")
                entry["by_category"] = by_category(rows)
                entry.update(group_aggregates(rows, examples))
                too_many = too_many_failed(rows, cfg.max_failed_fraction)
                if too_many:
                    run.status, run.error, run.failure = "failed", too_many, "too_many_failed_examples"
            entry.update(status=run.status, error=run.error, failure=run.failure)
        if v.repair_rounds and run.status == "ok":
            entry["repair"] = repair_summary(run.outputs, v.repair_rounds)
        if run.status != "ok":
            failures.append({"variant": v.name, "failure": run.failure, "error": run.error})
        variants[v.name] = entry

    agree = []
    for a, b in cfg.agreement_pairs():
        if variants[a]["status"] == "ok" and variants[b]["status"] == "ok":
            agree.append(agreement(a, scores[a], b, scores[b], max_disagreement=cfg.agreement.max_disagreement,
                                   max_accuracy_diff=cfg.agreement.max_accuracy_diff))
    gold_failures = [{"id": ex.id, "category": ex.category, "gold_sql": ex.sql, "error": g.error}
                     for ex, g in zip(examples, gold) if g is not None and not g.ok]
    dialects: dict[str, int] = {}
    cat_counts: dict[str, int] = {}
    failed_ids = {g["id"] for g in gold_failures}
    for ex in examples:
        dialects[ex.dialect] = dialects.get(ex.dialect, 0) + 1
        if ex.id not in failed_ids:
            c = ex.category or "uncategorized"
            cat_counts[c] = cat_counts.get(c, 0) + 1

    from sqltune import __version__ as version  # noqa: PLC0415

    report: dict[str, Any] = {
        "schema_version": 1,
        "eval_name": cfg.eval_name,
        "created": now_iso(),
        "sqltune_version": version,
        "uri": uri,
        "config": redact(cfg.to_dict()),
        "dataset": {
            "source": redact(ds_info["source"]), "format": ds_info["format"], "split": ds_info["split"], "n": n,
            "n_total": ds_info["n_total"], "hash": dataset_hash(examples), "dialects": dialects,
            "categories": cat_counts, "n_gold_failed": len(gold_failures), "databases": databases,
            "gold_flagged": gold_flagged, "excluded_missing_databases": ds_info["excluded_missing_databases"],
        },
        "scoring": {"statements": m.statements, "max_failed_fraction": cfg.max_failed_fraction,
                    "isolation": m.isolation, "sandbox_worker_kills": plan.pool.kills if plan.pool else 0},
        "variants": variants,
        "categories": categories,
        "per_category": {c: {name: (v["by_category"].get(c, {}).get("exec_accuracy") if v["status"] == "ok" else None)
                             for name, v in variants.items()} for c in categories},
        **group_counts(examples, failed_ids, variants),
        "agreement": agree,
        "gold_failures": gold_failures,
        "failures": failures,
        "elapsed_s": time.perf_counter() - t0,
        "tracking": plan.tracking,
    }
    # Every scored variant's rows, a variant failed for too many failed examples included.
    predictions = [s.to_dict() for v in cfg.variants if "aggregate" in variants[v.name] for s in scores[v.name]]
    stage = Path(cfg.work_dir) / cfg.eval_name if cfg.work_dir else Path(tempfile.mkdtemp(prefix="sqltune-eval-"))
    try:
        if stage.exists() and cfg.work_dir:
            shutil.rmtree(stage)
        write_report(report, predictions, stage, plots=cfg.plots)
        if plan.tracking is not None:
            from sqltune.evaluation.tracking import track_evaluation

            try:
                track_evaluation(cfg, report, stage, plan.tracking)
            except Exception as exc:  # noqa: BLE001 - the report is published either way
                log.error("MLflow tracking failed (%s: %s); the report is published without it",
                          type(exc).__name__, exc)
        publish(stage, uri, kind="eval-report", overwrite=cfg.overwrite,
                metadata={"eval_name": cfg.eval_name, "dataset_hash": report["dataset"]["hash"],
                          "variants": list(variants)})
    finally:
        if not cfg.work_dir:
            shutil.rmtree(stage, ignore_errors=True)
    table = comparison_table(report)
    return EvalResult(report=report, uri=uri, table=table, failed=[f["variant"] for f in failures])
