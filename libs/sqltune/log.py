"""Logging setup, done once per process by whatever starts it; library modules only create loggers.

Entry points call :func:`setup_logging` first thing: ``jobs/*.py``, ``serve/app.py``, the ``sqltune`` CLI,
the module CLIs (``python -m sqltune.models.tiny``, ``python -m sqltune.data.embedded``) and scripts. Ray
starts some processes inside library code, and those are entry points too: a Ray Train worker
(``train_loop_per_worker``), an evaluation variant actor and a Ray Serve model replica call it on start.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log per request or per file at INFO; their warnings still show.
CHATTY = ("httpx", "urllib3", "botocore", "filelock", "transformers", "bitsandbytes", "peft")


def setup_logging(level: int = logging.INFO, *, chatty_level: int = logging.WARNING, force: bool = False) -> None:
    """Root logger at ``level`` with one stderr handler and :data:`FORMAT`; :data:`CHATTY` libraries at
    ``chatty_level``. Without ``force`` an already configured root logger (pytest's, Ray's) is kept."""
    logging.basicConfig(level=level, format=FORMAT, force=force)
    for name in CHATTY:
        logging.getLogger(name).setLevel(chatty_level)
