"""Ray Serve entry point of the sqltune server.

    serve run serve.app:build_app model_uri=/path/to/merged          # locally (args as key=value)
    serve deploy serve/config.yaml                                   # on a Ray cluster
    (Kubernetes: the RayService embeds serve/config.yaml as serveConfigV2)

Start Ray with ``sqltune.serving.config.RAY_SERVE_ENV`` in its environment (``RAY_SERVE_ENABLE_HA_PROXY=1
RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_USE_GRPC_BY_DEFAULT=1``; the images and manifests set it): Ray
Serve's high-throughput mode, HAProxy in front of the ingress replicas and gRPC to the model replica.

``build_app(args)`` validates the args (``sqltune.serving.config.ServeArgs``; a bad field is named in the
error) and returns the application: the ``APIIngress`` FastAPI deployment in front of the ``SQLModel``
replicas. The deployments live in ``sqltune.serving.deployments`` so Ray workers import them from the
installed package.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from sqltune.log import setup_logging
from sqltune.serving.deployments import build_app as _build


def build_app(args: dict[str, Any]) -> Application:
    setup_logging()
    return _build(args)


__all__ = ["build_app"]
