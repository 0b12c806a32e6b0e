"""Hand a command line to a sqltune job's own ``main()`` and stop right after it parsed its config."""

from __future__ import annotations

import importlib
import io
from contextlib import redirect_stderr
from typing import Any

# entry point -> the module whose ``setup(cfg)`` its main() calls right after parsing
RUN_MODULES = {
    "jobs.train": "sqltune.train.run",
    "jobs.evaluate": "sqltune.evaluation.run",
    "jobs.export": "sqltune.export.run",
    "jobs.pipeline": "sqltune.pipeline.run",
}


class Parsed(BaseException):
    """Raised by the patched ``setup``: carries the config the job parsed (BaseException: main() catches
    only SqltuneError, so this leaves it untouched)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__("parsed")
        self.cfg = cfg


def parse_with_job(monkeypatch, argv: list[str]) -> Any:
    """``argv`` is ``python -m <module> <args...>``; returns the config the job's main() parsed, or fails
    the test with the job's own error message."""
    assert argv[:2] == ["python", "-m"], f"not a `python -m` entrypoint: {argv}"
    module, args = argv[2], argv[3:]
    job = importlib.import_module(module)
    run_mod = importlib.import_module(RUN_MODULES[module])

    def capture(cfg: Any) -> Any:
        raise Parsed(cfg)

    monkeypatch.setattr(run_mod, "setup", capture)
    err = io.StringIO()
    try:
        with redirect_stderr(err):
            rc = job.main(args)
    except Parsed as got:
        return got.cfg
    raise AssertionError(f"{module} rejected {args} (exit {rc}): {err.getvalue()}")
