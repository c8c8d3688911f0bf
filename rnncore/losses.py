"""Losses with explicit gradients: softmax cross-entropy and mean squared error.

# C = classes; L = any leading shape: () one prediction, (N,), (B,) one output per sequence
# (many-to-one), (T, B) or (B, T) one output per step (many-to-many).

Each loss returns ``(loss, grad)``: the loss as a Python float and the gradient of that loss with
respect to the prediction, with the prediction's shape and dtype. Everything is computed in the
prediction's dtype (float32 or float64); nothing is cast up or down behind the user's back.

Which elements count:
- cross-entropy: a position counts when its target differs from ``ignore_index`` and, if a mask is
  given, the mask is True there. Targets at positions that do not count are not range-checked
  (padding may hold any integer).
- MSE: every element counts unless a mask excludes it; the mask has either the prediction's full
  shape or its leading shape (all axes but the last), broadcast over the last axis.

Reductions: ``"sum"`` adds the per-element losses; ``"mean"`` divides that sum by the number of
counted elements, as torch.nn does. When no element counts (everything ignored or masked, or an
empty batch), both reductions give a loss of 0.0 and a zero gradient. Here torch differs: its
mean over zero elements is NaN. A zero contribution is what a training loop wants from a batch
that holds only padding.
"""

import numbers

import numpy as np

from rnncore.nn._checks import check_finite

__all__ = ["CrossEntropyLoss", "MSELoss", "log_softmax", "mse", "softmax", "softmax_cross_entropy"]

REDUCTIONS = ("mean", "sum")


# -- stable softmax helpers ----------------------------------------------------------------------
def _float_values(z):
    z = np.asarray(z)
    if z.dtype not in (np.float32, np.float64):
        z = z.astype(np.float64)
    return z


def log_softmax(z, axis=-1):
    """log(softmax(z)) along ``axis``, computed as ``z - max - log(sum(exp(z - max)))``.

    Stable for logits of any magnitude. float32 and float64 keep their dtype; any other input is
    computed in float64. Entries of -inf get probability 0 (log -inf); a slice whose entries are
    all -inf, or any +inf or NaN, gives NaN.
    """
    z = _float_values(z)
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(z, axis=-1):
    """softmax(z) along ``axis``, stable (the maximum is subtracted first); see ``log_softmax``."""
    z = _float_values(z)
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


# -- validation ----------------------------------------------------------------------------------
def _array(name, value):
    if hasattr(value, "detach"):
        raise TypeError(f"{name} must be a numpy array, got a {type(value).__name__} (use .numpy())")
    return np.asarray(value)


def _prediction(name, value):
    """A float32 or float64 array free of NaN and Inf."""
    arr = _array(name, value)
    if arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    check_finite(name, arr)
    return arr


def _check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_ignore_index(ignore_index):
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    return int(ignore_index)


def _check_label_smoothing(label_smoothing):
    real = isinstance(label_smoothing, numbers.Real) and not isinstance(label_smoothing, bool)
    if not real or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    return float(label_smoothing)


def _bool_mask(mask, shapes):
    """The mask as a bool array; its shape must be one of ``shapes`` (described in the error)."""
    arr = _array("mask", mask)
    if arr.dtype != np.bool_:
        raise TypeError(f"mask must be a boolean array (False = excluded), got dtype {arr.dtype}")
    if arr.shape not in [shape for shape, _ in shapes]:
        expected = " or ".join(f"{what} {shape}" for shape, what in shapes)
        raise ValueError(f"mask must have shape {expected}, got {arr.shape}")
    return arr


def _upstream(grad):
    if isinstance(grad, np.ndarray) and grad.ndim == 0:
        grad = grad.item()
    if isinstance(grad, bool) or not isinstance(grad, numbers.Real):
        raise TypeError(f"grad must be a real scalar (the upstream gradient of the loss), got {grad!r}")
    if not np.isfinite(grad):
        raise ValueError(f"grad must be finite, got {grad!r}")
    return float(grad)


# -- softmax cross-entropy -----------------------------------------------------------------------
def softmax_cross_entropy(logits, targets, ignore_index=-100, mask=None, reduction="mean",
                          label_smoothing=0.0):
    """Cross-entropy of ``softmax(logits)`` against class indices; returns ``(loss, dlogits)``.

    logits is (..., C) in float32 or float64; targets holds integer class indices with the leading
    shape of logits (all axes but the last); mask, if given, is boolean of that same leading shape
    (False = excluded). Positions whose target equals ``ignore_index`` are excluded as well.
    With ``label_smoothing`` = e the target distribution is (1 - e) one-hot + e / C, as in torch.

    The gradient, for a counted position, is ``softmax(z) - y`` (y the target distribution), times
    1 / (number of counted positions) for ``reduction="mean"``; it is zero elsewhere.
    """
    ignore_index = _check_ignore_index(ignore_index)
    reduction = _check_reduction(reduction)
    label_smoothing = _check_label_smoothing(label_smoothing)
    logits = _prediction("logits", logits)
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape (..., C) with C >= 1 classes, got {logits.shape}")
    lead, C = logits.shape[:-1], logits.shape[-1]

    targets = _array("targets", targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}")
    if targets.shape != lead:
        hint = " (class-probability targets are not supported)" if targets.shape == logits.shape else ""
        raise ValueError(
            f"targets must have the leading shape of logits {lead} (logits {logits.shape}), "
            f"got {targets.shape}{hint}")
    t = targets.reshape(-1)
    if t.dtype.kind == "u" and t.size and t.max() > np.iinfo(np.int64).max:
        t = np.minimum(t, np.uint64(np.iinfo(np.int64).max))  # still out of range [0, C): reported below
    t = t.astype(np.int64)

    counted = t != ignore_index
    if mask is not None:
        counted &= _bool_mask(mask, [(lead, "the leading shape of logits")]).reshape(-1)
    bad = counted & ((t < 0) | (t >= C))
    if bad.any():
        i = int(np.argmax(bad))
        where = tuple(int(k) for k in np.unravel_index(i, lead))
        raise ValueError(
            f"targets must lie in [0, C) = [0, {C}) or equal ignore_index={ignore_index}, "
            f"got {t[i]} at index {where}")

    dtype = logits.dtype.type
    n = int(np.count_nonzero(counted))
    grad = np.zeros(logits.shape, dtype=logits.dtype)
    if n == 0:
        return 0.0, grad

    rows = np.flatnonzero(counted)
    z = logits.reshape(-1, C)[rows]  # (n, C)
    tc = t[rows]
    logp = log_softmax(z)
    per = -logp[np.arange(n), tc]  # (n,) negative log-likelihood of the target
    if label_smoothing:
        per = dtype(1.0 - label_smoothing) * per - dtype(label_smoothing) * logp.mean(axis=1)
    loss = per.sum(dtype=logits.dtype)

    # backward of loss = sum_i -sum_c y_ic log softmax(z_i)_c: dz_i = softmax(z_i) - y_i
    dz = np.exp(logp)
    dz[np.arange(n), tc] -= dtype(1.0 - label_smoothing)
    if label_smoothing:
        dz -= dtype(label_smoothing / C)
    if reduction == "mean":
        loss = loss / dtype(n)
        dz *= dtype(1.0 / n)
    grad.reshape(-1, C)[rows] = dz
    return float(loss), grad


# -- mean squared error --------------------------------------------------------------------------
def mse(pred, target, mask=None, reduction="mean"):
    """Squared error ``sum (pred - target)**2`` over counted elements; returns ``(loss, dpred)``.

    pred is float32 or float64 of any shape; target has pred's shape, is cast to pred's dtype, and
    may hold NaN or Inf only where the mask excludes it (missing values). mask, if given, is
    boolean of pred's shape (per element) or of its leading shape ``pred.shape[:-1]`` (per
    position, broadcast over the last axis). ``reduction="mean"`` divides by the number of counted
    elements: with a leading-shape mask that is (True positions) x ``pred.shape[-1]``, as if the
    mask had been broadcast to pred's shape.
    """
    reduction = _check_reduction(reduction)
    pred = _prediction("pred", pred)
    target = _array("target", target)
    if target.dtype.kind not in "iuf":
        raise TypeError(f"target must be a real numeric array, got dtype {target.dtype}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {pred.shape}, got {target.shape}")
    target = target.astype(pred.dtype, copy=False)

    if mask is None:
        check_finite("target", target)
        diff = pred - target
        n = diff.size
    else:
        shapes = [(pred.shape, "pred's shape")]
        if pred.ndim >= 1:
            shapes.append((pred.shape[:-1], "pred's leading shape"))
        m = _bool_mask(mask, shapes)
        if m.shape != pred.shape:
            m = np.broadcast_to(m[..., None], pred.shape)
        # excluded elements become pred - pred = 0, so NaN padding in target never enters the sum
        target = np.where(m, target, pred)
        check_finite("target (where mask is True)", target)
        diff = pred - target
        n = int(np.count_nonzero(m))

    if n == 0:
        return 0.0, np.zeros(pred.shape, dtype=pred.dtype)
    dtype = pred.dtype.type
    loss = np.sum(diff * diff, dtype=pred.dtype)
    grad = dtype(2.0) * diff  # backward of (pred - target)**2
    if reduction == "mean":
        loss = loss / dtype(n)
        grad *= dtype(1.0 / n)
    return float(loss), np.ascontiguousarray(grad)


# -- class wrappers ------------------------------------------------------------------------------
class _Loss:
    """forward keeps the gradient of the loss; backward(grad) scales it by the upstream gradient."""

    def __init__(self, reduction):
        self.reduction = _check_reduction(reduction)
        self._grad = None

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def backward(self, grad=1.0):
        """The gradient of ``grad * loss`` with respect to the last forward's prediction (a new array)."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        grad = _upstream(grad)
        return self._grad * self._grad.dtype.type(grad)


class CrossEntropyLoss(_Loss):
    """``softmax_cross_entropy`` as an object: ``loss = crit(logits, targets); dlogits = crit.backward()``."""

    def __init__(self, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.ignore_index = _check_ignore_index(ignore_index)
        self.label_smoothing = _check_label_smoothing(label_smoothing)

    def forward(self, logits, targets, mask=None):
        """The loss as a float; keeps dlogits for ``backward``. Shapes as in ``softmax_cross_entropy``."""
        self._grad = None
        loss, self._grad = softmax_cross_entropy(
            logits, targets, ignore_index=self.ignore_index, mask=mask, reduction=self.reduction,
            label_smoothing=self.label_smoothing)
        return loss

    def __repr__(self):
        smoothing = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return f"CrossEntropyLoss(ignore_index={self.ignore_index}, reduction={self.reduction!r}{smoothing})"


class MSELoss(_Loss):
    """``mse`` as an object: ``loss = crit(pred, target); dpred = crit.backward()``."""

    def __init__(self, reduction="mean"):
        super().__init__(reduction)

    def forward(self, pred, target, mask=None):
        """The loss as a float; keeps dpred for ``backward``. Shapes as in ``mse``."""
        self._grad = None
        loss, self._grad = mse(pred, target, mask=mask, reduction=self.reduction)
        return loss

    def __repr__(self):
        return f"MSELoss(reduction={self.reduction!r})"
