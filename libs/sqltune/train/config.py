"""The training job's typed configuration (``python -m jobs.train --config ... key=value``).

Every field has a one-line doc (``python -m jobs.train --help`` prints them all) and is validated when
the config is built, before Ray starts. Nested sections: ``data``, ``model``, ``lora``, ``optim``,
``train``, ``eval``, ``checkpoint``, ``scaling``, ``tracking``, and the method-specific ``dpo`` and ``grpo``
(setting a key of a section that does not apply to ``method`` is an error naming the key).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from sqltune.config import Config, param
from sqltune.data.spec import DatasetSpec
from sqltune.errors import ConfigError
from sqltune.evaluation.config import TrackingConfig  # one tracking config for training and evaluation

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class DataConfig(DatasetSpec):
    """Which examples to train on and how they are split and tokenized."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {"split": "source_split"}

    max_length: int = param(1024, "Longest example (prompt + SQL tokens); longer ones are dropped and counted.", min=16)
    max_train_examples: int | None = param(None, "Use at most this many training examples (quick runs).", min=1)
    max_validation_examples: int | None = param(
        256, "Use at most this many validation examples for eval loss.", min=1
    )
    augment_copies: int = param(
        0, "Add this many literal-swapped copies of each training example (the question's values replaced by "
        "others in question and SQL alike), so a small model learns to copy values instead of guessing them; "
        "0 = off. Training split only (sqltune.train.augment).", min=0,
    )

    def validate(self) -> None:
        super().validate()
        if self.split_ratios[0] <= 0:
            raise ConfigError("split_ratios: the training fraction must be positive")


@dataclass
class ModelConfig(Config):
    """The base model and what part of it is trained."""

    base: str = param(
        "",
        "Base model: a local directory, an s3:// artifact prefix (fetched once per node, verified), or a hub id.",
    )
    mode: Literal["qlora", "lora", "full"] = param(
        "qlora",
        "qlora: NF4 4-bit frozen base + LoRA; lora: 16-bit frozen base + LoRA; full: train every weight.",
    )
    double_quant: bool = param(True, "QLoRA: quantize the NF4 quantization constants too (double quantization).")
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = param(
        "auto",
        "Compute dtype: auto = bf16 on GPUs that have it, fp16 on older GPUs; on CPU (QLoRA) bf16 NF4 compute "
        "and bf16 autocast where the CPU runs bf16 natively (AVX-512 BF16/AMX), else fp32 (emulated bf16 is "
        "~13x slower). bf16 set explicitly on CPU autocasts whatever the CPU.",
    )
    gradient_checkpointing: bool = param(False, "Recompute whole decoder layers in the backward pass to save memory.")
    selective_checkpointing: bool = param(
        False, "Recompute only the MLP blocks (the widest activations) in the backward pass; keep attention's."
    )
    liger: bool = param(False, "Use Liger kernels (RMSNorm, SwiGLU, RoPE) when liger_kernel is installed (GPU).")
    attn_implementation: str | None = param(
        None, "transformers attention implementation (sdpa, eager, flash_attention_2, or sqltune_packed_sdpa: attention "
        "per packed example in training, one varlen flash-attention call on CUDA, SDPA per example on CPU); null = "
        "library default."
    )

    init_adapter: str | None = param(
        None, "Start from this published sqltune adapter (local directory or s3:// prefix), e.g. an SFT run's, "
        "for SFT+DPO / SFT+GRPO: its weights initialise the trained adapter and are the reference policy. "
        "lora.* must have its shape. method=dpo or grpo; null = a fresh adapter on the base.",
    )

    def validate(self) -> None:
        if not self.base.strip():
            raise ConfigError("base: required; give a local model directory, an s3:// prefix or a hub id")


@dataclass
class LoraSettings(Config):
    """LoRA adapter shape (ignored when model.mode=full)."""

    r: int = param(16, "LoRA rank.", min=1)
    alpha: float = param(32.0, "LoRA alpha (scaling = alpha / r).", min=0.0)
    dropout: float = param(0.05, "Dropout on the LoRA input.", min=0.0, max=1.0)
    target_modules: list[str] = param(list(ALL_LINEAR), "Modules that get adapters; default all linear projections.")
    modules_to_save: list[str] = param(
        [], "Modules trained in full and saved with the adapter (e.g. embed_tokens, lm_head for the tiny model)."
    )

    def validate(self) -> None:
        if not self.target_modules:
            raise ConfigError("target_modules: give at least one module name, e.g. q_proj,v_proj")


@dataclass
class OptimConfig(Config):
    """Optimizer and learning-rate schedule."""

    optimizer: Literal["paged_adamw_8bit", "adamw_8bit", "adamw"] = param(
        "paged_adamw_8bit", "paged_adamw_8bit / adamw_8bit (bitsandbytes) or adamw (torch)."
    )
    lr: float = param(2e-4, "Peak learning rate.", min=0.0)
    embedding_lr: float | None = param(
        None, "Learning rate for modules_to_save (embeddings); null = lr.", min=0.0
    )
    weight_decay: float = param(0.0, "Decoupled weight decay.", min=0.0)
    beta1: float = param(0.9, "Adam beta1.", min=0.0, max=1.0)
    beta2: float = param(0.999, "Adam beta2.", min=0.0, max=1.0)
    eps: float = param(1e-8, "Adam epsilon.", min=0.0)
    max_grad_norm: float = param(1.0, "Gradient clipping norm (0 disables).", min=0.0)
    schedule: Literal["cosine", "linear", "constant"] = param("cosine", "Learning-rate decay after warmup.")
    warmup_ratio: float = param(0.03, "Warmup as a fraction of all optimizer steps.", min=0.0, max=1.0)
    warmup_steps: int | None = param(None, "Warmup steps; overrides warmup_ratio when set.", min=0)
    min_lr_ratio: float = param(0.0, "Final learning rate as a fraction of lr (cosine/linear).", min=0.0, max=1.0)


@dataclass
class LoopConfig(Config):
    """How long and in what batches to train."""

    epochs: float = param(1.0, "Passes over the training split (fractions allowed).", min=0.0)
    max_steps: int | None = param(None, "Stop after this many optimizer steps (overrides epochs).", min=1)
    batch_size: int = param(4, "Examples per micro-batch per worker (dynamic padding).", min=1)
    grad_accum: int = param(1, "Micro-batches per optimizer step.", min=1)
    packing: bool = param(
        False,
        "Padding-free packing: concatenate examples into rows of up to pack_tokens tokens with position ids "
        "reset per example (no attention across examples).",
    )
    pack_tokens: int = param(4096, "Token budget of one packed row (packing=true).", min=16)
    pack_rows: int = param(1, "Packed rows per micro-batch (packing=true); each row is padded to pack_tokens.", min=1)
    loss_chunk_tokens: int = param(
        0, "Compute the loss from hidden states in chunks of this many tokens, never materialising the full "
        "logits (large vocabularies); 0 = the model's own loss.", min=0,
    )
    seed: int = param(42, "Seed for initialisation, shuffling and dropout.")
    log_every: int = param(10, "Print a progress line every N optimizer steps.", min=1)
    threads_per_worker: int | None = param(
        None, "torch CPU threads per worker; null = scaling.cpus_per_worker.", min=1
    )


@dataclass
class EvalSettings(Config):
    """Validation during training."""

    interval: int = param(100, "Eval loss on the validation split every N optimizer steps (and at the end).", min=1)
    exec_accuracy: bool = param(
        False, "Also measure execution accuracy (greedy decoding + the SQL sandbox) on a validation slice."
    )
    exec_examples: int = param(32, "Validation examples scored for execution accuracy.", min=1)
    max_new_tokens: int = param(160, "Generation limit for execution accuracy.", min=8)
    gen_batch_size: int = param(16, "Batch size of greedy decoding for execution accuracy.", min=1)
    engine: bool = param(
        True,
        "On GPU, decode the execution-accuracy questions with the slot engine (CUDA graphs) on the merged "
        "copy; false: transformers' generate() in batches of gen_batch_size.",
    )


@dataclass
class DpoSettings(Config):
    """Direct preference optimisation (method=dpo): pairs from a file or from the model's own samples."""

    pairs_file: str | None = param(
        None, "JSONL of preference pairs, one a line: question, chosen, rejected, and optional schema, db, dialect, "
        "evidence, gold (the reference SQL the pair is checked against; default chosen). null = build pairs from "
        "the model's own samples on the training split.",
    )
    beta: float = param(0.1, "DPO temperature: how far the policy may move from the reference.", min=0.0)
    loss: Literal["sigmoid", "ipo"] = param("sigmoid", "sigmoid: the DPO loss; ipo: identity preference optimisation.")
    samples_per_prompt: int = param(
        4, "Building pairs from samples: completions sampled per training question.", min=1
    )
    temperature: float = param(1.0, "Sampling temperature when building pairs from samples.", min=0.01)
    max_new_tokens: int = param(128, "Generation limit when building pairs from samples.", min=8)
    max_pairs: int | None = param(None, "Use at most this many pairs; null = all.", min=1)
    reward_timeout_s: float = param(2.0, "Sandbox timeout per query when checking pairs.", min=0.05)
    reward_workers: int = param(4, "Threads that check pairs in the sandbox in parallel.", min=1)


@dataclass
class GrpoSettings(Config):
    """Group relative policy optimisation (method=grpo) with the sandboxed execution reward."""

    num_generations: int = param(4, "Completions sampled per question (the group advantages are relative to).",
                                 min=2)
    max_new_tokens: int = param(128, "Generation limit of a completion.", min=8)
    temperature: float = param(1.0, "Sampling temperature.", min=0.01)
    top_p: float = param(1.0, "Nucleus sampling threshold.", min=0.01, max=1.0)
    beta: float = param(
        0.0, "KL coefficient against the reference policy (model.init_adapter, else the base); 0 = none.", min=0.0
    )
    scale_rewards: Literal["group", "batch", "none"] = param(
        "group", "Divide advantages by the reward std of the group, of the batch, or not at all."
    )
    partial_weight: float = param(0.7, "Reward without an execution match: this x ROUGE-L.", min=0.0, max=1.0)
    format_weight: float = param(
        0.0, "Format term added to the reward: this x (half for parseable, half for parseable and read-only).",
        min=0.0,
    )
    reward_timeout_s: float = param(2.0, "Sandbox timeout per query of a reward.", min=0.05)
    reward_workers: int = param(4, "Threads that score completions in the sandbox in parallel.", min=1)


@dataclass
class CheckpointSettings(Config):
    """Ray Train checkpoints (fault tolerance and best-checkpoint selection)."""

    interval: int = param(50, "Save a checkpoint (adapter, optimizer, scheduler, step, data position) every N steps.",
                          min=1)
    num_to_keep: int | None = param(3, "Checkpoints kept in storage (the latest is always kept).", min=1)
    storage_uri: str | None = param(
        None, "Ray Train storage path (local or s3://); default <output_uri>/ray-runs. Runs live at <it>/<run_name>."
    )
    select: Literal["last", "best"] = param(
        "last", "Which checkpoint is published: the last one, or the best by eval (exec accuracy if on, else loss)."
    )


@dataclass
class ScalingSettings(Config):
    """Ray Train workers."""

    num_workers: int = param(1, "Data-parallel training workers.", min=1)
    use_gpu: bool = param(False, "One GPU per worker (fails before start if the cluster has none).")
    cpus_per_worker: float = param(1.0, "CPUs reserved per worker.", min=0.0)
    resources_per_worker: dict[str, float] = param({}, "Extra custom resources per worker, e.g. {accelerator_type:H100: 0.001}.")
    max_failures: int = param(3, "Worker-group failures recovered from the latest checkpoint (-1 = unlimited).", min=-1)
    ray_address: str | None = param(
        None, "Ray cluster address; null = RAY_ADDRESS or an existing cluster, else a local Ray starts."
    )
    local_num_cpus: int | None = param(None, "CPUs of a local Ray started by the job (null = all).", min=1)


@dataclass
class TrainConfig(Config):
    """A sqltune training run: QLoRA/LoRA/full fine-tuning as a Ray Train job."""

    method: Literal["sft", "dpo", "grpo"] = param(
        "sft", "sft: supervised fine-tuning on the gold SQL; dpo: preference pairs (section dpo); grpo: sampled "
        "completions scored by the sandboxed execution reward (section grpo)."
    )
    run_name: str = param("sqltune-run", "Run name: the Ray Train run, the checkpoint folder and the output prefix.")
    output_uri: str = param(".cache/runs", "Where the adapter is published: <output_uri>/<run_name>/adapter/.")
    overwrite: bool = param(False, "Replace an adapter already published at the output place.")
    resume: bool = param(True, "Resume a run of the same name from its latest checkpoint in storage.")
    data: DataConfig = param(DataConfig(), "Dataset.")
    model: ModelConfig = param(ModelConfig(base="Qwen/Qwen2.5-0.5B-Instruct"), "Base model and training mode.")
    lora: LoraSettings = param(LoraSettings(), "LoRA adapter.")
    optim: OptimConfig = param(OptimConfig(), "Optimizer and schedule.")
    train: LoopConfig = param(LoopConfig(), "Training loop.")
    eval: EvalSettings = param(EvalSettings(), "Validation.")
    checkpoint: CheckpointSettings = param(CheckpointSettings(), "Checkpoints.")
    scaling: ScalingSettings = param(ScalingSettings(), "Ray Train workers.")
    tracking: TrackingConfig = param(TrackingConfig(), "Experiment tracking.")
    dpo: DpoSettings = param(DpoSettings(), "DPO settings (method=dpo only).")
    grpo: GrpoSettings = param(GrpoSettings(), "GRPO settings (method=grpo only).")
    prompt_mode: Literal["strict", "plain"] = param("strict", "System instruction of the prompt template.")
    prompt_system: str | None = param(
        None,
        "Own system instruction instead of prompt_mode's ('{dialect}' is replaced by the dialect's name). "
        "Saved with the adapter, so evaluation and serving use it too; a short one saves ~100 prompt tokens.",
    )

    def prompt_template(self) -> Any:
        """The prompt template training uses and saves with every artifact."""
        from sqltune.prompts import PromptTemplate

        return PromptTemplate(mode=self.prompt_mode, system=self.prompt_system)

    def validate(self) -> None:
        if not _RUN_NAME.match(self.run_name):
            raise ConfigError(
                f"run_name: {self.run_name!r} must be 1-128 characters of letters, digits, '.', '_' or '-'"
            )
        if not self.output_uri.strip():
            raise ConfigError("output_uri: required (a local directory or s3://bucket/prefix)")
        if self.model.gradient_checkpointing and self.model.selective_checkpointing:
            raise ConfigError("model.selective_checkpointing: choose it or gradient_checkpointing, not both")
        if self.model.mode == "full" and self.lora.modules_to_save:
            raise ConfigError("lora.modules_to_save: only meaningful with model.mode=qlora or lora; remove it")
        self._validate_method()
        if self.train.packing and self.train.pack_tokens < self.data.max_length:
            raise ConfigError(
                f"train.pack_tokens: {self.train.pack_tokens} is below data.max_length {self.data.max_length}; "
                "a packed row must hold the longest example"
            )

    def _validate_method(self) -> None:
        """Keys of a method's section, or method-only options, set for another method are errors."""
        for section, cls in (("dpo", DpoSettings), ("grpo", GrpoSettings)):
            if self.method == section:
                continue
            current, default = getattr(self, section), cls()
            for f in dataclasses.fields(cls):
                if getattr(current, f.name) != getattr(default, f.name):
                    raise ConfigError(
                        f"{section}.{f.name}: applies to method={section} only, and method is {self.method!r}; "
                        f"remove {section}.{f.name} or set method={section}"
                    )
        if self.method == "sft" and self.model.init_adapter:
            raise ConfigError(
                "model.init_adapter: applies to method=dpo or grpo (SFT+DPO, SFT+GRPO); remove it for method=sft"
            )
        if self.method != "sft":
            if self.model.mode == "full":
                raise ConfigError(f"model.mode: method={self.method} trains LoRA/QLoRA adapters; use qlora or lora")
            if self.train.packing:
                raise ConfigError(f"train.packing: applies to method=sft only; set train.packing=false for {self.method}")
            if self.train.loss_chunk_tokens:
                raise ConfigError(f"train.loss_chunk_tokens: applies to method=sft only; set it to 0 for {self.method}")

    # --- derived values ------------------------------------------------------------------------------

    def storage_uri(self) -> str:
        """Ray Train storage path; the run's checkpoints live at ``<it>/<run_name>/``."""
        from sqltune.storage import join

        return self.checkpoint.storage_uri or join(self.output_uri, "ray-runs")

    def adapter_uri(self) -> str:
        from sqltune.storage import join

        return join(self.output_uri, self.run_name, "adapter")

    def score(self) -> tuple[str, Literal["max", "min"]]:
        """The checkpoint score attribute and order used for best-checkpoint selection."""
        if self.method != "sft":
            return "eval_reward", "max"
        if self.eval.exec_accuracy:
            return "eval_exec_accuracy", "max"
        return "eval_loss", "min"
