"""The one place where Numba compilation options are decided.

- ``error_model="numpy"``: no division checks in the gate math, so the loops vectorise.
- fastmath without ``nnan``/``ninf``: NaN and Inf must stay visible to the finiteness checks.
- ``nogil=True``: inference can run from several Python threads at once.
- ``ordered_kernel``: the same options without ``reassoc``, for sums whose order must not depend on
  where a copy of the function is compiled. A reduction vectorised under ``reassoc`` rounds by the order
  the optimiser picked, and a helper is compiled twice (on its own, and again inside each caller's
  module; a process that compiled the kernels runs one copy, a process that loaded them from the cache
  the other): the float64 gradients of the layer-normalised LSTM differed in the last bit between the
  two. Without ``reassoc`` each sum runs in the order written, in every copy.
- ``inline_kernel``: the same options, inlined into each caller at Numba IR level, for thin wrappers over
  other kernels and for the per-row gate loops. A separately compiled function costs its own LLVM
  optimisation and machine code of everything it calls (0.6 s for a wrapper of three calls to one compiled
  helper); inlined, it costs its callers little more than its typing.
- ``cache``: on by default; ``RNNCORE_NUMBA_CACHE=0`` turns it off (for example under multiprocessing
  on a shared file system). Numba places the cache beside the modules, or in ``NUMBA_CACHE_DIR``.
"""

import os

from numba import njit

CACHE = os.environ.get("RNNCORE_NUMBA_CACHE", "1") != "0"
FASTMATH = frozenset({"contract", "nsz", "arcp", "reassoc"})
JIT_OPTIONS = {"cache": CACHE, "nogil": True, "error_model": "numpy", "fastmath": set(FASTMATH)}


def kernel(fn):
    """Compile ``fn`` in nopython mode with the project's options (lazily, once per dtype)."""
    return njit(**JIT_OPTIONS)(fn)


def ordered_kernel(fn):
    """``kernel`` whose floating-point sums keep the order written (no ``reassoc``, module docstring)."""
    return njit(**dict(JIT_OPTIONS, fastmath=set(FASTMATH - {"reassoc"})))(fn)


def inline_kernel(fn):
    """``kernel`` for a thin wrapper: compiled as part of each caller instead of on its own."""
    return njit(inline="always", **JIT_OPTIONS)(fn)
