"""Pure builders for the Kubernetes objects sqltune runs on (KubeRay ``ray.io/v1``).

Every function here takes plain values and returns plain dicts: no cluster, no ``kubernetes`` import.
The same builders produce the objects ``sqltune k8s submit/serve`` send to a cluster and the manifests
committed under ``k8s/base`` (written by :mod:`sqltune.k8s.generate`; a test asserts they are current).

Pod hardening applied to every Ray pod (head, workers, the K8sJobMode submitter):
non-root uid 1000 (the ``ray`` user of the rayproject images), no privilege escalation, all capabilities
dropped, RuntimeDefault seccomp, read-only root filesystem with emptyDir volumes for ``/tmp`` and
``/tmp/ray`` (Ray's session dir, logs and spilled objects) and a memory-backed ``/dev/shm`` (Ray's
object store), and no service-account token (Ray needs no Kubernetes API access without the autoscaler).
"""

from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sqltune import __version__
from sqltune.errors import ConfigError
from sqltune.k8s.versions import GPU_IMAGE, RAY_VERSION
from sqltune.serving.config import RAY_SERVE_ENV

Kind = Literal["train", "eval", "export", "pipeline"]

NAMESPACE = "sqltune"
SERVICE_ACCOUNT = "sqltune"
PROMOTER_ACCOUNT = "sqltune-promoter"  # may patch the RayService (k8s/base/rbac-promoter.yaml); pipeline heads only
PART_OF = "sqltune"
S3_SECRET = "sqltune-s3"  # envFrom: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...
API_SECRET = "sqltune-api"  # key API_SECRET_KEY -> env SQLTUNE_API_TOKEN on serving pods
API_SECRET_KEY = "token"
CONFIG_MOUNT = "/etc/sqltune/configs"
SERVE_PORT = 8000
GPU_RESOURCE = "nvidia.com/gpu"
MAX_RAYJOB_NAME = 47  # KubeRay derives RayCluster/Job names from it and rejects longer RayJob names

ENTRYPOINT_MODULES: dict[str, str] = {
    "train": "jobs.train", "eval": "jobs.evaluate", "export": "jobs.export", "pipeline": "jobs.pipeline",
}

# checkov annotations for the pod templates. Each skip carries its justification; checkov reads
# "checkov.io/skipN: CHECK_ID=reason" from the pod metadata (tests/k8s/test_checkov.py extracts the pod
# templates from the RayJob/RayService custom resources so checkov sees them).
CHECKOV_SKIPS: dict[str, str] = {
    "CKV_K8S_40": "uid 1000 is the ray user of the rayproject base images; files in the image belong to it",
    "CKV_K8S_43": "images are pinned by version tag; overlays pin a digest at release time (kustomize images)",
    "CKV_K8S_35": "boto3 and the Ray Serve app read AWS_* and SQLTUNE_API_TOKEN from the environment",
}
RAY_PROBES = "KubeRay injects its raylet/GCS health probes into Ray head and worker containers"
PROMOTER_TOKEN = ("the pipeline's driver patches the RayService's serveConfigV2 when its gate passes; the Role "
                  "bound to this account allows get/patch of RayServices in this namespace only")
SUBMITTER_PROBES = "run-to-completion submitter pod (ray job submit); probes do not apply"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# ----------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Resources:
    """Requests/limits of one Ray container. Memory request == limit (Ray sizes its object store from
    the limit); CPU may burst to ``cpu_limit``."""

    cpu: str = "2"
    cpu_limit: str = "4"
    memory: str = "8Gi"
    gpus: int = 0
    shm: str = "2Gi"  # size of the memory-backed /dev/shm (counts against the memory limit)
    tmp: str = "20Gi"  # size limit of the /tmp emptyDir (model downloads, checkpoints staged for S3)

    def to_k8s(self) -> dict[str, Any]:
        requests: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory}
        limits: dict[str, Any] = {"cpu": self.cpu_limit, "memory": self.memory}
        if self.gpus:
            requests[GPU_RESOURCE] = self.gpus
            limits[GPU_RESOURCE] = self.gpus
        return {"requests": requests, "limits": limits}


HEAD = Resources(cpu="2", cpu_limit="4", memory="8Gi", shm="2Gi", tmp="20Gi")
GPU_WORKER = Resources(cpu="4", cpu_limit="8", memory="32Gi", gpus=1, shm="8Gi", tmp="50Gi")
CPU_WORKER = Resources(cpu="2", cpu_limit="4", memory="8Gi", gpus=0, shm="2Gi", tmp="20Gi")
SUBMITTER = Resources(cpu="200m", cpu_limit="1", memory="1Gi", shm="64Mi", tmp="1Gi")


@dataclass(frozen=True)
class JobSpec:
    """A batch job (training, evaluation, export) run as a RayJob."""

    name: str
    kind: Kind
    config_file: str  # file name inside the ConfigMap, mounted at CONFIG_MOUNT
    configmap: str
    namespace: str = NAMESPACE
    image: str = GPU_IMAGE
    image_pull_policy: str = "Always"
    workers: int = 1
    head: Resources = HEAD
    worker: Resources = GPU_WORKER
    overrides: tuple[str, ...] = ()  # key=value overrides appended to the entrypoint
    ttl_seconds_after_finished: int = 3600
    backoff_limit: int = 0
    active_deadline_seconds: int | None = None
    entrypoint_num_gpus: float = 0  # the driver's GPUs (export runs in the driver): placed on a GPU worker
    # The head (where the driver runs) as PROMOTER_ACCOUNT with its token mounted: the pipeline patches
    # the RayService when its gate passes. Every other pod keeps the token-less SERVICE_ACCOUNT.
    promoter: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServeSpec:
    """The serving RayService."""

    serve_config: str  # the serveConfigV2 YAML text (see render_serve_config)
    name: str = "sqltune"
    namespace: str = NAMESPACE
    image: str = GPU_IMAGE
    image_pull_policy: str = "Always"
    workers: int = 1
    head: Resources = HEAD
    worker: Resources = GPU_WORKER
    upgrade_strategy: str = "NewCluster"
    labels: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- names


def check_name(name: str, what: str = "name", max_len: int = 63) -> str:
    """Return ``name`` if it is a valid DNS-1123 label of at most ``max_len`` characters."""
    if not name or len(name) > max_len or not _NAME_RE.match(name):
        raise ConfigError(
            f"invalid {what} {name!r}: use lowercase letters, digits and '-', start and end with a letter "
            f"or digit, at most {max_len} characters"
        )
    return name


def slug(text: str, max_len: int = MAX_RAYJOB_NAME) -> str:
    """Turn free text (a run name, a file stem) into a DNS-1123 label."""
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    s = re.sub(r"-{2,}", "-", s)[:max_len].strip("-")
    return s or "run"


def labels_for(component: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "sqltune",
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/version": __version__,
    }
    out.update(extra or {})
    return out


# ----------------------------------------------------------------------------------------------- pods


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "fsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _volumes(res: Resources, configmap: str | None) -> list[dict[str, Any]]:
    vols: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": res.tmp}},
        {"name": "ray-tmp", "emptyDir": {"sizeLimit": res.tmp}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": res.shm}},
    ]
    if configmap:
        vols.append({"name": "job-config", "configMap": {"name": configmap}})
    return vols


def _mounts(configmap: str | None) -> list[dict[str, Any]]:
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "ray-tmp", "mountPath": "/tmp/ray"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if configmap:
        mounts.append({"name": "job-config", "mountPath": CONFIG_MOUNT, "readOnly": True})
    return mounts


def _env(api_token: bool) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}]
    # Read by Ray Serve's processes when they start: only the pod environment reaches the HTTP proxy.
    env += [{"name": k, "value": v} for k, v in RAY_SERVE_ENV.items()]
    if api_token:
        env.append(
            {
                "name": "SQLTUNE_API_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": API_SECRET, "key": API_SECRET_KEY}},
            }
        )
    return env


def _env_from() -> list[dict[str, Any]]:
    # optional: clusters using IRSA / workload identity or an unauthenticated dev store need no Secret
    return [{"secretRef": {"name": S3_SECRET, "optional": True}}]


def _annotations(probe_reason: str | None, token: bool = False) -> dict[str, str]:
    skips = dict(CHECKOV_SKIPS)
    if probe_reason:
        skips.update({"CKV_K8S_8": probe_reason, "CKV_K8S_9": probe_reason})
    if token:
        skips["CKV_K8S_38"] = PROMOTER_TOKEN
    return {f"checkov.io/skip{i}": f"{k}={v}" for i, (k, v) in enumerate(sorted(skips.items()), start=1)}


def _gpu_scheduling(pod_spec: dict[str, Any], gpus: int) -> None:
    if gpus:
        pod_spec["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


def pod_template(
    *,
    container_name: str,
    image: str,
    pull_policy: str,
    res: Resources,
    labels: dict[str, str],
    configmap: str | None,
    api_token: bool = False,
    ports: list[dict[str, Any]] | None = None,
    probes: dict[str, Any] | None = None,
    no_probe_reason: str = RAY_PROBES,
    promoter: bool = False,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": container_name,
        "image": image,
        "imagePullPolicy": pull_policy,
        "env": _env(api_token),
        "envFrom": _env_from(),
        "resources": res.to_k8s(),
        "securityContext": container_security_context(),
        "volumeMounts": _mounts(configmap),
    }
    if ports:
        container["ports"] = ports
    if probes:
        container.update(probes)
    spec: dict[str, Any] = {
        "serviceAccountName": PROMOTER_ACCOUNT if promoter else SERVICE_ACCOUNT,
        "automountServiceAccountToken": promoter,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": _volumes(res, configmap),
    }
    _gpu_scheduling(spec, res.gpus)
    return {
        "metadata": {"labels": dict(labels),
                     "annotations": _annotations(None if probes else no_probe_reason, token=promoter)},
        "spec": spec,
    }


HEAD_PORTS = [
    {"name": "gcs-server", "containerPort": 6379},
    {"name": "dashboard", "containerPort": 8265},
    {"name": "client", "containerPort": 10001},
    {"name": "serve", "containerPort": SERVE_PORT},
]


def _serve_probes() -> dict[str, Any]:
    """HTTP probes on the sqltune app (routes of serve.app). The startup probe gives a worker up to 15
    minutes to download and load the model before liveness starts counting."""

    def get(path: str) -> dict[str, Any]:
        return {"path": path, "port": SERVE_PORT}

    return {
        "startupProbe": {"httpGet": get("/healthz"), "periodSeconds": 10, "failureThreshold": 90,
                         "timeoutSeconds": 5},
        "livenessProbe": {"httpGet": get("/healthz"), "periodSeconds": 15, "failureThreshold": 4,
                          "timeoutSeconds": 5},
        "readinessProbe": {"httpGet": get("/readyz"), "periodSeconds": 5, "failureThreshold": 3,
                           "timeoutSeconds": 3},
    }


def _cluster_spec(
    *,
    image: str,
    pull_policy: str,
    head: Resources,
    worker: Resources,
    workers: int,
    labels: dict[str, str],
    configmap: str | None,
    serving: bool,
    promoter: bool = False,
) -> dict[str, Any]:
    head_tpl = pod_template(
        container_name="ray-head", image=image, pull_policy=pull_policy, res=head, labels=labels,
        configmap=configmap, api_token=serving, ports=HEAD_PORTS, promoter=promoter,
    )
    worker_tpl = pod_template(
        container_name="ray-worker", image=image, pull_policy=pull_policy, res=worker, labels=labels,
        configmap=configmap, api_token=serving,
        ports=[{"name": "serve", "containerPort": SERVE_PORT}] if serving else None,
        probes=_serve_probes() if serving else None,
    )
    group = "gpu-workers" if worker.gpus else "cpu-workers"
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": False,
        "headGroupSpec": {
            # num-gpus 0: the head never takes GPU work; the driver and controllers run there
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0"},
            "template": head_tpl,
        },
        "workerGroupSpecs": [
            {
                "groupName": group,
                "replicas": workers,
                "minReplicas": workers,
                "maxReplicas": workers,
                "rayStartParams": {},
                "template": worker_tpl,
            }
        ],
    }


# ----------------------------------------------------------------------------------------------- objects


def entrypoint(kind: str, config_file: str, overrides: tuple[str, ...] | list[str] = ()) -> str:
    if kind not in ENTRYPOINT_MODULES:
        raise ConfigError(f"unknown job kind {kind!r}; choose one of {', '.join(ENTRYPOINT_MODULES)}")
    parts = ["python", "-m", ENTRYPOINT_MODULES[kind], "--config", f"{CONFIG_MOUNT}/{config_file}"]
    parts.extend(overrides)
    return " ".join(shlex.quote(p) for p in parts)


def build_configmap(
    name: str, files: dict[str, str], *, namespace: str = NAMESPACE, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A ConfigMap holding job config files (file name -> text)."""
    check_name(name, "ConfigMap name", 253)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels_for("config", labels)},
        "data": dict(sorted(files.items())),
    }


def build_rayjob(spec: JobSpec) -> dict[str, Any]:
    """A RayJob running one sqltune batch entry point on its own, short-lived Ray cluster."""
    check_name(spec.name, "RayJob name", MAX_RAYJOB_NAME)
    check_name(spec.namespace, "namespace")
    if spec.workers < 1:
        raise ConfigError(f"workers must be >= 1, got {spec.workers}")
    labels = labels_for(spec.kind, spec.labels)
    pod_labels = {**labels, "sqltune.io/run": spec.name}
    submitter = pod_template(
        container_name="ray-job-submitter", image=spec.image, pull_policy=spec.image_pull_policy,
        res=SUBMITTER, labels=pod_labels, configmap=None, no_probe_reason=SUBMITTER_PROBES,
    )
    submitter["spec"]["restartPolicy"] = "Never"
    body: dict[str, Any] = {
        "entrypoint": entrypoint(spec.kind, spec.config_file, spec.overrides),
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
        "backoffLimit": spec.backoff_limit,
        "submitterPodTemplate": submitter,
        "rayClusterSpec": _cluster_spec(
            image=spec.image, pull_policy=spec.image_pull_policy, head=spec.head, worker=spec.worker,
            workers=spec.workers, labels=pod_labels, configmap=spec.configmap, serving=False,
            promoter=spec.promoter,
        ),
    }
    if spec.active_deadline_seconds:
        body["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.entrypoint_num_gpus:
        gpus = spec.entrypoint_num_gpus
        body["entrypointNumGpus"] = int(gpus) if float(gpus).is_integer() else gpus
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": body,
    }


def build_rayservice(spec: ServeSpec) -> dict[str, Any]:
    """The RayService serving the sqltune Ray Serve app (``serve.app:build_app``).

    ``upgradeStrategy: NewCluster`` is KubeRay's zero-downtime blue/green upgrade: a change to the Ray
    cluster spec starts a second cluster and switches the Service when its Serve apps are healthy.
    (``NewClusterWithIncrementalUpgrade`` also exists in v1.7.0 but is alpha, behind a feature gate and
    needs the Gateway API plus ``clusterUpgradeOptions``.) Changes to ``serveConfigV2`` alone (a new
    model_uri) are applied in place by Ray Serve, which rolls replicas without downtime.
    """
    check_name(spec.name, "RayService name")
    check_name(spec.namespace, "namespace")
    labels = labels_for("serve", spec.labels)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "upgradeStrategy": {"type": spec.upgrade_strategy},
            # only workers carry the app-level readiness probe; keep traffic off the head
            "excludeHeadPodFromServeSvc": True,
            "serveConfigV2": spec.serve_config,
            "rayClusterConfig": _cluster_spec(
                image=spec.image, pull_policy=spec.image_pull_policy, head=spec.head, worker=spec.worker,
                workers=spec.workers, labels=labels, configmap=None, serving=True,
            ),
        },
    }


# ----------------------------------------------------------------------------------------------- serve


def load_serve_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"Ray Serve config {p} does not exist (pass --serve-config)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"Ray Serve config {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("applications"), list) or not data["applications"]:
        raise ConfigError(f"Ray Serve config {p} has no 'applications' list")
    return data


def render_serve_config(
    config: dict[str, Any] | str | Path,
    *,
    model_uri: str | None = None,
    gpus_per_replica: float | None = None,
    app: str = "sqltune",
    model_deployment: str = "SQLModel",
) -> str:
    """serveConfigV2 text from serve/config.yaml, with the app's ``model_uri`` arg (and, when given,
    the model deployment's ``num_gpus``) replaced. Everything else is kept as the file has it."""
    cfg = copy.deepcopy(config) if isinstance(config, dict) else load_serve_config(config)
    apps = [a for a in cfg["applications"] if a.get("name") == app]
    if not apps:
        raise ConfigError(f"Ray Serve config has no application named {app!r}")
    target = apps[0]
    if model_uri is not None:
        if not model_uri.strip():
            raise ConfigError("--model-uri must not be empty")
        target.setdefault("args", {})["model_uri"] = model_uri
    if gpus_per_replica is not None:
        deps = [d for d in target.get("deployments", []) if d.get("name") == model_deployment]
        if not deps:
            raise ConfigError(f"Ray Serve app {app!r} has no deployment {model_deployment!r}")
        opts = deps[0].setdefault("ray_actor_options", {})
        opts["num_gpus"] = int(gpus_per_replica) if float(gpus_per_replica).is_integer() else gpus_per_replica
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)


# ----------------------------------------------------------------------------------------------- yaml


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (serveConfigV2, config files), stable key order."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump_yaml(*objs: Any) -> str:
    """Objects as a multi-document YAML stream."""
    return yaml.dump_all(list(objs), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)
