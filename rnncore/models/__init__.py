"""Task models built from the nn layers: each trains on a ``rnncore.data.Batch`` through
``loss_and_backward`` and saves and loads itself through ``rnncore.train.checkpoint``."""

from rnncore.models.base import StepResult, TaskModel

__all__ = ["StepResult", "TaskModel"]
