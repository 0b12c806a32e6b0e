"""Promotion: switch serving to a new model URI, by changing only the app's ``args.model_uri``.

* ``kubernetes``: read the RayService, replace ``model_uri`` in its ``serveConfigV2`` and merge-patch
  ``spec.serveConfigV2`` (Ray Serve rolls the replicas in place; the Ray cluster is not replaced).
  ``dry_run`` prints the patch and changes nothing; a RayService read from a manifest file instead of the
  cluster (``from_file``) makes the dry run work without cluster access.
* ``local``: read the deployed Serve config (``serve config``), replace ``model_uri``, ``serve deploy`` it,
  and wait until the application is RUNNING again.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sqltune.errors import ConfigError, SqltuneError
from sqltune.k8s.builders import dump_yaml, render_serve_config
from sqltune.k8s.cluster import Cluster
from sqltune.k8s.local import load_objects
from sqltune.pipeline.config import PromoteConfig


class PromoteError(SqltuneError):
    """Serving could not be switched; the message names the target and the fix."""

    exit_code = 1


@dataclass
class Promotion:
    target: str
    model_uri: str
    previous_model_uri: str | None
    applied: bool  # False for dry runs
    change: dict[str, Any]  # the patch (kubernetes) or the deployed Serve config (local)

    def summary(self) -> str:
        verb = "would switch" if not self.applied else "switched"
        return f"promote ({self.target}): {verb} serving from {self.previous_model_uri} to {self.model_uri}"


def replace_model_uri(
    serve_config: dict[str, Any], app: str, model_uri: str
) -> tuple[dict[str, Any], str | None]:
    """A copy of a Serve config (``applications: [...]``) with ``app``'s ``args.model_uri`` replaced."""
    cfg = copy.deepcopy(serve_config)
    apps = [a for a in cfg.get("applications") or [] if a.get("name") == app]
    if not apps:
        names = [a.get("name") for a in cfg.get("applications") or []]
        raise ConfigError(
            f"promote.app: the Serve config has no application {app!r} (it has {names}); set promote.app"
        )
    args = apps[0].setdefault("args", {})
    previous = args.get("model_uri")
    args["model_uri"] = model_uri
    return cfg, previous


# ----------------------------------------------------------------------------------------------- kubernetes


def kubernetes_patch(
    rayservice: dict[str, Any], app: str, model_uri: str
) -> tuple[dict[str, Any], str | None]:
    """The merge patch that points ``rayservice``'s serveConfigV2 at ``model_uri``."""
    text = (rayservice.get("spec") or {}).get("serveConfigV2")
    if not text:
        raise ConfigError(
            f"RayService {rayservice['metadata']['name']}: spec.serveConfigV2 is empty; nothing to promote"
        )
    current = yaml.safe_load(text)
    _, previous = replace_model_uri(current, app, model_uri)
    return {"spec": {"serveConfigV2": render_serve_config(current, model_uri=model_uri, app=app)}}, previous


def _rayservice_from_file(path: str | Path, name: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"--from {p}: no such file; pass a rendered manifest (kubectl kustomize ...) with the RayService"
        )
    found = [
        o
        for o in load_objects(p.read_text(), str(p))
        if o["kind"] == "RayService" and o["metadata"]["name"] == name
    ]
    if not found:
        raise ConfigError(f"--from {p}: no RayService named {name!r}; set promote.rayservice")
    return found[0]


def promote_kubernetes(
    model_uri: str, cfg: PromoteConfig, *, from_file: str | None = None, out=None
) -> Promotion:
    out = out or sys.stdout
    if from_file:
        obj = _rayservice_from_file(from_file, cfg.rayservice)
        cluster = None
    else:
        cluster = Cluster(cfg.context)
        obj = cluster.get("RayService", cfg.rayservice, cfg.namespace)
        if obj is None:
            raise PromoteError(
                f"RayService {cfg.namespace}/{cfg.rayservice} does not exist; deploy it first "
                "(kubectl apply -k k8s/overlays/...) or set promote.rayservice/promote.namespace"
            )
    patch, previous = kubernetes_patch(obj, cfg.app, model_uri)
    if cfg.dry_run:
        print(
            f"# merge patch for RayService {cfg.namespace}/{cfg.rayservice} (kubectl patch --type merge); "
            f"model_uri {previous} -> {model_uri}",
            file=out,
        )

        out.write(dump_yaml(patch))
        return Promotion("kubernetes", model_uri, previous, False, patch)
    if cluster is None:
        raise ConfigError(
            "--from reads a RayService from a file: only with --dry-run (a file cannot be patched)"
        )
    cluster.patch("RayService", cfg.rayservice, cfg.namespace, patch)
    return Promotion("kubernetes", model_uri, previous, True, patch)


# ----------------------------------------------------------------------------------------------- local


def serve_address(cfg: PromoteConfig) -> str:
    for value in (
        cfg.address,
        os.environ.get("SQLTUNE_SERVE_ADDRESS", ""),
        os.environ.get("RAY_ADDRESS", ""),
    ):
        if value.startswith(("http://", "https://")):
            return value
    raise ConfigError(
        "promote.address: no Ray dashboard address for `serve deploy`; set promote.address=http://HOST:8265 "
        "(or SQLTUNE_SERVE_ADDRESS)"
    )


def _serve(args: list[str], address: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("serve")
    cmd = [str(exe) if exe.exists() else "serve", *args, "-a", address]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def deployed_apps(address: str) -> list[dict[str, Any]]:
    """The application configs deployed on the Ray cluster at ``address`` (``serve config``)."""
    out = _serve(["config"], address)
    if out.returncode != 0:
        raise PromoteError(f"`serve config -a {address}` failed: {(out.stderr or out.stdout).strip()[-800:]}")
    apps = [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]
    if not apps:
        raise PromoteError(f"no Serve application is deployed at {address}; deploy one first (serve deploy)")
    return apps


def app_status(address: str, app: str) -> str:
    out = _serve(["status"], address)
    if out.returncode != 0:
        return "UNKNOWN"
    data = yaml.safe_load(out.stdout) or {}
    return str(((data.get("applications") or {}).get(app) or {}).get("status", "NOT_STARTED"))


def promote_local(model_uri: str, cfg: PromoteConfig, *, wait_s: float = 600.0, out=None) -> Promotion:
    out = out or sys.stdout
    address = serve_address(cfg)
    serve_config, previous = replace_model_uri({"applications": deployed_apps(address)}, cfg.app, model_uri)
    if cfg.dry_run:
        out.write(yaml.safe_dump(serve_config, sort_keys=False, width=110))
        return Promotion("local", model_uri, previous, False, serve_config)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="sqltune-promote-", delete=False) as f:
        yaml.safe_dump(serve_config, f, sort_keys=False)
        path = f.name
    try:
        done = _serve(["deploy", path], address)
    finally:
        os.unlink(path)
    if done.returncode != 0:
        raise PromoteError(
            f"`serve deploy` to {address} failed: {(done.stderr or done.stdout).strip()[-800:]}"
        )
    deadline = time.monotonic() + wait_s
    time.sleep(1.0)  # the controller marks the app DEPLOYING once it picked the new config up
    while True:
        status = app_status(address, cfg.app)
        if status == "RUNNING":
            break
        if status == "DEPLOY_FAILED" or time.monotonic() > deadline:
            raise PromoteError(
                f"serve app {cfg.app!r} is {status} after promoting {model_uri}; see `serve status -a {address}`"
            )
        time.sleep(2.0)
    return Promotion("local", model_uri, previous, True, serve_config)


def promote(
    model_uri: str, cfg: PromoteConfig, *, from_file: str | None = None, out=None
) -> Promotion | None:
    """Switch serving to ``model_uri`` as ``cfg.target`` says (None for target none)."""
    out = out or sys.stdout
    if not model_uri:
        raise ConfigError("promote: empty model URI; the gate's candidate variant has no model")
    if cfg.target == "kubernetes":
        return promote_kubernetes(model_uri, cfg, from_file=from_file, out=out)
    if cfg.target == "local":
        return promote_local(model_uri, cfg, out=out)
    return None


def promotion_record(p: Promotion | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "target": p.target,
        "model_uri": p.model_uri,
        "previous_model_uri": p.previous_model_uri,
        "applied": p.applied,
        "change": json.loads(json.dumps(p.change, default=str)),
    }
