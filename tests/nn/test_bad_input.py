"""Bad input gets a clear error naming the argument, the expected and the received, and changes nothing."""

import numpy as np
import pytest

import rnncore


@pytest.fixture
def lstm():
    return rnncore.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float32, seed=0)


def x_of(shape, dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize(
    ("shape", "match"),
    [((5, 2, 7), r"x must have shape \(T, B, I=3\), got \(5, 2, 7\)"),
     ((5, 7), r"x \(unbatched\) must have shape \(T, I=3\), got \(5, 7\)"),
     ((5,), r"x must be 3-D \(T, B, I\) or unbatched 2-D \(T, I\), got 1-D"),
     ((2, 5, 2, 3), r"got 4-D"),
     ((0, 2, 3), r"at least one time step")],
)
def test_wrong_input_shape(lstm, shape, match):
    with pytest.raises(ValueError, match=match):
        lstm(x_of(shape))


def test_batch_first_names_its_layout():
    m = rnncore.GRU(3, 4, batch_first=True)
    with pytest.raises(ValueError, match=r"\(B, T, I=3\)"):
        m(x_of((2, 5, 4)))


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.float16])
def test_wrong_dtype(lstm, dtype):
    with pytest.raises(TypeError, match=rf"x must have dtype float32, got {np.dtype(dtype).name}"):
        lstm(x_of((5, 2, 3), dtype))


def test_wrong_state_shape_and_type(lstm):
    x = x_of((5, 2, 3))
    with pytest.raises(ValueError, match=r"h0 must have shape \(D\*num_layers, B, H\) = \(4, 2, 4\), got \(2, 2, 4\)"):
        lstm(x, (x_of((2, 2, 4)), x_of((4, 2, 4))))
    with pytest.raises(ValueError, match=r"c0 must have shape"):
        lstm(x, (x_of((4, 2, 4)), x_of((4, 3, 4))))
    with pytest.raises(ValueError, match=r"hx must be a tuple \('h0', 'c0'\)"):
        lstm(x, x_of((4, 2, 4)))
    with pytest.raises(TypeError, match=r"h0 must have dtype float32, got float64"):
        lstm(x, (x_of((4, 2, 4), np.float64), None))
    gru = rnncore.GRU(3, 4)
    with pytest.raises(ValueError, match=r"h0 must have shape \(D\*num_layers, H\) = \(1, 4\), got \(1, 1, 4\)"):
        gru(x_of((5, 3)), x_of((1, 1, 4)))


@pytest.mark.parametrize(
    ("lengths", "error", "match"),
    [([5, 0], ValueError, r"lengths must lie in 1..T = 1..5, got min 0 and max 5"),
     ([6, 2], ValueError, r"lengths must lie in 1..T = 1..5, got min 2 and max 6"),
     ([-1, 2], ValueError, r"lengths must lie in 1..T"),
     ([5, 2, 1], ValueError, r"lengths must have shape \(B,\) = \(2,\), got \(3,\)"),
     ([[5, 2]], ValueError, r"lengths must have shape \(B,\)"),
     ([2.5, 3.0], TypeError, r"lengths must be integers"),
     (["a", "b"], TypeError, r"lengths must be integers")],
)
def test_bad_lengths(lstm, lengths, error, match):
    with pytest.raises(error, match=match):
        lstm(x_of((5, 2, 3)), lengths=lengths)


def test_lengths_with_unbatched_input(lstm):
    with pytest.raises(ValueError, match="lengths applies to batched input only"):
        lstm(x_of((5, 3)), lengths=[5])


def test_nan_is_reported_when_checking():
    m = rnncore.RNN(3, 4, check_finite=True)
    x = x_of((5, 2, 3))
    x[3, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(first at index \(3, 1, 2\)\)"):
        m(x)
    h0 = x_of((1, 2, 4))
    h0[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"h0 contains NaN or Inf"):
        m(np.nan_to_num(x), h0)


def test_nan_propagates_visibly_without_checking():
    """With checks off NaN is not hidden: it reaches the output (no fastmath nnan)."""
    m = rnncore.LSTM(3, 4)
    x = x_of((5, 2, 3))
    x[0, 1, 0] = np.nan
    out, (h, c) = m(x)
    assert np.isnan(out[:, 1]).all() and np.isfinite(out[:, 0]).all()
    assert np.isnan(h[0, 1]).all() and np.isnan(c[0, 1]).all()


@pytest.mark.parametrize("cls", [rnncore.RNN, rnncore.LSTM, rnncore.GRU])
def test_non_contiguous_input_gives_the_contiguous_result(cls):
    m = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=np.float64, seed=1)
    big = x_of((4, 10, 6), np.float64)
    x = big[:, ::2, ::2]  # (B=4, T=5, I=3), strided in every axis
    assert not x.flags.c_contiguous
    out_a, _ = m(x, lengths=[5, 3, 1, 2])
    dx_a, _ = m.backward(np.ones_like(out_a))
    out_b, _ = m(np.ascontiguousarray(x), lengths=[5, 3, 1, 2])
    dx_b, _ = m.backward(np.ones_like(out_b))
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(dx_a, dx_b)


def test_backward_needs_a_forward(lstm):
    with pytest.raises(RuntimeError, match="needs a forward pass"):
        lstm.backward(None)
    x = x_of((5, 2, 3))
    with rnncore.no_grad():
        lstm(x)
    with pytest.raises(RuntimeError, match="needs a forward pass"):
        lstm.backward(None)
    out, _ = lstm(x)
    lstm.backward(np.ones_like(out))
    with pytest.raises(RuntimeError, match="needs a forward pass"):
        lstm.backward(np.ones_like(out))


def test_wrong_gradient_shapes(lstm):
    out, _ = lstm(x_of((5, 2, 3)))
    with pytest.raises(ValueError, match=r"grad_out must have shape \(5, 2, 8\), got \(5, 2, 4\)"):
        lstm.backward(x_of((5, 2, 4)))
    out, _ = lstm(x_of((5, 2, 3)))
    with pytest.raises(ValueError, match=r"grad_c_n must have shape \(4, 2, 4\), got \(4, 1, 4\)"):
        lstm.backward(np.ones_like(out), (None, x_of((4, 1, 4))))


def test_load_state_dict_checks_everything_before_writing(lstm):
    before = lstm.state_dict()
    bad = lstm.state_dict()
    bad["weight_hh_l1_reverse"] = np.zeros((16, 5), np.float32)
    bad["weight_ih_l0"] = np.zeros_like(bad["weight_ih_l0"])
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l1_reverse'\] must have shape \(16, 4\), got \(16, 5\)"):
        lstm.load_state_dict(bad)
    renamed = lstm.state_dict()
    renamed["weight_ih_l9"] = renamed.pop("weight_ih_l0")
    with pytest.raises(ValueError, match=r"missing keys \['weight_ih_l0'\], unexpected keys \['weight_ih_l9'\]"):
        lstm.load_state_dict(renamed)
    for k, v in lstm.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"input_size": 0, "hidden_size": 4}, "input_size must be an integer >= 1, got 0"),
     ({"input_size": 3, "hidden_size": 2.5}, "hidden_size must be an integer >= 1, got 2.5"),
     ({"input_size": 3, "hidden_size": 4, "num_layers": 0}, "num_layers must be an integer >= 1"),
     ({"input_size": 3, "hidden_size": 4, "dropout": 1.0}, r"dropout must lie in \[0, 1\), got 1.0")],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rnncore.LSTM(**kwargs)


def test_bad_nonlinearity_and_dtype():
    with pytest.raises(ValueError, match=r"nonlinearity must be one of \['identity', 'relu', 'sigmoid', 'tanh'\], got 'gelu'"):
        rnncore.RNN(3, 4, nonlinearity="gelu")
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int32"):
        rnncore.GRU(3, 4, dtype=np.int32)


def test_embedding_and_linear_inputs():
    emb = rnncore.Embedding(10, 3)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 10\), got 10"):
        emb(np.array([[1, 10]]))
    with pytest.raises(TypeError, match="ids must be an integer array, got dtype float64"):
        emb(np.array([1.0]))
    lin = rnncore.Linear(4, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., in_features=4\), got \(3, 5\)"):
        lin(x_of((3, 5)))
