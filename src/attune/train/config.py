"""Training settings shared by every objective (a stage's `train:` mapping).

Each objective may add its own options (e.g. DPO's `beta`) by subclassing `TrainConfig`;
the recipe validates a stage's `train:` against the objective's class, so unknown keys fail.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from attune.config import StrictModel


class TrainConfig(StrictModel):
    """How one stage trains. Defaults suit LoRA SFT on a small model."""

    epochs: float = Field(1.0, gt=0, description="passes over the training data (fractions allowed)")
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps (overrides epochs)")
    max_seconds: float | None = Field(
        None, gt=0,
        description="stop at the first step that ends past this much training time (a checkpoint is written; "
        "the schedule stays planned over epochs/max_steps, so the run resumes where it stopped)",
    )
    lr: float = Field(2e-4, gt=0, description="peak learning rate (2e-4 is the LoRA default of QLoRA, Dettmers 2023)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps with linear warmup")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    batch_tokens: int = Field(4096, gt=0, description="tokens per micro-batch, as computed (rows x widest row)")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    max_length: int = Field(1024, gt=8, description="longer examples are truncated (and counted by data check)")
    packing: bool = Field(True, description="pack examples into rows; attention never crosses examples")
    grad_clip: float | None = Field(1.0, gt=0)
    seed: int = 0
    val_fraction: float = Field(0.1, ge=0, lt=1, description="held out for eval loss when no validation set")
    eval_every: int | None = Field(None, gt=0, description="eval loss every N steps (default: once per epoch)")
    early_stopping_patience: int | None = Field(None, gt=0, description="stop after N evals without improvement")
    save_every: int | None = Field(None, gt=0, description="checkpoint every N steps (default: per epoch)")
    keep_checkpoints: int = Field(2, gt=0)
    gradient_checkpointing: bool = Field(False, description="trade ~30% compute for activation memory")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where a cached probe measures it faster (GPUs, AMX CPUs), else fp32"
    )
    loss_chunk_tokens: int = Field(1024, gt=0, description="tokens per chunk of the LM-head + cross-entropy")
    log_every: int = Field(1, gt=0)
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers that receive every logged row (metrics.jsonl is always written); "
        "mlflow and wandb need `pip install 'attune-llm[trackers]'` and read their usual environment "
        "(MLFLOW_TRACKING_URI, WANDB_MODE=offline, ...)",
    )
