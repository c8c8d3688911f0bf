"""rnncore.diagnostics: per-step hidden-state gradients and the ReLU growth study."""

import numpy as np
import pytest

import rnncore
from rnncore.diagnostics import gradient_norms, hidden_state_gradients, relu_rnn_growth


def test_elman_against_a_numpy_bptt():
    rng = np.random.default_rng(0)
    T, B, n_in, H = 6, 2, 3, 4
    layer = rnncore.RNN(n_in, H, dtype=np.float64, seed=1)
    x, h0 = rng.standard_normal((T, B, n_in)), rng.standard_normal((1, B, H))
    g_out, g_h = rng.standard_normal((T, B, H)), rng.standard_normal((1, B, H))
    (dh,) = hidden_state_gradients(layer, x, h0, g_out, g_h)
    w_hh = layer.state_dict()["weight_hh_l0"]
    out, _ = layer(x, h0)
    ref = np.empty((T + 1, B, H))
    g = g_out[-1] + g_h[0]
    ref[T] = g
    for t in range(T, 0, -1):  # out[t - 1] is h_t
        g = ((1 - out[t - 1] ** 2) * g) @ w_hh + (g_out[t - 2] if t > 1 else 0.0)
        ref[t - 1] = g
    np.testing.assert_allclose(dh, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gradient_norms(dh), np.sqrt((ref ** 2).sum(axis=(1, 2))))


def test_lstm_ends_and_parameter_gradients_untouched():
    rng = np.random.default_rng(2)
    T, B, n_in, H = 5, 2, 2, 3
    layer = rnncore.LSTM(n_in, H, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, B, n_in))
    hx = tuple(rng.standard_normal((1, B, H)) for _ in range(2))
    g_out = rng.standard_normal((T, B, H))
    g_fin = tuple(rng.standard_normal((1, B, H)) for _ in range(2))
    layer.zero_grad()
    layer(x, hx)
    _, (dh0, dc0) = layer.backward(g_out, g_fin)
    before = {k: v.copy() for k, v in layer.grads.items()}
    dh, dc = hidden_state_gradients(layer, x, hx, g_out, g_fin)
    assert dh.shape == dc.shape == (T + 1, B, H)
    np.testing.assert_allclose(dh[0], dh0[0], rtol=1e-13)
    np.testing.assert_allclose(dc[0], dc0[0], rtol=1e-13)
    np.testing.assert_array_equal(dh[T], g_out[-1] + g_fin[0][0])
    np.testing.assert_array_equal(dc[T], g_fin[1][0])
    for k, v in layer.grads.items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("options", [{"num_layers": 2}, {"bidirectional": True}, {"batch_first": True}])
def test_only_one_layer_unidirectional_time_major(options):
    layer = rnncore.GRU(2, 2, dtype=np.float64, **options)
    with pytest.raises(ValueError, match="hidden_state_gradients"):
        hidden_state_gradients(layer, np.zeros((3, 1, 2)))


def test_relu_growth_is_positively_homogeneous():
    """relu(c W h) = c relu(W h): the same seeds at gain g and 2g differ by exactly 2^t in ||h_t||^2."""
    a = relu_rnn_growth(1.0, hidden_size=32, steps=6, seeds=range(3), batch=2, gradients=False)["h"]
    b = relu_rnn_growth(2.0, hidden_size=32, steps=6, seeds=range(3), batch=2, gradients=False)["h"]
    assert a.shape == (3, 7, 2)
    expected = np.broadcast_to(2.0 ** np.arange(7)[None, :, None], a.shape)
    np.testing.assert_allclose(b / a, expected, rtol=1e-12)
