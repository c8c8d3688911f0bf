"""The accumulating products of the backward passes, against a float64 numpy reference in both dtypes:
``blas.add_product`` (acc += a @ b as one GEMM with beta = 1: the weight gradients and Linear's dw) for
every layout the kernels pass (each operand row-major or the transpose of a row-major array), at 1 row, few
and many, and what it refuses; ``_common.add_matmul`` (the full batch's dx += d W_ih) on both sides of the
FEW_ROWS rule of ``matmul_into``."""

import numpy as np
import pytest

from rnncore.kernels._common import FEW_ROWS, add_matmul
from rnncore.kernels.blas import add_product

TOLERANCE = {np.float32: 2e-6, np.float64: 1e-14}
SHAPES = [(1, 45, 37), (2, 45, 37), (33, 1, 5), (64, 96, 25), (1, 1, 1), (7, 3, 1)]  # (M, N, K)
ROWS = [1, 2, FEW_ROWS, FEW_ROWS + 1, 2 * FEW_ROWS + 3]


def check_accumulates(update, acc, a, b):
    """update(acc, a, b) must leave acc + a @ b (the sums of float64 numpy) to the rounding of each sum."""
    dtype = acc.dtype
    reference = acc.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(acc).astype(np.float64) + np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    update(acc, a, b)
    assert acc.dtype == dtype
    assert np.all(np.abs(acc - reference) <= TOLERANCE[dtype.type] * scale)


def operand(rng, rows, cols, dtype, transposed):
    """A (rows, cols) array, row-major or the transpose of a row-major (cols, rows) array."""
    if transposed:
        return rng.standard_normal((cols, rows)).astype(dtype).T
    return rng.standard_normal((rows, cols)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b_transposed", [False, True], ids=["b C", "b transposed"])
@pytest.mark.parametrize("a_transposed", [False, True], ids=["a C", "a transposed"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"M{m}-N{n}-K{k}" for m, n, k in SHAPES])
def test_add_product_adds_the_product_to_acc(shape, a_transposed, b_transposed, dtype):
    M, N, K = shape
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    a = operand(rng, M, K, dtype, a_transposed)
    b = operand(rng, K, N, dtype, b_transposed)
    check_accumulates(add_product, rng.standard_normal((M, N)).astype(dtype), a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True], ids=["m C-contiguous", "m a transposed W"])
@pytest.mark.parametrize("rows", ROWS)
def test_add_matmul_adds_the_product_on_both_sides_of_few_rows(rows, transposed, dtype):
    rng = np.random.default_rng(100 + rows)
    x = operand(rng, rows, 37, dtype, False)
    m = operand(rng, 37, 45, dtype, transposed)
    check_accumulates(add_matmul, rng.standard_normal((rows, 45)).astype(dtype), x, m)


def test_add_product_into_a_row_slice_leaves_the_other_rows():
    rng = np.random.default_rng(1)
    total = rng.standard_normal((10, 6))
    before = total.copy()
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 6))
    add_product(total[3:7], a, b)
    np.testing.assert_allclose(total[3:7], before[3:7] + a @ b, rtol=1e-14, atol=1e-14)
    others = [0, 1, 2, 7, 8, 9]
    np.testing.assert_array_equal(total[others], before[others])


def test_add_product_over_no_shared_dimension_leaves_acc():
    acc = np.arange(6.0).reshape(2, 3)
    add_product(acc, np.empty((2, 0)), np.empty((0, 3)))
    np.testing.assert_array_equal(acc, np.arange(6.0).reshape(2, 3))


def test_add_product_keeps_what_acc_held_visible():
    # beta = 1 reads acc: a NaN already there stays (a GEMM with beta = 0 would overwrite it)
    acc = np.zeros((2, 2), dtype=np.float32)
    acc[0, 1] = np.nan
    add_product(acc, np.ones((2, 3), dtype=np.float32), np.ones((3, 2), dtype=np.float32))
    assert np.isnan(acc[0, 1])
    np.testing.assert_array_equal(acc[[0, 1, 1], [0, 0, 1]], [3.0, 3.0, 3.0])


@pytest.mark.parametrize("which", ["acc", "a", "b"])
def test_add_product_refuses_layouts_blas_cannot_read(which):
    arrays = {"acc": np.zeros((4, 4)), "a": np.ones((4, 5)), "b": np.ones((5, 4))}
    arrays[which] = np.ones((arrays[which].shape[0], 2 * arrays[which].shape[1]))[:, ::2]  # strided rows
    before = arrays["acc"].copy()
    with pytest.raises(ValueError, match="row-major"):
        add_product(arrays["acc"], arrays["a"], arrays["b"])
    np.testing.assert_array_equal(arrays["acc"], before)


MISMATCHED = [((4, 4), (3, 5), (5, 4)), ((4, 4), (4, 5), (6, 4)), ((4, 4), (4, 5), (5, 3))]  # acc, a, b


@pytest.mark.parametrize("shapes", MISMATCHED, ids=["a rows", "b rows", "b columns"])
def test_add_product_refuses_shapes_that_do_not_match(shapes):
    acc, a, b = (np.ones(shape) for shape in shapes)
    with pytest.raises(ValueError, match="shapes do not match"):
        add_product(acc, a, b)
    np.testing.assert_array_equal(acc, np.ones(shapes[0]))
