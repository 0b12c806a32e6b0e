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

import json
import os
import secrets as _secrets
import shlex
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sqltune.errors import ConfigError, SqltuneError
from sqltune.k8s.localray import free_ports


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
        raise ConfigError(
            f"{where}: every document must be a Kubernetes object with a kind; got {bad[0]!r:.80}"
        )
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


def pod_env(
    obj: dict[str, Any], objs: list[dict[str, Any]], secrets: dict[str, dict[str, str]]
) -> dict[str, str]:
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
                    env.update(
                        {f"{src.get('prefix', '')}{k}": v for k, v in ((cm or {}).get("data") or {}).items()}
                    )
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
    obj: dict[str, Any],
    objs: list[dict[str, Any]],
    root: Path,
    secrets: dict[str, dict[str, str]] | None = None,
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
        name=name,
        entrypoint=spec["entrypoint"],
        argv=argv,
        root=job_root,
        mounts=mounts,
        env=pod_env(obj, objs, secrets or {}),
        runtime_env=runtime_env,
        entrypoint_num_cpus=float(spec.get("entrypointNumCpus", 0) or 0),
    )


# ----------------------------------------------------------------------------------------------- running


def _image_env(root: Path) -> dict[str, str]:
    """What the sqltune image provides that the pod spec does not: the code (PYTHONPATH=/app there)."""
    paths = [str(root), str(root / "libs")]
    extra = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": ":".join(paths + ([extra] if extra else []))}


@dataclass
class JobOutcome:
    name: str
    status: str  # SUCCEEDED | FAILED | STOPPED | UNKNOWN
    command: str
    logs: str

    @property
    def ok(self) -> bool:
        return self.status == "SUCCEEDED"


def run_rayjob(
    obj: dict[str, Any],
    objs: list[dict[str, Any]],
    ray: Any,
    *,
    root: Path,
    repo: Path,
    secrets: dict[str, dict[str, str]] | None = None,
    extra_args: list[str] | None = None,
    timeout: float | None = None,
    stream: bool = False,
) -> JobOutcome:
    """Run one RayJob on the local Ray ``ray`` (a :class:`~sqltune.k8s.localray.LocalRay`) and wait for its end."""
    name = obj["metadata"]["name"]
    if needs_gpus(obj):
        raise StandInError(
            f"RayJob {name} asks for GPUs (worker nvidia.com/gpu limits or entrypointNumGpus); the local "
            "stand-in does not emulate GPUs: render the cpu-dev overlay or submit with --gpus 0"
        )
    plan = plan_rayjob(obj, objs, root, secrets, extra_args)
    runtime_env = dict(plan.runtime_env)
    own_env_vars = runtime_env.get("env_vars") or {}
    # The pod env is the Ray processes' env on a cluster; here it travels as the job's env_vars (the image's
    # PYTHONPATH too), with runtimeEnvYAML's own env_vars on top. Without those, a driver's own
    # ray.init(runtime_env=...) must still apply over the pod env as it does over a container's env, not
    # collide with it: RAY_OVERRIDE_JOB_RUNTIME_ENV lets the driver's values win.
    runtime_env["env_vars"] = {**plan.env, **_image_env(repo), **own_env_vars}
    if not own_env_vars:
        runtime_env["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    print(f"[stand-in] RayJob {name}: {plan.entrypoint}", file=sys.stderr)
    if plan.argv != shlex.split(plan.entrypoint):
        print(f"[stand-in]   runs as: {plan.command}  (mountPaths under {plan.root})", file=sys.stderr)
    status, logs = ray.submit(
        plan.argv,
        submission_id=f"{name}-{_secrets.token_hex(3)}",
        runtime_env_json=json.dumps(runtime_env),
        entrypoint_num_cpus=plan.entrypoint_num_cpus,
        timeout=timeout,
        stream=stream,
    )
    print(f"[stand-in] RayJob {name}: {status}", file=sys.stderr)
    return JobOutcome(name, status, plan.command, logs)


@dataclass
class ServiceOutcome:
    name: str
    url: str
    models: list[str]
    answer: dict[str, Any]


def serve_config_for(
    obj: dict[str, Any], objs: list[dict[str, Any]], secrets: dict[str, dict[str, str]], repo: Path, port: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """serveConfigV2 as the stand-in deploys it: HTTP on 127.0.0.1:``port``, the pod env in every
    application's runtime_env. Returns (config, pod env)."""
    name = obj["metadata"]["name"]
    text = obj["spec"].get("serveConfigV2")
    if not text:
        raise StandInError(f"RayService {name}: spec.serveConfigV2 is empty")
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise StandInError(f"RayService {name}: serveConfigV2 is not valid YAML: {exc}") from None
    env = pod_env(obj, objs, secrets)
    cfg.setdefault("http_options", {}).update({"host": "127.0.0.1", "port": port})
    for app in cfg.get("applications") or []:
        rt = app.setdefault("runtime_env", {})
        rt["env_vars"] = {**env, **_image_env(repo), **(rt.get("env_vars") or {})}
    return cfg, env


def _http(
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


SMOKE_QUESTION = {
    "question": "How many customers are there?",
    "schema": "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);",
    "dialect": "sqlite",
    "max_new_tokens": 32,
}


def run_rayservice(
    obj: dict[str, Any],
    objs: list[dict[str, Any]],
    ray: Any,
    *,
    work: Path,
    repo: Path,
    secrets: dict[str, dict[str, str]] | None = None,
    port: int | None = None,
    timeout: float = 600.0,
) -> ServiceOutcome:
    """`serve deploy` a RayService's serveConfigV2, wait for /readyz, ask /v1/models and /v1/sql once."""
    name = obj["metadata"]["name"]
    if needs_gpus(obj):
        print(
            f"[stand-in] RayService {name}: worker pods ask for GPUs; deploying its serveConfigV2 on the local "
            "(CPU) Ray anyway: only the Serve config is checked",
            file=sys.stderr,
        )
    port = port or free_ports(1)[0]
    cfg, env = serve_config_for(obj, objs, secrets or {}, repo, port)
    for app in cfg.get("applications") or []:
        for dep in app.get("deployments") or []:
            if (dep.get("ray_actor_options") or {}).get("num_gpus"):
                raise StandInError(
                    f"RayService {name}: deployment {dep.get('name')} asks for num_gpus "
                    f"{dep['ray_actor_options']['num_gpus']}; the local stand-in has no GPUs (render the cpu-dev overlay)"
                )
    path = Path(work) / f"{name}-serve.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"[stand-in] RayService {name}: serve deploy (HTTP on 127.0.0.1:{port})", file=sys.stderr)
    ray.serve_deploy(path)
    url = f"http://127.0.0.1:{port}"
    ray.wait_http_ready(f"{url}/readyz", timeout=timeout)
    token = env.get("SQLTUNE_API_TOKEN")
    models = [m["id"] for m in _http("GET", f"{url}/v1/models", token=token).get("data", [])]
    answer = _http("POST", f"{url}/v1/sql", SMOKE_QUESTION, token=token)
    if not isinstance(answer.get("sql"), str):
        raise StandInError(f"RayService {name}: /v1/sql answered without SQL: {answer}")
    print(
        f"[stand-in] RayService {name}: ready; models {models}; /v1/sql -> {answer['sql']!r}", file=sys.stderr
    )
    return ServiceOutcome(name, url, models, answer)


def select(objs: list[dict[str, Any]], kind: str, names: list[str] | None) -> list[dict[str, Any]]:
    """The objects of ``kind`` named in ``names`` (in that order), or all of them in manifest order."""
    found = {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}
    if names is None:
        return list(found.values())
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(
            f"no {kind} named {missing[0]!r} in the manifests (they have: {', '.join(found) or 'none'})"
        )
    return [found[n] for n in names]
