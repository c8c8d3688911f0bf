"""Regularisers of RNN, LSTM and GRU: variational input and recurrent dropout, zoneout, weight-drop.

Gradients against central differences with the masks held fixed (the mask seed restarted before
every forward); the masks' structure and keep rates read back through the layers' outputs on
networks built so that each output exposes a mask; eval mode; rates of 0; seeding.
"""

import numpy as np
import pytest

import rnncore
import rnncore.nn.recurrent as recurrent_module
from rnncore.gradcheck import check_recurrent
from rnncore.nn.module import no_grad
from rnncore.nn.regularisers import StepMasks

CELLS = {
    "rnn_tanh": (rnncore.RNN, {}),
    "lstm": (rnncore.LSTM, {}),
    "gru": (rnncore.GRU, {}),
    "gru_reset_before": (rnncore.GRU, {"reset_after": False}),
}
P = 0.4
REGULARISERS = {
    "input_dropout": {"input_dropout": P},
    "recurrent_dropout": {"recurrent_dropout": P},
    "zoneout": {"zoneout": P},
    "zoneout_cell": {"zoneout_cell": P},
    "weight_drop": {"weight_drop": P},
    "all": {"dropout": 0.3, "input_dropout": 0.3, "recurrent_dropout": 0.3, "zoneout": 0.3,
            "weight_drop": 0.3},
    "all_lstm": {"dropout": 0.3, "input_dropout": 0.3, "recurrent_dropout": 0.3, "zoneout": 0.3,
                 "zoneout_cell": 0.5, "weight_drop": 0.3},
}
SINGLE = ["input_dropout", "recurrent_dropout", "zoneout", "weight_drop"]
CASES = [(c, r) for c in CELLS for r in SINGLE + (["zoneout_cell", "all_lstm"] if c == "lstm" else ["all"])]


def _make(cell, rates, T=4, B=3, I=2, H=3, L=2, bidirectional=True, seed=0, dtype=np.float64):  # noqa: E741
    cls, options = CELLS[cell]
    layer = cls(I, H, num_layers=L, bidirectional=bidirectional, dtype=dtype, seed=seed, **options, **rates)
    rng = np.random.default_rng(seed + 1)
    D = 2 if bidirectional else 1
    x = rng.standard_normal((T, B, I)).astype(dtype)
    states = [rng.standard_normal((D * L, B, H)).astype(dtype) for _ in layer.state_names]
    return layer, x, states[0] if len(states) == 1 else tuple(states)


def _assert_pass(results):
    failures = [str(r) for r in results if not r.passed]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("cell", "reg"), CASES)
def test_gradients_with_fixed_masks(cell, reg):
    """Stacked, bidirectional, unequal lengths, h0 (and c0): every gradient in training mode."""
    layer, x, hx = _make(cell, REGULARISERS[reg])
    _assert_pass(check_recurrent(layer, x, hx, [4, 2, 1], seed=1, mask_seed=7))
    assert layer.last_masks(), "no mask was drawn"


@pytest.mark.parametrize("cell", list(CELLS))
def test_eval_mode_gradients_with_zoneout_expectation(cell):
    rates = {"zoneout": 0.3, **({"zoneout_cell": 0.6} if cell == "lstm" else {})}
    layer, x, hx = _make(cell, rates, L=1)
    layer.eval()
    _assert_pass(check_recurrent(layer, x, hx, [4, 1, 3], seed=2))


def test_gradcheck_needs_fixed_masks_in_training_mode():
    layer, x, hx = _make("gru", {"zoneout": 0.2})
    with pytest.raises(ValueError, match="mask_seed"):
        check_recurrent(layer, x, hx)


# -- the masks, read back through the outputs -------------------------------------------------------
def _probe(H, w_ih, w_hh, **rates):
    """An identity Elman RNN with given weights and no biases (I = H)."""
    layer = rnncore.RNN(H, H, nonlinearity="identity", bias=False, dtype=np.float64, seed=3, **rates)
    layer.load_state_dict({"weight_ih_l0": w_ih, "weight_hh_l0": w_hh})
    return layer


def _keep_rate_close(fraction, p, n):
    """Within 5 standard deviations of a binomial proportion."""
    assert abs(fraction - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-12, (fraction, p, n)


def test_input_dropout_mask_is_the_same_at_every_step():
    T, B, H = 6, 200, 25
    layer = _probe(H, np.eye(H), np.zeros((H, H)), input_dropout=P)
    out, _ = layer(np.ones((T, B, H)))  # out_t = m * x_t = m
    assert np.array_equal(out, np.broadcast_to(out[0], out.shape))
    assert set(np.unique(out)) == {0.0, 1.0 / (1 - P)}
    _keep_rate_close(np.mean(out[0] == 0), P, B * H)
    assert not np.array_equal(out[0, 0], out[0, 1])  # one mask per sequence
    np.testing.assert_array_equal(layer.last_masks()["input_l0"], out[0])


def test_recurrent_dropout_mask_is_the_same_at_every_step():
    T, B, H = 5, 200, 25
    layer = _probe(H, np.eye(H), np.eye(H), recurrent_dropout=P)
    out, _ = layer(np.ones((T, B, H)), np.ones((1, B, H)))  # h_t = 1 + m * h_{t-1}
    prev = np.concatenate([np.ones((1, B, H)), out[:-1]])
    masks = (out - 1.0) / prev
    np.testing.assert_allclose(masks, np.broadcast_to(masks[0], masks.shape), rtol=0, atol=1e-12)
    _keep_rate_close(np.mean(masks[0] == 0), P, B * H)
    np.testing.assert_allclose(masks[0][masks[0] != 0], 1.0 / (1 - P), rtol=1e-14)
    np.testing.assert_array_equal(layer.last_masks()["recurrent_l0"] == 0, masks[0] == 0)


def test_zoneout_masks_are_fresh_at_every_step():
    T, B, H = 6, 200, 25
    layer = _probe(H, np.eye(H), np.zeros((H, H)), zoneout=P)
    x = np.broadcast_to(np.arange(1.0, T + 1)[:, None, None], (T, B, H)).copy()
    out, _ = layer(x)  # h~_t = x_t = t + 1: h_t keeps h_{t-1} exactly where z_t = 1
    prev = np.concatenate([np.zeros((1, B, H)), out[:-1]])
    kept = out == prev
    assert np.all(kept | (out == x))
    for t in range(T):
        _keep_rate_close(kept[t].mean(), P, B * H)
    # independent across steps: P(kept at t and t+1) = p^2, not p
    _keep_rate_close(np.mean(kept[1:] & kept[:-1]), P * P, (T - 1) * B * H)
    np.testing.assert_array_equal(layer.last_masks()["zoneout_h_l0"], kept)


def test_lstm_cell_zoneout_is_fresh_at_every_step():
    """c_n = c0 exactly when every step zoned out: p^T with fresh masks (p if one mask were reused)."""
    B, H, p = 400, 25, 0.5
    for T in (1, 3):
        layer = rnncore.LSTM(2, H, dtype=np.float64, seed=4, zoneout_cell=p)
        c0 = np.random.default_rng(0).standard_normal((1, B, H))
        _, (_, c_n) = layer(np.random.default_rng(1).standard_normal((T, B, 2)), (np.zeros_like(c0), c0))
        _keep_rate_close(np.mean(c_n == c0), p ** T, B * H)


def test_weight_drop_is_one_mask_for_every_step_and_sequence():
    H = B = 40
    layer = _probe(H, np.zeros((H, H)), np.ones((H, H)), weight_drop=P)
    out, _ = layer(np.zeros((2, B, H)), np.eye(H)[None])  # h0 = e_b: h_1[b] = column b of W * M
    dropped = out[0].T
    assert set(np.unique(dropped)) == {0.0, 1.0 / (1 - P)}
    _keep_rate_close(np.mean(dropped == 0), P, H * H)
    np.testing.assert_allclose(out[1].T, dropped @ dropped, rtol=1e-14)  # the same mask at step 2
    np.testing.assert_array_equal(layer.last_masks()["weight_hh_l0"], dropped)
    assert np.array_equal(layer.state_dict()["weight_hh_l0"], np.ones((H, H)))  # the raw weight stays


@pytest.mark.parametrize("cell", list(CELLS))
def test_mask_shapes_of_every_cell(cell):
    rates = REGULARISERS["all_lstm" if cell == "lstm" else "all"]
    layer, x, hx = _make(cell, rates, T=5, B=3, I=2, H=4)
    layer(x, hx)
    masks = layer.last_masks()
    G = layer.gate_rows * 4
    expected = {"dropout_l1": (5, 3, 8), "input_l0": (3, 2), "input_l1": (3, 8)}
    for key in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        expected.update({f"weight_hh{key}": (G, 4), f"recurrent{key}": (3, 4),
                         **{f"zoneout_{n}{key}": (5, 3, 4) for n in layer.state_names}})
    assert {k: v.shape for k, v in masks.items()} == expected
    assert not np.array_equal(masks["recurrent_l0"], masks["recurrent_l0_reverse"])  # one per direction


# -- eval mode, rates of 0, seeds -------------------------------------------------------------------
@pytest.mark.parametrize("cell", list(CELLS))
def test_eval_mode_is_deterministic_and_draws_nothing(cell):
    rates = REGULARISERS["all_lstm" if cell == "lstm" else "all"]
    layer, x, hx = _make(cell, rates)
    plain, _, _ = _make(cell, {})
    plain.load_state_dict(layer.state_dict())
    layer.eval()
    plain.eval()
    state = layer._rng.bit_generator.state
    first, _ = layer(x, hx, [4, 2, 1])
    with no_grad():
        second, _ = layer(x, hx, [4, 2, 1])
    assert np.array_equal(first, second)
    assert layer._rng.bit_generator.state == state
    assert set(layer.last_masks()) == {k for k in layer.last_masks() if k.startswith("zoneout_")}
    assert all(np.all(m == getattr(layer, "zoneout_cell" if "_c_" in k else "zoneout"))
               for k, m in layer.last_masks().items())
    # without zoneout, eval mode is the plain layer, bit for bit
    dropout_only = {k: v for k, v in rates.items() if not k.startswith("zoneout")}
    layer2, _, _ = _make(cell, dropout_only)
    layer2.load_state_dict(layer.state_dict())
    layer2.eval()
    assert np.array_equal(layer2(x, hx, [4, 2, 1])[0], plain(x, hx, [4, 2, 1])[0])


@pytest.mark.parametrize("cell", list(CELLS))
def test_eval_zoneout_is_its_expectation_step_by_step(cell):
    """The sequence kernels in eval mode against one step() call per step, which mixes
    h = p h_prev + (1 - p) h~ in Python."""
    rates = {"zoneout": 0.3, **({"zoneout_cell": 0.6} if cell == "lstm" else {})}
    layer, x, hx = _make(cell, rates, bidirectional=False)
    layer.eval()
    out, final = layer(x, hx)
    state = hx
    for t in range(x.shape[0]):
        y, state = layer.step(x[t], state)
        np.testing.assert_allclose(y, out[t], rtol=1e-13, atol=1e-15)
    for a, b in zip(*((s,) if isinstance(s, np.ndarray) else s for s in (final, state)), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-15)
    plain, _, _ = _make(cell, {}, bidirectional=False)
    plain.load_state_dict(layer.state_dict())
    assert not np.allclose(plain(x, hx)[0], out)


@pytest.mark.parametrize("cell", list(CELLS))
def test_rates_of_zero_are_the_plain_layer_bit_for_bit(cell):
    """Same seed, training mode, dropout between layers: the same outputs, gradients and draws."""
    zero = {"input_dropout": 0.0, "recurrent_dropout": 0, "zoneout": 0.0, "weight_drop": 0.0,
            **({"zoneout_cell": 0.0} if cell == "lstm" else {})}
    results = []
    for rates in ({"dropout": 0.3}, {"dropout": 0.3, **zero}):
        layer, x, hx = _make(cell, rates, seed=5)
        out, final = layer(x, hx, [4, 2, 1])
        g = np.random.default_rng(9).standard_normal(out.shape)
        dx, _ = layer.backward(g, None)
        results.append([out, dx, *layer.grads.values(), layer._rng.random(3)])
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("cell", list(CELLS))
def test_masked_kernels_with_neutral_masks_reproduce_the_plain_kernels(cell, monkeypatch):
    """Recurrent mask of ones, zoneout masks of zeros: the masked forward and BPTT give the plain
    layer's outputs and gradients (to rounding)."""
    def grads(layer, x, hx):
        out, final = layer(x, hx, [4, 2, 1])
        layer.zero_grad()
        dx, d0 = layer.backward(np.random.default_rng(9).standard_normal(out.shape), None)
        return [out, dx, *np.atleast_1d(d0 if cell != "lstm" else np.stack(d0)), *layer.grads.values()]

    layer, x, hx = _make(cell, {})
    plain = grads(layer, x, hx)
    calls = []

    def neutral(layer, T, B, drawn, key):
        calls.append(key)
        H, dtype = layer.hidden_size, layer.dtype
        return StepMasks(np.ones((B, H), dtype), tuple(np.zeros((T, B, H), dtype) for _ in layer.state_names))

    monkeypatch.setattr(recurrent_module, "step_masks", neutral)
    masked = grads(layer, x, hx)
    assert calls
    for a, b in zip(plain, masked, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-15)


def test_same_seed_same_masks_other_seed_other_masks():
    rates = REGULARISERS["all_lstm"]
    outs = []
    for seed in (0, 0, 1):
        layer, x, hx = _make("lstm", rates)
        layer.reseed(seed)
        outs.append(layer(x, hx)[0])
    assert np.array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2])


def test_weight_drop_keeps_torch_compatible_state_dicts():
    layer, x, hx = _make("lstm", {"weight_drop": 0.5})
    plain, _, _ = _make("lstm", {})
    before = layer.state_dict()
    assert list(before) == list(plain.state_dict())
    out, _ = layer(x, hx)
    layer.backward(np.ones_like(out), None)
    after = layer.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    plain.load_state_dict(after)  # a plain layer (or torch.nn.LSTM) takes the raw weights


def test_step_ignores_dropout_and_uses_the_zoneout_expectation():
    layer, x, hx = _make("gru", {"recurrent_dropout": 0.5, "zoneout": 0.25}, L=1, bidirectional=False)
    plain, _, _ = _make("gru", {}, L=1, bidirectional=False)
    plain.load_state_dict(layer.state_dict())
    y, _ = layer.step(x[0], hx)
    y_plain, _ = plain.step(x[0], hx)
    np.testing.assert_allclose(y, 0.25 * hx[0] + 0.75 * y_plain, rtol=1e-14)


@pytest.mark.parametrize("name", ["input_dropout", "recurrent_dropout", "zoneout", "weight_drop"])
@pytest.mark.parametrize("value", [-0.1, 1.0, "x", None])
def test_bad_rates_are_rejected_by_name(name, value):
    with pytest.raises(ValueError, match=name):
        rnncore.GRU(2, 3, **{name: value})


def test_zoneout_cell_is_for_the_lstm_only():
    with pytest.raises(ValueError, match="zoneout_cell"):
        rnncore.RNN(2, 3, zoneout_cell=0.1)
    assert "zoneout_cell=0.1" in repr(rnncore.LSTM(2, 3, zoneout_cell=0.1))


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru_reset_before"])
def test_float32_masked_kernels_agree_with_float64(cell):
    rates = REGULARISERS["all_lstm" if cell == "lstm" else "all"]
    results = []
    for dtype in (np.float64, np.float32):
        layer, x, hx = _make(cell, rates, dtype=dtype)
        out, _ = layer(x, hx, [4, 2, 1])
        dx, _ = layer.backward(np.ones_like(out), None)
        results.append([out, dx, layer.grads["weight_hh_l0"]])
    for a, b in zip(*results, strict=True):
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5)
