"""Input validation shared by the layers: clear errors before any jitted code runs."""

import numpy as np


def float_array(name, value, dtype):
    """``value`` as an ndarray of ``dtype``; any other dtype is a TypeError (no silent casts)."""
    if not isinstance(value, np.ndarray):
        if hasattr(value, "detach"):
            raise TypeError(f"{name} must be a numpy array, got a {type(value).__name__} (use .numpy())")
        value = np.asarray(value)
        if value.dtype.kind in "iuf" and value.dtype != dtype:
            value = value.astype(dtype)
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {value.dtype}")
    return value


class NonFiniteError(ValueError):
    """An array holds NaN or Inf where only finite values are allowed (a ValueError)."""


def check_finite(name, value):
    """Raise ``NonFiniteError`` naming ``name`` and the index of the first NaN or Inf."""
    if not np.all(np.isfinite(value)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
        raise NonFiniteError(f"{name} contains NaN or Inf (first at index {bad})")


def check_finite_inputs(name, x, lengths=None, padding_side="right"):
    """``check_finite`` on a time-major (T, B, ...) array, at the positions inside each sequence's
    length only (padding may hold anything: the layers never read it). With ``padding_side="left"``
    sequence b fills the last lengths[b] positions."""
    x = np.asarray(x)
    if lengths is None or x.ndim < 2:
        return check_finite(name, x)
    lengths = np.asarray(lengths)
    if lengths.shape != (x.shape[1],) or lengths.dtype.kind not in "iu":
        return check_finite(name, x)  # the layer reports the bad lengths
    steps = np.arange(x.shape[0])[:, None]
    if padding_side == "left":
        inside = steps >= x.shape[0] - lengths[None, :]
    else:
        inside = steps < lengths[None, :]
    bad = ~np.isfinite(x) & inside.reshape(inside.shape + (1,) * (x.ndim - 2))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteError(f"{name} contains NaN or Inf (first at index {where})")


def check_finite_params(module):
    """``check_finite`` on every parameter of ``module``, each named by its state_dict key."""
    for name, value in module.named_parameters():
        check_finite(f"parameter {name!r}", value)


def ids_array(name, ids, num):
    """Integer ids of any shape, each in [0, num); anything else is a clear error."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= num):
        bad = (ids < 0) | (ids >= num)
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must lie in [0, {num}), got {ids[where]} at index {where}")
    return ids


def shape_error(name, expected, got):
    return ValueError(f"{name} must have shape {expected}, got {tuple(got)}")


def lengths_array(lengths, batch, steps):
    """Validated per-sequence lengths as int64 (B,), each in 1..T."""
    arr = np.asarray(lengths)
    if arr.dtype.kind == "f":
        if not np.all(arr == np.round(arr)):
            raise TypeError(f"lengths must be integers, got {arr.dtype} values {arr.tolist()}")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"lengths must have shape (B,) = ({batch},), got {arr.shape}")
    arr = arr.astype(np.int64)
    if batch and (arr.min() < 1 or arr.max() > steps):
        raise ValueError(f"lengths must lie in 1..T = 1..{steps}, got min {arr.min()} and max {arr.max()}")
    return np.ascontiguousarray(arr)
