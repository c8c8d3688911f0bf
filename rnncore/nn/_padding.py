"""Left and right padding of variable-length batches.

Right padding (the default, torch.nn's packed-sequence layout): sequence b's valid steps are
positions 0 .. lengths[b]-1. Left padding: they are the last lengths[b] positions,
T-lengths[b] .. T-1. The kernels work in the right-padded layout; a left-padded batch is moved
into it by rolling each sequence back by its padding, s_b = T - lengths[b] steps (a permutation
of the time axis per sequence, so nothing is lost and the gradients roll back the same way).
"""

import numpy as np

PADDING_SIDES = ("right", "left")


def check_padding_side(padding_side):
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    return padding_side


def roll_padding(a, lengths, time_axis, to_right):
    """``a`` (time and batch on axes 0 and 1, in either order, then any trailing axes) with each
    sequence b rolled between the left-padded and the right-padded layout: ``to_right`` moves
    position t + s_b to t (s_b = T - lengths[b]), otherwise t to t + s_b. Returns a new array."""
    T = a.shape[time_axis]
    shift = T - np.asarray(lengths, dtype=np.int64)
    t = np.arange(T)
    src = (t[:, None] + (shift if to_right else -shift)[None, :]) % T  # (T, B) source time per target
    if time_axis == 1:
        src = src.T
    src = src.reshape(src.shape + (1,) * (a.ndim - 2))
    return np.take_along_axis(a, src, axis=time_axis)
