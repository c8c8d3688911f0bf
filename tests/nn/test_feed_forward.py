"""The feed-forward layers through their kernels (``rnncore.kernels.dense``): Linear's forward and backward
against float64 numpy references (``einsum``), for every input rank and layout it accepts; Embedding's
backward against ``np.add.at``, bit for bit."""

import numpy as np
import pytest

import rnncore
from rnncore.kernels._common import FEW_ROWS


def _reference(x, w, b, g):
    """(y, dx, dw, db) in float64: y = x W^T + b, for x (..., I), g (..., O)."""
    x, w, g = (np.asarray(a, dtype=np.float64) for a in (x, w, g))
    y = np.einsum("...i,oi->...o", x, w) + (0.0 if b is None else np.asarray(b, dtype=np.float64))
    dx = np.einsum("...o,oi->...i", g, w)
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    dw = np.einsum("no,ni->oi", g2, x2)
    db = g2.sum(axis=0)
    return y, dx, dw, db


# rows: 1 (a matrix-vector product), 2 to FEW_ROWS (the product as (W x^T)^T) and more (as written)
SHAPES = {"1-D": (7,), "2-D": (5, 7), "3-D": (4, 3, 7), "transposed view": (3, 4, 7), "no rows": (0, 7),
          "two rows": (2, 7), "FEW_ROWS rows": (FEW_ROWS, 7), "more rows": (FEW_ROWS + 1, 7),
          "many rows": (7, 5, 7)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", sorted(SHAPES))
def test_linear_matches_its_definition(case, bias, dtype):
    rng = np.random.default_rng(0)
    lin = rnncore.Linear(7, 6, bias=bias, dtype=dtype, seed=1)
    x = rng.standard_normal(SHAPES[case]).astype(dtype)
    if case == "transposed view":
        x = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)  # same values, not C-contiguous
        assert not x.flags.c_contiguous
    g = rng.standard_normal(x.shape[:-1] + (6,)).astype(dtype)
    w = lin.parameters()[0].copy()
    b = lin.parameters()[1].copy() if bias else None
    y_ref, dx_ref, dw_ref, db_ref = _reference(x, w, b, g)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    lin.zero_grad()
    for repeat in (1, 2):  # the parameter gradients add up over backward passes
        y = lin(x)
        assert y.shape == x.shape[:-1] + (6,)
        assert y.dtype == dtype
        np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
        dx = lin.backward(g)
        assert dx.shape == x.shape
        assert dx.dtype == dtype
        np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(lin.grads["weight"], repeat * dw_ref, rtol=tol, atol=tol)
        if bias:
            np.testing.assert_allclose(lin.grads["bias"], repeat * db_ref, rtol=tol, atol=tol)
    np.testing.assert_array_equal(lin.parameters()[0], w)  # the forward and backward leave W alone


def test_linear_backward_checks_the_gradient_shape_against_the_forward():
    lin = rnncore.Linear(3, 2)
    lin(np.ones((4, 5, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"grad_out.*\(4, 5, 2\).*\(5, 4, 2\)"):
        lin.backward(np.ones((5, 4, 2), dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_idx", [None, 3])
def test_embedding_backward_is_np_add_at_bit_for_bit(padding_idx, dtype):
    """Repeated ids, 2-D ids, the padding row, two backward passes adding up: the sums of ``np.add.at``
    in the same order, so the same bits."""
    rng = np.random.default_rng(2)
    emb = rnncore.Embedding(9, 5, padding_idx=padding_idx, dtype=dtype, seed=0)
    ids = rng.integers(0, 9, size=(40, 3))
    ids[0, 0] = ids[1, 2] = 3  # the padding id, when there is one, and repeats
    expected = np.zeros((9, 5), dtype=dtype)
    emb.zero_grad()
    for _ in range(2):
        g = rng.standard_normal((40, 3, 5)).astype(dtype)
        emb(ids)
        assert emb.backward(g) is None
        keep = ids.reshape(-1) != (-1 if padding_idx is None else padding_idx)
        np.add.at(expected, ids.reshape(-1)[keep], g.reshape(-1, 5)[keep])
        np.testing.assert_array_equal(emb.grads["weight"], expected)
    if padding_idx is not None:
        assert np.all(emb.grads["weight"][padding_idx] == 0.0)


def test_embedding_backward_rejects_ids_changed_after_the_forward():
    """ids the caller changed between forward and backward: a clear error naming the value, and no
    gradient added (the kernel checks every id before it writes)."""
    emb = rnncore.Embedding(6, 2, seed=0)
    ids = np.array([[1, 2], [3, 4]])
    emb(ids)
    emb.zero_grad()
    ids[1, 0] = 6
    with pytest.raises(ValueError, match=r"\[0, 6\).*got 6 at flat index 2"):
        emb.backward(np.ones((2, 2, 2), dtype=np.float32))
    assert np.all(emb.grads["weight"] == 0.0)
