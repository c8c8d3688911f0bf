"""Right padding, left padding and each sequence run alone give the same outputs and gradients.

For every cell (Elman, LSTM, GRU in both reset placements), one layer and a 2-layer bidirectional
stack, float64 and float32: a batch of sequences of different lengths is run (1) right-padded with
``lengths``, (2) left-padded with ``padding_side="left"``, and (3) one sequence at a time at its
own length with no padding at all (what a packed sequence means). Padding positions hold random
values in x and in grad_out, which must not leak. Compared: out at the valid positions (and zeros
at the padding), h_n / c_n, dx, dh0 / dc0 and every parameter gradient; relative error
max|a - b| / max|b| within 1e-12 (float64) and 1e-5 (float32). Left and right padding are also
equal to each other bit for bit (the same kernels on the same numbers).
"""

import numpy as np
import pytest

import rnncore
from rnncore.nn._padding import roll_padding

TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}
CELLS = [("rnn", {}), ("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False})]
STRUCTURES = [{"num_layers": 1, "bidirectional": False}, {"num_layers": 2, "bidirectional": True}]
LENGTHS = [5, 2, 6, 1]
T, I, H = 7, 3, 4  # T beyond the longest length: every sequence has padding


def make_layer(cell, options, structure, dtype, batch_first=False):
    cls = {"rnn": rnncore.RNN, "lstm": rnncore.LSTM, "gru": rnncore.GRU}[cell]
    return cls(I, H, **options, **structure, batch_first=batch_first, dtype=dtype, seed=3)


def rel_err(a, b):
    return float(np.max(np.abs(a - b), initial=0.0)) / max(float(np.max(np.abs(b), initial=0.0)), 1e-300)


def draw(layer, rng):
    """Sequences, initial states and upstream gradients of one random problem."""
    dtype = layer.dtype
    D, L = layer.num_directions, layer.num_layers
    B = len(LENGTHS)
    n_states = len(layer.state_names)
    return {
        "seqs": [rng.standard_normal((n, I)).astype(dtype) for n in LENGTHS],
        "grad_seqs": [rng.standard_normal((n, D * H)).astype(dtype) for n in LENGTHS],
        "h0": [rng.standard_normal((D * L, B, H)).astype(dtype) for _ in range(n_states)],
        "grad_final": [rng.standard_normal((D * L, B, H)).astype(dtype) for _ in range(n_states)],
    }


def pack(states):
    return states[0] if len(states) == 1 else tuple(states)


def unpack(state):
    return list(state) if isinstance(state, tuple) else [state]


def run_alone(layer, p):
    """Each sequence on its own (B = 1, T = its length, no lengths): the reference."""
    result = {"out": [], "final": [], "dx": [], "dh0": []}
    grads = {k: np.zeros_like(v) for k, v in layer.grads.items()}
    for b, (seq, g) in enumerate(zip(p["seqs"], p["grad_seqs"])):
        layer.zero_grad()
        out, state = layer(seq[:, None, :], pack([h[:, b:b + 1] for h in p["h0"]]))
        dx, dstate = layer.backward(g[:, None, :], pack([gf[:, b:b + 1] for gf in p["grad_final"]]))
        result["out"].append(out[:, 0])
        result["final"].append([s[:, 0] for s in unpack(state)])
        result["dx"].append(dx[:, 0])
        result["dh0"].append([s[:, 0] for s in unpack(dstate)])
        for k, v in layer.grads.items():
            grads[k] += v
    result["grads"] = grads
    return result


def padded(p, side, dtype, rng):
    """x (T, B, I) and grad_out (T, B, D*H) with the sequences on ``side`` and noise in the padding."""
    B = len(LENGTHS)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    g = rng.standard_normal((T, B, p["grad_seqs"][0].shape[1])).astype(dtype)
    for b, n in enumerate(LENGTHS):
        span = slice(0, n) if side == "right" else slice(T - n, T)
        x[span, b] = p["seqs"][b]
        g[span, b] = p["grad_seqs"][b]
    return x, g


def valid(side, n):
    return slice(0, n) if side == "right" else slice(T - n, T)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("structure", STRUCTURES, ids=["single", "stacked_bidir"])
@pytest.mark.parametrize(("cell", "options"), CELLS, ids=["rnn", "lstm", "gru", "gru_reset_before"])
def test_right_left_and_alone_agree(cell, options, structure, dtype):
    rng = np.random.default_rng(11)
    layer = make_layer(cell, options, structure, dtype)
    p = draw(layer, rng)
    ref = run_alone(layer, p)
    tol = TOLERANCE[dtype]
    runs = {}
    for side in ("right", "left"):
        x, g = padded(p, side, dtype, rng)
        layer.zero_grad()
        out, state = layer(x, pack(p["h0"]), LENGTHS, padding_side=side)
        dx, dstate = layer.backward(g, pack(p["grad_final"]))
        finals, dh0 = unpack(state), unpack(dstate)
        for b, n in enumerate(LENGTHS):
            span = valid(side, n)
            assert rel_err(out[span, b], ref["out"][b]) <= tol, (side, "out", b)
            assert rel_err(dx[span, b], ref["dx"][b]) <= tol, (side, "dx", b)
            pad = np.ones(T, bool)
            pad[span] = False
            assert not out[pad, b].any() and not dx[pad, b].any(), (side, "padding not zero", b)
            for k in range(len(finals)):
                assert rel_err(finals[k][:, b], ref["final"][b][k]) <= tol, (side, layer.state_names[k], b)
                assert rel_err(dh0[k][:, b], ref["dh0"][b][k]) <= tol, (side, "d" + layer.state_names[k], b)
        for name, grad in layer.grads.items():
            assert rel_err(grad, ref["grads"][name]) <= tol, (side, name)
        runs[side] = [out[valid(side, n), b] for b, n in enumerate(LENGTHS)] + \
            [dx[valid(side, n), b] for b, n in enumerate(LENGTHS)] + finals + dh0 + \
            [v.copy() for v in layer.grads.values()]
        with rnncore.no_grad():  # the inference kernels
            out_i, state_i = layer(x, pack(p["h0"]), LENGTHS, padding_side=side)
        np.testing.assert_array_equal(out_i == 0, out == 0)
        assert rel_err(out_i, out) <= tol
        for a, b in zip(unpack(state_i), finals):
            assert rel_err(a, b) <= tol
    for a, b in zip(runs["left"], runs["right"], strict=True):  # the same arithmetic, bit for bit
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_left_padding_batch_first_and_full_lengths(cell):
    """batch_first=True left padding equals time-major left padding; with every length T, left,
    right and no lengths at all are the same run."""
    rng = np.random.default_rng(5)
    structure = {"num_layers": 2, "bidirectional": True}
    tm = make_layer(cell, {}, structure, np.float64)
    bf = make_layer(cell, {}, structure, np.float64, batch_first=True)
    p = draw(tm, rng)
    x, g = padded(p, "left", np.float64, rng)
    out, state = tm(x, pack(p["h0"]), LENGTHS, padding_side="left")
    dx, _ = tm.backward(g, pack(p["grad_final"]))
    out_bf, state_bf = bf(x.transpose(1, 0, 2), pack(p["h0"]), LENGTHS, padding_side="left")
    dx_bf, _ = bf.backward(g.transpose(1, 0, 2), pack(p["grad_final"]))
    np.testing.assert_array_equal(out_bf.transpose(1, 0, 2), out)
    np.testing.assert_array_equal(dx_bf.transpose(1, 0, 2), dx)
    for a, b in zip(unpack(state_bf), unpack(state)):
        np.testing.assert_array_equal(a, b)
    full = [T] * len(LENGTHS)
    runs = []
    for lengths, side in ((None, "right"), (full, "right"), (full, "left"), (None, "left")):
        tm.zero_grad()
        out, state = tm(x, pack(p["h0"]), lengths, padding_side=side)
        dx, dh0 = tm.backward(g, pack(p["grad_final"]))
        runs.append([out, *unpack(state), dx, *unpack(dh0), *[v.copy() for v in tm.grads.values()]])
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)


def test_roll_padding_round_trip_and_bad_input():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 3, 2))
    lengths = [5, 1, 3]
    right = roll_padding(a, lengths, 0, to_right=True)
    np.testing.assert_array_equal(right[:1, 1], a[4:, 1])
    np.testing.assert_array_equal(right[:3, 2], a[2:, 2])
    np.testing.assert_array_equal(roll_padding(right, lengths, 0, to_right=False), a)
    np.testing.assert_array_equal(roll_padding(a.transpose(1, 0, 2), lengths, 1, True),
                                  right.transpose(1, 0, 2))
    layer = rnncore.GRU(2, 3)
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'top'"):
        layer(a.astype(np.float32), lengths=lengths, padding_side="top")
    with pytest.raises(ValueError, match="padding_side='left' applies to batched 3-D x"):
        layer(a[:, 0].astype(np.float32), lengths=[5], padding_side="left")
    with pytest.raises(ValueError, match=r"lengths must lie in 1..T = 1..5"):
        layer(a.astype(np.float32), lengths=[6, 1, 3], padding_side="left")
    layer(a.astype(np.float32), lengths=lengths, padding_side="left")
    with pytest.raises(ValueError, match=r"grad_out must have shape \(5, 3, 3\), got \(4, 3, 3\)"):
        layer.backward(np.zeros((4, 3, 3), np.float32))


def test_left_padding_check_finite_reports_the_callers_index():
    layer = rnncore.LSTM(2, 3, check_finite=True, batch_first=True)
    x = np.zeros((3, 5, 2), np.float32)
    x[1, 4, 0] = np.nan  # the last (valid) step of a sequence of length 2
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(first at index \(1, 4, 0\)\)"):
        layer(x, lengths=[5, 2, 1], padding_side="left")
    out, _ = layer(np.zeros_like(x), lengths=[5, 2, 1], padding_side="left")
    g = np.zeros_like(out)
    g[2, 3, 1] = np.inf
    with pytest.raises(ValueError, match=r"grad_out contains NaN or Inf \(first at index \(2, 3, 1\)\)"):
        layer.backward(g)


def test_no_grad_forward_between_forward_and_backward_keeps_the_padding_side():
    """A left-padded training forward, then a no_grad() forward with other lengths, then backward:
    where the no_grad() forward leaves the pending backward alone, that backward still reads
    grad_out in the left-padded layout of its own forward."""
    rng = np.random.default_rng(8)
    layer = rnncore.GRU(I, H, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((T, len(LENGTHS), I))
    g = rng.standard_normal((T, len(LENGTHS), 2 * H))
    layer(x, None, LENGTHS, padding_side="left")
    dx_ref, dh_ref = layer.backward(g)
    layer(x, None, LENGTHS, padding_side="left")
    with rnncore.no_grad():
        layer(x, None, [1] * len(LENGTHS), padding_side="left")
    try:
        dx, dh = layer.backward(g)
    except RuntimeError as exc:  # where a no_grad() forward drops the pending backward, nothing to check
        assert "needs a forward pass" in str(exc)
        return
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(dh, dh_ref)
