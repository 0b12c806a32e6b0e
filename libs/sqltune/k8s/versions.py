"""Versions the Kubernetes side pins. tests/k8s/test_versions.py checks they agree with pyproject.toml,
docker/Dockerfile.* and the manifests under k8s/."""

from __future__ import annotations

from sqltune import __version__

RAY_VERSION = "2.60.0"  # pyproject: ray[...]==2.60.0; Dockerfiles: rayproject/ray:2.60.0-...
TORCH_VERSION = "2.13.0"  # pyproject: torch==2.13.0; Dockerfiles: ARG TORCH_VERSION
PYTHON_TAG = "py311"  # the base images' Python (pyproject: requires-python >=3.10)
CUDA_TAG = "cu128"
KUBERAY_VERSION = "1.7.0"  # the CRDs the manifests are validated against

IMAGE_NAME = "sqltune"
GPU_IMAGE = f"{IMAGE_NAME}:{__version__}-ray{RAY_VERSION}-gpu"
CPU_IMAGE = f"{IMAGE_NAME}:{__version__}-ray{RAY_VERSION}-cpu"
