"""The Ray Train worker function: the same code on CPU and GPU, one process per data-parallel rank.

Each worker loads the base model (once per node for s3:// bases), tokenizes the examples the driver
sent, and trains its shard of every epoch (:class:`sqltune.train.data.BatchPlan`). Gradients are averaged
by DDP (``ray.train.torch.prepare_model``). Every ``checkpoint.interval`` steps rank 0 writes a checkpoint
holding the trainable weights (PEFT adapter files too), the optimizer and scheduler state, the RNG
states, the step (which fixes the data position), the metric history, and the steps it resumed at; every
rank calls ``ray.train.report`` with the same metrics. On start, ``ray.train.get_checkpoint()`` (the
latest checkpoint of this run, after a worker failure or a resubmission with the same run name) is
restored, so a killed worker costs at most one checkpoint interval.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sqltune.errors import ConfigError, IntegrityError
from sqltune.train.config import TrainConfig
from sqltune.train.dist import all_sum, dist_group, memory_gib, rng_state, seed_all, set_rng_state

log = logging.getLogger("sqltune.train")

STATE_FILE = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
MODEL_SUBDIR = "model"


def forward_loss(model: Any, batch: dict[str, Any], device: str, *, num_items: int, chunk_tokens: int = 0):
    """The loss of one micro-batch, summed over target tokens and divided by ``num_items`` (the target
    tokens of the whole accumulation window), so accumulated micro-batches weigh every token equally."""
    tensors = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "real_tokens"}
    if device.startswith("cuda") and "position_ids" in batch:
        from sqltune.train.fast import packed_kwargs, uses_packed_attention

        if uses_packed_attention(model):  # varlen boundaries once per micro-batch, from the host's copy
            tensors.update(packed_kwargs(batch["position_ids"], device))
    if chunk_tokens:
        from sqltune.train.fast import chunked_lm_loss

        return chunked_lm_loss(model, tensors, num_items=num_items, chunk_tokens=chunk_tokens)
    return model(**tensors, use_cache=False, num_items_in_batch=num_items).loss


class Trainer:
    """One worker's training state; :meth:`run` is the whole worker function."""

    def __init__(self, cfg: TrainConfig, payload: dict[str, Any], *, rank: int, world_size: int, device: str):
        self.cfg = cfg
        self.payload = payload
        self.rank = rank
        self.world = world_size
        self.device = device
        self.state: dict[str, Any] = {
            "step": 0,
            "history": [],
            "resumed_from": [],
            "tokens": 0,
            "target_tokens": 0,
            "train_seconds": 0.0,
            "eval_loss": None,
            "eval_exec_accuracy": None,
            "eval_parseable": None,
            "done": False,
        }

    # ------------------------------------------------------------------------------------------ setup

    def setup(self) -> None:
        from sqltune.data.record import Example
        from sqltune.train.model import build_model
        from sqltune.train.optim import build_optimizer, build_scheduler

        cfg = self.cfg
        seed_all(cfg.train.seed)
        self.built = build_model(cfg, self.device)
        self.model = self.built.model
        self.tokenizer = self.built.tokenizer
        self.template = cfg.prompt_template()
        train_ex = [Example.from_dict(d) for d in self.payload["train"]]
        self.val_ex = [Example.from_dict(d) for d in self.payload["validation"]]
        self._plan_data(train_ex)
        self.total_steps = self.plan.total_steps(cfg.train.epochs, cfg.train.max_steps)
        self.optimizer, self.optimizer_name = build_optimizer(self.model, cfg.optim, self.device)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        if self.rank == 0:
            log.info(
                "data: %d train / %d validation examples (%d + %d dropped > max_length); %d steps "
                "(%d per epoch, %d workers x batch %d x accum %d%s); optimizer %s",
                len(self.train_set.rows), len(self.val_set.rows), self.train_set.dropped, self.val_set.dropped,
                self.total_steps, self.plan.steps_per_epoch(), self.world, cfg.train.batch_size,
                cfg.train.grad_accum, ", packed" if cfg.train.packing else "", self.optimizer_name,
            )
        self._restore()
        self._wrap()

    def _plan_data(self, train_ex: list[Any]) -> None:
        """Tokenize the examples and plan the batches (``train_set``, ``val_set``, ``plan``); the preference
        and policy-gradient trainers plan their own."""
        from sqltune.train.data import BatchPlan, tokenize_examples

        cfg = self.cfg
        self.train_set = tokenize_examples(train_ex, self.tokenizer, self.template, cfg.data.max_length)
        self.val_set = tokenize_examples(self.val_ex, self.tokenizer, self.template, cfg.data.max_length)
        if not self.train_set.rows:
            raise ConfigError(f"no training example fits data.max_length={cfg.data.max_length}: raise it")
        self.plan = BatchPlan(
            lengths=tuple(self.train_set.lengths),
            world_size=self.world,
            batch_size=cfg.train.batch_size,
            grad_accum=cfg.train.grad_accum,
            seed=cfg.train.seed,
            packing=cfg.train.packing,
            pack_tokens=cfg.train.pack_tokens,
            pack_rows=cfg.train.pack_rows,
        )
        if self.plan.steps_per_epoch() <= 0:
            raise ConfigError(
                f"{len(self.train_set.rows)} training examples make less than one optimizer step on each of "
                f"{self.world} workers (train.batch_size={cfg.train.batch_size}, train.grad_accum="
                f"{cfg.train.grad_accum}): lower them or the worker count, or train on more examples"
            )

    def _wrap(self) -> None:
        self.flat_sync = False
        if self.world <= 1:
            return
        if not self.device.startswith("cuda"):
            # CPU (gloo): one flat all-reduce of the gradients after the backward pass (_sync_gradients)
            # instead of DDP's bucketed all-reduces overlapped with it. On a one-core CPU worker gloo's
            # communication thread competes with the backward pass for the core: a tiny-preset step took
            # 2.4 s on 2 workers with DDP against 1.75 s on one (2-core AVX2 machine).
            self.flat_sync = True
            dist = dist_group()
            for p in self.trainable:
                dist.broadcast(p.data, src=0)  # what DDP's constructor does: every rank starts from rank 0's
            return
        import ray.train.torch

        self.model = ray.train.torch.prepare_model(
            self.model,
            move_to_device=False,
            parallel_strategy="ddp",
            parallel_strategy_kwargs={"find_unused_parameters": False, "broadcast_buffers": False},
        )

    # ------------------------------------------------------------------------------------ checkpoints

    def _restore(self) -> None:
        import ray.train

        from sqltune.train.model import load_trainable_state

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return
        with ckpt.as_directory() as d:
            blob = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
            if self.cfg.model.mode == "full":
                from safetensors.torch import load_file

                weights: dict[str, Any] = {}
                for f in sorted((Path(d) / MODEL_SUBDIR).glob("*.safetensors")):
                    weights.update(load_file(str(f)))
                missing, _ = self.model.load_state_dict(weights, strict=False)
                if missing and any("lm_head" not in m for m in missing):
                    raise IntegrityError(f"checkpoint {d} lacks weights {missing[:3]}: set resume=false")
            else:
                load_trainable_state(self.model, blob["trainable"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        set_rng_state(blob["rng"])
        self.state.update(blob["state"])
        step = self.state["step"]
        self.state["resumed_from"] = list(self.state["resumed_from"]) + [step]
        if blob.get("world_size") != self.world and self.rank == 0:
            log.warning(
                "the checkpoint was written by %s workers, this run has %d: the data order after step %d differs",
                blob.get("world_size"), self.world, step,
            )
        if self.rank == 0:
            log.info("resumed from checkpoint at step %d of %d (%s)", step, self.total_steps, ckpt.path)

    def _save_and_report(self, metrics: dict[str, Any]) -> None:
        import ray.train
        from ray.train import Checkpoint

        from sqltune.train.model import save_for_publish, trainable_state

        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        tmp = Path(tempfile.mkdtemp(prefix="sqltune-ckpt-"))
        try:
            save_for_publish(self.model, self.tokenizer, str(tmp / MODEL_SUBDIR), self.cfg.model.mode)
            blob = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(),
                "state": dict(self.state),
                "world_size": self.world,
                "optimizer_name": self.optimizer_name,
            }
            if self.cfg.model.mode != "full":
                blob["trainable"] = trainable_state(self.model)
            torch.save(blob, tmp / STATE_FILE)
            (tmp / STATE_JSON).write_text(json.dumps({**self._summary(), "metrics": metrics}, indent=2, default=str))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _summary(self) -> dict[str, Any]:
        s = self.state
        return {
            "step": s["step"],
            "total_steps": self.total_steps,
            "done": s["done"],
            "resumed_from": s["resumed_from"],
            "tokens": s["tokens"],
            "target_tokens": s["target_tokens"],
            "train_seconds": round(s["train_seconds"], 3),
            "tokens_per_second": round(s["tokens"] / s["train_seconds"], 1) if s["train_seconds"] else None,
            "eval_loss": s["eval_loss"],
            "eval_exec_accuracy": s["eval_exec_accuracy"],
            "eval_parseable": s["eval_parseable"],
            "history": s["history"],
            "optimizer": self.optimizer_name,
            "world_size": self.world,
            "train_examples": len(self.train_set.rows),
            "validation_examples": len(self.val_set.rows),
            "dropped_examples": self.train_set.dropped + self.val_set.dropped,
            "trainable_params": self.built.trainable_params,
            "total_params": self.built.total_params,
        }

    def _report_metrics(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        s = self.state
        name, order = self.cfg.score()
        metrics: dict[str, Any] = {
            "step": s["step"],
            "epoch": round(s["step"] / max(1, self.plan.steps_per_epoch()), 4),
            "eval_loss": s["eval_loss"] if s["eval_loss"] is not None else 1e9,
            "tokens": s["tokens"],
            "resumed_from": list(s["resumed_from"]),
            "done": s["done"],
        }
        # Reported only once measured, so a run without exec-accuracy validation shows no fake 0.0; Ray's
        # checkpoint scoring needs the key on every report when it ranks by it.
        if s["eval_exec_accuracy"] is not None or name == "eval_exec_accuracy":
            metrics["eval_exec_accuracy"] = s["eval_exec_accuracy"] if s["eval_exec_accuracy"] is not None else 0.0
        metrics.update(extra or {})
        assert name in metrics and order in ("min", "max")
        return metrics

    # ------------------------------------------------------------------------------------------- eval

    def evaluate(self, *, exec_accuracy: bool) -> dict[str, float]:
        from sqltune.train.data import collate_padded, eval_batches
        from sqltune.train.model import unwrap

        model = unwrap(self.model)
        was_training = model.training
        model.eval()
        merged = self._merged_for_eval(model)
        evaluated = merged if merged is not None else model
        loss_sum = count = 0.0
        try:
            with torch.no_grad(), self._autocast():
                for idx in eval_batches(len(self.val_set.rows), self.rank, self.world, self.cfg.train.batch_size):
                    batch = collate_padded([self.val_set.rows[i] for i in idx], self.pad_id)
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    n = int((batch["labels"][:, 1:] != -100).sum())
                    out = evaluated(**batch, num_items_in_batch=1)
                    loss_sum += float(out.loss)
                    count += n
            loss_sum, count = all_sum([loss_sum, count], self.device)
            result = {"eval_loss": loss_sum / count if count else float("nan")}
            if exec_accuracy:
                result.update(self._exec_accuracy(evaluated))
        finally:
            del evaluated, merged
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
        if was_training:
            model.train()
        return result

    def _merged_for_eval(self, model: Any) -> Any:
        """On GPU, validation runs on a merged 16-bit copy of base + adapter (see
        :func:`sqltune.train.model.merged_copy`); on CPU, or when it cannot be merged, on the model itself."""
        if not self.device.startswith("cuda") or self.cfg.model.mode == "full":
            return None
        from sqltune.train.model import merged_copy

        try:
            return merged_copy(model, self.built.compute_dtype, self.device)
        except Exception as exc:  # noqa: BLE001 - validation must not sink the run: use the model itself
            log.warning("validation runs on the training model: no merged copy (%s: %s)", type(exc).__name__, exc)
            return None

    def _exec_accuracy(self, model: Any) -> dict[str, float]:
        """Greedy decoding on this rank's share of the validation slice, scored in the SQL sandbox."""
        from sqltune.generation.generate import prompts_for
        from sqltune.prompts import clean_sql
        from sqltune.sql import analyze, execution_match

        cfg = self.cfg.eval
        chosen = [ex for ex in self.val_ex if ex.db][: cfg.exec_examples]
        mine = chosen[self.rank :: self.world]
        hits = parse_ok = scored = 0
        items = [
            {"question": e.question, "schema": e.schema, "dialect": e.dialect, "evidence": e.evidence} for e in mine
        ]
        t0 = time.perf_counter()
        texts = self._decode(model, prompts_for(self.tokenizer, items, self.template))
        gen_s = time.perf_counter() - t0
        for ex, text in zip(mine, texts):
            sql = clean_sql(text).sql
            parse_ok += int(bool(analyze(sql, dialect=ex.dialect).parseable))
            res = execution_match(sql, ex.sql, db=ex.db, dialect=ex.dialect)
            if getattr(res, "gold_failed", False):
                continue
            scored += 1
            hits += int(bool(res.match))
        hits, parse_ok, scored, n = all_sum([hits, parse_ok, scored, len(mine)], self.device)
        return {
            "eval_exec_accuracy": hits / scored if scored else 0.0,
            "eval_parseable": parse_ok / n if n else 0.0,
            "eval_generate_seconds": gen_s,
        }

    def _decode(self, model: Any, prompts: list[str]) -> list[str]:
        """Greedy completions of validation prompts: the slot engine where it applies, else generate()."""
        from sqltune.generation.generate import generate_batch

        cfg = self.cfg.eval
        texts = self._engine_decode(model, prompts) if self._use_engine(model) else None
        if texts is not None:
            return texts
        use_cache = model.config.use_cache
        model.config.use_cache = True
        try:
            texts = []
            for i in range(0, len(prompts), cfg.gen_batch_size):
                gens = generate_batch(
                    model, self.tokenizer, prompts[i : i + cfg.gen_batch_size], max_new_tokens=cfg.max_new_tokens
                )
                texts += [g.text for g in gens]
        finally:
            model.config.use_cache = use_cache
        return texts

    def _use_engine(self, model: Any) -> bool:
        """The slot engine decodes validation on GPU when the model is the merged plain copy."""
        return bool(self.cfg.eval.engine and self.device.startswith("cuda") and not hasattr(model, "peft_config"))

    def _engine_decode(self, model: Any, prompts: list[str]) -> list[str] | None:
        """Validation's greedy decoding through the slot engine, built anew each time (no compile)."""
        from sqltune.generation.engine import decode_once

        cfg = self.cfg.eval
        try:
            return decode_once(model, self.tokenizer, prompts, cfg.max_new_tokens, max_slots=cfg.gen_batch_size)
        except Exception as exc:  # noqa: BLE001 - validation must not sink the run: generate() decodes
            log.warning("validation decodes with generate(): the engine failed (%s: %s)", type(exc).__name__, exc)
            return None

    def _autocast(self):
        if self.built.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=self.built.autocast_dtype)

    def _run_eval(self, *, exec_accuracy: bool) -> dict[str, float]:
        t0 = time.perf_counter()
        res = self.evaluate(exec_accuracy=exec_accuracy)
        self.state["eval_loss"] = res["eval_loss"]
        if "eval_exec_accuracy" in res:
            self.state["eval_exec_accuracy"] = res["eval_exec_accuracy"]
            self.state["eval_parseable"] = res["eval_parseable"]
        seconds = time.perf_counter() - t0
        point = {"step": self.state["step"], **{k: round(v, 5) for k, v in res.items()},
                 "eval_seconds": round(seconds, 3)}
        self.state["history"].append(point)
        if self.rank == 0:
            parts = [f"eval step {self.state['step']}: loss {res['eval_loss']:.4f}"]
            if "eval_exec_accuracy" in res:
                # a subclass's validation (GRPO/DPO's reward) may not time its decoding apart
                decoding = (f" (decoding {res['eval_generate_seconds']:.1f}s)"
                            if "eval_generate_seconds" in res else "")
                parts.append(f"exec acc {res['eval_exec_accuracy']:.3f}, parseable {res['eval_parseable']:.3f}"
                             f"{decoding}")
            log.info("%s (%.1fs)", ", ".join(parts), seconds)
        return res

    # ------------------------------------------------------------------------------------------ train

    def _micro_batches(self):
        """Yield micro-batches from the current data position to the end of training."""
        from sqltune.train.data import collate

        epoch, offset = self.plan.position(self.state["step"])
        while True:
            batches = self.plan.micro_batches(epoch, self.rank)
            rows = self.train_set.rows
            for idx in batches[offset:]:
                items = [[rows[i] for i in row] for row in idx] if self.cfg.train.packing else [rows[i] for i in idx]
                yield collate(items, packing=self.cfg.train.packing, pad_id=self.pad_id,
                              pack_tokens=self.cfg.train.pack_tokens)
            epoch, offset = epoch + 1, 0

    def _sync_gradients(self) -> None:
        """Average the trainable gradients over ranks in one flat all-reduce (CPU workers, see _wrap)."""
        params = self.trainable
        for p in params:
            if p.grad is None:  # every rank must send the same layout, used or not
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist_group().all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def train(self) -> None:
        from sqltune.train.data import count_tokens

        cfg = self.cfg
        ga = cfg.train.grad_accum
        self.model.train()
        batches = self._micro_batches()
        window_loss = window_targets = window_tokens = 0.0
        window_start = time.perf_counter()
        window_time = 0.0
        on_gpu = self.device.startswith("cuda")
        micro = [next(batches) for _ in range(ga)]
        while self.state["step"] < self.total_steps:
            t0 = time.perf_counter()
            counts = [count_tokens(b) for b in micro]
            n_targets = sum(c[1] for c in counts)
            losses = []
            for i, batch in enumerate(micro):
                sync = contextlib.nullcontext()
                if i < ga - 1 and hasattr(self.model, "no_sync"):
                    sync = self.model.no_sync()
                with sync:
                    with self._autocast():
                        loss = forward_loss(
                            self.model, batch, self.device, num_items=max(1, n_targets),
                            chunk_tokens=cfg.train.loss_chunk_tokens,
                        )
                    loss.backward()
                # On GPU the loss stays on the device until the step ends (no host sync per micro-batch).
                losses.append(loss.detach() if on_gpu else float(loss.detach()))
            if on_gpu and self.state["step"] + 1 < self.total_steps:
                # Collate the next step's micro-batches on the host while the GPU finishes this backward.
                micro = [next(batches) for _ in range(ga)]
            if self.flat_sync:
                self._sync_gradients()
            if cfg.optim.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.trainable, cfg.optim.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            step_loss = float(torch.stack(losses).sum()) if on_gpu else sum(losses)
            if on_gpu:
                torch.cuda.synchronize(self.device)
            if not on_gpu and self.state["step"] + 1 < self.total_steps:
                micro = [next(batches) for _ in range(ga)]
            dt = time.perf_counter() - t0
            real = sum(c[0] for c in counts)
            self.state["step"] += 1
            self.state["train_seconds"] += dt
            window_time += dt
            window_loss += step_loss * n_targets
            window_targets += n_targets
            window_tokens += real
            step = self.state["step"]
            last = step >= self.total_steps
            if step % cfg.train.log_every == 0 or last:
                tot_loss, tot_targets, tot_tokens = all_sum(
                    [window_loss, window_targets, window_tokens], self.device
                )
                self.state["tokens"] += int(tot_tokens)
                self.state["target_tokens"] += int(tot_targets)
                # window_loss holds each rank's token-summed loss; divide by all ranks' target tokens
                loss = tot_loss / max(1.0, tot_targets)
                mem_kind, mem = memory_gib(self.device)
                lr = self.scheduler.get_last_lr()[0]
                tps = tot_tokens / window_time if window_time else 0.0
                self.state["history"].append(
                    {"step": step, "train_loss": round(loss, 5), "lr": lr, "tokens_per_second": round(tps, 1),
                     "seconds": round(window_time, 3), f"{mem_kind}_gib": round(mem, 3)}
                )
                if self.rank == 0:
                    log.info(
                        "step %d/%d | epoch %.2f | loss %.4f | lr %.3g | %.0f tok/s | %s %.2f GiB | %.0fs",
                        step, self.total_steps, step / self.plan.steps_per_epoch(), loss, lr, tps,
                        mem_kind, mem, time.perf_counter() - window_start,
                    )
                self.state["last_train_loss"] = loss
                window_loss = window_targets = window_tokens = 0.0
                window_time = 0.0
            if last:
                break
            do_eval = step % cfg.eval.interval == 0
            do_ckpt = step % cfg.checkpoint.interval == 0
            if do_eval or do_ckpt:
                self._run_eval(exec_accuracy=do_eval and cfg.eval.exec_accuracy)
            if do_ckpt:
                self._save_and_report(self._report_metrics({"train_loss": self.state.get("last_train_loss")}))

    def finish(self) -> None:
        self._run_eval(exec_accuracy=self.cfg.eval.exec_accuracy)
        self.state["done"] = True
        self._save_and_report(
            self._report_metrics({"train_loss": self.state.get("last_train_loss"), "final": True})
        )

    def run(self) -> None:
        self.setup()
        if self.state["step"] < self.total_steps:
            self.train()
        self.finish()
