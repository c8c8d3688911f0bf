"""Parameters, state dicts, initialisation, gradient accumulation and modes of the layers."""

import numpy as np
import pytest

import rnncore


def test_shapes_users_meet_first():
    rnn = rnncore.RNN(20, 10)
    sd = rnn.state_dict()
    assert sd["weight_ih_l0"].shape == (10, 20)
    assert sd["weight_hh_l0"].shape == (10, 10)
    assert sd["bias_ih_l0"].shape == (10,) and sd["bias_hh_l0"].shape == (10,)
    stack = [rnncore.Embedding(62, 100), rnncore.RNN(100, 128), rnncore.Linear(128, 2)]
    assert sum(m.num_parameters() for m in stack) == 35_898


@pytest.mark.parametrize(("cls", "gates"), [(rnncore.RNN, 1), (rnncore.LSTM, 4), (rnncore.GRU, 3)])
def test_state_dict_names_and_shapes(cls, gates):
    m = cls(3, 5, num_layers=2, bidirectional=True)
    expected = {}
    for layer in range(2):
        for sfx in ("", "_reverse"):
            expected[f"weight_ih_l{layer}{sfx}"] = (gates * 5, 3 if layer == 0 else 10)
            expected[f"weight_hh_l{layer}{sfx}"] = (gates * 5, 5)
            expected[f"bias_ih_l{layer}{sfx}"] = (gates * 5,)
            expected[f"bias_hh_l{layer}{sfx}"] = (gates * 5,)
    sd = m.state_dict()
    assert list(sd) == list(expected)  # torch.nn's order
    assert {k: v.shape for k, v in sd.items()} == expected
    assert set(m.grads) == set(expected)
    assert m.num_parameters() == sum(int(np.prod(s)) for s in expected.values())
    assert len(m.parameters()) == len(expected)


def test_initialisation_is_torch_like_and_seeded():
    a = rnncore.GRU(7, 16, num_layers=2, seed=3)
    b = rnncore.GRU(7, 16, num_layers=2, seed=3)
    c = rnncore.GRU(7, 16, num_layers=2, seed=4)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
        assert np.abs(v).max() <= 1 / np.sqrt(16)
        assert not np.array_equal(v, c.state_dict()[k])
    all_w = np.concatenate([v.ravel() for v in a.parameters()])
    assert abs(all_w.std() - (2 / np.sqrt(16)) / np.sqrt(12)) < 0.01  # U(-k, k) has std k/sqrt(3)


def test_state_dict_is_a_copy_and_parameters_are_live():
    m = rnncore.RNN(2, 3)
    sd = m.state_dict()
    sd["weight_hh_l0"][:] = 7
    assert not np.any(m.state_dict()["weight_hh_l0"] == 7)
    m.parameters()[1][:] = 7
    assert np.all(m.state_dict()["weight_hh_l0"] == 7)


def test_load_state_dict_round_trip_and_dtype_cast():
    a = rnncore.LSTM(3, 4, dtype=np.float64, seed=0)
    b = rnncore.LSTM(3, 4, dtype=np.float32, seed=1)
    b.load_state_dict(a.state_dict())
    for k, v in b.state_dict().items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, a.state_dict()[k].astype(np.float32))


def test_backward_accumulates_until_zero_grad():
    m = rnncore.GRU(3, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out, _ = m(x)
    m.backward(np.ones_like(out))
    once = {k: v.copy() for k, v in m.grads.items()}
    out, _ = m(x)
    m.backward(np.ones_like(out))
    for k, v in m.grads.items():
        np.testing.assert_allclose(v, 2 * once[k], rtol=1e-14)
    m.zero_grad()
    assert all(not v.any() for v in m.grads.values())


def test_dropout_between_layers_only_in_training():
    m = rnncore.LSTM(3, 8, num_layers=3, dropout=0.5, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 4, 3))
    a, _ = m(x)
    b, _ = m(x)
    assert not np.allclose(a, b), "training mode draws a new mask per call"
    m.eval()
    c, _ = m(x)
    d, _ = m(x)
    np.testing.assert_array_equal(c, d)
    one_layer = rnncore.LSTM(3, 8, num_layers=1, dropout=0.5, seed=0)
    e, _ = one_layer(x.astype(np.float32))
    f, _ = one_layer(x.astype(np.float32))
    np.testing.assert_array_equal(e, f)  # no dropout after the last layer, as torch


def test_dropout_gradient_matches_finite_differences_for_a_fixed_mask():
    """Gradient through dropout between layers, with the mask of the forward pass held fixed."""
    m = rnncore.RNN(2, 3, num_layers=2, dropout=0.4, dtype=np.float64, seed=1)
    x = np.random.default_rng(2).standard_normal((4, 2, 2))
    g = np.random.default_rng(3).standard_normal((4, 2, 3))
    out, _ = m(x)
    mask = m._cache["layers"][1]["mask"]
    dx, _ = m.backward(g)
    eval_twin = rnncore.RNN(2, 3, num_layers=2, dtype=np.float64)
    eval_twin.load_state_dict(m.state_dict())
    first = rnncore.RNN(2, 3, dtype=np.float64)
    second = rnncore.RNN(3, 3, dtype=np.float64)
    first.load_state_dict({k: v for k, v in m.state_dict().items() if k.endswith("l0")})
    second.load_state_dict({k.replace("l1", "l0"): v for k, v in m.state_dict().items() if k.endswith("l1")})

    def loss(xx):
        with rnncore.no_grad():
            return float(np.sum(second(first(xx)[0] * mask)[0] * g))

    eps = 1e-6
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        num[i] = (loss(xp) - loss(xm)) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(np.sum(out * g), loss(x), rtol=1e-12)


def test_batch_first_and_unbatched_layouts_agree():
    m = rnncore.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    bf = rnncore.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=np.float64)
    bf.load_state_dict(m.state_dict())
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    out, (h, c) = m(x)
    out_bf, (h_bf, c_bf) = bf(x.transpose(1, 0, 2))
    np.testing.assert_array_equal(out_bf, out.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_bf, h)
    out_u, (h_u, c_u) = m(x[:, 1])
    np.testing.assert_allclose(out_u, out[:, 1], rtol=1e-14)
    np.testing.assert_allclose(h_u, h[:, 1], rtol=1e-14)
    assert out_u.shape == (5, 8) and h_u.shape == (4, 4)


def test_lengths_give_packed_semantics():
    """A sequence in a padded batch behaves exactly as the same sequence run alone."""
    m = rnncore.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 3))
    lengths = [6, 2, 4]
    out, h = m(x, lengths=lengths)
    for b, n in enumerate(lengths):
        alone, h_alone = m(x[:n, b])
        np.testing.assert_allclose(out[:n, b], alone, rtol=1e-13)
        np.testing.assert_array_equal(out[n:, b], 0.0)
        np.testing.assert_allclose(h[:, b], h_alone, rtol=1e-13)
