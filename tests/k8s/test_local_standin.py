"""The cpu-dev overlay, rendered by kustomize, run to completion on the local KubeRay stand-in against the
embedded S3: train a few steps -> export -> evaluate -> serve; then the pipeline RayJob's gate refuses a
model (serving unchanged) and a passing gate switches the served model.

One local Ray head serves every test here. It is started WITHOUT the AWS_* variables: the jobs and the
server reach S3 only through the pods' envFrom Secret, resolved from the stand-in's env file."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sqltune import cli, storage
from sqltune.k8s import local
from sqltune.k8s.localray import LocalRay, free_ports

from .conftest import ROOT, kustomize

# Minutes of CPU each (Ray Train, export, four evaluated variants, Serve); a loaded machine needs more than
# the suite's 900 s default, as the demo's own end-to-end test allows.
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(1500)]

API_TOKEN = "stand-in-test-token"
FEW_STEPS = ["train.max_steps=2", "data.max_train_examples=48", "data.max_validation_examples=8"]
SMALL_EVAL = [
    "dataset.limit=4",
    "generation.max_new_tokens=12",
    "plots=false",
    "metrics.bootstrap_samples=10",
]
FAST_EXPORT = ["measure_merge=false"]  # the merge-choice measurement is a report figure, not a CI check


@dataclass
class StandIn:
    ray: LocalRay
    objs: list[dict]
    manifests: Path
    env_file: Path
    secrets: dict
    work: Path
    serve_url: str = ""


def _tiny_base(out: Path, embedded: Path) -> Path:
    """A 2-layer, hidden-64 Qwen2 whose tokenizer is trained on the embedded prompts (seconds to build)."""
    from sqltune.data import load_dataset
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model
    from sqltune.prompts import build_messages

    texts: list[str] = []
    for ex in load_dataset(embedded, format="embedded")[:300]:
        texts.extend(m["content"] for m in build_messages(ex.question, ex.schema, dialect=ex.dialect))
        texts.append(ex.sql)
    cfg = TinyModelConfig(
        vocab_size=1024, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128
    )
    return build_tiny_model(out, cfg, corpus=texts)


@pytest.fixture(scope="module")
def stand_in(s3_server, kubectl, tmp_path_factory):
    work = tmp_path_factory.mktemp("k8s-local")
    s3_server.create_bucket("sqltune")  # the presets' bucket
    base = _tiny_base(work / "tiny-base", work / "embedded")
    storage.publish(base, "s3://sqltune/models/tiny-base", kind="base", overwrite=True)
    secrets = {"sqltune-s3": s3_server.env(), "sqltune-api": {"token": API_TOKEN}}
    env_file = work / "secrets.env"
    env_file.write_text(local.env_file_text(secrets))
    manifests = work / "cpu-dev.yaml"
    manifests.write_text(kustomize(kubectl, ROOT / "k8s/overlays/cpu-dev"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    ray = LocalRay(work, num_cpus=6, env=env, cwd=work)
    try:
        ray.start()
        yield StandIn(ray, local.load_objects(manifests.read_text()), manifests, env_file, secrets, work)
    finally:
        ray.stop()


@pytest.fixture()
def ray_env(stand_in, monkeypatch):
    """The caller's env of `--address` mode: the running head's auth settings."""
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.setenv(key, stand_in.ray.env[key])


def _get(url: str, path: str) -> dict:
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {API_TOKEN}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def served_models(url: str) -> list[str]:
    return [m["id"] for m in _get(url, "/v1/models")["data"]]


def test_cpu_dev_overlay_runs_end_to_end(stand_in: StandIn, ray_env, capsys) -> None:
    # The three RayJobs, through the user command, in the order the chain needs them.
    code = cli.main(
        [
            "k8s",
            "local-run",
            "-f",
            str(stand_in.manifests),
            "--env-file",
            str(stand_in.env_file),
            "--address",
            stand_in.ray.address,
            "--work",
            str(stand_in.work / "run"),
            "--no-service",
            *[f"--args=sqltune-train-tiny:{a}" for a in FEW_STEPS],
            *[f"--args=sqltune-export-tiny:{a}" for a in FAST_EXPORT],
            *[f"--args=sqltune-eval-tiny:{a}" for a in SMALL_EVAL],
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err[-6000:]
    for job in ("sqltune-train-tiny", "sqltune-export-tiny", "sqltune-eval-tiny"):
        assert f"[stand-in] RayJob {job}: SUCCEEDED" in err, err[-4000:]
    # the manifests' exact entrypoints ran (mountPaths under the stand-in's root)
    assert (
        "[stand-in] RayJob sqltune-train-tiny: python -m jobs.train --config /etc/sqltune/configs/tiny.yaml"
        in err
    )
    assert storage.exists("s3://sqltune/runs/tiny/adapter/manifest.json")
    assert storage.exists("s3://sqltune/runs/tiny/merged/manifest.json")
    report = json.loads(storage.read_text("s3://sqltune/eval/tiny/report.json"))
    assert set(report["variants"]) == {"base", "adapter", "merged", "int8"}
    assert report["dataset"]["n"] == 4

    # The RayService: serve deploy of its serveConfigV2, /readyz, /v1/sql.
    (svc,) = local.select(stand_in.objs, "RayService", None)
    port = free_ports(1)[0]
    out = local.run_rayservice(
        svc, stand_in.objs, stand_in.ray, work=stand_in.work, repo=ROOT, secrets=stand_in.secrets, port=port
    )
    stand_in.serve_url = out.url
    assert out.models == ["tiny-merged"]
    assert isinstance(out.answer["sql"], str) and out.answer["model"] == "tiny-merged"
    # the API token of the Secret guards the server
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{out.url}/v1/models", timeout=30)
    assert denied.value.code == 401


def test_failing_gate_leaves_the_served_model_and_says_why(stand_in: StandIn) -> None:
    if not stand_in.serve_url:
        pytest.skip("needs the server of test_cpu_dev_overlay_runs_end_to_end")
    (job,) = local.select(stand_in.objs, "RayJob", ["sqltune-pipeline-tiny"])
    extra = [
        f"train_overrides=[run_name=tiny-candidate,{','.join(FEW_STEPS)}]",
        f"export_overrides=[{','.join(FAST_EXPORT)}]",
        f"eval_overrides=[eval_name=tiny-candidate,{','.join(SMALL_EVAL)}]",
        "gate.min_exec_accuracy=1.0",  # above anything a 2-step model measures
        "promote.target=local",
        f"promote.address={stand_in.ray.address}",
    ]
    out = local.run_rayjob(
        job,
        stand_in.objs,
        stand_in.ray,
        root=stand_in.work / "mounts",
        repo=ROOT,
        secrets=stand_in.secrets,
        extra_args=extra,
    )
    assert out.status == "FAILED", out.logs[-4000:]
    assert "gate FAILED" in out.logs and "gate.min_exec_accuracy is 100.0%" in out.logs, out.logs[-4000:]
    assert "serving is unchanged" in out.logs
    gate = json.loads(storage.read_text("s3://sqltune/eval/tiny-candidate/gate.json"))
    assert gate["verdict"] == "fail" and any("min_exec_accuracy" in r for r in gate["reasons"])
    assert gate["inputs"]["candidate"]["model"] == "s3://sqltune/runs/tiny-candidate/merged"
    assert served_models(stand_in.serve_url) == ["tiny-merged"]


def test_passing_gate_switches_the_served_model(stand_in: StandIn, ray_env, capsys) -> None:
    if not storage.exists("s3://sqltune/eval/tiny-candidate/report.json"):
        pytest.skip(
            "needs the evaluation published by test_failing_gate_leaves_the_served_model_and_says_why"
        )
    code = cli.main(
        [
            "gate",
            "--report",
            "s3://sqltune/eval/tiny-candidate",
            "--config",
            str(ROOT / "jobs/configs/pipeline-tiny.yaml"),
            "gate.min_exec_accuracy=0",
            "gate.min_gain=-1",
            "gate.require_agreement=false",
            "promote.target=local",
            f"promote.address={stand_in.ray.address}",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err[-4000:]
    assert "gate PASSED for merged (s3://sqltune/runs/tiny-candidate/merged)" in out.out
    assert json.loads(storage.read_text("s3://sqltune/eval/tiny-candidate/gate.json"))["verdict"] == "pass"
    deadline = time.monotonic() + 120  # old replicas drain after the new ones are up
    while served_models(stand_in.serve_url) != ["tiny-candidate-merged"] and time.monotonic() < deadline:
        time.sleep(2)
    assert served_models(stand_in.serve_url) == ["tiny-candidate-merged"]
    req = urllib.request.Request(
        f"{stand_in.serve_url}/v1/sql",
        data=json.dumps(local.SMOKE_QUESTION).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert json.loads(resp.read())["model"] == "tiny-candidate-merged"
    deployed = yaml.safe_load((stand_in.work / "sqltune-serve.yaml").read_text())
    assert (
        deployed["applications"][0]["args"]["model_uri"] == "s3://sqltune/runs/tiny/merged"
    )  # what was deployed first
