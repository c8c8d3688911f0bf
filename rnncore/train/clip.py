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
        return [g for _, _, g in grads.params]
    if hasattr(grads, "grads") and hasattr(grads, "named_parameters"):  # a Module
        return list(grads.grads.values())
    if isinstance(grads, dict):
        return list(grads.values())
    if isinstance(grads, np.ndarray):
        return [grads]
    return list(grads)


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
    max_norm = float(max_norm)
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
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
    clip_value = float(clip_value)
    if not clip_value > 0:
        raise ValueError(f"clip_value must be > 0, got {clip_value!r}")
    arrays = _arrays(grads)
    norm = global_norm(arrays)
    for g in arrays:
        np.clip(g, -clip_value, clip_value, out=g)
    return norm
