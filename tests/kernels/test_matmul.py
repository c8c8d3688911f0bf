"""``matmul_into``, the BLAS product behind the input projections, the backward's dx and Linear: against a
float64 numpy reference on both sides of its FEW_ROWS rule (1 row, 2 to FEW_ROWS rows as y^T = m^T x^T,
more rows as written), with m C-contiguous (dx = g W) and F-contiguous (a transposed W, as in x W^T)."""

import numpy as np
import pytest

from rnncore.kernels._common import FEW_ROWS, matmul_into

ROWS = [1, 2, 3, FEW_ROWS - 1, FEW_ROWS, FEW_ROWS + 1, 2 * FEW_ROWS + 3]
TOLERANCE = {np.float32: 2e-6, np.float64: 1e-14}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True], ids=["m C-contiguous", "m a transposed W"])
@pytest.mark.parametrize("rows", ROWS)
def test_matmul_into_matches_numpy_in_float64(rows, transposed, dtype):
    rng = np.random.default_rng(rows)
    K, N = 37, 45
    x = rng.standard_normal((rows, K)).astype(dtype)
    w = rng.standard_normal((N, K) if transposed else (K, N)).astype(dtype)
    m = w.T if transposed else w
    assert m.flags.f_contiguous == transposed
    y = np.full((rows, N), np.nan, dtype=dtype)
    matmul_into(y, x, m)
    reference = x.astype(np.float64) @ m.astype(np.float64)
    scale = np.abs(x).astype(np.float64) @ np.abs(m).astype(np.float64)  # bounds the rounding of each sum
    assert y.dtype == dtype
    assert np.all(np.abs(y - reference) <= TOLERANCE[dtype] * scale)
