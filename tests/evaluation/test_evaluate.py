"""End to end through a local Ray: base, adapter, merged, int8 and HTTP variants on the embedded test split."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sqltune.evaluation import EvalConfig, load_eval_examples, run_evaluation

from canned_server import CannedServer, free_port

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-123"
AGG_KEYS = ("parseable", "exact", "ast_equal", "exec_accuracy", "exec_ci_low", "exec_ci_high", "hybrid", "rouge_l",
            "cleaned", "hallucination", "unknown_table", "unknown_column", "read_only_violation", "latency_mean_s",
            "latency_p50_s", "latency_p95_s", "output_tokens_mean", "tokens_per_s")
ROW_KEYS = ("variant", "id", "category", "raw_output", "cleaned_sql", "parseable", "exact", "ast_equal", "exec_match",
            "unknown_tables", "unknown_columns", "hallucination", "read_only_violation", "rouge_l", "hybrid",
            "latency_s", "output_tokens", "error_category", "gold_failed")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory) -> Path:
    from sqltune.data.embedded import build_embedded

    return build_embedded(tmp_path_factory.mktemp("embedded") / "ds", seed=0).root


@pytest.fixture(scope="module")
def exports(tiny_base, tiny_adapter, tmp_path_factory) -> dict[str, str]:
    from sqltune.export import ExportConfig, run_export

    out = tmp_path_factory.mktemp("exports")
    cfg = ExportConfig.from_dict({"adapter": str(tiny_adapter), "output_uri": str(out), "run_name": "tiny",
                                  "formats": ["merged", "int8"], "dtype": "fp32", "measure_merge": False,
                                  "verify": False, "device": "cpu"})
    return run_export(cfg).artifacts


def _canned(examples) -> tuple[dict[str, str], dict[str, bool]]:
    """Gold SQL for most questions; hostile, hallucinated, wrong and prose-wrapped answers for five."""
    answers, correct = {}, {}
    for i, ex in enumerate(examples):
        if i == 0:
            reply, ok = "DROP TABLE customers", False
        elif i == 1:
            reply, ok = f"ATTACH DATABASE '{ex.db}.evil' AS evil", False
        elif i == 2:
            reply, ok = f"Sure! Here is the query:\n```sql\n{ex.sql}\n```\nIt answers the question.", True
        elif i == 3:
            reply, ok = "SELECT no_such_column FROM customers", False
        elif i == 4:
            reply, ok = "SELECT 424242", False
        else:
            reply, ok = ex.sql, True
        answers[ex.question] = reply
        correct[ex.id] = ok
    return answers, correct


def test_report_for_every_variant_kind(local_ray, embedded_dir, tiny_base, tiny_adapter, exports,
                                       tmp_path, monkeypatch):
    from sqltune.storage import verify

    dataset = {"source": "embedded", "embedded_dir": str(embedded_dir), "split": "test", "limit": 24}
    cfg_dict = {
        "eval_name": "e2e",
        "output_uri": str(tmp_path / "reports"),
        "dataset": dataset,
        "variants": [
            {"name": "base", "kind": "base", "model": str(tiny_base), "prompt_mode": "plain"},
            {"name": "adapter", "kind": "adapter", "model": str(tiny_adapter)},
            {"name": "merged", "kind": "merged", "model": exports["merged"]},
            {"name": "int8", "kind": "int8", "model": exports["int8"]},
            {"name": "merged+repair", "kind": "merged", "model": exports["merged"], "repair_rounds": 1},
            {"name": "http", "kind": "http", "url": "", "api_model": "canned", "api_key_env": "SQLTUNE_TEST_TOKEN"},
            {"name": "http-down", "kind": "http", "url": f"http://127.0.0.1:{free_port()}", "retries": 0,
             "timeout_s": 2},
            {"name": "broken", "kind": "merged", "model": str(tmp_path / "no-such-model")},
        ],
        "generation": {"max_new_tokens": 24, "batch_size": 8},
        "ray": {"num_cpus_per_actor": 0.5},
    }
    examples, _ = load_eval_examples(EvalConfig.from_dict({**cfg_dict, "variants": cfg_dict["variants"][:1]}).dataset)
    assert len(examples) == 24 and len({ex.category for ex in examples}) >= 5
    answers, correct = _canned(examples)
    db = Path(examples[0].db)
    before = _sha(db)
    monkeypatch.setenv("SQLTUNE_TEST_TOKEN", TOKEN)
    with CannedServer(answers, token=TOKEN) as server:
        cfg_dict["variants"][5]["url"] = server.url
        result = run_evaluation(EvalConfig.from_dict(cfg_dict), progress=False)
        assert len(server.requests) == 24
        assert all(r["temperature"] == 0 and r["model"] == "canned" for r in server.requests)
    print(result.table)
    report = result.report

    # Published atomically, with every file.
    out = tmp_path / "reports" / "e2e"
    assert result.uri == str(out)
    manifest = verify(str(out))
    for name in ("report.json", "report.md", "predictions.jsonl", "accuracy_vs_latency.png",
                 "category_accuracy.png", "error_categories.png"):
        assert name in manifest.files, name
    assert json.loads((out / "report.json").read_text())["dataset"]["hash"] == report["dataset"]["hash"]

    # The endpoint that is down and the model that will not load are reported failed; the others finished.
    v = report["variants"]
    assert v["http-down"]["status"] == "failed" and "unreachable" in v["http-down"]["error"]
    assert v["broken"]["status"] == "failed" and "no-such-model" in v["broken"]["error"]
    assert [f["variant"] for f in report["failures"]] == ["http-down", "broken"]
    for name in ("base", "adapter", "merged", "int8", "merged+repair", "http"):
        assert v[name]["status"] == "ok", (name, v[name]["error"])
        agg = v[name]["aggregate"]
        assert agg["n"] == 24 and agg["n_exec"] == 24
        for key in AGG_KEYS:
            assert agg[key] is not None, (name, key)
        assert set(v[name]["by_category"]) == {ex.category for ex in examples}
    assert v["int8"]["info"]["artifact_kind"] == "int8" and v["adapter"]["info"]["artifact_kind"] == "adapter"
    assert v["base"]["info"]["prompt_template"]["mode"] == "plain"
    # The repair variant counts the tokens of every round it generated, so its tokens/s is there.
    repair_agg = v["merged+repair"]["aggregate"]
    assert isinstance(repair_agg["output_tokens_total"], int) and repair_agg["output_tokens_total"] > 0
    assert repair_agg["output_tokens_total"] >= v["merged"]["aggregate"]["output_tokens_total"]
    assert repair_agg["tokens_per_s"] > 0
    assert v["merged+repair"]["repair"]["max_rounds"] == 1

    # The HTTP variant's numbers, computed by hand from the canned answers.
    agg = v["http"]["aggregate"]
    assert agg["exec_accuracy"] == pytest.approx(20 / 24)
    assert agg["read_only_violation"] == pytest.approx(2 / 24)
    assert agg["error_categories"]["not_read_only"] == 2
    assert agg["error_categories"]["unknown_identifier"] == 1
    assert agg["error_categories"]["wrong_result"] == 1
    assert agg["cleaned"] == pytest.approx(1 / 24)
    assert agg["exec_ci_low"] <= agg["exec_accuracy"] <= agg["exec_ci_high"]
    for cat in {ex.category for ex in examples}:
        ids = [ex.id for ex in examples if ex.category == cat]
        want = sum(correct[i] for i in ids) / len(ids)
        assert v["http"]["by_category"][cat]["exec_accuracy"] == pytest.approx(want), cat
        assert report["per_category"][cat]["http"] == pytest.approx(want)

    # Hostile predictions scored 0 with their category; the database is byte-for-byte unchanged.
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 * 24 and all(set(ROW_KEYS) <= set(r) for r in rows)
    hostile = [r for r in rows if r["variant"] == "http" and r["id"] in (examples[0].id, examples[1].id)]
    assert [r["error_category"] for r in hostile] == ["not_read_only", "not_read_only"]
    assert all(r["hybrid"] == 0.0 and r["exec_match"] is False for r in hostile)
    assert _sha(db) == before and not Path(f"{db}.evil").exists()
    assert report["dataset"]["databases"][str(db)]["unchanged"] is True
    assert report["dataset"]["gold_flagged"]["n"] == 0

    # adapter vs merged (fp32 export): compared, and identical as they should be; not vs merged+repair.
    (pair,) = report["agreement"]
    assert (pair["a"], pair["b"]) == ("adapter", "merged") and pair["n"] == 24
    print("adapter vs merged:", pair)
    assert pair["identical_outputs"] >= 0.9

    md = (out / "report.md").read_text()
    assert "| Model | Parseable | Exact | Exec (95% CI) | p50 | p95 |" in md
    assert "| http-down | failed |" in md and "| broken | failed |" in md
    assert "## Execution accuracy per category" in md and "## Failed variants" in md
    for name in ("base", "adapter", "merged", "int8", "merged+repair", "http"):
        assert f"| {name} |" in md


def test_gold_failure_is_reported_not_counted(local_ray, tmp_path):
    from eval_helpers import build_shop

    db = build_shop("sqlite", tmp_path)
    schema = "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, segment TEXT);"
    rows = [
        {"id": "g1", "question": "Names of German customers?", "sql": "SELECT name FROM customers WHERE country = 'Germany'"},
        {"id": "g2", "question": "How many customers?", "sql": "SELECT COUNT(*) FROM customers"},
        {"id": "g3", "question": "Emails of customers?", "sql": "SELECT email FROM customers"},  # gold fails
        {"id": "g4", "question": "Countries?", "sql": "SELECT DISTINCT country FROM customers"},
    ]
    data = tmp_path / "examples.jsonl"
    data.write_text("".join(json.dumps({**r, "schema": schema, "db": str(db), "category": "c"}) + "\n" for r in rows))
    answers = {"Names of German customers?": "SELECT name FROM customers WHERE country = 'Germany'",
               "How many customers?": "SELECT 3", "Emails of customers?": "SELECT email FROM customers",
               "Countries?": "SELECT DISTINCT country FROM customers"}
    with CannedServer(answers) as server:
        cfg = EvalConfig.from_dict({
            "eval_name": "gold", "output_uri": str(tmp_path / "out"),
            "dataset": {"source": str(data), "format": "jsonl", "split": "all"},
            "variants": [{"name": "canned", "kind": "http", "url": server.url}],
        })
        report = run_evaluation(cfg, progress=False).report
    agg = report["variants"]["canned"]["aggregate"]
    assert report["dataset"]["n"] == 4 and report["dataset"]["n_gold_failed"] == 1
    assert [g["id"] for g in report["gold_failures"]] == ["g3"] and "email" in report["gold_failures"][0]["error"]
    assert agg["n"] == 3 and agg["n_gold_failed"] == 1
    assert agg["exec_accuracy"] == pytest.approx(2 / 3)  # the failing gold is not counted against the model
    md = (tmp_path / "out" / "gold" / "report.md").read_text()
    assert "Gold queries that failed" in md and "`g3`" in md


def test_cli_runs_and_errors_cleanly(local_ray, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "libs")}
    bad = subprocess.run([sys.executable, "-m", "jobs.evaluate", "--config", "jobs/configs/eval-tiny.yaml",
                          "dataset.split=dev"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "dataset.split" in bad.stderr and "Traceback" not in bad.stderr
    with CannedServer({}, default="SELECT name FROM customers") as server:
        from eval_helpers import build_shop

        db = build_shop("sqlite", tmp_path)
        data = tmp_path / "ex.jsonl"
        data.write_text(json.dumps({"id": "a", "question": "Names?", "sql": "SELECT name FROM customers",
                                    "schema": "CREATE TABLE customers (name TEXT);", "db": db}) + "\n")
        address = local_ray.get_runtime_context().gcs_address
        ok = subprocess.run(
            [sys.executable, "-m", "jobs.evaluate", "eval_name=cli", f"output_uri={tmp_path / 'out'}",
             f"dataset.source={data}", "dataset.format=jsonl", "dataset.split=all", f"ray.address={address}",
             f"variants=[{{name: ep, kind: http, url: '{server.url}'}}]"],
            cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "| Model | Parseable | Exact | Exec (95% CI) | p50 | p95 |" in ok.stdout
    assert "| ep | 100.0% | 100.0% |" in ok.stdout
    assert (tmp_path / "out" / "cli" / "manifest.json").is_file()


def test_cli_flags_disagreement_and_exits_3_when_a_variant_fails(local_ray, tmp_path):
    """Through ``python -m jobs.evaluate``: two endpoints that should agree differ on 2 of 4 answers, so
    the pair is flagged with its reasons (report.json, the report's agreement table, the job's output);
    a third endpoint is down, and with fail_on_variant_error the exit status is 3 after publishing. When
    every variant fails the status is 3 without the flag."""
    from eval_helpers import build_shop

    db = build_shop("sqlite", tmp_path)
    schema = "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, segment TEXT);"
    gold = {"Names?": "SELECT name FROM customers", "How many customers?": "SELECT COUNT(*) FROM customers",
            "Countries?": "SELECT DISTINCT country FROM customers", "Segments?": "SELECT DISTINCT segment FROM customers"}
    data = tmp_path / "ex.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "sql": sql, "schema": schema, "db": db,
                                        "category": "c"}) + "\n" for i, (q, sql) in enumerate(gold.items())))
    wrong = {**gold, "How many customers?": "SELECT 0", "Countries?": "SELECT name FROM customers"}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "libs")}
    address = local_ray.get_runtime_context().gcs_address
    down = f"{{name: down, kind: http, url: 'http://127.0.0.1:{free_port()}', retries: 0, timeout_s: 2}}"

    def evaluate(name: str, variants: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jobs.evaluate", f"eval_name={name}", f"output_uri={tmp_path / 'out'}",
             f"dataset.source={data}", "dataset.format=jsonl", "dataset.split=all", f"ray.address={address}",
             f"variants=[{variants}]", *extra],
            cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)

    with CannedServer(gold) as a, CannedServer(wrong) as b:
        proc = evaluate("flagged", f"{{name: a, kind: http, url: '{a.url}'}}, {{name: b, kind: http, url: '{b.url}'}}, "
                        + down, "agreement.pairs=[[a, b]]", "fail_on_variant_error=true")
    assert proc.returncode == 3, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "flagged" / "report.json").read_text())
    assert report["variants"]["down"]["status"] == "failed"
    (pair,) = report["agreement"]
    reasons = ["50.0% of outputs differ (threshold 5.0%)", "accuracy differs by +50.0% (threshold 2.0%)"]
    assert (pair["a"], pair["b"], pair["n"], pair["flagged"], pair["reasons"]) == ("a", "b", 4, True, reasons)
    assert pair["identical_outputs"] == 0.5 and pair["accuracy_diff"] == pytest.approx(0.5)
    assert sorted(pair["differing_ids"]) == ["q1", "q2"]
    md = (tmp_path / "out" / "flagged" / "report.md").read_text()
    assert "| Pair | n | Identical outputs | Accuracy diff | Flagged |" in md
    row = next(line for line in md.splitlines() if line.startswith("| a vs b |"))
    assert row.startswith("| a vs b | 4 |") and "+50.0 pts" in row and row.endswith(f"**yes**: {'; '.join(reasons)} |")
    assert f"agreement a vs b FLAGGED: {'; '.join(reasons)}" in proc.stdout
    assert "variant down FAILED" in proc.stdout and "Traceback" not in proc.stderr

    everything_down = evaluate("all-down", down)
    assert everything_down.returncode == 3, everything_down.stderr[-3000:]
    assert (tmp_path / "out" / "all-down" / "report.json").is_file()  # published before the status


def test_http_variant_against_sqltunes_own_server(local_ray, embedded_dir, exports, tmp_path, monkeypatch):
    """The http variant scores sqltune's real server (Ray Serve, OpenAI-compatible routes, bearer auth)
    serving the merged export, next to the same export loaded locally."""
    import time

    import httpx
    from ray import serve

    from sqltune.serving.deployments import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = {
            "model_uri": exports["merged"], "model_name": "sqltune-tiny", "api_token_env": "SQLTUNE_EVAL_TEST_TOKEN",
            "max_batch_size": 8, "default_max_new_tokens": 24, "max_new_tokens_cap": 64,
            "model_deployment": {"ray_actor_options": {"num_cpus": 0.5}},
            "ingress_deployment": {"ray_actor_options": {
                "num_cpus": 0.25, "runtime_env": {"env_vars": {"SQLTUNE_EVAL_TEST_TOKEN": TOKEN}}}},
        }
        serve.run(build_app(args), name="sqltune-eval-test", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        monkeypatch.setenv("SQLTUNE_TEST_TOKEN", TOKEN)
        cfg = EvalConfig.from_dict({
            "eval_name": "served", "output_uri": str(tmp_path / "out"),
            "dataset": {"source": "embedded", "embedded_dir": str(embedded_dir), "split": "test", "limit": 8},
            "variants": [
                {"name": "merged", "kind": "merged", "model": exports["merged"]},
                {"name": "served", "kind": "http", "url": base, "api_model": "sqltune-tiny",
                 "api_key_env": "SQLTUNE_TEST_TOKEN"},
                {"name": "served-bad-token", "kind": "http", "url": base, "api_key_env": "SQLTUNE_NO_SUCH_TOKEN"},
            ],
            "generation": {"max_new_tokens": 24, "batch_size": 8},
            "ray": {"num_cpus_per_actor": 0.5, "max_parallel": 2},  # the third waits for a free slot
            "agreement": {"pairs": [["merged", "served"]]},
        })
        report = run_evaluation(cfg, progress=False).report
    finally:
        serve.shutdown()
    v = report["variants"]
    assert v["served"]["status"] == "ok", v["served"]["error"]
    assert v["served"]["info"]["served_models"] == ["sqltune-tiny"]
    agg = v["served"]["aggregate"]
    assert agg["n"] == 8 and agg["output_tokens_total"] is not None and agg["tokens_per_s"] > 0
    assert v["served-bad-token"]["status"] == "failed" and "SQLTUNE_NO_SUCH_TOKEN" in v["served-bad-token"]["error"]
    # The same export and prompts, decoded by the server's engine and locally by transformers: identical
    # outputs, no tolerance (greedy decoding on the same weights).
    (pair,) = report["agreement"]
    assert (pair["a"], pair["b"], pair["n"]) == ("merged", "served", 8)
    assert pair["identical_outputs"] == 1.0 and pair["differing_ids"] == [], pair
    assert pair["flagged"] is False and pair["reasons"] == [] and pair["accuracy_diff"] == 0.0, pair


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_other_engines_through_the_dataset_overrides(engine, local_ray, embedded_dir, tmp_path, request):
    """dataset.dialect + dataset.db score the embedded split on DuckDB or PostgreSQL (gold SQL from
    extra.sql_by_dialect); a hostile prediction changes nothing there either."""
    if engine == "duckdb":
        db = "warehouse.duckdb"  # resolved against the dataset folder
        path = embedded_dir / db
        fingerprint = lambda: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    else:
        import psycopg

        from sqltune.data.embedded import load_postgres
        from sqltune.sql.postgres import drop_database, ensure_readonly_role

        admin = request.getfixturevalue("postgres_admin_dsn")
        name = f"eval_wh_{os.getpid()}"
        load_postgres(admin, name)
        request.addfinalizer(lambda: drop_database(admin, name))
        db = ensure_readonly_role(admin, name)

        def fingerprint() -> str:
            with psycopg.connect(db) as conn:
                return repr(conn.execute("SELECT COUNT(*), SUM(customer_id) FROM customers").fetchone())

    dataset = {"source": "embedded", "embedded_dir": str(embedded_dir), "split": "test", "limit": 12,
               "dialect": engine, "db": db}
    cfg_dict = {"eval_name": f"on-{engine}", "output_uri": str(tmp_path / "out"), "dataset": dataset,
                "variants": [{"name": "canned", "kind": "http", "url": "http://127.0.0.1:1"}]}
    examples, _ = load_eval_examples(EvalConfig.from_dict(cfg_dict).dataset)
    assert all(ex.dialect == engine and ex.sql == ex.extra["sql_by_dialect"][engine] for ex in examples)
    answers = {ex.question: ex.sql for ex in examples}
    answers[examples[0].question] = "DROP TABLE customers"
    before = fingerprint()
    with CannedServer(answers) as server:
        cfg_dict["variants"][0]["url"] = server.url
        report = run_evaluation(EvalConfig.from_dict(cfg_dict), progress=False).report
    agg = report["variants"]["canned"]["aggregate"]
    assert report["dataset"]["n_gold_failed"] == 0 and report["dataset"]["dialects"] == {engine: 12}
    assert agg["exec_accuracy"] == pytest.approx(11 / 12) and agg["error_categories"]["not_read_only"] == 1
    assert fingerprint() == before
