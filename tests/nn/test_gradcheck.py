"""Every layer and option against central finite differences (float64, random upstream gradients)."""

import numpy as np
import pytest

import rnncore
from rnncore.gradcheck import check_gradients, check_recurrent

TOL = 1e-6

CELLS = {
    "rnn_tanh": (rnncore.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnncore.RNN, {"nonlinearity": "relu"}),
    "rnn_sigmoid": (rnncore.RNN, {"nonlinearity": "sigmoid"}),
    "rnn_identity": (rnncore.RNN, {"nonlinearity": "identity"}),
    "lstm": (rnncore.LSTM, {}),
    "gru": (rnncore.GRU, {}),
    "gru_reset_before": (rnncore.GRU, {"reset_after": False}),
}

# (T, B, I, H, num_layers, bidirectional, batch_first, lengths, with_state)
CONFIGS = {
    "plain": (4, 3, 3, 4, 1, False, False, None, False),
    "h0": (4, 3, 3, 4, 1, False, False, None, True),
    "stacked3": (3, 2, 2, 3, 3, False, False, None, True),
    "bidirectional": (4, 2, 3, 3, 1, True, False, None, True),
    "stacked_bidirectional_lengths": (5, 3, 2, 3, 2, True, False, [5, 2, 1], True),
    "lengths": (5, 3, 3, 4, 1, False, False, [3, 5, 1], True),
    "batch_first_lengths": (4, 3, 2, 3, 2, True, True, [4, 1, 3], True),
    "unbatched": (4, None, 3, 3, 2, True, False, None, True),
    "T1": (1, 2, 3, 3, 1, True, False, None, True),
    "B1": (4, 1, 3, 3, 1, False, False, None, True),
    "H1": (4, 2, 3, 1, 2, True, False, [4, 2], True),
    "I1": (4, 2, 1, 3, 1, False, False, None, True),
    "all_ones_sizes": (1, 1, 1, 1, 1, False, False, None, True),
}


def _make(cell, config, seed=0, bias=True):
    cls, options = CELLS[cell]
    T, B, I, H, L, bi, bf, lengths, with_state = config
    layer = cls(I, H, num_layers=L, bidirectional=bi, batch_first=bf, bias=bias, dtype=np.float64, seed=seed,
                **options)
    rng = np.random.default_rng(seed + 100)
    D = 2 if bi else 1
    if B is None:
        x = rng.standard_normal((T, I))
        state_shape = (D * L, H)
    else:
        x = rng.standard_normal((B, T, I) if bf else (T, B, I))
        state_shape = (D * L, B, H)
    hx = None
    if with_state:
        states = [rng.standard_normal(state_shape) for _ in layer.state_names]
        hx = states[0] if len(states) == 1 else tuple(states)
    return layer, x, hx, lengths


def _assert_all_pass(results):
    failures = [str(r) for r in results if not r.passed]
    assert not failures, "\n".join(failures)
    assert results, "no gradient was compared"


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_recurrent_layer_gradients(cell, config):
    layer, x, hx, lengths = _make(cell, CONFIGS[config])
    results = check_recurrent(layer, x, hx, lengths, seed=1, tolerance=TOL)
    _assert_all_pass(results)
    names = {r.name for r in results}
    assert "x" in names and set(layer.state_dict()) <= names
    if hx is not None:
        assert {f"{n}0" for n in layer.state_names} <= names


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_no_bias_gradients(cell):
    layer, x, hx, lengths = _make(cell, CONFIGS["stacked_bidirectional_lengths"], bias=False)
    assert not any(k.startswith("bias") for k in layer.state_dict())
    _assert_all_pass(check_recurrent(layer, x, hx, lengths, seed=2, tolerance=TOL))


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru", "gru_reset_before"])
def test_long_sequence_crosses_inference_chunks(cell):
    """T above the inference kernels' chunk length: the finite differences run the chunked path."""
    from rnncore.kernels._common import INFER_CHUNK

    config = (INFER_CHUNK + 7, 2, 2, 2, 1, True, False, [INFER_CHUNK + 7, INFER_CHUNK - 3], True)
    layer, x, hx, lengths = _make(cell, config)
    for p in layer.parameters():
        p *= 0.5  # keep a long product of Jacobians well conditioned for finite differences
    results = check_recurrent(layer, x, hx, lengths, seed=3, tolerance=TOL)
    _assert_all_pass(results)


@pytest.mark.parametrize(
    ("cls", "options"),
    [(rnncore.RNNCell, {"nonlinearity": "relu"}), (rnncore.RNNCell, {}), (rnncore.LSTMCell, {}),
     (rnncore.GRUCell, {}), (rnncore.GRUCell, {"reset_after": False})],
)
@pytest.mark.parametrize("batched", [True, False])
def test_cell_gradients(cls, options, batched):
    cell = cls(3, 4, dtype=np.float64, seed=5, **options)
    rng = np.random.default_rng(6)
    lead = (2,) if batched else ()
    x = rng.standard_normal(lead + (3,))
    n_states = 2 if cls is rnncore.LSTMCell else 1
    states = [rng.standard_normal(lead + (4,)) for _ in range(n_states)]
    g = [rng.standard_normal(lead + (4,)) for _ in range(n_states)]
    pack = (lambda s: s[0]) if n_states == 1 else tuple

    def loss():
        with rnncore.no_grad():
            new = cell(x, pack(states))
        new = [new] if n_states == 1 else list(new)
        return float(sum(np.sum(a * b) for a, b in zip(new, g)))

    cell.zero_grad()
    cell(x, pack(states))
    dx, d_states = cell.backward(pack(g))
    d_states = [d_states] if n_states == 1 else list(d_states)
    wrt = {"x": (x, dx)}
    wrt.update({f"state{i}": (s, d) for i, (s, d) in enumerate(zip(states, d_states))})
    wrt.update({k: (v, cell.grads[k].copy()) for k, v in cell.named_parameters()})
    _assert_all_pass(check_gradients(loss, wrt, tolerance=TOL))


def test_embedding_rnn_linear_stack_gradients():
    """Embedding -> LSTM -> Linear, chained by hand through each layer's backward."""
    emb = rnncore.Embedding(7, 3, padding_idx=0, dtype=np.float64, seed=1)
    lstm = rnncore.LSTM(3, 4, dtype=np.float64, seed=2)
    head = rnncore.Linear(4, 5, dtype=np.float64, seed=3)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 7, size=(5, 2))
    g = rng.standard_normal((5, 2, 5))

    def loss():
        with rnncore.no_grad():
            return float(np.sum(head(lstm(emb(ids))[0]) * g))

    for m in (emb, lstm, head):
        m.zero_grad()
    out, _ = lstm(emb(ids))
    head(out)
    dx, _ = lstm.backward(head.backward(g))
    emb.backward(dx)
    wrt = {}
    for prefix, m in (("emb", emb), ("lstm", lstm), ("head", head)):
        wrt.update({f"{prefix}.{k}": (v, m.grads[k].copy()) for k, v in m.named_parameters()})
    # The padding row takes part in the forward but, by definition (as in torch), gets no gradient.
    wrt["emb.weight"] = (emb.parameters()[0][1:], emb.grads["weight"][1:].copy())
    _assert_all_pass(check_gradients(loss, wrt, tolerance=TOL))
    assert np.all(emb.grads["weight"][0] == 0.0), "the padding row must get no gradient"


def test_dropout_backward_uses_the_forward_mask():
    drop = rnncore.Dropout(0.3, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((50, 40))
    y = drop(x)
    kept = y != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-15)
    g = np.random.default_rng(1).standard_normal(x.shape)
    np.testing.assert_allclose(drop.backward(g), np.where(kept, g / 0.7, 0.0), rtol=1e-15, atol=0)
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)


def test_checker_catches_a_wrong_gradient():
    """The checker itself must be able to fail: a transposed weight gradient is reported."""
    layer, x, hx, lengths = _make("lstm", CONFIGS["h0"])
    original_backward = layer.backward

    def broken_backward(*args):
        result = original_backward(*args)
        layer._grads["weight_hh_l0"][:] = layer._grads["weight_hh_l0"][::-1].copy()
        return result

    layer.backward = broken_backward
    results = {r.name: r for r in check_recurrent(layer, x, hx, lengths, seed=1, tolerance=TOL)}
    assert not results["weight_hh_l0"].passed
    assert results["weight_ih_l0"].passed
