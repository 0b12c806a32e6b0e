"""Ray Train runs on a real local cluster: 2 workers, the tiny model in real NF4 QLoRA, S3 (moto)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sqltune import storage
from sqltune.errors import SqltuneError
from sqltune.train.config import TrainConfig
from sqltune.train.run import preflight, run

pytestmark = [pytest.mark.ray]

ADAPTER_FILES = {
    "adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
    "config.yaml", "prompt_template.json", "sqltune_artifact.json", "metrics.json",
}


def _val_loss(model, tokenizer, examples) -> float:
    import torch

    from sqltune.prompts import PromptTemplate
    from sqltune.train.data import collate_padded, tokenize_examples

    rows = tokenize_examples(examples, tokenizer, PromptTemplate(), 640).rows
    batch = collate_padded(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        return float(model(**batch).loss)


def test_qlora_two_workers_survives_a_killed_worker_and_publishes_to_s3(
    ray_cluster, s3_prefix, train_base, train_dict, worker_killer, tmp_path
):
    d = train_dict
    d.update(run_name="kill-test", output_uri=s3_prefix)
    d["eval"].update(exec_accuracy=True, exec_examples=4, max_new_tokens=24, gen_batch_size=4)
    d["tracking"] = {"backend": "file", "file_store": str(tmp_path / "mlruns"), "experiment": "train-test"}
    cfg = TrainConfig.from_dict(d)
    prep = preflight(cfg)
    assert not prep.resuming
    killer = worker_killer(storage.join(cfg.storage_uri(), cfg.run_name))
    killer.start()
    result = run(prep)
    killer.join(timeout=1)
    assert killer.error is None and killer.killed_pid, killer.error

    m = result.metrics
    # One restart, from the latest checkpoint registered before the kill (or a later one), not from 0.
    assert len(m["resumed_from"]) == 1, m["resumed_from"]
    resumed = m["resumed_from"][0]
    assert resumed >= max(killer.steps_before) and resumed % 10 == 0 and 0 < resumed < 30
    assert m["final"]["step"] == 30 and m["final"]["world_size"] == 2
    assert m["final"]["optimizer"] == "paged_adamw_8bit"
    losses = [h["train_loss"] for h in m["history"] if "train_loss" in h]
    assert losses[-1] < losses[0] - 0.5, losses
    # Execution accuracy was measured in training, on the 4 validation examples asked for: a share of 4,
    # the same value the last evaluation in the history recorded.
    exec_acc = m["final"]["eval_exec_accuracy"]
    assert exec_acc in (0.0, 0.25, 0.5, 0.75, 1.0), exec_acc
    measured = [h for h in m["history"] if "eval_exec_accuracy" in h]
    assert {h["step"] for h in measured} == {10, 20, 30}, m["history"]  # every eval interval, and the end
    assert measured[-1]["eval_exec_accuracy"] == pytest.approx(exec_acc)
    assert 0.0 <= m["final"]["eval_parseable"] <= 1.0

    # The adapter is published on S3 with its manifest, and nothing else is there but the artifact.
    assert result.adapter_uri == f"{s3_prefix}/kill-test/adapter"
    manifest = storage.read_manifest(result.adapter_uri)
    assert ADAPTER_FILES <= set(manifest.files), sorted(manifest.files)
    local = Path(storage.fetch(result.adapter_uri, tmp_path / "adapter"))
    published = json.loads((local / "metrics.json").read_text())
    assert published["resumed_from"] == [resumed] and published["final"]["step"] == 30
    info = json.loads((local / "sqltune_artifact.json").read_text())
    assert info["kind"] == "adapter" and info["base_model"] == str(train_base)
    assert "lora" in (local / "config.yaml").read_text()

    # It loads with PEFT onto the base and is better than the base on validation examples.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(local)
    base = AutoModelForCausalLM.from_pretrained(train_base)
    examples = prep.validation[:8]
    base_loss = _val_loss(base, tok, examples)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(train_base), local)
    tuned_loss = _val_loss(tuned, tok, examples)
    assert tuned_loss < base_loss - 0.5, (base_loss, tuned_loss)

    # MLflow (local file store) has the same numbers as metrics.json.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    exp = client.get_experiment_by_name("train-test")
    (run_info,) = client.search_runs([exp.experiment_id])
    assert run_info.data.metrics["final_step"] == 30
    assert run_info.data.metrics["final_eval_loss"] == pytest.approx(published["final"]["eval_loss"])
    history = [(m.step, m.value) for m in client.get_metric_history(run_info.info.run_id, "train_loss")]
    assert history == [(h["step"], pytest.approx(h["train_loss"])) for h in published["history"] if "train_loss" in h]


def test_failed_run_publishes_nothing_and_resubmitting_resumes(
    ray_cluster, s3_prefix, train_dict, worker_killer, checkpoint_steps
):
    d = train_dict
    d.update(run_name="resubmit-test", output_uri=s3_prefix)
    d["scaling"]["max_failures"] = 0
    cfg = TrainConfig.from_dict(d)
    run_uri = storage.join(cfg.storage_uri(), cfg.run_name)
    killer = worker_killer(run_uri)
    killer.start()
    with pytest.raises(SqltuneError, match="same run_name to resume"):
        run(preflight(cfg))
    killer.join(timeout=1)
    assert killer.error is None and killer.killed_pid, killer.error
    assert not storage.exists(storage.join(cfg.adapter_uri(), "manifest.json"))
    assert storage.list_files(cfg.adapter_uri()) == []
    steps = checkpoint_steps(run_uri)
    assert steps and max(steps) < 30

    # The same command again: preflight sees the run's checkpoints and the workers resume from the latest.
    prep = preflight(cfg)
    assert prep.resuming
    result = run(prep)
    assert result.metrics["resumed_from"] == [max(steps)]
    assert result.metrics["final"]["step"] == 30
    assert storage.read_manifest(cfg.adapter_uri()).kind == "adapter"

    # A third submission finds the published adapter and refuses before starting anything.
    with pytest.raises(SqltuneError, match="already published"):
        preflight(cfg)


def test_select_best_publishes_the_best_checkpoint_not_the_last(ray_cluster, s3_prefix, train_dict):
    """checkpoint.select=best (every GPU preset's choice), scored by eval loss. With lr=0 every checkpoint
    scores exactly the same loss, so "best" is deterministic: the earliest checkpoint reaching the best
    score (step 10), while the last is step 20; select=last would publish step 20."""
    d = train_dict
    d.update(run_name="best-test", output_uri=s3_prefix)
    d["optim"] = {"lr": 0.0, "warmup_steps": 0}
    d["train"].update(max_steps=20)
    d["checkpoint"].update(interval=10, num_to_keep=None, select="best")
    d["scaling"].update(num_workers=1, max_failures=0)
    cfg = TrainConfig.from_dict(d)
    assert cfg.score() == ("eval_loss", "min")
    result = run(preflight(cfg))

    # Ray Train's own record of the run's checkpoints: both kept, with the same score.
    snapshot = storage.join(cfg.storage_uri(), cfg.run_name, "checkpoint_manager_snapshot.json")
    kept = json.loads(storage.read_bytes(snapshot))["checkpoint_results"]
    losses = {int(r["metrics"]["step"]): r["metrics"]["eval_loss"] for r in kept}
    assert set(losses) == {10, 20} and losses[10] == losses[20], losses
    published = json.loads(storage.read_bytes(storage.join(result.adapter_uri, "metrics.json")))
    assert published["selected_checkpoint"]["select"] == "best"
    assert published["selected_checkpoint"]["step"] == 10, published["selected_checkpoint"]
    assert published["final"]["step"] == 10  # the artifact is laid out from that checkpoint's own state
