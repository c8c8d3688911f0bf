"""acc += a @ b as one BLAS GEMM with beta = 1: the accumulating products of the backward passes.

Numba's ``np.dot`` always writes its result (beta = 0), so an accumulating product went through a scratch
array of acc's size and an add pass over it. For the weight gradients of a pass over few rows (B = 1: a
rank-T update of every weight) the scratch and the pass were most of the work, and a scratch of several
megabytes is fresh memory at every call. ``add_product`` calls the GEMM behind Numba's ``np.dot``
(``numba_xxgemm`` of Numba's helper library, SciPy's BLAS) with beta = 1 instead. Measured here (AVX2,
two threads, float32, one process, us, scratch and add -> beta = 1, two alternations each): a rank-25
update (a B = 1 pass of 25 steps) of (256, 256) 66 / 54 -> 35 / 37, of (1024, 256) 192 / 152 -> 127 / 99,
of (1024, 1024) 658 / 696 -> 580 / 415, of (4096, 1024) 5459 / 5130 -> 2092 / 1888; rank 100 of (4096, 1024)
9240 / 8707 -> 6330 / 7025; and level where the GEMM dominates, rank 1600 of (1024, 256) 8537 / 7066 ->
8065 / 7017. Whole B = 1 training passes of 25 steps took 0.81-0.96 of their time (``docs/benchmarks.md``).

BLAS is column-major: a row-major (R, C) array is the column-major (C, R) matrix, its transpose. So
acc = acc + a b is computed as acc^T = acc^T + b^T a^T, with b as BLAS's first operand.
"""

import numpy as np
from numba import types

from rnncore.kernels._jit import inline_kernel, kernel

# c = alpha op(a) op(b) + beta c, column-major (``numba/_lapack.c``); the pointers point to the dtype
_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char,  # kind: 's' float32, 'd' float64
        types.char,  # transa: 'n' or 't'
        types.char,  # transb
        types.intp,  # m: rows of op(a) and c
        types.intp,  # n: columns of op(b) and c
        types.intp,  # k: columns of op(a), rows of op(b)
        types.voidptr,  # alpha
        types.voidptr,  # a
        types.intp,  # lda
        types.voidptr,  # b
        types.intp,  # ldb
        types.voidptr,  # beta
        types.voidptr,  # c
        types.intp,  # ldc
    ),
)
_NO_TRANSPOSE, _TRANSPOSE = ord("n"), ord("t")
_FLOAT32, _FLOAT64 = ord("s"), ord("d")  # the kinds (constants of the compiled code, not calls of ord)


@inline_kernel
def _row_major_lead(m):
    """The leading dimension of m (R, C) read as row-major (unit steps along a row), or 0 if it is not."""
    R, C = m.shape
    s = m.itemsize
    if C > 1 and m.strides[1] != s:
        return 0
    lead = m.strides[0] // s if R > 1 else C
    return lead if lead >= max(C, 1) else 0


@inline_kernel
def _operand(m):
    """(trans, lead) that make the column-major matrix BLAS reads at m's data the transpose of m (R, C):
    'n' over a row-major m, 't' over a column-major one (the transpose of a row-major array). (0, 0) when m
    is neither."""
    lead = _row_major_lead(m)
    if lead:
        return _NO_TRANSPOSE, lead
    lead = _row_major_lead(m.T)
    if lead:
        return _TRANSPOSE, lead
    return 0, 0


@kernel
def add_product(acc, a, b):
    """acc += a @ b in one GEMM with beta = 1. acc (M, N) row-major; a (M, K) and b (K, N) each row-major or
    the transpose of a row-major array (as d.T and w.T are)."""
    M, N = acc.shape
    K = a.shape[1]
    if a.shape[0] != M or b.shape[0] != K or b.shape[1] != N:
        raise ValueError("add_product: shapes do not match: acc (M, N), a (M, K), b (K, N)")
    if M == 0 or N == 0 or K == 0:
        return
    lead_c = _row_major_lead(acc)
    trans_b, lead_b = _operand(b)
    trans_a, lead_a = _operand(a)
    if not (lead_c and lead_a and lead_b):
        raise ValueError("add_product: acc must be row-major, a and b row-major or transposed row-major")
    kind = _FLOAT32 if acc.itemsize == 4 else _FLOAT64
    one = np.ones(1, dtype=acc.dtype)  # alpha and beta
    status = _xxgemm(kind, trans_b, trans_a, N, M, K, one.ctypes, b.ctypes, lead_b, a.ctypes, lead_a,
                     one.ctypes, acc.ctypes, lead_c)
    if status != 0:
        raise RuntimeError("add_product: no gemm in scipy.linalg.cython_blas")
