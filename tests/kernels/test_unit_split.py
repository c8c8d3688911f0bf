"""Inference of a few rows with the hidden units split over threads (``rnncore.kernels.unit_split``).

References: the one-thread inference kernels (``forward_infer``, BLAS products, checked by the parity,
finite-difference and symbolic suites) for the values; the same kernel run with other splits for the
bits; the layers' training path for the dispatch."""

import multiprocessing

import numba
import numpy as np
import pytest

import rnncore
from rnncore.kernels import elman, gru, lstm, packed
from rnncore.kernels._common import INFER_CHUNK
from rnncore.kernels.activations import NONLINEARITIES
from rnncore.nn import _shards

CELLS = ["tanh", "relu", "sigmoid", "lstm", "gru"]


def _weights(cell, I, H, dtype, rng):  # noqa: E741
    G = {"lstm": 4, "gru": 3}.get(cell, 1) * H
    w_ih = rng.standard_normal((G, I)) / np.sqrt(I)
    w_hh = rng.standard_normal((G, H)) / np.sqrt(H)
    return [a.astype(dtype) for a in (w_ih, w_hh, 0.3 * rng.standard_normal(G), 0.3 * rng.standard_normal(G))]


def _run(cell, x, lengths, s0, w, reverse, parts):
    """(out, finals) of the split kernel (parts >= 1) or of the one-thread kernel (parts = 0)."""
    T, B, _ = x.shape
    H = w[1].shape[1]
    col = 3  # a direction's columns inside a wider output
    out = np.full((T, B, H + 5), np.nan, dtype=x.dtype)
    finals = [np.full((B, H), np.nan, dtype=x.dtype) for _ in s0]
    nop = packed.no_panels(x.dtype)
    if cell == "lstm":
        if parts:
            lstm.forward_infer_units(out, *finals, x, lengths, *s0, *w, reverse, col, parts)
        else:
            lstm.forward_infer(out, *finals, x, lengths, *s0, *w, reverse, col, 0, nop)
    elif cell == "gru":
        if parts:
            gru.forward_infer_units(out, finals[0], x, lengths, s0[0], *w, reverse, col, parts)
        else:
            gru.forward_infer(out, finals[0], x, lengths, s0[0], *w, True, reverse, col, 0, nop)
    else:
        act = NONLINEARITIES[cell]
        if parts:
            elman.forward_infer_units(out, finals[0], x, lengths, s0[0], *w, act, reverse, col, parts)
        else:
            elman.forward_infer(out, finals[0], x, lengths, s0[0], *w, act, reverse, col, 0, nop)
    assert np.all(np.isnan(out[:, :, :col]))  # the other columns are left as they were
    assert np.all(np.isnan(out[:, :, col + H :]))
    return out[:, :, col : col + H], finals


def _case(cell, B, dtype, seed=0, H=37, T=INFER_CHUNK + 9):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, 11)).astype(dtype)
    lengths = np.array([T, 7, INFER_CHUNK + 1][:B], dtype=np.int64)
    s0 = [rng.standard_normal((B, H)).astype(dtype) for _ in range(2 if cell == "lstm" else 1)]
    return x, lengths, s0, _weights(cell, 11, H, dtype, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B", [1, 2, 3])
def test_split_kernels_agree_with_the_one_thread_kernels(cell, B, dtype):
    """Both directions, unequal lengths, T across two projection blocks, H = 37 (parts of 18 and 19
    units, gate rows not a multiple of 4): the values of ``forward_infer``; padding steps give 0 and
    carry the state; every split gives the same bits."""
    numba.set_num_threads(2)
    x, lengths, s0, w = _case(cell, B, dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for reverse in (False, True):
        ref_out, ref_finals = _run(cell, x, lengths, s0, w, reverse, 0)
        out, finals = _run(cell, x, lengths, s0, w, reverse, 2)
        np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
        for a, b in zip(finals, ref_finals, strict=True):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        for b in range(B):
            assert np.all(out[lengths[b] :, b] == 0)
        for parts in (1, 3, 5):
            other_out, other_finals = _run(cell, x, lengths, s0, w, reverse, parts)
            np.testing.assert_array_equal(other_out, out)
            for a, b in zip(other_finals, finals, strict=True):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_parts_that_cannot_run_together_finish_alone(cell):
    """With one Numba thread the parts of a call run one after another: the first one waits its start
    time, takes every unit and the others do nothing; no wait for a step that never comes."""
    x, lengths, s0, w = _case(cell, 2, np.float64, seed=1)
    expected = _run(cell, x, lengths, s0, w, False, 2)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        out, finals = _run(cell, x, lengths, s0, w, False, 2)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(out, expected[0])
    for a, b in zip(finals, expected[1], strict=True):
        np.testing.assert_array_equal(a, b)


LAYERS = {
    "rnn": lambda **kw: rnncore.RNN(nonlinearity="tanh", **kw),
    "lstm": lambda **kw: rnncore.LSTM(**kw),
    "gru": lambda **kw: rnncore.GRU(**kw),
}


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(_shards, "shard_threads", lambda: 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_layers_split_small_batches_in_inference(cell, dtype, two_threads, monkeypatch):
    """A 2-layer bidirectional layer at B = 1 and 3 with unequal lengths: inference runs the split kernels
    (counted) and gives the training forward's outputs and final states."""
    calls = []
    run_units = _shards.run_units
    monkeypatch.setattr(_shards, "run_units", lambda kernel, parts, *a: calls.append(parts) or
                        run_units(kernel, parts, *a))
    layer = LAYERS[cell](input_size=9, hidden_size=128, num_layers=2, bidirectional=True, dtype=dtype, seed=2)
    rng = np.random.default_rng(3)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for B, lengths in ((1, None), (3, [30, 4, 17])):
        x = rng.standard_normal((30, B, 9)).astype(dtype)
        out_train, s_train = layer(x, lengths=lengths)
        calls.clear()
        with rnncore.no_grad():
            out_infer, s_infer = layer(x, lengths=lengths)
        assert calls == [2] * 4  # two layers, two directions
        np.testing.assert_allclose(out_infer, out_train, rtol=tol, atol=tol)
        for a, b in zip(s_infer if isinstance(s_infer, tuple) else [s_infer],
                        s_train if isinstance(s_train, tuple) else [s_train], strict=True):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_which_passes_split(two_threads, monkeypatch):
    """Only inference passes of fewer than MIN_ROWS rows with enough recurrent weights and units split,
    only from the main thread, and never in a forked child of a process whose OpenMP threads started."""
    assert _shards.unit_parts(1, 256, 256) == 2
    assert _shards.unit_parts(3, 1024, 256) == 2
    assert _shards.unit_parts(_shards.MIN_ROWS, 1024, 256) == 0
    assert _shards.unit_parts(1, 64, 64) == 0  # Elman H 64: one thread was faster
    assert _shards.unit_parts(1, 3 * 40, 40) == 0  # 20 units a thread
    result = []
    import threading

    t = threading.Thread(target=lambda: result.append(_shards.unit_parts(1, 256, 256)))
    t.start()
    t.join()
    assert result == [0]
    pid = _shards.os.getpid()
    monkeypatch.setattr(_shards.os, "getpid", lambda: pid + 1)
    assert _shards.unit_parts(1, 256, 256) == 0
    layer = rnncore.GRU(8, 128, seed=0)  # no split: the one-thread kernel
    with rnncore.no_grad():
        assert layer(np.ones((5, 1, 8), dtype=np.float32))[0].shape == (5, 1, 128)


def _infer_in_child(queue):
    layer = rnncore.LSTM(8, 128, seed=0)
    with rnncore.no_grad():
        out, _ = layer(np.ones((6, 1, 8), dtype=np.float32))
    queue.put(float(out.sum()))


def test_a_forked_child_infers_after_the_parent_split(two_threads):
    """GNU OpenMP does not survive fork(): a child of a process that ran split passes must infer without
    them (with them, Numba stops the child)."""
    layer = rnncore.LSTM(8, 128, seed=0)
    with rnncore.no_grad():
        expected, _ = layer(np.ones((6, 1, 8), dtype=np.float32))
    assert _shards.numba_threads_ready()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_infer_in_child, args=(queue,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0, "the child hung or failed"
    np.testing.assert_allclose(queue.get(timeout=5), float(expected.sum()), rtol=1e-5)
