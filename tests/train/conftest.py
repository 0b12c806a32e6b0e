"""Fixtures of the training tests: the embedded dataset, a small tiny model, a real local Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sqltune import storage


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory) -> Path:
    """The embedded dataset (warehouse + ~1,600 examples), built once per session."""
    from sqltune.data import load_dataset

    out = tmp_path_factory.mktemp("embedded")
    load_dataset(out, format="embedded")  # builds it when the folder is empty
    return out


@pytest.fixture(scope="session")
def train_base(tmp_path_factory, embedded_dir) -> Path:
    """A 2-layer, hidden-64 Qwen2 with a BPE tokenizer trained on the embedded prompts (fast to train)."""
    from sqltune.data import load_dataset
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model
    from sqltune.prompts import build_messages

    texts: list[str] = []
    for ex in load_dataset(embedded_dir, format="embedded")[:400]:
        texts.extend(m["content"] for m in build_messages(ex.question, ex.schema, dialect=ex.dialect))
        texts.append(ex.sql)
    cfg = TinyModelConfig(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                          intermediate_size=128)
    return build_tiny_model(tmp_path_factory.mktemp("train-base"), cfg, corpus=texts)


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """A real local Ray (4 logical CPUs; the dashboard runs because Ray Train's controller and the worker
    lookup below use the state API). Started after the S3 server so workers inherit its AWS_* env."""
    import ray

    if ray.is_initialized():  # a session fixture of another package may have left one up
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)
    try:
        yield ray
    finally:
        ray.shutdown()


def base_overrides(base: Path, embedded: Path) -> dict:
    """A TrainConfig dict for a ~30-step 2-worker QLoRA run on the tiny model."""
    return {
        "model": {"base": str(base), "mode": "qlora"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "modules_to_save": ["embed_tokens"]},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "data": {"source": "embedded", "embedded_dir": str(embedded), "max_train_examples": 240,
                 "max_validation_examples": 16, "max_length": 640},
        "train": {"max_steps": 30, "batch_size": 4, "log_every": 5},
        "eval": {"interval": 10},
        "checkpoint": {"interval": 10, "num_to_keep": 2},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 1},
    }


def registered_steps(run_uri: str) -> list[int]:
    """Steps of the checkpoints Ray Train has registered for a run (from its snapshot file)."""
    snap = storage.join(run_uri, "checkpoint_manager_snapshot.json")
    try:
        data = json.loads(storage.read_bytes(snap))
    except Exception:  # noqa: BLE001 - not written yet
        return []
    return [int(r["metrics"]["step"]) for r in data.get("checkpoint_results", [])]


class WorkerKiller(threading.Thread):
    """Waits until the run's first checkpoint is registered in storage, then SIGKILLs one live training
    worker process (found through Ray's state API). Records the steps checkpointed before the kill."""

    def __init__(self, run_uri: str, timeout: float = 240.0):
        super().__init__(daemon=True)
        self.run_uri = run_uri
        self.timeout = timeout
        self.killed_pid: int | None = None
        self.steps_before: list[int] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - reported by the test through .error
            self.error = f"{type(exc).__name__}: {exc}"

    def _run(self) -> None:
        import ray
        from ray.util.state import list_actors

        # Explicit address: other Ray clusters may run on the same machine.
        address = ray.get_runtime_context().gcs_address
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            steps = registered_steps(self.run_uri)
            if steps:
                workers = list_actors(
                    address=address, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
                )
                pids = sorted(int(a.pid) for a in workers if a.pid)
                if len(pids) >= 2:
                    self.steps_before = steps
                    self.killed_pid = pids[-1]
                    os.kill(self.killed_pid, signal.SIGKILL)
                    return
            time.sleep(0.2)
        self.error = f"no checkpoint registered in {self.run_uri} within {self.timeout}s"


@pytest.fixture()
def train_dict(train_base, embedded_dir) -> dict:
    return base_overrides(train_base, embedded_dir)


@pytest.fixture()
def worker_killer():
    """The :class:`WorkerKiller` class (a thread that SIGKILLs a worker after the first checkpoint)."""
    return WorkerKiller


@pytest.fixture()
def checkpoint_steps():
    """``checkpoint_steps(run_uri)``: steps of the checkpoints registered for a run."""
    return registered_steps
