"""Learning-rate schedules as pure functions of the step: ``factor = schedule(step)``.

The learning rate at optimizer step ``step`` (counting from 0 for the first update) is
``initial_lr * schedule(step)``. A schedule holds no state, so resuming a run needs only the step.

- ``Constant()``: 1.
- ``StepDecay(step_size, gamma)``: gamma ** (step // step_size).
- ``Cosine(total_steps, min_factor)``: min + (1 - min) * (1 + cos(pi * step / total_steps)) / 2, then
  min_factor after total_steps.
- ``Warmup(schedule, warmup_steps)``: linear from 1/warmup_steps up to 1 over the first warmup_steps
  steps, times the inner schedule evaluated at step - warmup_steps afterwards.
"""

import math

__all__ = ["Constant", "Cosine", "SCHEDULES", "StepDecay", "Warmup", "apply_schedule", "make_schedule"]


class Constant:
    def __call__(self, step):
        return 1.0

    def __repr__(self):
        return "Constant()"


class StepDecay:
    def __init__(self, step_size, gamma=0.1):
        if int(step_size) < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size!r}")
        if not float(gamma) > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def __call__(self, step):
        return self.gamma ** (int(step) // self.step_size)

    def __repr__(self):
        return f"StepDecay(step_size={self.step_size}, gamma={self.gamma})"


class Cosine:
    def __init__(self, total_steps, min_factor=0.0):
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
        if not 0.0 <= float(min_factor) <= 1.0:
            raise ValueError(f"min_factor must lie in [0, 1], got {min_factor!r}")
        self.total_steps, self.min_factor = int(total_steps), float(min_factor)

    def __call__(self, step):
        t = min(max(int(step), 0), self.total_steps) / self.total_steps
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def __repr__(self):
        return f"Cosine(total_steps={self.total_steps}, min_factor={self.min_factor})"


class Warmup:
    def __init__(self, schedule, warmup_steps):
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
        self.schedule, self.warmup_steps = schedule, int(warmup_steps)

    def __call__(self, step):
        step = int(step)
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.schedule(step - self.warmup_steps)

    def __repr__(self):
        return f"Warmup({self.schedule!r}, warmup_steps={self.warmup_steps})"


SCHEDULES = ("constant", "step", "cosine")


def make_schedule(name="constant", total_steps=None, warmup_steps=0, step_size=None, gamma=0.5,
                  min_factor=0.0):
    """A schedule by name: ``constant``, ``step`` (needs step_size) or ``cosine`` (over the
    total_steps that follow the warm-up), wrapped in a linear warm-up when warmup_steps > 0."""
    if name == "constant":
        schedule = Constant()
    elif name == "step":
        if step_size is None:
            raise ValueError("the step schedule needs step_size")
        schedule = StepDecay(step_size, gamma)
    elif name == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs total_steps")
        schedule = Cosine(max(int(total_steps) - int(warmup_steps), 1), min_factor)
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    return Warmup(schedule, warmup_steps) if warmup_steps else schedule


def apply_schedule(optimizer, schedule, step):
    """Set ``optimizer.lr`` for the update with index ``step`` (0-based); returns the new lr."""
    optimizer.lr = optimizer.initial_lr * schedule(step)
    return optimizer.lr
