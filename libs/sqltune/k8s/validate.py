"""Offline validation of Kubernetes objects.

* KubeRay custom resources (RayJob, RayService, RayCluster) against the ``openAPIV3Schema`` of the
  KubeRay CRDs (``spec.versions[name=v1]``), with :mod:`jsonschema`. The schema is made *strict* the way
  ``kubectl apply --validate=strict`` is: an unknown field is an error (structural schemas prune unknown
  fields silently, which hides typos), except under ``x-kubernetes-preserve-unknown-fields``.
  ``x-kubernetes-int-or-string`` becomes ``integer | string``; CEL rules (``x-kubernetes-validations``)
  are not evaluated.
* Rules the KubeRay operator enforces in Go rather than in the CRD (:func:`kuberay_rules`), such as the
  allowed ``upgradeStrategy.type`` values, which the CRD types as a bare string.
* Core objects against the Kubernetes OpenAPI schemas shipped offline by ``kubernetes-validate``;
  the pod templates inside the custom resources are validated as Pods the same way.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from sqltune import fixtures
from sqltune.errors import ConfigError, MissingDependencyError
from sqltune.k8s.builders import MAX_RAYJOB_NAME

CRD_FILES = {
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
}
KUBERNETES_VERSION = "1.33.0"  # schema version for kubernetes-validate (KubeRay 1.7 supports >= 1.23)

UPGRADE_STRATEGIES = ("NewCluster", "NewClusterWithIncrementalUpgrade", "None")
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")


def default_crd_dir() -> Path:
    """$SQLTUNE_CRD_DIR, else the pinned KubeRay CRDs found by :mod:`sqltune.fixtures` (../shared or its cache)."""
    env = os.environ.get("SQLTUNE_CRD_DIR")
    if env:
        return Path(env)
    try:
        return fixtures.locate("kuberay-crds", download=False)
    except fixtures.FixtureUnavailable:
        return fixtures.shared_dirs()[0] / fixtures.FIXTURES["kuberay-crds"].shared_subdir


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and "type" in out:
        t = out["type"]
        out["type"] = [t, "null"] if isinstance(t, str) else [*t, "null"]
    return out


@functools.lru_cache(maxsize=8)
def crd_schema(kind: str, crd_dir: str | None = None, version: str = "v1") -> dict[str, Any]:
    """The strict JSON schema of ``kind`` from the KubeRay CRD file in ``crd_dir``."""
    if kind not in CRD_FILES:
        raise ConfigError(f"no CRD known for kind {kind!r}; known: {', '.join(CRD_FILES)}")
    path = Path(crd_dir) if crd_dir else default_crd_dir()
    path = path / CRD_FILES[kind]
    if not path.is_file():
        raise ConfigError(f"KubeRay CRD {path} not found; set SQLTUNE_CRD_DIR to the folder of the CRDs or run "
                          "`python -m sqltune.fixtures fetch kuberay-crds`")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
            break
    else:
        raise ConfigError(f"{path} has no version {version}")
    schema = _strict(schema)
    # metadata is typed as a bare object in CRDs; check the parts we rely on
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return schema


def _path(err: Any) -> str:
    return "/".join(str(p) for p in err.absolute_path) or "(root)"


def validate_crd_object(obj: dict[str, Any], crd_dir: str | None = None) -> list[str]:
    """Errors of a RayJob/RayService/RayCluster against its CRD schema and KubeRay's own rules."""
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("jsonschema is not installed; pip install jsonschema") from exc
    kind = obj.get("kind")
    if obj.get("apiVersion") != "ray.io/v1":
        return [f"{kind}: apiVersion must be ray.io/v1, got {obj.get('apiVersion')!r}"]
    schema = crd_schema(kind, None if crd_dir is None else str(crd_dir))
    validator = jsonschema.Draft7Validator(schema)
    name = (obj.get("metadata") or {}).get("name", "?")
    errors = [
        f"{kind}/{name}: {_path(e)}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
    return errors + [f"{kind}/{name}: {m}" for m in kuberay_rules(obj)]


def kuberay_rules(obj: dict[str, Any]) -> list[str]:
    """Checks the KubeRay operator makes at reconcile time that the CRD schema does not express."""
    errs: list[str] = []
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    name = (obj.get("metadata") or {}).get("name", "")
    if kind == "RayService":
        strategy = (spec.get("upgradeStrategy") or {}).get("type")
        if strategy is not None and strategy not in UPGRADE_STRATEGIES:
            errs.append(
                f"spec/upgradeStrategy/type: {strategy!r} is not one of {', '.join(UPGRADE_STRATEGIES)}"
            )
        if strategy == "NewClusterWithIncrementalUpgrade" and not spec["upgradeStrategy"].get(
            "clusterUpgradeOptions"
        ):
            errs.append("spec/upgradeStrategy: NewClusterWithIncrementalUpgrade needs clusterUpgradeOptions")
        if not isinstance(spec.get("serveConfigV2"), str) or not spec.get("serveConfigV2", "").strip():
            errs.append("spec/serveConfigV2: must be a non-empty YAML string")
        else:
            try:
                serve = yaml.safe_load(spec["serveConfigV2"])
                if not isinstance(serve, dict) or not serve.get("applications"):
                    errs.append("spec/serveConfigV2: has no applications")
            except yaml.YAMLError as exc:
                errs.append(f"spec/serveConfigV2: not valid YAML: {exc}")
    if kind == "RayJob":
        if len(name) > MAX_RAYJOB_NAME:
            errs.append(f"metadata/name: longer than {MAX_RAYJOB_NAME} characters")
        mode = spec.get("submissionMode", "K8sJobMode")
        if mode not in SUBMISSION_MODES:
            errs.append(f"spec/submissionMode: {mode!r} is not one of {', '.join(SUBMISSION_MODES)}")
        if spec.get("ttlSecondsAfterFinished") and spec.get("shutdownAfterJobFinishes") is not True:
            errs.append("spec/ttlSecondsAfterFinished: only valid with shutdownAfterJobFinishes: true")
        if not spec.get("clusterSelector") and not spec.get("rayClusterSpec"):
            errs.append("spec: needs rayClusterSpec (or clusterSelector)")
        if mode != "InteractiveMode" and not spec.get("entrypoint"):
            errs.append("spec/entrypoint: required unless submissionMode is InteractiveMode")
    return errs


# ----------------------------------------------------------------------------------------------- pods


def cluster_spec_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    return {
        "RayJob": spec.get("rayClusterSpec"),
        "RayService": spec.get("rayClusterConfig"),
        "RayCluster": spec,
    }.get(obj.get("kind"))


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, Pod) for each pod template in a KubeRay object, as standalone ``v1/Pod`` objects."""
    meta = obj.get("metadata") or {}
    base = f"{obj.get('kind', '?').lower()}-{meta.get('name', 'x')}"
    templates: list[tuple[str, dict[str, Any]]] = []
    cluster = cluster_spec_of(obj) or {}
    if cluster.get("headGroupSpec"):
        templates.append(("head", cluster["headGroupSpec"].get("template") or {}))
    for group in cluster.get("workerGroupSpecs") or []:
        templates.append((f"worker-{group.get('groupName', 'x')}", group.get("template") or {}))
    if obj.get("kind") == "RayJob" and (obj.get("spec") or {}).get("submitterPodTemplate"):
        templates.append(("submitter", obj["spec"]["submitterPodTemplate"]))
    for role, tpl in templates:
        tmeta = copy.deepcopy(tpl.get("metadata") or {})
        tmeta["name"] = f"{base}-{role}"[:63].rstrip("-")
        if meta.get("namespace"):
            tmeta["namespace"] = meta["namespace"]
        yield role, {"apiVersion": "v1", "kind": "Pod", "metadata": tmeta, "spec": copy.deepcopy(tpl["spec"])}


def validate_core_object(obj: dict[str, Any], k8s_version: str = KUBERNETES_VERSION) -> list[str]:
    """Errors of a core Kubernetes object against the offline OpenAPI schemas (strict)."""
    try:
        import kubernetes_validate
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError(
            "kubernetes-validate is not installed; pip install kubernetes-validate"
        ) from exc
    label = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name', '?')}"
    try:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{label}: {'/'.join(map(str, exc.path)) or '(root)'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{label}: no schema: {exc}"]
    return []


def validate_objects(objs: Iterable[dict[str, Any]], crd_dir: str | None = None) -> list[str]:
    """Validate a stream of objects: KubeRay CRs (and their pod templates) and core objects."""
    errors: list[str] = []
    for obj in objs:
        if not obj:
            continue
        if obj.get("kind") in CRD_FILES:
            errors += validate_crd_object(obj, crd_dir)
            for _, pod in pod_templates(obj):
                errors += validate_core_object(pod)
        else:
            errors += validate_core_object(obj)
    return errors
