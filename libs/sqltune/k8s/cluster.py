"""Talking to a cluster: create/patch objects, watch a RayJob, stream its logs.

The ``kubernetes`` client is imported here only, and only when a function runs.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from sqltune.errors import ResourceError, SqltuneError, missing

GROUP, VERSION = "ray.io", "v1"
PLURALS = {"RayJob": "rayjobs", "RayService": "rayservices", "RayCluster": "rayclusters"}

# jobDeploymentStatus values that end a RayJob (KubeRay v1.7); everything else is still in progress.
TERMINAL_DEPLOYMENT = {"Complete", "Failed", "ValidationFailed", "Suspended"}


def exit_code_for(job_status: str | None, deployment_status: str | None) -> int | None:
    """Exit code of ``sqltune k8s submit --follow`` for a RayJob status, or None while it runs.

    0 SUCCEEDED, 1 FAILED (the job, or the deployment: submitter error, deadline), 2 rejected by the
    operator as invalid, 3 STOPPED / suspended / anything else that ended without success.
    """
    job_status = (job_status or "").upper()
    deployment_status = deployment_status or ""
    if deployment_status not in TERMINAL_DEPLOYMENT:
        return None
    if deployment_status == "ValidationFailed":
        return 2
    if deployment_status == "Failed" or job_status == "FAILED":
        return 1
    if job_status == "SUCCEEDED":
        return 0
    return 3


def _client():
    try:
        from kubernetes import client, config
    except ImportError as exc:
        raise missing("kubernetes", "k8s") from exc
    return client, config


class Cluster:
    """A thin wrapper over the kubernetes client for the few calls sqltune makes."""

    def __init__(self, context: str | None = None) -> None:
        client, config = _client()
        try:
            config.load_kube_config(context=context)
        except Exception as kube_exc:  # noqa: BLE001 - fall back to the in-cluster service account
            try:
                config.load_incluster_config()
            except Exception:  # noqa: BLE001
                err = ResourceError(
                    f"cannot load a Kubernetes config (kubeconfig: {kube_exc}); set KUBECONFIG or --context"
                )
                err.exit_code = 1  # type: ignore[attr-defined]
                raise err from kube_exc
        self.client = client
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.ApiException = client.exceptions.ApiException

    # ------------------------------------------------------------------ objects

    def _fail(self, what: str, exc: Exception) -> SqltuneError:
        status = getattr(exc, "status", None)
        reason = getattr(exc, "reason", "") or str(exc)
        body = getattr(exc, "body", "") or ""
        err = ResourceError(f"{what} failed ({status} {reason}): {body[:500]}")
        err.exit_code = 2 if status in (400, 403, 409, 422) else 1  # type: ignore[attr-defined]
        return err

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind, meta = obj["kind"], obj["metadata"]
        ns = meta.get("namespace", "default")
        try:
            if kind == "ConfigMap":
                return self.api.sanitize_for_serialization(self.core.create_namespaced_config_map(ns, obj))
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], obj)
        except self.ApiException as exc:
            raise self._fail(f"creating {kind} {ns}/{meta['name']}", exc) from exc

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise self._fail(f"reading {kind} {namespace}/{name}", exc) from exc

    def apply(self, obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Create ``obj`` or merge-patch its spec, labels and annotations onto the existing one."""
        kind, meta = obj["kind"], obj["metadata"]
        ns = meta.get("namespace", "default")
        if self.get(kind, meta["name"], ns) is None:
            return "created", self.create(obj)
        patch = {"metadata": {"labels": meta.get("labels", {})}, "spec": obj["spec"]}
        try:
            out = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURALS[kind], meta["name"], patch
            )
        except self.ApiException as exc:
            raise self._fail(f"patching {kind} {ns}/{meta['name']}", exc) from exc
        return "patched", out

    def patch(self, kind: str, name: str, namespace: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a Ray custom object."""
        try:
            return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name, patch)
        except self.ApiException as exc:
            raise self._fail(f"patching {kind} {namespace}/{name}", exc) from exc

    def own(self, configmap: dict[str, Any], owner: dict[str, Any]) -> None:
        """Make ``configmap`` garbage-collected with ``owner`` (a created RayJob)."""
        meta = owner["metadata"]
        ref = {
            "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
            "uid": meta["uid"], "blockOwnerDeletion": False, "controller": False,
        }
        try:
            self.core.patch_namespaced_config_map(
                configmap["metadata"]["name"], configmap["metadata"]["namespace"],
                {"metadata": {"ownerReferences": [ref]}},
            )
        except self.ApiException as exc:
            raise self._fail("setting the ConfigMap owner", exc) from exc

    def list_rayjobs(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        try:
            if namespace:
                out = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "rayjobs", label_selector=selector
                )
            else:
                out = self.custom.list_cluster_custom_object(GROUP, VERSION, "rayjobs", label_selector=selector)
        except self.ApiException as exc:
            raise self._fail("listing RayJobs", exc) from exc
        return list(out.get("items", []))

    # ------------------------------------------------------------------ follow

    def _pods(self, namespace: str, selector: str) -> list[Any]:
        try:
            return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)
        except self.ApiException:
            return []

    def _stream(self, pod: str, namespace: str, container: str | None, out: TextIO) -> None:
        try:
            resp = self.core.read_namespaced_pod_log(
                pod, namespace, container=container, follow=True, _preload_content=False
            )
            for chunk in resp.stream():
                out.write(chunk.decode("utf-8", "replace"))
                out.flush()
        except Exception as exc:  # noqa: BLE001 - a lost log stream must not end the follow loop
            print(f"[sqltune] log stream of {pod} ended: {exc}", file=sys.stderr)

    def follow_rayjob(
        self,
        name: str,
        namespace: str,
        *,
        poll_s: float = 5.0,
        timeout_s: float = 0,
        out: TextIO = sys.stdout,
        log: Callable[[str], None] = lambda m: print(f"[sqltune] {m}", file=sys.stderr),
    ) -> int:
        """Print status changes and the submitter's (else the head's) logs until the RayJob ends."""
        start = time.monotonic()
        streamed: set[str] = set()
        last: tuple[str, str] | None = None
        while True:
            job = self.get("RayJob", name, namespace)
            if job is None:
                log(f"RayJob {namespace}/{name} no longer exists")
                return 3
            status = job.get("status") or {}
            cur = (status.get("jobStatus", ""), status.get("jobDeploymentStatus", ""))
            if cur != last:
                log(f"RayJob {name}: jobStatus={cur[0] or '-'} jobDeploymentStatus={cur[1] or '-'}")
                last = cur
            code = exit_code_for(*cur)
            if code is not None:
                if status.get("message"):
                    log(status["message"])
                return code
            # K8sJobMode: the submitter Job has the RayJob's name; its pod runs `ray job submit` and
            # prints the driver's logs. Fall back to the head pod's logs for other modes.
            pods = [p for p in self._pods(namespace, f"job-name={name}") if p.status.phase != "Pending"]
            container = "ray-job-submitter"
            if not pods and status.get("rayClusterName"):
                pods = [
                    p for p in self._pods(
                        namespace, f"ray.io/cluster={status['rayClusterName']},ray.io/node-type=head"
                    ) if p.status.phase == "Running"
                ]
                container = None
            for pod in pods:
                pname = pod.metadata.name
                if pname not in streamed:
                    streamed.add(pname)
                    log(f"following logs of pod {pname}")
                    threading.Thread(
                        target=self._stream, args=(pname, namespace, container, out), daemon=True
                    ).start()
            if timeout_s and time.monotonic() - start > timeout_s:
                log(f"gave up following after {timeout_s:.0f}s; the job keeps running")
                return 3
            time.sleep(poll_s)
