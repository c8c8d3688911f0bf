"""The packed recurrent product against numpy's matmul, over shapes that leave partial tiles and panels."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from numba.core import codegen

from rnncore.kernels import packed

# B: one row (tiles of four panels, then one of two), the 2-, 3- and 4-row tiles alone, 4-row tiles followed
# by 1, 2 or 3 rows, 8-row tiles alone and followed by 1 to 7 rows; N: one panel pair or more, partly filled;
# 8 MB of panels or more (the first tile over each panel prefetches the next, ``PREFETCH_MIN_BYTES``)
SHAPES = [(1, 7, 40), (1, 64, 100), (1, 33, 128), (2, 3, 17), (3, 64, 33), (4, 1, 1), (4, 3, 17), (5, 7, 16),
          (6, 16, 40), (7, 64, 33), (8, 5, 33), (9, 16, 256), (12, 8, 20), (15, 3, 70), (16, 256, 1024),
          (33, 5, 8), (39, 9, 24), (11, 1024, 2040)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("B", "K", "N"), SHAPES)
@pytest.mark.parametrize("layout", ["C", "F"])
def test_product_matches_matmul(dtype, B, K, N, layout):
    rng = np.random.default_rng(B * 1000 + K * 10 + N)
    a = rng.standard_normal((B, K)).astype(dtype)
    w = rng.standard_normal((N, K)).astype(dtype)
    if layout == "F":  # the backward packs W_hh^T, a transposed view
        w = np.ascontiguousarray(w.T).T
    p = packed.pack(w, B)
    L = 64 // np.dtype(dtype).itemsize
    pairs = -(-N // (packed.TILE_PANELS * L))
    assert p.shape == (packed.TILE_PANELS * pairs, K, L)
    c = np.full((B, N), np.nan, dtype=dtype)
    packed.product_into(c, a, w, p, packed.scratch(p, B))
    assert_product(c, a, w, 1e-12 if dtype == np.float64 else 2e-6)


def assert_product(c, a, w, tol):
    """c = a @ w.T up to tol times the sum of the terms' magnitudes (the bound of the rounding error)."""
    want = a.astype(np.float64) @ w.T.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(w.T).astype(np.float64)
    assert np.all(np.abs(c - want) <= tol * scale + 1e-30)


@pytest.mark.parametrize(("B", "N", "K"), [
    (1, 257, 256),  # float64, 526 KB: above ONE_ROW_MAX_BYTES
    (2, 513, 512),  # 2.004 MB: above TWO_ROWS_MAX_BYTES
    (3, 1025, 1024),  # 8.008 MB: above THREE_ROWS_MAX_BYTES
    (packed.MAX_ROWS + 1, 10, 6),
    (64, 10, 6),
])
def test_one_row_few_rows_over_large_weights_and_many_rows_go_to_blas(B, N, K):
    rng = np.random.default_rng(B)
    a, w = rng.standard_normal((B, K)), rng.standard_normal((N, K))
    p = packed.pack(w, B)
    assert p.shape[0] == 0
    c = np.empty((B, N))
    packed.product_into(c, a, w, p, packed.scratch(p, B))
    assert_product(c, a, w, 1e-12)


@pytest.mark.parametrize(("B", "N", "K"), [(1, 256, 256), (2, 512, 512), (3, 1024, 1024)])
def test_one_to_three_rows_over_weights_up_to_their_bound_are_packed(B, N, K):
    """512 KB, 2 MB and 8 MB of float64, the bounds themselves."""
    w = np.zeros((N, K))
    bound = {1: packed.ONE_ROW_MAX_BYTES, 2: packed.TWO_ROWS_MAX_BYTES, 3: packed.THREE_ROWS_MAX_BYTES}
    assert w.nbytes == bound[B]
    assert packed.pack(w, B).shape == (N // 8, K, 8)


def test_padding_columns_are_zero_and_product_leaves_rows_of_c_alone():
    w = np.arange(1.0, 31.0).reshape(10, 3)  # float64: L = 8, two panels, 6 padding columns
    p = packed.pack(w, 4)
    assert p.shape == (2, 3, 8)
    assert np.all(p[1, :, 2:] == 0.0)
    a = np.ones((4, 3))
    out = packed.scratch(p, 4)
    packed.product(out, a, p)
    np.testing.assert_array_equal(out[:, :10], a @ w.T)
    np.testing.assert_array_equal(out[:, 10:], 0.0)


def test_nan_propagates():
    a = np.ones((4, 8), np.float32)
    a[2, 5] = np.nan
    w = np.ones((16, 8), np.float32)
    p = packed.pack(w, 4)
    c = np.zeros((4, 16), np.float32)
    packed.product_into(c, a, w, p, packed.scratch(p, 4))
    assert np.all(np.isnan(c[2]))
    assert np.all(np.isfinite(np.delete(c, 2, axis=0)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("N", "K"), [(1, 1), (17, 3), (33, 64), (48, 45), (256, 40)])
def test_every_layout_gives_the_same_panels(dtype, N, K):
    """Contiguous rows go by transposed blocks (with element tails in K and in the last panel), other
    layouts element by element; all give the panels of the definition."""
    w = np.random.default_rng(N + K).standard_normal((N, K)).astype(dtype)
    p = packed.pack(w, 4)
    for view in (np.ascontiguousarray(w.T).T, np.repeat(w, 2, axis=1)[:, ::2]):  # contiguous columns; neither
        np.testing.assert_array_equal(view, w)
        np.testing.assert_array_equal(packed.pack(view, 4), p)
    L = 64 // np.dtype(dtype).itemsize
    want = np.zeros((p.shape[0] * L, K), dtype=dtype)
    want[:N] = w
    np.testing.assert_array_equal(p, want.reshape(p.shape[0], L, K).transpose(0, 2, 1))


AVX2_FEATURES = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sahf,"
                 "+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")
AVX2_CHECK = """
import numpy as np
from rnncore.kernels import packed
assert not packed.compiles_for_avx512()
assert (packed.TILE_ROWS, packed.TILE_PANELS) == (4, 1), (packed.TILE_ROWS, packed.TILE_PANELS)
assert packed.PREFETCH_AHEAD and 128 * 1024 * 8 * 8 >= packed.PREFETCH_MIN_BYTES  # (6, 1024, 1020)'s panels
rng = np.random.default_rng(0)
for B, K, N in [(1, 33, 80), (7, 64, 33), (16, 40, 48), (6, 1024, 1020)]:
    a, w = rng.standard_normal((B, K)), rng.standard_normal((N, K))
    p = packed.pack(w, B)
    assert p.shape == (-(-N // 8), K, 8)
    c = np.empty((B, N))
    packed.product_into(c, a, w, p, packed.scratch(p, B))
    np.testing.assert_allclose(c, a @ w.T, rtol=1e-12, atol=1e-12)
print("ok")
"""


def test_the_tile_follows_the_vector_registers_numba_compiles_for(tmp_path):
    """8 rows x 2 panels where the machine code uses AVX-512, 4 x 1 elsewhere; the AVX2 shape checked in a
    process that compiles for AVX2 (which runs on any x86 CPU with AVX2, this one included)."""
    assert (packed.TILE_ROWS, packed.TILE_PANELS) == ((8, 2) if packed.compiles_for_avx512() else (4, 1))
    host_avx2 = "+avx2" in codegen.get_host_cpu_features().split(",")
    if platform.machine() not in ("x86_64", "AMD64") or not host_avx2:
        pytest.skip("compiling for AVX2 needs an x86 CPU with AVX2 to run the code on")
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=AVX2_FEATURES,
               NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", AVX2_CHECK], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
