"""Training and checkpoints: the loop that makes the embedded models, and the files they live in."""

from workbench.training.checkpoint import (
    Checkpoint,
    TrainingState,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from workbench.training.train import TrainConfig, evaluate_bpc, train

__all__ = [
    "Checkpoint",
    "TrainConfig",
    "TrainingState",
    "evaluate_bpc",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "train",
]
