"""How many threads the kernels may use: the BLAS behind them, and the batch shards of a layer.

The kernels call BLAS through scipy (``scipy.linalg.cython_blas``) for the GEMMs of whole sequences
and for the per-step products of batches outside 4..40 rows (those use ``kernels.packed`` on the
calling thread), and ``nn.Linear`` calls the same BLAS (``kernels.dense``); numpy brings a second
copy, which rnncore's layers do not use (two pools taking turns wait for each other's spinning
threads). Both split each GEMM statically between their threads, so on a machine whose cores are busy
with other work a loop of many small GEMMs waits for descheduled threads at every step (measured
here: a seq2seq training step took 34 ms with one BLAS thread and 930 ms with two while both cores
were loaded). ``set_num_threads(1)`` is the robust choice on a shared machine; the default leaves the
libraries' own setting (all cores). ``RNNCORE_NUM_THREADS`` applies it at import.

The same number bounds how many threads a recurrent layer splits a large batch over (``rnncore.nn._shards``);
while the shards run, BLAS is held to one thread (``serial_blas``), so the two levels never oversubscribe.
"""

import contextlib
import contextvars
import os
import threading

_limit = None  # set_num_threads' n; None until it is called
_scoped_limit = contextvars.ContextVar("rnncore_blas_threads", default=None)  # blas_threads' n in its block


def set_num_threads(n):
    """Limit every loaded BLAS (scipy's, used by the kernels, and numpy's) to ``n`` threads."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS the kernels use)
    from threadpoolctl import threadpool_limits

    global _limit
    threadpool_limits(limits=n, user_api="blas")
    _limit = n


@contextlib.contextmanager
def blas_threads(n):
    """Within the block, every loaded BLAS runs ``n`` threads; None or 0 leaves them as they are.

    Every product of rnncore's layers runs in scipy's BLAS (the kernels, and ``Linear`` through
    ``kernels.dense``); the limit covers numpy's too, for the user's own products beside them."""
    if not n:
        yield
        return
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    token = _scoped_limit.set(int(n))
    try:
        with threadpool_limits(limits=int(n), user_api="blas"):
            yield
    finally:
        _scoped_limit.reset(token)


def _environment_threads():
    """The thread count the environment gives BLAS when nothing else sets one: OPENBLAS_NUM_THREADS or
    OMP_NUM_THREADS, capped by the cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            return max(1, min(cores, int(os.environ.get(name, "").split(",")[0])))
        except ValueError:
            continue
    return cores


def shard_threads():
    """How many threads a layer may split its batch over: ``blas_threads``' n inside its block, else
    ``set_num_threads``' n, else what the environment gives BLAS (all cores by default)."""
    scoped = _scoped_limit.get()
    if scoped:
        return scoped
    return _limit if _limit is not None else _environment_threads()


_serial_lock = threading.Lock()
_serial_depth = 0
_serial_limiter = None
_controller = None


@contextlib.contextmanager
def serial_blas():
    """Every loaded BLAS at one thread within the block, for kernels that run side by side on threads of
    their own (measured here: two batch shards with two BLAS threads each were 24-84% slower than with one).
    Nested and concurrent blocks share one limit; the last to leave restores the libraries' setting.
    Effective in the main thread only: after the main thread has set OpenBLAS's thread count, OpenBLAS
    (0.3.30, 0.3.31 seen here) ignores the setting made from any other thread."""
    global _serial_depth, _serial_limiter, _controller
    with _serial_lock:
        if _serial_depth == 0:
            if _controller is None:
                import scipy.linalg.cython_blas  # noqa: F401
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController().select(user_api="blas")
            _serial_limiter = _controller.limit(limits=1)
        _serial_depth += 1
    try:
        yield
    finally:
        with _serial_lock:
            _serial_depth -= 1
            if _serial_depth == 0:
                _serial_limiter.restore_original_limits()
                _serial_limiter = None


def _reset_serial_after_fork():
    """A forked child runs none of the parent's blocks (the BLAS limit it inherited stays until set again)."""
    global _serial_lock, _serial_depth, _serial_limiter
    _serial_lock, _serial_depth, _serial_limiter = threading.Lock(), 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_serial_after_fork)


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
