"""Serving: the Ray Serve text-to-SQL server (replica, HTTP API, auth, limits, metrics).

The generation engines it runs live in :mod:`sqltune.generation`.

- :mod:`sqltune.serving.config` - :class:`ServeArgs`, the ``args`` of serve/config.yaml.
- :mod:`sqltune.serving.replica` - :class:`ModelServer`: artifact loading, prompts, token caps.
- :mod:`sqltune.serving.api` - the FastAPI app (``/v1/sql``, OpenAI routes, health, stats).
- :mod:`sqltune.serving.deployments` - Ray Serve deployments and ``build_app``.

Import the submodules you need; this package imports nothing heavy.
"""

from sqltune.serving.config import ServeArgs

__all__ = ["ServeArgs"]
