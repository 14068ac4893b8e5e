"""Typed configuration of one training run (model, optimizer, schedule, evaluation)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class TrainConfig(BaseModel):
    """Everything that, with the method's hyperparameters and the data, determines a run."""

    model_config = ConfigDict(extra="forbid")

    steps: PositiveInt = 1001
    batch_size: PositiveInt | None = Field(None, description="None trains on the full train split each step")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    lr_schedule: Literal["constant", "linear"] = "constant"
    checkpoint_freq: int = Field(50, ge=0, description="evaluate every this many steps; 0 only at the end")
    arch: Literal["linear", "mlp"] = "linear"
    hidden: list[PositiveInt] = [390, 390]
    bias: bool = True
    zero_init_head: bool = True
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient's norm to this; None: no clipping")
    augment: bool = Field(True, description="whole networks on images: train on random resized crops with random "
                          "horizontal flips; False trains on the evaluation form (the centre crop)")
    batchnorm: Literal["train", "frozen"] = Field("train", description="whole networks: 'frozen' keeps every "
                                                  "BatchNorm layer in evaluation mode (its running statistics fixed)")
    sync_batchnorm: bool = Field(True, description="under torchrun, BatchNorm layers normalise with the statistics "
                                 "of the global batch (as one process would); False: of each process's part")
    seed: int = 0
    device: str = "cpu"
