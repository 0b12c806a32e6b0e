"""Kubernetes side of sqltune: pure builders for KubeRay objects, offline validation, and the
``sqltune k8s`` commands. The ``kubernetes`` client is imported lazily, only by commands that talk to a
cluster (``pip install 'sqltune[k8s]'``)."""

from __future__ import annotations

from sqltune.k8s.builders import (
    JobSpec,
    ServeSpec,
    build_configmap,
    build_rayjob,
    build_rayservice,
    render_serve_config,
)
from sqltune.k8s.versions import CPU_IMAGE, GPU_IMAGE, KUBERAY_VERSION, RAY_VERSION

__all__ = [
    "CPU_IMAGE",
    "GPU_IMAGE",
    "KUBERAY_VERSION",
    "RAY_VERSION",
    "JobSpec",
    "ServeSpec",
    "build_configmap",
    "build_rayjob",
    "build_rayservice",
    "render_serve_config",
]
