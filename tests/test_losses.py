"""Losses: values and gradients against torch.nn.functional (live), central differences, errors."""

import zlib

import numpy as np
import pytest

from rnncore.losses import (
    CrossEntropyLoss,
    MSELoss,
    log_softmax,
    mse,
    softmax,
    softmax_cross_entropy,
)

# C = classes, F = features; L = leading shape
LEADING = [(), (5,), (3, 4), (2, 3, 4)]
TOL = {np.float64: 1e-12, np.float32: 1e-5}


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def seed(*params):
    """A per-case seed that does not change between runs (``hash`` of a str does)."""
    return zlib.crc32(repr(params).encode())


def assert_close(got, ref, rel):
    """Elementwise within ``rel``, measured against the largest reference magnitude (normwise)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    scale = max(float(np.max(np.abs(ref), initial=0.0)), np.finfo(np.float64).tiny)
    np.testing.assert_allclose(got, ref, rtol=rel, atol=rel * scale)


def ce_case(rng, lead, C, dtype, ignore_index=-100, ignore_frac=0.25, use_mask=False):
    logits = (3.0 * rng.standard_normal((*lead, C))).astype(dtype)
    targets = rng.integers(0, C, size=lead)
    ignored = rng.random(lead) < ignore_frac
    targets = np.where(ignored, ignore_index, targets)
    mask = rng.random(lead) < 0.7 if use_mask else None
    return logits, targets, mask


def torch_ce(torch, logits, targets, mask, ignore_index, reduction, label_smoothing, upstream):
    """torch's loss and dlogits for ``upstream * loss``; the mask becomes ignore_index."""
    C = logits.shape[-1]
    t = targets if mask is None else np.where(mask, targets, ignore_index)
    z = torch.tensor(logits.reshape(-1, C), requires_grad=True)
    loss = torch.nn.functional.cross_entropy(
        z, torch.tensor(t.reshape(-1), dtype=torch.int64), ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing)
    (loss * upstream).backward()
    return loss.item(), z.grad.numpy().reshape(logits.shape)


# -- cross-entropy against torch ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lead", LEADING)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("ignore_index", "use_mask"), [(-100, False), (-100, True), (0, False), (2, True)])
def test_cross_entropy_matches_torch(torch, dtype, lead, reduction, ignore_index, use_mask):
    rng = np.random.default_rng(seed(lead, reduction, ignore_index, use_mask))
    C = 6
    logits, targets, mask = ce_case(rng, lead, C, dtype, ignore_index, use_mask=use_mask)
    if lead == ():  # a single prediction: make sure it counts
        targets, mask = np.array(4), None if mask is None else np.array(True)
    upstream = float(rng.uniform(0.5, 2.0))

    ref_loss, ref_grad = torch_ce(torch, logits, targets, mask, ignore_index, reduction, 0.0, upstream)
    crit = CrossEntropyLoss(ignore_index=ignore_index, reduction=reduction)
    loss = crit(logits, targets, mask=mask)
    grad = crit.backward(upstream)

    assert isinstance(loss, float)
    assert grad.dtype == dtype
    assert grad.shape == logits.shape
    assert loss == pytest.approx(ref_loss, rel=TOL[dtype])
    assert_close(grad, ref_grad, TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.1, 1.0])
def test_label_smoothing_matches_torch(torch, dtype, reduction, label_smoothing):
    rng = np.random.default_rng(7)
    logits, targets, mask = ce_case(rng, (4, 3), 5, dtype, use_mask=True)
    ref_loss, ref_grad = torch_ce(torch, logits, targets, mask, -100, reduction, label_smoothing, 1.3)
    loss, grad = softmax_cross_entropy(logits, targets, mask=mask, reduction=reduction,
                                       label_smoothing=label_smoothing)
    assert loss == pytest.approx(ref_loss, rel=TOL[dtype])
    assert_close(1.3 * grad, ref_grad, TOL[dtype])


def test_batch_first_is_a_transpose(torch):
    """(B, T, C) logits, possibly a non-contiguous view, give the transposed (T, B, C) gradient."""
    rng = np.random.default_rng(3)
    logits, targets, mask = ce_case(rng, (4, 3), 5, np.float64, use_mask=True)  # (T, B, C)
    loss_tb, grad_tb = softmax_cross_entropy(logits, targets, mask=mask)
    loss_bt, grad_bt = softmax_cross_entropy(logits.transpose(1, 0, 2), targets.T, mask=mask.T)
    assert loss_bt == pytest.approx(loss_tb, rel=1e-14)
    np.testing.assert_allclose(grad_bt, grad_tb.transpose(1, 0, 2), rtol=1e-14, atol=1e-16)
    ref_loss, _ = torch_ce(torch, logits, targets, mask, -100, "mean", 0.0, 1.0)
    assert loss_bt == pytest.approx(ref_loss, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_logits_stay_finite(torch, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1.0, -1e4]], dtype=dtype)
    targets = np.array([1, 2, 0])
    loss, grad = softmax_cross_entropy(logits, targets, reduction="sum")
    assert np.isfinite(loss)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[0], [1.0, -1.0, 0.0], atol=1e-6)  # softmax = e_0, target 1
    ref_loss, ref_grad = torch_ce(torch, logits, targets, None, -100, "sum", 0.0, 1.0)
    assert loss == pytest.approx(ref_loss, rel=TOL[dtype])
    assert loss == pytest.approx(2e4 + np.log(3.0) + np.log1p(np.exp(-1.0)), rel=TOL[dtype])
    assert_close(grad, ref_grad, TOL[dtype])
    assert np.all(np.isfinite(log_softmax(logits))) and np.all(np.isfinite(softmax(logits)))


# -- cross-entropy without torch ---------------------------------------------------------------------
def central_differences(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("lead", LEADING)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_cross_entropy_finite_differences(lead, reduction, label_smoothing):
    rng = np.random.default_rng(11)
    logits, targets, mask = ce_case(rng, lead, 4, np.float64, use_mask=True)
    if lead == ():
        targets, mask = np.array(1), np.array(True)
    upstream = float(rng.standard_normal())  # a random projection of the scalar output

    crit = CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing)
    crit(logits, targets, mask=mask)
    grad = crit.backward(upstream)

    def f(z):
        return upstream * softmax_cross_entropy(z, targets, mask=mask, reduction=reduction,
                                                label_smoothing=label_smoothing)[0]

    assert_close(grad, central_differences(f, logits.copy()), 1e-7)
    # directional derivative along a random direction
    v = rng.standard_normal(logits.shape)
    h = 1e-5
    fd = (f(logits + h * v) - f(logits - h * v)) / (2 * h)
    assert np.sum(grad * v) == pytest.approx(fd, rel=1e-7, abs=1e-10)


def test_gradient_is_softmax_minus_onehot():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 4))
    t = rng.integers(0, 4, size=6)
    _, grad = softmax_cross_entropy(z, t, reduction="sum")
    np.testing.assert_allclose(grad, softmax(z) - np.eye(4)[t], rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(np.exp(log_softmax(z)), softmax(z), rtol=1e-14)
    np.testing.assert_allclose(softmax(z).sum(axis=-1), 1.0, rtol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nothing_counted_gives_zero(reduction):
    """Documented difference from torch (NaN for a mean over zero elements)."""
    z = np.ones((3, 2, 4), dtype=np.float32)
    for targets, mask in [(np.full((3, 2), -100), None), (np.zeros((3, 2), int), np.zeros((3, 2), bool))]:
        loss, grad = softmax_cross_entropy(z, targets, mask=mask, reduction=reduction)
        assert loss == 0.0
        assert grad.dtype == np.float32 and grad.shape == z.shape and not grad.any()
    loss, grad = softmax_cross_entropy(np.zeros((0, 4)), np.zeros(0, dtype=int))
    assert loss == 0.0 and grad.shape == (0, 4)


def test_float32_is_computed_in_float32():
    rng = np.random.default_rng(2)
    z64, t, mask = ce_case(rng, (7, 3), 9, np.float64, use_mask=True)
    loss64, grad64 = softmax_cross_entropy(z64, t, mask=mask)
    loss32, grad32 = softmax_cross_entropy(z64.astype(np.float32), t, mask=mask)
    assert grad32.dtype == np.float32
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert_close(grad32, grad64, 1e-5)


def test_masked_positions_are_not_range_checked():
    z = np.zeros((2, 3))
    loss, grad = softmax_cross_entropy(z, np.array([1, 99]), mask=np.array([True, False]))
    assert loss == pytest.approx(np.log(3.0))
    assert not grad[1].any()


def test_class_wrapper_backward():
    rng = np.random.default_rng(4)
    z, t, _ = ce_case(rng, (5,), 3, np.float64)
    crit = CrossEntropyLoss()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        crit.backward()
    loss = crit.forward(z, t)
    ref_loss, ref_grad = softmax_cross_entropy(z, t)
    assert loss == ref_loss
    g1 = crit.backward()
    np.testing.assert_array_equal(g1, ref_grad)
    g1[...] = 0.0  # the returned array is the caller's; the kept gradient is unchanged
    np.testing.assert_array_equal(crit.backward(np.float64(-2.0)), -2.0 * ref_grad)
    with pytest.raises(ValueError, match="grad must be finite"):
        crit.backward(float("nan"))
    with pytest.raises(TypeError, match="grad must be a real scalar"):
        crit.backward(np.ones(3))
    assert repr(crit) == "CrossEntropyLoss(ignore_index=-100, reduction='mean')"


# -- cross-entropy errors ----------------------------------------------------------------------------
Z = np.zeros((4, 3))
T = np.array([0, 1, 2, 1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"logits": Z.astype(np.int64)}, TypeError, "logits must have dtype float32 or float64, got int64"),
        ({"logits": np.float64(1.0), "targets": np.array(0)}, ValueError,
         r"logits must have shape \(\.\.\., C\)"),
        ({"logits": np.zeros((4, 0))}, ValueError, r"C >= 1 classes, got \(4, 0\)"),
        ({"targets": T.astype(np.float64)}, TypeError,
         "targets must hold integer class indices, got dtype float64"),
        ({"targets": T > 0}, TypeError, "targets must hold integer class indices, got dtype bool"),
        ({"targets": T[:3]}, ValueError, r"leading shape of logits \(4,\) .*got \(3,\)"),
        ({"targets": np.eye(3)[T].astype(int)}, ValueError, "class-probability targets are not supported"),
        ({"targets": np.array([0, 3, 1, 1])}, ValueError, r"\[0, C\) = \[0, 3\) .*got 3 at index \(1,\)"),
        ({"targets": np.array([0, 1, -1, 1])}, ValueError, r"ignore_index=-100, got -1 at index \(2,\)"),
        ({"reduction": "avg"}, ValueError, r"reduction must be one of \('mean', 'sum'\), got 'avg'"),
        ({"reduction": "none"}, ValueError, "reduction must be one of"),
        ({"ignore_index": 1.5}, TypeError, "ignore_index must be an integer, got 1.5"),
        ({"label_smoothing": 1.5}, ValueError, r"label_smoothing must be a number in \[0, 1\], got 1.5"),
        ({"mask": np.ones(4)}, TypeError, "mask must be a boolean array .*got dtype float64"),
        ({"mask": np.ones((4, 3), bool)}, ValueError, r"mask must have shape .*\(4,\), got \(4, 3\)"),
    ],
)
def test_cross_entropy_errors(kwargs, error, match):
    args = {"logits": Z, "targets": T, **kwargs}
    with pytest.raises(error, match=match):
        softmax_cross_entropy(**args)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_rejected(bad):
    z = np.zeros((2, 3, 4), dtype=np.float32)
    z[1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"logits contains NaN or Inf \(first at index \(1, 2, 0\)\)"):
        softmax_cross_entropy(z, np.zeros((2, 3), dtype=int))


def test_torch_tensors_are_rejected(torch):
    with pytest.raises(TypeError, match=r"logits must be a numpy array, got a Tensor \(use .numpy\(\)\)"):
        softmax_cross_entropy(torch.zeros(2, 3), np.zeros(2, dtype=int))


def test_wrapper_validates_at_construction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        CrossEntropyLoss(reduction="batchmean")
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        CrossEntropyLoss(ignore_index=None)
    with pytest.raises(ValueError, match="reduction must be one of"):
        MSELoss(reduction="elementwise_mean")


# -- MSE -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4), (3, 2, 2, 5)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("mask_kind", [None, "full", "leading"])
def test_mse_matches_torch(torch, dtype, shape, reduction, mask_kind):
    rng = np.random.default_rng(seed(shape, reduction, mask_kind))
    pred = rng.standard_normal(shape).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    mask = None
    if mask_kind is not None:
        mshape = shape if mask_kind == "full" else shape[:-1]
        mask = np.asarray(rng.random(mshape) < 0.6)
        mask.flat[0] = True
        target[~mask] = np.nan  # missing values under the mask never enter the loss
    upstream = float(rng.uniform(0.5, 2.0))

    crit = MSELoss(reduction=reduction)
    loss = crit(pred, target, mask=mask)
    grad = crit.backward(upstream)

    p = torch.tensor(pred, requires_grad=True)
    m = slice(None) if mask is None else torch.tensor(mask)
    ref = torch.nn.functional.mse_loss(p[m], torch.tensor(target)[m], reduction=reduction)
    (ref * upstream).backward()

    assert isinstance(loss, float)
    assert grad.dtype == dtype and grad.shape == shape
    assert loss == pytest.approx(ref.item(), rel=TOL[dtype])
    assert_close(grad, p.grad.numpy(), TOL[dtype])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("mask_kind", [None, "full", "leading"])
def test_mse_finite_differences(reduction, mask_kind):
    rng = np.random.default_rng(13)
    pred, target = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    mask = None if mask_kind is None else rng.random((2, 3, 4) if mask_kind == "full" else (2, 3)) < 0.5
    upstream = float(rng.standard_normal())
    _, grad = mse(pred, target, mask=mask, reduction=reduction)

    def f(x):
        return upstream * mse(x, target, mask=mask, reduction=reduction)[0]

    assert_close(upstream * grad, central_differences(f, pred.copy()), 1e-7)


def test_mse_leading_mask_counts_whole_rows():
    pred = np.ones((2, 3, 4))
    loss, grad = mse(pred, np.zeros_like(pred), mask=np.array([[True, False, False], [False, False, False]]))
    assert loss == 1.0  # 4 counted elements, each 1
    np.testing.assert_allclose(grad[0, 0], 2.0 / 4)
    assert not grad[0, 1:].any() and not grad[1].any()
    loss, grad = mse(pred, np.zeros_like(pred), mask=np.zeros((2, 3), bool))
    assert loss == 0.0 and not grad.any()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pred": np.zeros((2, 3), np.int32)}, TypeError,
         "pred must have dtype float32 or float64, got int32"),
        ({"target": np.zeros((3, 2))}, ValueError,
         r"target must have the shape of pred \(2, 3\), got \(3, 2\)"),
        ({"target": np.zeros((2, 3), complex)}, TypeError, "target must be a real numeric array"),
        ({"target": np.full((2, 3), np.nan)}, ValueError, "target contains NaN or Inf"),
        ({"pred": np.full((2, 3), np.inf)}, ValueError,
         r"pred contains NaN or Inf \(first at index \(0, 0\)\)"),
        ({"mask": np.ones(3, bool)}, ValueError,
         r"mask must have shape pred's shape \(2, 3\) or pred's leading"),
        ({"mask": np.ones((2, 3), int)}, TypeError, "mask must be a boolean array"),
        ({"reduction": "mea"}, ValueError, "reduction must be one of"),
    ],
)
def test_mse_errors(kwargs, error, match):
    args = {"pred": np.zeros((2, 3)), "target": np.zeros((2, 3)), **kwargs}
    with pytest.raises(error, match=match):
        mse(**args)


def test_mse_nan_target_under_true_mask_is_rejected():
    target = np.zeros((2, 3))
    target[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"target \(where mask is True\) contains NaN or Inf"):
        mse(np.zeros((2, 3)), target, mask=np.array([True, True]))


# -- helpers -------------------------------------------------------------------------------------------
def test_softmax_helpers_dtypes_and_axis():
    z = np.array([[1.0, 2.0], [3.0, -np.inf]], dtype=np.float32)
    assert softmax(z).dtype == np.float32 and log_softmax(z).dtype == np.float32
    np.testing.assert_allclose(softmax(z)[1], [1.0, 0.0])
    assert log_softmax(np.array([1, 2, 3])).dtype == np.float64
    np.testing.assert_allclose(softmax(z.T, axis=0), softmax(z).T)
