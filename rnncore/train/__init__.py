"""Training: optimizers, gradient clipping, learning-rate schedules, checkpoints and the loop."""

from rnncore.train.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from rnncore.train.clip import clip_grad_norm, clip_grad_value, global_norm
from rnncore.train.loop import Trainer, blas_threads, evaluate_source
from rnncore.train.optim import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, make_optimizer
from rnncore.train.schedules import Constant, Cosine, StepDecay, Warmup, apply_schedule, make_schedule

__all__ = ["OPTIMIZERS", "SGD", "Adagrad", "Adam", "AdamW", "Constant", "Cosine", "Optimizer", "RMSprop",
           "StepDecay", "Trainer", "Warmup", "apply_schedule", "blas_threads", "clip_grad_norm",
           "clip_grad_value", "evaluate_source", "global_norm", "load_checkpoint", "load_model",
           "make_optimizer", "make_schedule", "save_checkpoint", "save_model"]
