"""The options of a training run, and the record of them that a checkpoint keeps.

Kept apart from :mod:`noise2atom.train` (which needs torch and the networks) so that
:mod:`noise2atom.checkpoint` can nest the record in its :class:`~noise2atom.checkpoint.ModelConfig`
without importing the trainer.

Examples
--------
>>> record = TrainRecord(**TrainOptions(method="hybrid").model_dump(), bs_loss_used="mse")
>>> record.method, record.patch, record.bs_loss, record.bs_loss_used
('hybrid', 64, 'auto', 'mse')
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GeneratorSize", "Method", "TrainOptions", "TrainRecord"]

Method = Literal["noise2atom", "blindspot", "hybrid", "supervised"]
#: The generator architectures (:func:`noise2atom.models.build_generator`); named here, without torch,
#: so that the options, the checkpoint and the CLI read one list.
GeneratorSize = Literal["paper", "lite", "lite-residual", "lite-dilated"]


class TrainOptions(BaseModel):
    """Training options (recorded in the checkpoint's ``train`` field as a :class:`TrainRecord`)."""

    model_config = ConfigDict(extra="forbid")

    method: Method = "blindspot"
    size: GeneratorSize = "lite"
    iterations: int | None = Field(default=None, ge=1, description="total iterations to reach")
    minutes: float | None = Field(default=None, gt=0, description="wall-clock budget of this run")
    patch: int = Field(default=64, ge=16)
    batch: int = Field(default=16, ge=1)
    seed: int = 0
    device: str = "cpu"
    lr: float | None = Field(default=None, gt=0, description="None: 5e-5 (GAN methods), 1e-3 (blindspot)")
    critic_steps: int = Field(default=5, ge=1)
    gp_weight: float = Field(default=10.0, ge=0)
    fidelity_weight: float = Field(default=1.0, ge=0, description="hybrid: weight of the blind-spot term")
    bs_loss: Literal["auto", "poisson", "mse"] = "auto"
    bs_spacing: int = Field(default=8, ge=2)
    bs_half_width: int = Field(default=2, ge=0)
    preview_every: int = Field(default=0, ge=0)
    checkpoint_every: int = Field(default=0, ge=0)
    keep_checkpoints: bool = Field(default=False, description="also keep each checkpoint as "
                                   "<out stem>.it<N>.safetensors (to choose or average them)")
    init: str | None = Field(default=None, description="checkpoint whose generator weights to start from")
    ema: float = Field(default=0.0, ge=0, lt=1, description="decay of the running weight average saved "
                       "as the model (0: the last weights)")


class TrainRecord(TrainOptions):
    """The options a checkpoint was trained with, plus what ``bs_loss="auto"`` resolved to."""

    bs_loss_used: Literal["poisson", "mse"] | None = Field(
        default=None, description="the blind-spot loss actually used (None in checkpoints from before "
        "n2a recorded it)")
