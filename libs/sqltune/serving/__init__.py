"""Serving: the Ray Serve text-to-SQL server - HTTP ingress and model replicas (the engines they run live
in :mod:`sqltune.generation`).

- :mod:`sqltune.serving.config` - :class:`ServeArgs`, the ``args`` of serve/config.yaml.
- :mod:`sqltune.serving.protocol` - the typed requests and responses between ingress and replica.
- :mod:`sqltune.serving.replica` - :class:`ModelServer`: artifact loading, prompts, the engine.
- :mod:`sqltune.serving.lengths` - every request-length rule, applied by the replica.
- :mod:`sqltune.serving.api` - the FastAPI app; routes in :mod:`~sqltune.serving.sql_api` (``/v1/sql``)
  and :mod:`~sqltune.serving.openai_api` (OpenAI routes), bodies in :mod:`~sqltune.serving.schemas`,
  errors in :mod:`~sqltune.serving.http_errors`, shared state in :mod:`~sqltune.serving.state`.
- :mod:`sqltune.serving.backend` - the ingress's typed view of the replicas.
- :mod:`sqltune.serving.deployments` - Ray Serve deployments and ``build_app``.
- :mod:`sqltune.serving.auth`, :mod:`~sqltune.serving.limits`, :mod:`~sqltune.serving.metrics` - bearer
  tokens, body size, Prometheus metrics.

Import the submodules you need; this package imports nothing heavy.
"""

from sqltune.serving.config import ServeArgs

__all__ = ["ServeArgs"]
