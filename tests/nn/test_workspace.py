"""Training steps reuse their arrays (``rnncore.nn._workspace``) and compute exactly what a fresh layer
computes: the reference for every step is a new layer with the same weights, whose kernels the parity,
finite-difference and symbolic suites check."""

import copy
import pickle

import numpy as np
import pytest

import rnncore
from rnncore.nn import _shards
from rnncore.nn._workspace import Workspace

CELLS = {
    "rnn": lambda **kw: rnncore.RNN(nonlinearity="tanh", **kw),
    "lstm": lambda **kw: rnncore.LSTM(**kw),
    "lstm_proj": lambda **kw: rnncore.LSTM(proj_size=3, **kw),
    "gru": lambda **kw: rnncore.GRU(**kw),
    "gru_reset_before": lambda **kw: rnncore.GRU(reset_after=False, **kw),
    "rnn_zoneout": lambda **kw: rnncore.RNN(zoneout=0.3, **kw),
    "lstm_zoneout": lambda **kw: rnncore.LSTM(zoneout=0.3, **kw),
    "gru_zoneout": lambda **kw: rnncore.GRU(zoneout=0.3, **kw),
    "lstm_peephole_clip": lambda **kw: rnncore.LSTM(peephole=True, gate_clip=1.0, **kw),
    "lstm_layer_norm": lambda **kw: rnncore.LSTM(layer_norm=True, **kw),
    "gru_layer_norm": lambda **kw: rnncore.GRU(layer_norm=True, **kw),
}
T, B, I, H = 7, 9, 4, 5  # noqa: E741  (the project's dimension letters)


def step(m, x, lengths, grad_out):
    """One training step's results: out, finals, dx, d_states0 and the parameter gradients."""
    m.zero_grad()
    out, finals = m(x, lengths=lengths)
    dx, d0 = m.backward(grad_out)
    return [out, finals, dx, d0, {k: g.copy() for k, g in m.grads.items()}]


def assert_same(got, want):
    if isinstance(got, dict):
        assert got.keys() == want.keys()
        for k in got:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    elif isinstance(got, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    else:
        np.testing.assert_array_equal(got, want)


def inputs(seed, dtype, padded):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if padded else np.full(B, T)
    return x, lengths, rng.standard_normal((T, B, 2 * H)).astype(dtype)


@pytest.mark.parametrize("windows", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_steps_with_reused_arrays_match_a_fresh_layer(cell, dtype, windows, monkeypatch):
    """Step 2 runs in the arrays step 1 left (their contents stale: other inputs, no padding) and must
    give a fresh layer's bits, padding rows included (the gate-gradient arrays must start at 0 again)."""
    if windows:  # every pass split over two row windows, each taking its arrays from its own thread
        monkeypatch.setattr(_shards, "MIN_WORK", 0)
        monkeypatch.setattr(_shards, "shard_threads", lambda: 2)
    make = lambda: CELLS[cell](input_size=I, hidden_size=H, bidirectional=True, dtype=dtype, seed=4)  # noqa: E731
    m = make()
    x, lengths, g = inputs(1, dtype, padded=False)
    out_width = m(x)[0].shape[2]  # 2 H, or 2 P with a projection
    m.backward(g[:, :, :out_width])
    step(m, x, lengths, g[:, :, :out_width])
    held = m._workspace.nbytes()
    assert held > 0
    x, lengths, g = inputs(2, dtype, padded=True)
    second = (x, lengths, g[:, :, :out_width])
    ref = make()
    for layer in (m, ref):  # the same masks for the regularised cells
        layer.reseed(11)
    assert_same(step(m, *second), step(ref, *second))
    assert m._workspace.nbytes() == held  # the same arrays again, none added


def saved_arrays(m):
    """The arrays the pending backward of a one-layer layer will read."""
    saved = m._cache["layers"][0]["saved"]
    return [a for entry in saved for a in (entry if isinstance(entry, tuple) else (entry,))]


def test_a_step_takes_the_arrays_the_previous_backward_released():
    m = rnncore.LSTM(I, H, seed=0)
    x, lengths, g = inputs(0, np.float32, padded=False)
    m(x)
    m.backward(g[:, :, :H])
    spare = {id(a) for arrays in m._workspace._spare.values() for a in arrays}
    m(x)
    assert {id(a) for a in saved_arrays(m)} <= spare


def test_a_forward_without_backward_never_shares_its_arrays():
    """Two training forwards in a row, then a backward: the backward is the second forward's, exact; the
    first forward's arrays (its cache may still be read, as by the gate diagnostics) are not reused."""
    x1, lengths, g = inputs(5, np.float64, padded=True)
    x2, _, _ = inputs(6, np.float64, padded=True)
    m = rnncore.GRU(I, H, dtype=np.float64, seed=1)
    step(m, x1, lengths, g[:, :, :H])  # the workspace now holds spare arrays
    m(x1, lengths=lengths)
    kept = [a.copy() for a in saved_arrays(m)]
    views = saved_arrays(m)
    m(x2, lengths=lengths)
    assert all(not np.shares_memory(a, b) for a in views for b in saved_arrays(m))
    m.zero_grad()
    got = [*m.backward(g[:, :, :H]), {k: v.copy() for k, v in m.grads.items()}]
    ref = rnncore.GRU(I, H, dtype=np.float64, seed=1)
    assert_same(got, step(ref, x2, lengths, g[:, :, :H])[2:])
    assert_same(views, kept)  # untouched by the later passes


@pytest.mark.parametrize("zoneout", [0.0, 0.3])  # 0.3: the masked kernels, in training mode
def test_inference_takes_nothing(zoneout):
    m = rnncore.RNN(I, H, zoneout=zoneout, seed=0)
    x, _, _ = inputs(0, np.float32, padded=False)
    with rnncore.no_grad():
        m(x)
    assert m._workspace.nbytes() == 0


def test_only_the_last_pass_is_kept_when_shapes_change():
    m = rnncore.LSTM(I, H, seed=0)
    for steps in (7, 3):
        x = np.ones((steps, B, I), np.float32)
        m(x)
        m.backward(np.ones((steps, B, H), np.float32))
    m(np.ones((3, B, I), np.float32))
    held = {a.shape for arrays in m._workspace._spare.values() for a in arrays}
    taken = {a.shape for a in m._workspace._taken}
    assert all(shape[0] in (3, 3 + 2) for shape in held | taken)


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_copies_start_with_an_empty_workspace(clone):
    m = rnncore.GRU(I, H, seed=0)
    x, _, g = inputs(0, np.float32, padded=False)
    m(x)
    m.backward(g[:, :, :H])
    assert m._workspace.nbytes() > 0
    c = clone(m)
    assert isinstance(c._workspace, Workspace)
    assert c._workspace.nbytes() == 0
    assert_same(step(c, x, None, g[:, :, :H]), step(m, x, None, g[:, :, :H]))


def test_free_workspaces_drops_the_arrays_and_keeps_a_pending_backward():
    x, lengths, g = inputs(3, np.float64, padded=True)
    model = rnncore.nn.Module(np.float64)
    lstm = model.add_module("lstm", rnncore.LSTM(I, H, dtype=np.float64, seed=2))
    step(lstm, x, lengths, g[:, :, :H])
    lstm(x, lengths=lengths)
    model.free_workspaces()
    assert lstm._workspace.nbytes() == 0
    got = [*lstm.backward(g[:, :, :H])]
    ref = rnncore.LSTM(I, H, dtype=np.float64, seed=2)
    ref(x, lengths=lengths)
    assert_same(got, [*ref.backward(g[:, :, :H])])


def test_an_array_given_back_serves_a_later_take_of_the_same_pass():
    """The Elman forward's pre-activations are dead once it returns: its backward's da takes their memory,
    so a training step holds no more at once than with fresh allocations."""
    m = rnncore.RNN(I, H, seed=0)
    x, _, g = inputs(0, np.float32, padded=False)
    m(x)
    m.backward(g[:, :, :H])
    held = m._workspace.nbytes()
    m(x)
    m.backward(g[:, :, :H])
    assert m._workspace.nbytes() == held == 4 * ((T + 2) * B * H + T * B * H)  # hs, then pre = da


def test_a_forward_that_fails_leaves_the_pending_backward_exact():
    """A training forward that writes its arrays and then fails (here its output overflows, which
    check_finite rejects) must not have written into the arrays of the forward still pending."""
    x, lengths, g = inputs(7, np.float32, padded=True)
    def make():
        layer = rnncore.RNN(I, H, nonlinearity="relu", check_finite=True, seed=3)
        layer.load_state_dict({k: 4 * v for k, v in layer.state_dict().items()})
        return layer

    m = make()
    step(m, x, lengths, g[:, :, :H])  # the workspace now holds spare arrays
    m.zero_grad()
    m(x, lengths=lengths)
    w_ih = m.state_dict()["weight_ih_l0"]
    unit = int(np.argmax(np.abs(w_ih).sum(axis=1)))
    assert np.abs(w_ih[unit]).sum() > 1.2  # so that 3e38 times it overflows float32 (max 3.4e38)
    with pytest.raises(ValueError, match="output"):
        m(np.broadcast_to(3e38 * np.sign(w_ih[unit]), x.shape).astype(np.float32), lengths=lengths)
    got = [*m.backward(g[:, :, :H]), {k: v.copy() for k, v in m.grads.items()}]
    assert_same(got, step(make(), x, lengths, g[:, :, :H])[2:])
