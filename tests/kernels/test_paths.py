"""Every kernel in every dtype, and the three forward paths (training, inference, single step)
agreeing with each other. Numba compiles at the first call, so these also find typing errors."""

import numpy as np
import pytest

import rnncore
from rnncore.kernels._common import INFER_CHUNK

LAYERS = [
    (rnncore.RNN, {"nonlinearity": "tanh"}),
    (rnncore.RNN, {"nonlinearity": "relu"}),
    (rnncore.RNN, {"nonlinearity": "sigmoid"}),
    (rnncore.RNN, {"nonlinearity": "identity"}),
    (rnncore.LSTM, {}),
    (rnncore.GRU, {}),
    (rnncore.GRU, {"reset_after": False}),
    (rnncore.LSTM, {"peephole": True, "gate_clip": 1.0, "coupled_input_forget": True}),
    (rnncore.LSTM, {"proj_size": 3}),
]
IDS = ["tanh", "relu", "sigmoid", "identity", "lstm", "gru", "gru_reset_before", "lstm_peephole_clip_coupled",
       "lstm_proj"]


def _states(m, B, rng):
    shape = (m.num_directions * m.num_layers, B)
    states = [rng.standard_normal(shape + (m._state_size(n),)).astype(m.dtype) for n in m.state_names]
    return states[0] if len(states) == 1 else tuple(states)


def _as_list(s):
    return [s] if isinstance(s, np.ndarray) else list(s)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("cls", "options"), LAYERS, ids=IDS)
def test_inference_path_equals_training_path(cls, options, dtype):
    """T above the inference chunk, both directions, unequal lengths: same outputs bit for bit
    up to the order of floating-point operations."""
    T, B = INFER_CHUNK * 2 + 5, 3
    m = cls(5, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=0, **options)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, 5)).astype(dtype)
    hx = _states(m, B, rng)
    lengths = [T, INFER_CHUNK + 1, 7]
    out_train, s_train = m(x, hx, lengths)
    dx, d0 = m.backward(rng.standard_normal(out_train.shape).astype(dtype), None)
    assert dx.dtype == dtype and all(d.dtype == dtype for d in _as_list(d0))
    assert all(g.dtype == dtype for g in m.grads.values())
    with rnncore.no_grad():
        out_infer, s_infer = m(x, hx, lengths)
    assert out_train.dtype == out_infer.dtype == dtype
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out_infer, out_train, rtol=rtol, atol=rtol)
    for a, b in zip(_as_list(s_infer), _as_list(s_train)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    assert np.all(out_train[7:, 2] == 0) and np.all(out_infer[INFER_CHUNK + 1:, 1] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("cls", "options"), LAYERS, ids=IDS)
def test_step_by_step_generation_equals_the_sequence_forward(cls, options, dtype):
    T, B = 6, 2
    m = cls(3, 4, num_layers=2, dtype=dtype, seed=2, **options)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, 3)).astype(dtype)
    hx = _states(m, B, rng)
    with rnncore.no_grad():
        out, final = m(x, hx)
    state = hx
    # the forward and the steps sum their products in different orders (the packed tile, BLAS's gemv):
    # outputs near 0 differ by rounding relative to the terms, not to themselves, hence atol as well
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for t in range(T):
        y, state = m.step(x[t], state)
        np.testing.assert_allclose(y, out[t], rtol=tol, atol=tol)
    for a, b in zip(_as_list(state), _as_list(final)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    y_unbatched, _ = m.step(x[0, 0], None)
    y_batched, _ = m.step(x[0, :1], None)
    np.testing.assert_array_equal(y_unbatched, y_batched[0])


@pytest.mark.parametrize(
    ("cell_cls", "layer_cls", "options"),
    [(rnncore.RNNCell, rnncore.RNN, {"nonlinearity": "relu"}), (rnncore.LSTMCell, rnncore.LSTM, {}),
     (rnncore.GRUCell, rnncore.GRU, {"reset_after": False})],
)
def test_cells_share_the_layer_math(cell_cls, layer_cls, options):
    cell = cell_cls(3, 4, dtype=np.float64, seed=4, **options)
    layer = layer_cls(3, 4, dtype=np.float64, seed=5, **options)
    assert set(cell.state_dict()) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    layer.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 2, 3))
    _, state = layer(x)
    states = [None] * len(layer.state_names)
    for t in range(5):
        states = cell(x[t], None if states[0] is None else (states[0] if len(states) == 1 else tuple(states)))
        states = _as_list(states)
    for a, b in zip(states, _as_list(state)):
        np.testing.assert_allclose(a, b[0], rtol=1e-13)
    with rnncore.no_grad():
        new = _as_list(cell(x[0]))
    np.testing.assert_allclose(new[0], _as_list(cell(x[0]))[0], rtol=1e-14)


def test_no_grad_keeps_nothing():
    m = rnncore.LSTM(3, 4)
    with rnncore.no_grad():
        assert not rnncore.is_grad_enabled()
        m(np.zeros((5, 2, 3), np.float32))
    assert rnncore.is_grad_enabled()
    assert m._cache is None
