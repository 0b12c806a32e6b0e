"""The kustomize overlays render, validate against the KubeRay CRDs and Kubernetes schemas, are
generated from the same builders as the CLI, and meet the pod hardening rules."""

from __future__ import annotations

import copy
import filecmp
from pathlib import Path

import pytest
import yaml

from sqltune.k8s import builders as b
from sqltune.k8s.generate import EVAL_CONFIG, JOB_CONFIGMAP, TRAIN_CONFIG, generate
from sqltune.k8s.validate import pod_templates, validate_core_object, validate_crd_object, validate_objects
from sqltune.k8s.versions import RAY_VERSION

from .conftest import OVERLAYS, ROOT

RAY_KINDS = {"RayJob", "RayService", "RayCluster"}


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def test_overlays_exist() -> None:
    assert {"gpu", "cpu-dev"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_expected_objects(rendered, overlay: str) -> None:
    objs = rendered[overlay]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds.count("RayJob") == 4 and kinds.count("RayService") == 1, kinds
    assert sorted(o["metadata"]["name"] for o in objs if o["kind"] == "RayJob") == [
        "sqltune-eval-tiny", "sqltune-export-tiny", "sqltune-pipeline-tiny", "sqltune-train-tiny"]
    for kind in ("Namespace", "ServiceAccount", "ConfigMap", "NetworkPolicy"):
        assert kind in kinds
    assert "Secret" not in kinds, "placeholder Secrets must never be part of a kustomization"
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "sqltune", o["metadata"]
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sqltune"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates(rendered, crd_dir: Path, overlay: str) -> None:
    objs = rendered[overlay]
    assert validate_objects(objs, str(crd_dir)) == []
    assert any(o["kind"] in RAY_KINDS for o in objs)


def test_secret_example_is_valid_and_placeholder_only() -> None:
    objs = [o for o in yaml.safe_load_all((ROOT / "k8s/examples/secret.example.yaml").read_text()) if o]
    assert [o["metadata"]["name"] for o in objs] == [b.S3_SECRET, b.API_SECRET]
    for o in objs:
        assert validate_core_object(o) == []
        for key, value in o["stringData"].items():
            assert "REPLACE_ME" in value or key == "AWS_DEFAULT_REGION", (key, value)
    for kust in (ROOT / "k8s").rglob("kustomization.yaml"):
        assert "examples" not in kust.read_text() and "secret" not in kust.read_text().lower(), kust


def test_generated_manifests_are_current() -> None:
    stale = generate(ROOT, check=True)
    assert not stale, f"stale generated files {[str(p) for p in stale]}: run `sqltune k8s generate`"


def test_job_config_copies_match_jobs_configs() -> None:
    src = sorted(p.name for p in (ROOT / "jobs/configs").glob("*.yaml"))
    dst = sorted(p.name for p in (ROOT / "k8s/base/configs").glob("*.yaml")) if (ROOT / "k8s/base/configs").is_dir() else []
    assert src == dst, "k8s/base/configs must mirror jobs/configs: run `sqltune k8s generate`"
    for name in src:
        assert filecmp.cmp(ROOT / "jobs/configs" / name, ROOT / "k8s/base/configs" / name, shallow=False), name


@pytest.mark.parametrize("config", [TRAIN_CONFIG, EVAL_CONFIG])
def test_rayjobs_find_their_config_in_the_configmap(rendered, config: str) -> None:
    if not (ROOT / "jobs/configs" / config).is_file():
        pytest.skip(f"jobs/configs/{config} is not written yet (owned by the jobs entry points)")
    for objs in rendered.values():
        cm = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == JOB_CONFIGMAP][0]
        assert config in cm["data"]
        assert any(config in j["spec"]["entrypoint"] for j in by_kind(objs, "RayJob"))


def _pods(objs: list[dict]):
    for o in objs:
        if o["kind"] in RAY_KINDS:
            yield from ((o, role, pod) for role, pod in pod_templates(o))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_hardening(rendered, overlay: str) -> None:
    pods = list(_pods(rendered[overlay]))
    assert len(pods) == 4 * 3 + 2  # 4 RayJobs x (head, worker, submitter) + RayService (head, worker)
    for owner, role, pod in pods:
        spec = pod["spec"]
        where = f"{overlay} {owner['kind']}/{owner['metadata']['name']} {role}"
        if owner["metadata"]["name"] == "sqltune-pipeline-tiny" and role.startswith("head"):
            # the pipeline's driver patches the RayService after its gate: the one pod with a token
            assert spec["automountServiceAccountToken"] is True, where
            assert spec["serviceAccountName"] == b.PROMOTER_ACCOUNT, where
        else:
            assert spec["automountServiceAccountToken"] is False, where
            assert spec["serviceAccountName"] == "sqltune", where
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        mounts = {}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000, where
            assert c["resources"]["requests"] and c["resources"]["limits"], where
            assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"], where
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert {"/tmp", "/tmp/ray", "/dev/shm"} <= set(mounts), where
            envs = {e["name"]: e for e in c.get("env", [])}
            assert all("value" not in e or "KEY" not in n and "TOKEN" not in n for n, e in envs.items()), where
            assert {"secretRef": {"name": b.S3_SECRET, "optional": True}} in c["envFrom"], where
        vols = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in vols[mounts["/tmp"]] and "emptyDir" in vols[mounts["/tmp/ray"]], where
        assert vols[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", where


def test_gpu_and_cpu_shapes(rendered) -> None:
    for overlay, gpus in (("gpu", True), ("cpu-dev", False)):
        for owner, role, pod in _pods(rendered[overlay]):
            spec = pod["spec"]
            res = spec["containers"][0]["resources"]
            image = spec["containers"][0]["image"]
            assert image.endswith("-gpu" if gpus else "-cpu"), (overlay, image)
            if gpus and role.startswith("worker"):
                assert res["limits"][b.GPU_RESOURCE] == res["requests"][b.GPU_RESOURCE] >= 1
                assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
                assert {"key": b.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
            else:
                assert b.GPU_RESOURCE not in res["limits"], (overlay, role)
                assert "tolerations" not in spec and "nodeSelector" not in spec, (overlay, role)
    cpu_serve = yaml.safe_load(by_kind(rendered["cpu-dev"], "RayService")[0]["spec"]["serveConfigV2"])
    gpu_serve = yaml.safe_load(by_kind(rendered["gpu"], "RayService")[0]["spec"]["serveConfigV2"])
    model = lambda cfg: cfg["applications"][0]["deployments"][0]  # noqa: E731
    assert model(cpu_serve)["ray_actor_options"]["num_gpus"] == 0
    assert model(gpu_serve)["ray_actor_options"]["num_gpus"] == 1
    train = [j for j in by_kind(rendered["cpu-dev"], "RayJob") if j["metadata"]["name"] == "sqltune-train-tiny"][0]
    # the tiny preset is a CPU preset as written (scaling: 2 workers, no GPU): no overrides, a pod per worker
    assert train["spec"]["entrypoint"] == "python -m jobs.train --config /etc/sqltune/configs/tiny.yaml"
    assert train["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjob_and_rayservice_settings(rendered, overlay: str) -> None:
    objs = rendered[overlay]
    jobs = {j["metadata"]["name"]: j for j in by_kind(objs, "RayJob")}
    assert jobs["sqltune-train-tiny"]["spec"]["entrypoint"].startswith(
        "python -m jobs.train --config /etc/sqltune/configs/tiny.yaml"
    )
    assert jobs["sqltune-eval-tiny"]["spec"]["entrypoint"].startswith(
        "python -m jobs.evaluate --config /etc/sqltune/configs/eval-tiny.yaml"
    )
    for j in jobs.values():
        s = j["spec"]
        assert s["shutdownAfterJobFinishes"] is True and s["ttlSecondsAfterFinished"] > 0
        assert s["submissionMode"] == "K8sJobMode" and s["backoffLimit"] >= 0
        assert s["rayClusterSpec"]["rayVersion"] == RAY_VERSION
        head = s["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert {"name": "job-config", "configMap": {"name": JOB_CONFIGMAP}} in head["volumes"]
    svc = by_kind(objs, "RayService")[0]
    assert svc["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert svc["spec"]["rayClusterConfig"]["rayVersion"] == RAY_VERSION
    worker = svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8000}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8000}
    env = {e["name"]: e for e in worker["env"]}
    assert env["SQLTUNE_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": b.API_SECRET, "key": "token"}
    serve = yaml.safe_load(svc["spec"]["serveConfigV2"])
    src = yaml.safe_load((ROOT / "serve/config.yaml").read_text())
    assert serve["applications"][0]["args"] == src["applications"][0]["args"]
    assert serve["http_options"]["port"] == 8000


# ------------------------------------------------------------------------- validation catches mistakes


@pytest.fixture()
def gpu_objs(rendered) -> dict[str, dict]:
    objs = rendered["gpu"]
    return {
        "RayJob": copy.deepcopy(by_kind(objs, "RayJob")[0]),
        "RayService": copy.deepcopy(by_kind(objs, "RayService")[0]),
    }


@pytest.mark.parametrize(
    ("kind", "mutate", "expect"),
    [
        ("RayJob", lambda o: o["spec"].__setitem__("shutdownAfterJobFinishes", "yes"), "not of type 'boolean'"),
        ("RayJob", lambda o: o["spec"].__setitem__("backoffLimit", "three"), "not of type 'integer'"),
        ("RayJob", lambda o: o["spec"].__setitem__("shutdownAfterJobsFinish", True), "shutdownAfterJobsFinish"),
        ("RayJob", lambda o: o["spec"].__setitem__("submissionMode", "BatchMode"), "submissionMode"),
        ("RayJob", lambda o: o["spec"]["rayClusterSpec"].pop("headGroupSpec"), "headGroupSpec"),
        (
            "RayJob",
            lambda o: o["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
                "resources"]["limits"].__setitem__("memory", "lots"),
            "does not match",
        ),
        ("RayService", lambda o: o["spec"]["upgradeStrategy"].__setitem__("type", "BlueGreen"), "BlueGreen"),
        (
            "RayService",
            lambda o: o["spec"]["upgradeStrategy"].__setitem__("type", "NewClusterWithIncrementalUpgrade"),
            "clusterUpgradeOptions",
        ),
        ("RayService", lambda o: o["spec"].__setitem__("serveConfigV2", {"applications": []}), "serveConfigV2"),
    ],
)
def test_validation_rejects_invalid_fields(gpu_objs, crd_dir, kind, mutate, expect) -> None:
    obj = gpu_objs[kind]
    assert validate_crd_object(obj, str(crd_dir)) == []
    mutate(obj)
    errors = validate_crd_object(obj, str(crd_dir))
    assert errors and any(expect in e for e in errors), errors


def test_core_validation_rejects_invalid_pod(gpu_objs) -> None:
    _, pod = next(iter(pod_templates(gpu_objs["RayJob"])))
    assert validate_core_object(pod) == []
    pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = "yes"
    assert validate_core_object(pod)
    pod = next(iter(pod_templates(gpu_objs["RayJob"])))[1]
    pod["spec"]["containers"][0]["imagePullPolicyy"] = "Always"  # strict: unknown fields are errors
    assert any("imagePullPolicyy" in e for e in validate_core_object(pod))
