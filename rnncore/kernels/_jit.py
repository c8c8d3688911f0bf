"""The one place where Numba compilation options are decided.

- ``error_model="numpy"``: no division checks in the gate math, so the loops vectorise.
- fastmath without ``nnan``/``ninf``: NaN and Inf must stay visible to the finiteness checks.
- ``nogil=True``: inference can run from several Python threads at once.
- ``inline_kernel``: the same options, inlined into each caller at Numba IR level, for thin wrappers over
  other kernels and for the per-row gate loops. A separately compiled function costs its own LLVM
  optimisation and machine code of everything it calls (0.6 s for a wrapper of three calls to one compiled
  helper); inlined, it costs its callers little more than its typing. Also for the large helpers of the
  backward kernels (``lstm.gate_grads``, ``gru.gate_grads``, the layer norm's row normalisation and its
  gradient): a separately compiled helper that LLVM does not inline exists twice, on its own and inside
  its caller's module, each copy optimised (vectorised, its sums reassociated) in its own context. A
  process that compiled the kernels ran the first copy, one that loaded them from the cache the second,
  and the gradients differed in the last bit between the two (``tests/test_determinism.py``). Inlined,
  there is one copy.
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


def inline_kernel(fn):
    """``kernel`` for a thin wrapper: compiled as part of each caller instead of on its own."""
    return njit(inline="always", **JIT_OPTIONS)(fn)
