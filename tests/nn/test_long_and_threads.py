"""Long sequences in bounded memory, and inference from several Python threads at once.

Memory: under ``no_grad()`` the kernels project the inputs INFER_CHUNK steps at a time, so a forward
over T = 100,000 steps needs the input, the output and a workspace that does not grow with T. The
peak resident memory is measured in a subprocess (Linux: /proc/self/status VmHWM, reset through
/proc/self/clear_refs before each forward), with glibc's mmap threshold fixed so that freed arrays
go back to the system instead of hiding inside the heap.

Threads: the kernels release the GIL (``nogil=True``); a forward under ``no_grad()`` writes nothing
into the layer, so threads can share one layer for inference, and inference does not disturb a
training forward's pending backward.
"""

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import rnncore

ROOT = Path(__file__).resolve().parents[2]

CELLS = {
    "lstm": lambda **kw: rnncore.LSTM(**kw),
    "gru": lambda **kw: rnncore.GRU(**kw),
    "rnn": lambda **kw: rnncore.RNN(**kw),
}

MEMORY_PROBE = r"""
import gc, json, sys
import numpy as np
import rnncore

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)

I, H, B = 8, 32, 2
makers = {"lstm": rnncore.LSTM, "gru": rnncore.GRU, "rnn": rnncore.RNN}
result = {}
for name, cls in makers.items():
    m = cls(I, H, dtype=np.float32, seed=0)
    with rnncore.no_grad():
        m(np.zeros((70, B, I), dtype=np.float32))  # load the kernels, touch the workspaces once
        for T in (1_000, 100_000):
            gc.collect()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM (the peak) to the current resident size
            before = status("VmRSS")
            x = np.random.default_rng(0).standard_normal((T, B, I), dtype=np.float32)
            out, h_n = m(x)
            peak = status("VmHWM")
            assert out.shape == (T, B, H) and np.isfinite(out[-1]).all() and np.abs(out[-1]).max() > 0
            result[f"{name}/{T}"] = {"extra": peak - before, "arrays": x.nbytes + out.nbytes}
            del x, out, h_n
print(json.dumps(result))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak-memory reset needs Linux /proc")
def test_inference_memory_does_not_grow_with_sequence_length():
    """T = 1,000 and T = 100,000 (B=2, I=8, H=32, float32): the peak memory beyond the input and
    output arrays stays the same within 1 MiB for every cell."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MALLOC_MMAP_THRESHOLD_="65536", RNNCORE_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for name in CELLS:
        short, long = result[f"{name}/1000"], result[f"{name}/100000"]
        grown = long["extra"] - short["extra"]
        arrays = long["arrays"] - short["arrays"]  # 31.7 MB more input and output
        # The measurement sees the arrays (so it could see a workspace that grew with T) ...
        assert grown > 0.9 * arrays, (name, short, long)
        # ... and nothing else grows: what is beyond them is the same at T = 100,000 as at 1,000.
        assert long["extra"] - long["arrays"] < short["extra"] - short["arrays"] + 2**20, (name, short, long)


# -- threads ----------------------------------------------------------------------------------------------
def inputs(n, dtype, T=40, B=3, I=6, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((T, B, I)).astype(dtype), rng.integers(1, T + 1, size=B)) for _ in range(n)]


def infer(m, x, lengths):
    with rnncore.no_grad():  # no_grad is per thread: each worker enters it itself
        out, state = m(x, lengths=lengths)
    states = state if isinstance(state, tuple) else (state,)
    return out, [s.copy() for s in states]


@pytest.mark.parametrize(("batch", "hidden"), [(3, 16), (16, 128)])  # (16, 128): GEMMs OpenBLAS splits
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", list(CELLS))
def test_inference_from_four_threads_matches_one_thread(cell, dtype, batch, hidden):
    m = CELLS[cell](input_size=6, hidden_size=hidden, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    m.eval()
    data = inputs(12, dtype, B=3) if batch == 3 else inputs(4, dtype, T=8, B=batch)
    serial = [infer(m, x, lengths) for x, lengths in data]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda d: infer(m, *d), data))
    for (out_a, states_a), (out_b, states_b) in zip(serial, threaded):
        np.testing.assert_array_equal(out_b, out_a)
        for a, b in zip(states_a, states_b):
            np.testing.assert_array_equal(b, a)


def test_a_forward_under_no_grad_leaves_the_pending_backward_alone():
    m = rnncore.GRU(6, 5, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    (x, lengths), (y, y_lengths) = inputs(2, np.float64)
    g = np.random.default_rng(3).standard_normal((40, 3, 10))
    out, _ = m(x, lengths=lengths)
    dx_ref, dh_ref = m.backward(g)
    grads_ref = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()
    out, _ = m(x, lengths=lengths)
    with rnncore.no_grad():
        m(y[:7], lengths=np.minimum(y_lengths, 7))  # another shape, run between forward and backward
    dx, dh = m.backward(g)
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(dh, dh_ref)
    for k, v in m.grads.items():
        np.testing.assert_array_equal(v, grads_ref[k])
    with pytest.raises(RuntimeError, match="needs a forward pass"):
        m.backward(g)  # that forward has been used; the no_grad one cannot be backpropagated


def test_inference_threads_beside_a_training_thread():
    """One thread trains (forward + backward, 20 times) while three run inference on the same layer:
    the gradients and the inference outputs are those of the same work done one thing at a time."""
    m = rnncore.LSTM(6, 16, num_layers=2, dtype=np.float64, seed=4)
    m.eval()  # no dropout, so the training passes are repeatable too
    (x, lengths), *others = inputs(7, np.float64)
    g = np.random.default_rng(5).standard_normal((40, 3, 16))

    def train_once():
        out, _ = m(x, lengths=lengths)
        return m.backward(g)[0]

    m.zero_grad()
    dx_ref = [train_once() for _ in range(20)][0]
    grads_ref = {k: v.copy() for k, v in m.grads.items()}  # the sum of 20 backward passes
    infer_ref = [infer(m, *d)[0] for d in others]
    m.zero_grad()
    stop = threading.Event()

    def keep_inferring(d, ref):
        n = 0
        while not stop.is_set() or n == 0:
            np.testing.assert_array_equal(infer(m, *d)[0], ref)
            n += 1
        return n

    with ThreadPoolExecutor(max_workers=4) as pool:
        workers = [pool.submit(keep_inferring, d, ref) for d, ref in zip(others[:3], infer_ref)]
        trained = pool.submit(lambda: [train_once() for _ in range(20)])
        dxs = trained.result()
        stop.set()
        assert all(w.result() >= 1 for w in workers)
    for dx in dxs:
        np.testing.assert_array_equal(dx, dx_ref)
    for k, v in m.grads.items():
        np.testing.assert_array_equal(v, grads_ref[k])
