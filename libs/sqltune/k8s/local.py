"""A local KubeRay stand-in: run rendered RayJob/RayService manifests against a local Ray cluster.

It does what the KubeRay operator and kubelet do for the parts that decide whether a sqltune manifest
works (its command, its config files, its environment), and nothing else:

* **RayJob**: every ConfigMap volume the head (and worker) pod template mounts is written under a
  temporary root, ``<root>/<mountPath>/<key>``; every argument of ``spec.entrypoint`` that names a path
  under a mountPath gets ``<root>`` as prefix (the only change made to the entrypoint, and printed).
  The pod template's ``env``/``envFrom`` (Secret and ConfigMap refs resolved from a local env file and
  the rendered ConfigMaps) and ``runtimeEnvYAML`` become the job's runtime environment, then the
  entrypoint runs through ``ray job submit`` and the stand-in waits for SUCCEEDED/FAILED/STOPPED.
* **RayService**: ``serve deploy`` of ``serveConfigV2`` (HTTP bound to 127.0.0.1 on a chosen port, the
  pod env in each application's runtime_env), then ``/readyz`` and one ``/v1/sql`` answer.

Not emulated: scheduling (pods, node selectors, tolerations, resource requests: the job runs on whatever
the local Ray has; :mod:`sqltune.k8s.placement` checks the worker groups offline instead), GPUs (a
manifest that needs one is refused), image pulls (the code is this checkout, as ``PYTHONPATH`` = the
image's ``/app``), probes, Services/NetworkPolicies, ``shutdownAfterJobFinishes``/TTL and the submitter
pod (the stand-in submits itself). Secrets come from a local env file whose lines are
``<secret-name>.<key>=<value>`` (``sqltune-s3.AWS_ACCESS_KEY_ID=...``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sqltune.errors import ConfigError, SqltuneError


class StandInError(SqltuneError):
    """A manifest the local stand-in cannot run (missing ConfigMap/Secret, GPUs, unknown kind)."""


# ----------------------------------------------------------------------------------------------- inputs


def load_objects(text: str, where: str = "manifests") -> list[dict[str, Any]]:
    """The objects of a multi-document YAML stream (``kubectl kustomize`` or ``--dry-run`` output)."""
    try:
        objs = [o for o in yaml.safe_load_all(text) if o]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    bad = [o for o in objs if not isinstance(o, dict) or "kind" not in o]
    if bad:
        raise ConfigError(f"{where}: every document must be a Kubernetes object with a kind; got {bad[0]!r:.80}")
    return objs


def read_env_file(path: str | Path | None) -> dict[str, dict[str, str]]:
    """Secrets from a local env file: ``<secret>.<key>=<value>`` lines (``#`` comments, blank lines ok)."""
    secrets: dict[str, dict[str, str]] = {}
    if path is None:
        return secrets
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--env-file {p}: no such file; write <secret>.<key>=<value> lines")
    for n, raw in enumerate(p.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        name, dot, item = key.strip().partition(".")
        if not sep or not dot or not name or not item:
            raise ConfigError(
                f"--env-file {p} line {n}: {raw!r} is not <secret>.<key>=<value> (e.g. sqltune-s3.AWS_ACCESS_KEY_ID=...)"
            )
        secrets.setdefault(name, {})[item] = value.strip()
    return secrets


def env_file_text(secrets: dict[str, dict[str, str]]) -> str:
    """The env-file form of ``{secret: {key: value}}`` (what :func:`read_env_file` reads)."""
    return "".join(f"{name}.{k}={v}\n" for name, data in secrets.items() for k, v in data.items())


# ----------------------------------------------------------------------------------------------- pods


def _templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = obj["spec"].get("rayClusterSpec") or obj["spec"].get("rayClusterConfig") or {}
    out = [cluster["headGroupSpec"]["template"]] if "headGroupSpec" in cluster else []
    out += [g["template"] for g in cluster.get("workerGroupSpecs") or []]
    return out


def _configmaps(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ConfigMap"}


def config_mounts(obj: dict[str, Any], objs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """mountPath -> {file name: text} of the ConfigMap volumes mounted by ``obj``'s Ray pods."""
    cms = _configmaps(objs)
    mounts: dict[str, dict[str, str]] = {}
    for tpl in _templates(obj):
        spec = tpl["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for c in spec.get("containers") or []:
            for m in c.get("volumeMounts") or []:
                vol = volumes.get(m["name"]) or {}
                ref = vol.get("configMap")
                if not ref:
                    continue
                cm = cms.get(ref["name"])
                if cm is None:
                    if ref.get("optional"):
                        continue
                    raise StandInError(
                        f"{obj['kind']} {obj['metadata']['name']}: volume {m['name']!r} mounts ConfigMap "
                        f"{ref['name']!r}, which is not among the rendered objects; render the whole overlay "
                        "(kubectl kustomize) or the --dry-run output that contains it"
                    )
                data = dict(cm.get("data") or {})
                if ref.get("items"):
                    data = {it["path"]: data[it["key"]] for it in ref["items"] if it["key"] in data}
                if m.get("subPath"):
                    data = {Path(m["mountPath"]).name: data[m["subPath"]]}
                    mounts.setdefault(str(Path(m["mountPath"]).parent), {}).update(data)
                    continue
                mounts.setdefault(m["mountPath"].rstrip("/") or "/", {}).update(data)
    return mounts


def write_mounts(mounts: dict[str, dict[str, str]], root: Path) -> None:
    for mount, files in mounts.items():
        folder = root / mount.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)


def prefix_paths(argv: list[str], mounts: list[str], root: Path) -> list[str]:
    """``argv`` with every path under a mountPath (alone or as ``key=<path>``/``--flag=<path>``) put under ``root``."""

    def fix(value: str) -> str:
        for m in sorted(mounts, key=len, reverse=True):
            if value == m or value.startswith(m.rstrip("/") + "/"):
                return str(root) + value
        return value

    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        out.append(f"{key}={fix(value)}" if sep and not arg.startswith("/") else fix(arg))
    return out


def pod_env(obj: dict[str, Any], objs: list[dict[str, Any]], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment the Ray pods of ``obj`` get: ``env`` values, Secret/ConfigMap refs and ``envFrom``.

    A required (non-optional) Secret key missing from the env file is an error naming the line to add."""
    cms = _configmaps(objs)
    env: dict[str, str] = {}
    what = f"{obj['kind']} {obj['metadata']['name']}"
    for tpl in _templates(obj):
        for c in tpl["spec"].get("containers") or []:
            for src in c.get("envFrom") or []:
                if "secretRef" in src:
                    ref = src["secretRef"]
                    data = secrets.get(ref["name"])
                    if data is None and not ref.get("optional"):
                        raise StandInError(
                            f"{what}: envFrom Secret {ref['name']!r} is not in the env file; add "
                            f"{ref['name']}.<KEY>=<value> lines to it"
                        )
                    env.update({f"{src.get('prefix', '')}{k}": v for k, v in (data or {}).items()})
                elif "configMapRef" in src:
                    cm = cms.get(src["configMapRef"]["name"])
                    env.update({f"{src.get('prefix', '')}{k}": v for k, v in ((cm or {}).get("data") or {}).items()})
            for e in c.get("env") or []:
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                    continue
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    value = (secrets.get(ref["name"]) or {}).get(ref["key"])
                    if value is None:
                        if ref.get("optional"):
                            continue
                        raise StandInError(
                            f"{what}: env {e['name']} comes from Secret {ref['name']!r} key {ref['key']!r}, which "
                            f"the env file lacks; add the line {ref['name']}.{ref['key']}=<value>"
                        )
                    env[e["name"]] = value
                    continue
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    value = ((cms.get(ref["name"]) or {}).get("data") or {}).get(ref["key"])
                    if value is not None:
                        env[e["name"]] = value
    return env


def needs_gpus(obj: dict[str, Any]) -> bool:
    spec = obj["spec"]
    if float(spec.get("entrypointNumGpus", 0) or 0) > 0:
        return True
    for tpl in _templates(obj):
        for c in tpl["spec"].get("containers") or []:
            limits = (c.get("resources") or {}).get("limits") or {}
            if any("gpu" in k for k in limits):
                return True
    return False


# ----------------------------------------------------------------------------------------------- plans


@dataclass
class JobPlan:
    """What the stand-in runs for one RayJob."""

    name: str
    entrypoint: str  # exactly as in the manifest
    argv: list[str]  # the entrypoint split, paths under mountPaths prefixed with the root
    root: Path
    mounts: dict[str, dict[str, str]]
    env: dict[str, str]
    runtime_env: dict[str, Any] = field(default_factory=dict)
    entrypoint_num_cpus: float = 0.0

    @property
    def command(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)


def plan_rayjob(
    obj: dict[str, Any], objs: list[dict[str, Any]], root: Path, secrets: dict[str, dict[str, str]] | None = None,
    extra_args: list[str] | None = None,
) -> JobPlan:
    """Materialize a RayJob's mounted files under ``root`` and return what to submit."""
    name = obj["metadata"]["name"]
    spec = obj["spec"]
    if "entrypoint" not in spec:
        raise StandInError(f"RayJob {name}: spec.entrypoint is missing")
    mounts = config_mounts(obj, objs)
    job_root = Path(root) / name
    write_mounts(mounts, job_root)
    argv = prefix_paths(shlex.split(spec["entrypoint"]), list(mounts), job_root) + list(extra_args or [])
    runtime_env: dict[str, Any] = {}
    if spec.get("runtimeEnvYAML"):
        try:
            runtime_env = yaml.safe_load(spec["runtimeEnvYAML"]) or {}
        except yaml.YAMLError as exc:
            raise StandInError(f"RayJob {name}: spec.runtimeEnvYAML is not valid YAML: {exc}") from None
    return JobPlan(
        name=name, entrypoint=spec["entrypoint"], argv=argv, root=job_root, mounts=mounts,
        env=pod_env(obj, objs, secrets or {}), runtime_env=runtime_env,
        entrypoint_num_cpus=float(spec.get("entrypointNumCpus", 0) or 0),
    )
