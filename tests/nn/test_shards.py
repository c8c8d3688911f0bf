"""A layer's pass split over windows of the batch's rows (``rnncore.nn._shards``) computes what one call
over the whole batch computes; the plan, the BLAS limit, errors and fork behave.

The reference is the same layer with sharding off, whose kernels the parity, finite-difference and
symbolic suites check; here every pass is forced to shard (``MIN_WORK`` = 0, two threads)."""

import multiprocessing
import threading

import numpy as np
import pytest

import rnncore
from rnncore import threads
from rnncore.nn import _shards
from rnncore.nn._shards import MAX_ROWS, MIN_ROWS, Sharded, plan

CELLS = {
    "rnn": lambda **kw: rnncore.RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: rnncore.LSTM(**kw),
    "gru": lambda **kw: rnncore.GRU(**kw),
    "gru_reset_before": lambda **kw: rnncore.GRU(reset_after=False, **kw),
    "lstm_peephole_clip": lambda **kw: rnncore.LSTM(peephole=True, gate_clip=1.0, **kw),
    "lstm_projection": lambda **kw: rnncore.LSTM(proj_size=kw["hidden_size"] - 3, coupled_input_forget=True,
                                                 **kw),
    "lstm_layer_norm": lambda **kw: rnncore.LSTM(layer_norm=True, **kw),
    "gru_layer_norm": lambda **kw: rnncore.GRU(layer_norm=True, **kw),
}


@pytest.fixture
def sharding(monkeypatch):
    """A switch: sharding(True) forces every pass with 8 or more rows to shard over two threads."""

    def switch(on):
        monkeypatch.setattr(_shards, "MIN_WORK", 0 if on else 1 << 62)
        monkeypatch.setattr(_shards, "shard_threads", lambda: 2)

    return switch


def run_both(make, sharding, x, lengths, h0, grad_out):
    """(out, finals, dx, d_states0, param grads) with sharding off, then on, for one layer."""
    results = []
    for on in (False, True):
        sharding(on)
        m = make()
        out, finals = m(x, h0, lengths=lengths)
        dx, d0 = m.backward(grad_out)
        results.append((out, finals, dx, d0, {k: g.copy() for k, g in m.grads.items()}))
    return results


def as_list(states):
    return list(states) if isinstance(states, tuple) else [states]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_sharded_passes_match_one_call_over_the_batch(cell, dtype, sharding):
    T, B, I, H = 9, 13, 5, 7  # noqa: E741  (13 rows: windows of 6 and 7, uneven)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B)

    def make():
        return CELLS[cell](input_size=I, hidden_size=H, num_layers=2, bidirectional=True, dtype=dtype, seed=1)

    grad_out = rng.standard_normal((T, B, 2 * make()._out_size())).astype(dtype)

    one_call, sharded = run_both(make, sharding, x, lengths, None, grad_out)
    (out1, fin1, dx1, d01, g1), (out2, fin2, dx2, d02, g2) = one_call, sharded
    # rows never meet; only the BLAS input projection may round a row differently beside other rows
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out2, out1, rtol=rtol, atol=rtol * np.abs(out1).max())
    for a, b in zip(as_list(fin2), as_list(fin1), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())
    np.testing.assert_allclose(dx2, dx1, rtol=rtol, atol=rtol * np.abs(dx1).max())
    for a, b in zip(as_list(d02), as_list(d01), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())
    # the weight gradients are sums over rows: one more rounding per window
    assert g2.keys() == g1.keys()
    for name in g1:
        np.testing.assert_allclose(g2[name], g1[name], rtol=rtol, atol=rtol * np.abs(g1[name]).max(),
                                   err_msg=name)


def test_a_sharded_training_step_keeps_what_its_backward_needs(sharding):
    sharding(True)
    m = rnncore.LSTM(4, 6, seed=0)
    m(np.ones((3, 8, 4), dtype=np.float32))
    saved = m._cache["layers"][0]["saved"][0]
    assert isinstance(saved, Sharded)
    assert saved.bounds == [(0, 4), (4, 8)]
    hs, cs, gates = saved.joined()
    assert hs.shape == (5, 8, 6)
    assert cs.shape == (5, 8, 6)
    assert gates.shape == (3, 8, 24)


@pytest.mark.parametrize("make", [lambda: rnncore.LSTM(4, 6, recurrent_dropout=0.2, seed=0),
                                  lambda: rnncore.GRU(4, 6, zoneout=0.2, seed=0)])
def test_kernels_without_row_windows_run_whole_batches(make, sharding):
    sharding(True)
    m = make()
    m(np.ones((3, 8, 4), dtype=np.float32))
    assert not isinstance(m._cache["layers"][0]["saved"][0], Sharded)


def test_passes_called_from_other_threads_run_whole_batches(sharding):
    sharding(True)
    m = rnncore.LSTM(4, 6, seed=0)
    saved = []
    worker = threading.Thread(target=lambda: (m(np.ones((3, 8, 4), dtype=np.float32)),
                                              saved.append(m._cache["layers"][0]["saved"][0])))
    worker.start()
    worker.join()
    assert not isinstance(saved[0], Sharded)


def test_gate_saturation_reads_the_activations_of_a_sharded_forward(sharding):
    from rnncore.diagnostics.recurrent import gate_saturation

    x = np.random.default_rng(0).standard_normal((6, 12, 4)).astype(np.float64)
    rows = []
    for on in (False, True):
        sharding(on)
        rows.append(gate_saturation(rnncore.LSTM(4, 5, dtype=np.float64, seed=2), x))
    assert [r["gate"] for r in rows[1]] == [r["gate"] for r in rows[0]]
    for a, b in zip(rows[1], rows[0], strict=True):
        assert (a["count"], a["near_0"]) == (b["count"], b["near_0"])
        assert a["mean"] == pytest.approx(b["mean"], rel=1e-12)


@pytest.mark.parametrize("B", [8, 9, 16, 40, 64, 80, 81, 100, 1000])
@pytest.mark.parametrize("n_threads", [2, 3, 4])
def test_the_plan_covers_the_batch_in_windows_the_packed_tile_serves(B, n_threads, monkeypatch):
    monkeypatch.setattr(_shards, "shard_threads", lambda: n_threads)
    monkeypatch.setattr(_shards, "MIN_WORK", 0)
    bounds = plan(100, B, 1024, 256, 256, train=False)
    assert bounds is not None
    assert (bounds[0][0], bounds[-1][1]) == (0, B)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(bounds, bounds[1:], strict=False))
    assert all(MIN_ROWS <= hi - lo <= MAX_ROWS for lo, hi in bounds)
    if B // MIN_ROWS >= n_threads:
        assert len(bounds) % n_threads == 0  # every thread takes as many windows as the others


@pytest.mark.parametrize(("T", "B", "H", "n_threads"), [(100, 7, 256, 2),  # too few rows for two windows
                                                 (2, 16, 16, 2),  # too little work
                                                 (100, 64, 256, 1)])  # one thread
def test_no_plan_where_one_call_is_faster(T, B, H, n_threads, monkeypatch):
    monkeypatch.setattr(_shards, "shard_threads", lambda: n_threads)
    assert plan(T, B, 4 * H, H, H, train=True) is None


def test_training_counts_the_backward_in_the_work(monkeypatch):
    monkeypatch.setattr(_shards, "shard_threads", lambda: 2)
    T, B, H = 25, 16, 64  # LSTM: 13.1 M multiply-adds forward, 39 M with the backward
    work = T * B * 4 * H * 2 * H
    monkeypatch.setattr(_shards, "MIN_WORK", 2 * work)
    assert plan(T, B, 4 * H, H, H, train=False) is None
    assert plan(T, B, 4 * H, H, H, train=True) is not None


@pytest.mark.parametrize(("G", "T", "B", "train", "windows"), [
    (3 * 64, 100, 64, True, True),  # GRU T 100, B 64, H 64 training: 472 M multiply-adds
    (4 * 64, 100, 48, True, True),  # LSTM T 100, B 48, H 64 training: 472 M
    (3 * 64, 99, 64, True, False),  # fewer than 100 steps
    (3 * 64, 100, MAX_ROWS, True, False),  # rows the packed tile takes in one call
    (3 * 64, 100, 64, False, True),  # GRU T 100, B 64, H 64 inference: 157 M
    (3 * 64, 100, 56, False, False),  # GRU inference, 138 M: below MIN_WORK_GATED_MANY_ROWS
    (4 * 64, 100, 48, False, True),  # LSTM T 100, B 48, H 64 inference: 157 M
    (4 * 32, 200, 64, False, False),  # LSTM T 200, B 64, H 32 inference: 105 M
    (64, 300, 64, True, False),  # Elman: 472 M multiply-adds, gate math of one tanh per unit
    (3 * 64, 100, 15, True, False),  # training GRU, 111 M: below MIN_WORK_GATED_MANY_ROWS
])
def test_gated_passes_over_many_rows_split_from_less_work(G, T, B, train, windows, monkeypatch):
    monkeypatch.setattr(_shards, "shard_threads", lambda: 2)
    H = 64
    work = T * B * G * 2 * H * (3 if train else 1)
    assert work < _shards.MIN_WORK  # every case here is below the general threshold
    assert (plan(T, B, G, H, H, train=train) is not None) == windows


def test_shard_threads_follows_set_num_threads_and_blas_threads(monkeypatch):
    monkeypatch.setattr(threads, "_limit", 3)
    assert threads.shard_threads() == 3
    with threads.blas_threads(1):
        assert threads.shard_threads() == 1
        assert plan(100, 64, 1024, 256, 256, train=True) is None
    assert threads.shard_threads() == 3


def test_shard_threads_defaults_to_the_environment(monkeypatch):
    monkeypatch.setattr(threads, "_limit", None)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert threads.shard_threads() == 1
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert threads.shard_threads() >= 1


def test_serial_blas_holds_blas_to_one_thread_and_restores_it():
    before = rnncore.num_threads()
    with threads.serial_blas():
        assert set(rnncore.num_threads().values()) == {1}
        with threads.serial_blas():  # nested: the inner block leaves the limit in place
            pass
        assert set(rnncore.num_threads().values()) == {1}
    assert rnncore.num_threads() == before


def test_an_error_in_one_window_surfaces_after_every_window_finished(monkeypatch):
    monkeypatch.setattr(_shards, "shard_threads", lambda: 2)
    finished = []
    lock = threading.Lock()

    def work(lo, hi):
        if lo == 0:
            raise ValueError("window 0 failed")
        threading.Event().wait(0.05)
        with lock:
            finished.append(lo)
        return lo

    with pytest.raises(ValueError, match="window 0 failed"):
        _shards.run_all(work, [(0, 4), (4, 8), (8, 12), (12, 16)])
    assert sorted(finished) == [4, 8, 12]


def _sharded_forward_in_child(queue):
    x = np.ones((5, 16, 8), dtype=np.float32)
    _shards.MIN_WORK = 0
    out, _ = rnncore.GRU(8, 8, seed=0)(x)
    queue.put(float(out.sum()))


def test_a_forked_child_runs_sharded_passes(sharding):
    sharding(True)
    x = np.ones((5, 16, 8), dtype=np.float32)
    expected, _ = rnncore.GRU(8, 8, seed=0)(x)  # the parent's pool now has its threads
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_sharded_forward_in_child, args=(queue,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0, "the child hung or failed"
    assert queue.get(timeout=5) == float(expected.sum())


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_kernels_multiply_by_the_panels_the_layer_gives_them(cell):
    """The windows read the one copy of the panels the layer packed (``_window_panels``): given the panels
    of a W_hh with zeroed rows, a kernel computes what it computes for that W_hh, and for backward too."""
    T, B, H = 4, 6, 8
    layer = CELLS[cell](input_size=5, hidden_size=H, seed=1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, 5)).astype(np.float32)
    lengths = np.full(B, T, dtype=np.int64)
    widths = [layer._state_size(n) for n in layer.state_names]  # h: proj_size with a projection
    s0 = [rng.standard_normal((B, n)).astype(np.float32) for n in widths]
    w = layer._weights(0, 0)
    packed_rows = 2 * H if cell == "gru_reset_before" else w[1].shape[0]  # the rows _window_panels packs
    w_hh = w[1].copy()
    w_hh[:packed_rows] = 0.0
    zeroed = (w[0], w_hh) + tuple(w[2:])

    def forward(weights, panels):
        out = np.zeros((T, B, layer._out_size()), np.float32)
        finals = [np.zeros((B, n), np.float32) for n in widths]
        saved = layer._run_train(out, finals, x, lengths, s0, weights, False, 0, 0, panels)
        return out, saved

    out_given, saved = forward(w, layer._window_panels(zeroed, False))
    out_zeroed, _ = forward(zeroed, None)
    np.testing.assert_array_equal(out_given, out_zeroed)
    assert not np.array_equal(out_given, forward(w, None)[0])
    if cell in ("rnn", "lstm"):  # their backward uses W_hh only in the product by W_hh^T
        grads = []
        for weights, panels in ((w, layer._window_panels(zeroed, True)), (zeroed, None)):
            dx = np.zeros_like(x)
            d_s0 = [np.zeros((B, H), np.float32) for _ in layer.state_names]
            dw = tuple(np.zeros_like(a) for a in w[:4])
            g = np.ones((T, B, H), np.float32)
            layer._run_backward(dx, d_s0, dw, g, [np.zeros((B, H), np.float32) for _ in d_s0], x, lengths,
                                saved, weights, False, 0, 0, panels)
            grads.append((dx, d_s0, dw))
        np.testing.assert_array_equal(grads[0][0], grads[1][0])
        for a, b in zip(grads[0][1] + list(grads[0][2]), grads[1][1] + list(grads[1][2]), strict=True):
            np.testing.assert_array_equal(a, b)
