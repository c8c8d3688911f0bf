"""One direction of one layer run as independent kernel calls on windows of the batch's rows, side by side.

The rows of a batch never meet inside a recurrent layer, so a pass over a large batch can run as one
kernel call per window of rows, each on its own thread (the kernels release the GIL), with BLAS held to
one thread meanwhile (``threads.serial_blas``). Every product of a step then uses both cores: a per-step
product of 4..40 rows runs on the packed one-thread tile (``kernels.packed``) at about one core's FMA
peak, where one call over the whole batch ran it on one core (or, above 40 rows, in two-thread OpenBLAS,
which repacks the weights at every step). The kernels take the window as ``row`` (``kernels._common``):
x, out, grad_out and dx stay the whole batch's arrays and each window reads and writes its own rows, so
sharding copies nothing of size T x B (training memory at T 1000 fell, since the windowed input
projection and dx products work INFER_CHUNK steps at a time).

Measured here (two threads, 0.25 s pause before each block so that no idle OpenBLAS thread still spins,
one call over the batch -> windows): LSTM T 25, H 256: B 16 infer 5.98 -> 4.70 ms, train 16.1 -> 12.9;
B 64 infer 21.9 -> 14.6, train 68.3 -> 44.7; GRU B 16, H 256 train 12.3 -> 10.9; LSTM B 16, H 1024
infer 85.2 -> 71.0, train unchanged while each window packed its own 16 MB copy of W_hh^T (the layer now
packs one copy that every window reads, ``_window_panels``). Small passes lose:
GRU T 25, B 16, H 64 infer 0.47 -> 0.62 ms, LSTM 0.58 -> 0.71 (the threads' hand-off and BLAS limit cost
about 0.1 ms). In the benchmark's short blocks beside torch (``benchmarks/rnn_vs_torch.py``) passes under
about 10 ms lost more: with windows from 52 million multiply-adds on, RNN T 25, B 16, H 256 infer took
2.1 ms against 1.6 in one call, LSTM T 25, B 64, H 64 train 8.9 against 5.8, while passes from about
600 million on gained (LSTM T 100, B 16, H 256 train 60.7 -> 43.6 ms, GRU T 100, B 64, H 256 train
133 -> 99); hence ``MIN_WORK``. One cost found: arrays allocated per call, in each thread's own malloc
arena; after torch had run in the process two Elman windows (T 25, 8 rows, H 256, run side by side) took
0.72 and 1.0 ms, against 0.71 and 0.74 ms with glibc's mmap and trim thresholds fixed high
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``). A training pass's (T, b, .) arrays now come
from the layer's workspace (``_workspace``), the windows' too; the kernels' smaller temporaries and the
windows' weight-gradient partials are still allocated per call.

Only passes called from the main thread shard: once the main thread has set OpenBLAS's thread count
(``set_num_threads``, ``blas_threads``, threadpoolctl), OpenBLAS 0.3.30-0.3.31 ignore the setting when
another thread makes it, so ``serial_blas`` could not hold the windows' BLAS to one thread there
(measured: windows with two BLAS threads each were 24-84% slower, and their results depended on which
thread called). Layers called from other threads run one call over the batch, as before.

Passes of LSTM and GRU over more than MAX_ROWS rows and at least 100 steps split from 150 million
multiply-adds instead of 500 (``MIN_WORK_GATED_MANY_ROWS``; a training pass counts its backward, three
times the forward's work). Measured here for training, one call -> windows, medians of 16 alternations
with a 0.2 s pause before each block (how often the windows were faster): GRU T 100, B 64, H 64 25.4 ->
15.4 ms (15 of 16), again 27.0 -> 18.7 (10 of 16); GRU T 200, B 64, H 32 15.5 -> 12.2 (13); LSTM T 100,
B 48, H 64 17.5 -> 15.5 (12); LSTM T 200, B 44, H 32 18.2 -> 16.6 (11). At 64 steps they lost (GRU T 64,
B 48, H 64 11.0 -> 12.3 ms; LSTM T 64, B 64, H 48 13.8 -> 14.7), as did the Elman cell's (RNN T 100,
B 64, H 64 train 8.5 -> 9.7 ms: its gate math is one tanh per unit). Inference, the same way (medians of
12 or 16 alternations, H 64, T 100 unless given): passes from 150 million gained, LSTM B 64 (210 M) 0.62x,
0.71x (10 and 12 of 12 and 16), B 56 0.72x (14 of 16), B 128 0.63x (12 of 12), B 48 at T 150 0.66x (16 of
16), GRU B 64 (157 M) 0.67x, 0.73x, 0.75x, B 128 0.61x, B 48 at T 150 0.73x (15 of 16); below it they did
not (GRU B 48, 118 M, 1.14x, 0.96x, 1.01x; GRU B 56, 138 M, 1.11x; LSTM T 200, B 64, H 32, 105 M, 1.00x;
LSTM B 64, H 48, 118 M, 1.06x). LSTM B 48 at T 100, 157 M, was mixed (0.78x twice, 1.13x once). Passes
that split in both versions measured 0.90-1.02x: the noise of these medians.

A window is at least ``MIN_ROWS`` rows (the packed tile's lower bound) and at most ``MAX_ROWS`` (its
upper one). Results: a row's recurrence is computed the same way in a window as in the whole batch (the
packed tile's bits do not depend on the other rows), but OpenBLAS's input projection may round a row
differently among another number of rows (its edge kernels; float32 outputs differed by up to 7.6e-6
relative after 9 steps, float64 not at all, in ``tests/nn/test_shards.py``). The weight gradients are
sums over the rows: each window adds into buffers of its own, added to the layer's in window order
after all finish, so they depend on the window count (one more rounding per window) and on nothing else.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rnncore.kernels.packed import MAX_ROWS, MIN_ROWS
from rnncore.threads import serial_blas, shard_threads

MIN_WORK = 500_000_000  # multiply-adds of the pass: T * B * G * (I + H) for a forward, 3 times that to train
# A pass of more rows than the packed tile takes (MAX_ROWS) runs each step's product in two-thread OpenBLAS
# and its gate math on one thread in one call; as windows, both run on both cores. For the LSTM and GRU
# (gate math over 3H or 4H columns) over 100 steps or more that pays from less work, in training and in
# inference (``plan``; measurements in the module docstring).
MIN_WORK_GATED_MANY_ROWS = 150_000_000
MIN_STEPS_GATED_MANY_ROWS = 100


class Sharded:
    """What a sharded training forward keeps for its backward: the row bounds and each shard's saved."""

    def __init__(self, bounds, saved):
        self.bounds, self.saved = bounds, saved

    def joined(self):
        """The saved of one call over the whole batch: each kept (T or T+2, rows, .) array joined over the
        shards (a layer's saved is one such array or a tuple of them)."""
        if isinstance(self.saved[0], np.ndarray):
            return np.concatenate(self.saved, axis=1)
        return tuple(np.concatenate(parts, axis=1) for parts in zip(*self.saved, strict=True))


def plan(T, B, G, I, H, train):  # noqa: E741  (the project's dimension letters)
    """The row bounds [(lo, hi), ...] to split a (T, B) pass of gate width G over, or None for one call.
    ``train``: the pass is a training forward, whose backward (twice its work) is split the same way."""
    if threading.current_thread() is not threading.main_thread():
        return None  # only the main thread can hold OpenBLAS to one thread (``threads.serial_blas``)
    threads = shard_threads()
    work = T * B * G * (I + H) * (3 if train else 1)
    gated_many_rows = B > MAX_ROWS and G >= 3 * H and T >= MIN_STEPS_GATED_MANY_ROWS
    if threads < 2 or B < 2 * MIN_ROWS or work < (MIN_WORK_GATED_MANY_ROWS if gated_many_rows else MIN_WORK):
        return None
    per_thread = -(-B // (threads * MAX_ROWS))  # rounds of shards so that none exceeds MAX_ROWS
    n = min(threads * per_thread, B // MIN_ROWS)
    return [(B * k // n, B * (k + 1) // n) for k in range(n)]


_pool, _pool_size = None, 0
_pool_lock = threading.Lock()


def _executor(workers):
    """The pool of helper threads, grown to ``workers`` threads when it has fewer."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool_size < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rnncore-shard")
            _pool_size = workers
        return _pool


def _forget_pool_after_fork():
    """A forked child has none of the parent's threads: its first sharded pass starts a pool of its own."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def run_all(fn, bounds):
    """[fn(lo, hi) for each shard], the shards taken in turn by the calling thread and pool threads
    (shard_threads() in all); every shard has finished when it returns or raises."""
    n = len(bounds)
    results = [None] * n
    taken = iter(range(n))
    lock = threading.Lock()

    def drain():
        while True:
            with lock:
                k = next(taken, None)
            if k is None:
                return
            results[k] = fn(*bounds[k])

    helpers = min(shard_threads(), n) - 1
    pool = _executor(helpers) if helpers else None
    with serial_blas():
        futures = [pool.submit(drain) for _ in range(helpers)]
        try:
            drain()
        finally:
            errors = [f.exception() for f in futures]  # waits for every helper
        for e in errors:
            if e is not None:
                raise e
    return results


def forward(run, bounds, panels, out, finals, x, lengths, s0, w, reverse, col):
    """A layer's ``_run_train`` or ``_run_infer`` (``run``) on each window of rows; out (T, B, O) and
    x (T, B, I) are shared (each window writes its own rows of out), finals and s0 (lists of (B, .)
    states) are passed as row slices, panels (the layer's ``_window_panels``) to every window. Returns
    ``Sharded`` (the windows' saved; None each from ``_run_infer``)."""

    def shard(lo, hi):
        rows = slice(lo, hi)
        states0 = [s[rows] for s in s0]
        return run(out, [f[rows] for f in finals], x, lengths[rows], states0, w, reverse, col, lo, panels)

    return Sharded(bounds, run_all(shard, bounds))


def backward(run, panels, dx, d_s0, dw, g, g_finals, x, lengths, sharded, w, reverse, col):
    """A layer's ``_run_backward`` (``run``) on the windows of the forward that made ``sharded``.
    dx (T, B, I) (each window adds into its own rows), d_s0 (list of (B, .)) and dw (tuple of parameter
    gradients) are added into, as by the kernels; g (T, B, O); g_finals: list of (B, .); panels as in
    ``forward``."""

    def shard(k, lo, hi):
        dw_s = dw if k == 0 else tuple(np.zeros_like(a) for a in dw)
        run(dx, [d[lo:hi] for d in d_s0], dw_s, g, [gf[lo:hi] for gf in g_finals], x, lengths[lo:hi],
            sharded.saved[k], w, reverse, col, lo, panels)
        return dw_s

    grads = run_all(shard, [(k, lo, hi) for k, (lo, hi) in enumerate(sharded.bounds)])
    for dw_s in grads[1:]:
        for total, part in zip(dw, dw_s, strict=True):
            total += part
