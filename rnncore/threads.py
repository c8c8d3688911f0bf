"""How many threads the BLAS behind the kernels may use.

The kernels call BLAS through scipy (``scipy.linalg.cython_blas``) for the GEMMs of whole sequences
and for the per-step products of batches outside 4..40 rows (those use ``kernels.packed`` on the
calling thread); numpy brings a second copy. Both split each GEMM statically between their threads,
so on a machine whose cores are busy with other work a loop of many small GEMMs waits for descheduled
threads at every step (measured here: a seq2seq training step took 34 ms with one BLAS thread and
930 ms with two while both cores were loaded). ``set_num_threads(1)`` is the robust choice on a shared
machine; the default leaves the libraries' own setting (all cores). ``RNNCORE_NUM_THREADS`` applies it
at import.
"""

import contextlib
import os


def set_num_threads(n):
    """Limit every loaded BLAS (scipy's, used by the kernels, and numpy's) to ``n`` threads."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS the kernels use)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")


@contextlib.contextmanager
def blas_threads(n):
    """Within the block, every loaded BLAS runs ``n`` threads; None or 0 leaves them as they are.

    Training alternates numpy's BLAS (``Linear``) with scipy's (the kernels): two thread pools that
    take turns were 3-5x slower per step than one thread each on this 2-core machine."""
    if not n:
        yield
        return
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def num_threads():
    """The thread counts of the loaded BLAS libraries, keyed by file name."""
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_info

    return {os.path.basename(i["filepath"]): i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def _apply_environment():
    value = os.environ.get("RNNCORE_NUM_THREADS")
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"RNNCORE_NUM_THREADS must be an integer >= 1, got {value!r}") from None
        set_num_threads(n)
