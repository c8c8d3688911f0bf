"""Gradient clipping in place, by global norm or by value; both return the pre-clip global norm.

``grads`` is a Module (its ``grads``), a dict of arrays, an optimizer (its parameters' gradients)
or an iterable of arrays. The global norm is sqrt(sum of squares over every gradient array),
accumulated in float64. A non-finite norm is returned as it is and nothing is scaled, so the
caller can see it and stop (``rnncore.train.loop`` raises on it).
"""

import math

import numpy as np

__all__ = ["clip_grad_norm", "clip_grad_value", "global_norm"]


def _arrays(grads):
    if hasattr(grads, "params") and hasattr(grads, "step"):  # an Optimizer
        arrays = [g for _, _, g in grads.params]
    elif hasattr(grads, "grads") and hasattr(grads, "named_parameters"):  # a Module
        arrays = list(grads.grads.values())
    elif isinstance(grads, dict):
        arrays = list(grads.values())
    elif isinstance(grads, np.ndarray):
        arrays = [grads]
    else:
        try:
            arrays = list(grads)
        except TypeError:
            raise TypeError("grads must be a Module, an optimizer, a dict of arrays or an iterable of "
                            f"arrays, got {type(grads).__name__}") from None
    for i, g in enumerate(arrays):
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            what = f"a {g.dtype} array" if isinstance(g, np.ndarray) else type(g).__name__
            raise TypeError(f"grads[{i}] must be a floating-point numpy array (clipped in place), got {what}")
    return arrays


def _positive(name, value):
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name} must be a number > 0, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number > 0, got {value!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def global_norm(grads):
    """sqrt(sum over all arrays of sum(g^2)), as a Python float."""
    total = 0.0
    for g in _arrays(grads):
        # a ufunc sum, not a BLAS dot: a small dot between kernel calls wakes a second BLAS thread
        # pool, which is very slow on a busy machine (PERFORMANCE.md, "two thread pools")
        total += float(np.sum(np.square(g, dtype=np.float64)))
    return math.sqrt(total)


def clip_grad_norm(grads, max_norm, eps=1e-6):
    """Scale every gradient by max_norm / (norm + eps) when the global norm exceeds max_norm (torch's
    ``clip_grad_norm_``). Returns the global norm before clipping."""
    max_norm = _positive("max_norm", max_norm)
    arrays = _arrays(grads)
    norm = global_norm(arrays)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + eps)
        for g in arrays:
            g *= g.dtype.type(scale)
    return norm


def clip_grad_value(grads, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value] (min-char-rnn's ``np.clip``, torch's
    ``clip_grad_value_``). Returns the global norm before clipping."""
    clip_value = _positive("clip_value", clip_value)
    arrays = _arrays(grads)
    norm = global_norm(arrays)
    for g in arrays:
        np.clip(g, -clip_value, clip_value, out=g)
    return norm
