"""A Ray head of the test's own (:class:`sqltune.k8s.localray.LocalRay` with its own temp dir) for
`ray job submit`, and the tiny model the RL tests train: built from the gretel-format fixture's prompts."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from sqltune.k8s.localray import LocalRay

ROOT = Path(__file__).resolve().parents[2]
GRETEL = Path(__file__).parent / "fixtures" / "gretel_small.jsonl"
TINY = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)


def build_gretel_base(out: Path) -> Path:
    from sqltune.data import load_dataset
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model
    from sqltune.prompts import build_messages

    texts: list[str] = []
    for ex in load_dataset(GRETEL, format="gretel"):
        texts.extend(m["content"] for m in build_messages(ex.question, ex.schema, dialect=ex.dialect))
        texts.append(ex.sql)
    return build_tiny_model(out, TinyModelConfig(**TINY), corpus=texts * 3)


class RayHead:
    """``with RayHead() as head: head.submit("jobs.train", [...])``: a local head only this test uses, the
    project's :class:`~sqltune.k8s.localray.LocalRay` (loopback only, free ports, token auth, stops only its
    own processes) in a temp dir of its own, removed at the end."""

    def __init__(self, num_cpus: int = 2):
        # short: Ray puts unix sockets under it
        self.temp = Path(tempfile.mkdtemp(prefix="sqrl-", dir="/tmp"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["PYTHONPATH"] = f"{ROOT}:{ROOT / 'libs'}"
        # Ray waits 30 s for a new raylet to register; on an overloaded machine that can run out: start again.
        self.ray = LocalRay(self.temp, temp_dir=str(self.temp), num_cpus=num_cpus, env=env, cwd=ROOT,
                            start_attempts=4)

    @property
    def address(self) -> str:
        return self.ray.address

    def __enter__(self) -> RayHead:
        try:
            self.ray.start()
        except BaseException:
            shutil.rmtree(self.temp, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.ray.stop()
        shutil.rmtree(self.temp, ignore_errors=True)

    def submit(self, module: str, args: list[str], timeout: float = 400) -> str:
        """Submit ``python -m module args`` with ``--working-dir .``, follow it; returns its logs. Raises
        unless it SUCCEEDED."""
        job_id = f"sqltune-test-{int(time.time() * 1000)}"
        status, logs = self.ray.submit(["python", "-m", module, *args], submission_id=job_id, working_dir=".",
                                       timeout=timeout)
        if status != "SUCCEEDED":
            raise RuntimeError(f"job {module} {args} did not succeed ({status}):\n{logs[-4000:]}")
        return logs
