"""rnncore.diagnostics: per-step gradients, Jacobian norms, the verdict, W_hh spectra, saturation.

References: the O(T^2) suffix construction (each suffix's backward from its starting state),
central finite differences in float64, and closed forms (W^k for a linear or zero-input tanh
network, matrices built with known singular values and eigenvalues, gates pinned by their biases).
"""

import numpy as np
import pytest

import rnncore
from rnncore.diagnostics import (
    flow_verdict,
    gate_saturation,
    hidden_state_gradients,
    state_jacobian_norms,
    weight_spectra,
)
from rnncore.diagnostics.recurrent import direction_inputs, gate_names

LAYERS = {
    "rnn_tanh": lambda i, h: rnncore.RNN(i, h, dtype=np.float64, seed=1),
    "lstm": lambda i, h: rnncore.LSTM(i, h, dtype=np.float64, seed=2),
    "gru": lambda i, h: rnncore.GRU(i, h, dtype=np.float64, seed=3),
    "gru_reset_before": lambda i, h: rnncore.GRU(i, h, dtype=np.float64, seed=4, reset_after=False),
}


def _pack(states):
    return states[0] if len(states) == 1 else tuple(states)


def suffix_reference(layer, x, hx, grad_out, finals):
    """dL/ds_t the slow way: the backward of each suffix x[t:] from s_t, T forward/backward passes
    over O(T^2) steps in all (the construction hidden_state_gradients used before)."""
    T, B, _ = x.shape
    states = [list(hx)]
    for t in range(1, T):
        _, fin = layer(x[:t], _pack(hx))
        states.append(list(fin) if isinstance(fin, tuple) else [fin])
    out = [np.empty((T + 1, B, layer.hidden_size)) for _ in hx]
    for k in range(len(hx)):
        out[k][T] = finals[k][0]
    out[0][T] += grad_out[T - 1]
    for t in range(T):
        layer(x[t:], _pack(states[t]))
        _, d0 = layer.backward(grad_out[t:], _pack(finals))
        for k, d in enumerate(d0 if isinstance(d0, tuple) else (d0,)):
            out[k][t] = d[0]
        if t > 0:
            out[0][t] += grad_out[t - 1]
    return out


def _problem(name, T=7, B=3, n_in=2, H=4, seed=0):
    rng = np.random.default_rng(seed)
    layer = LAYERS[name](n_in, H)
    n = len(layer.state_names)
    x = rng.standard_normal((T, B, n_in))
    hx = [0.5 * rng.standard_normal((1, B, H)) for _ in range(n)]
    grad_out = rng.standard_normal((T, B, H))
    finals = [rng.standard_normal((1, B, H)) for _ in range(n)]
    return layer, x, hx, grad_out, finals


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_hidden_state_gradients_match_the_suffix_construction(name):
    layer, x, hx, grad_out, finals = _problem(name)
    measured = hidden_state_gradients(layer, x, _pack(hx), grad_out, _pack(finals))
    reference = suffix_reference(layer, x, hx, grad_out, finals)
    for m, r in zip(measured, reference):
        np.testing.assert_allclose(m, r, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm"])
def test_hidden_state_gradients_match_finite_differences(name):
    """Perturb the state s_t and rerun the steps after it: L(s_t) = out_t . g_t + L_{>t}(s_t)."""
    T, B, H = 4, 2, 3
    layer, x, hx, grad_out, finals = _problem(name, T=T, B=B, H=H, seed=5)
    measured = hidden_state_gradients(layer, x, _pack(hx), grad_out, _pack(finals))
    n = len(hx)
    with rnncore.no_grad():
        states = [hx]
        for t in range(T):
            _, fin = layer(x[t:t + 1], _pack(states[-1]))
            states.append(list(fin) if isinstance(fin, tuple) else [fin])

    def loss_after(t, s):
        total = float(np.sum(s[0][0] * grad_out[t - 1])) if t > 0 else 0.0
        if t == T:
            return total + sum(float(np.sum(a * f)) for a, f in zip(s, finals))
        with rnncore.no_grad():
            out, fin = layer(x[t:], _pack(s))
        fin = list(fin) if isinstance(fin, tuple) else [fin]
        total += float(np.sum(out * grad_out[t:]))
        return total + sum(float(np.sum(a * f)) for a, f in zip(fin, finals))

    eps = 1e-6
    for t in range(T + 1):
        for k in range(n):
            for b in range(B):
                for j in range(H):
                    plus = [s.copy() for s in states[t]]
                    minus = [s.copy() for s in states[t]]
                    plus[k][0, b, j] += eps
                    minus[k][0, b, j] -= eps
                    fd = (loss_after(t, plus) - loss_after(t, minus)) / (2 * eps)
                    assert measured[k][t, b, j] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def _orthogonal(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("nonlinearity", ["identity", "tanh"])
def test_elman_jacobian_is_a_matrix_power(nonlinearity):
    """Identity activation, or tanh at the fixed point h = 0 (x = 0, no bias, tanh'(0) = 1):
    dh_T/dh_t = W^(T - t) exactly."""
    T, H = 6, 5
    w = np.random.default_rng(0).standard_normal((H, H)) / np.sqrt(H)
    layer = rnncore.RNN(2, H, nonlinearity=nonlinearity, bias=False, dtype=np.float64)
    layer.load_state_dict({"weight_ih_l0": np.zeros((H, 2)), "weight_hh_l0": w})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, 2, 2)) if nonlinearity == "identity" else np.zeros((T, 2, 2))
    h0 = rng.standard_normal((1, 2, H)) if nonlinearity == "identity" else None
    norms = state_jacobian_norms(layer, x, h0)
    for t in range(T + 1):
        P = np.linalg.matrix_power(w, T - t)
        np.testing.assert_allclose(norms["spectral"][t], np.linalg.norm(P, 2), rtol=1e-10)
        np.testing.assert_allclose(norms["frobenius"][t], np.linalg.norm(P, "fro"), rtol=1e-10)
    np.testing.assert_array_equal(norms["spectral_h"], norms["spectral"])


def test_lstm_jacobian_against_finite_differences():
    """J_t = [dh_T/dh_t, dh_T/dc_t] by central differences of the suffix run, for each sequence."""
    T, B, H = 4, 2, 3
    layer, x, hx, _, _ = _problem("lstm", T=T, B=B, H=H, seed=7)
    norms = state_jacobian_norms(layer, x, tuple(hx))
    with rnncore.no_grad():
        states = [hx]
        for t in range(T):
            _, fin = layer(x[t:t + 1], tuple(states[-1]))
            states.append(list(fin))
    eps = 1e-6
    for t in range(T + 1):
        for b in range(B):
            J = np.zeros((H, 2 * H))
            for k in range(2):
                for j in range(H):
                    col = []
                    for sign in (1, -1):
                        s = [a.copy() for a in states[t]]
                        s[k][0, b, j] += sign * eps
                        if t == T:
                            col.append(s[0][0, b])
                        else:
                            with rnncore.no_grad():
                                _, (h_T, _) = layer(x[t:], tuple(s))
                            col.append(h_T[0, b])
                    J[:, k * H + j] = (col[0] - col[1]) / (2 * eps)
            assert norms["spectral"][t, b] == pytest.approx(np.linalg.norm(J, 2), rel=1e-6)
            assert norms["frobenius"][t, b] == pytest.approx(np.linalg.norm(J, "fro"), rel=1e-6)
            assert norms["spectral_h"][t, b] == pytest.approx(np.linalg.norm(J[:, :H], 2), rel=1e-6)


def _zero_input_tanh(w, T=30):
    H = w.shape[0]
    layer = rnncore.RNN(1, H, bias=False, dtype=np.float64)
    layer.load_state_dict({"weight_ih_l0": np.zeros((H, 1)), "weight_hh_l0": w})
    return state_jacobian_norms(layer, np.zeros((T, 1, 1)))["spectral"]


def test_verdict_on_scaled_orthogonal_networks():
    """W = r Q (Q orthogonal) at h = 0: g(k) = r^k. r = 0.5 falls below 1e-3 first at k = 10
    (0.5^9 = 2.0e-3, 0.5^10 = 9.8e-4); r = 1.5 exceeds 1e2 first at k = 12 (1.5^11 = 86.5,
    1.5^12 = 129.7); r = 1 stays at 1."""
    Q = _orthogonal(8, 3)
    v = flow_verdict(_zero_input_tanh(0.5 * Q))
    assert (v["verdict"], v["k"]) == ("vanishing", 10)
    assert v["rate"] == pytest.approx(0.5, rel=1e-9)
    assert v["line"].startswith("vanishing after ~10 steps") and "below 0.001 at k = 10" in v["line"]
    v = flow_verdict(_zero_input_tanh(1.5 * Q))
    assert (v["verdict"], v["k"]) == ("exploding", 12)
    assert v["rate"] == pytest.approx(1.5, rel=1e-9)
    assert "exceeds 100 from k = 12" in v["line"]
    v = flow_verdict(_zero_input_tanh(Q))
    assert (v["verdict"], v["k"]) == ("healthy", None)
    np.testing.assert_allclose(v["gain"], 1.0, rtol=1e-12)


@pytest.mark.parametrize("radius, verdict", [(0.5, "vanishing"), (1.5, "exploding")])
def test_verdict_on_random_networks_scaled_to_a_spectral_radius(radius, verdict):
    """A non-normal random W scaled to spectral radius r: ||W^k|| ~ C r^k, so k lands near
    log(threshold) / log(r) (10 for 0.5, 11.4 for 1.5), shifted by the transient constant C."""
    w = np.random.default_rng(11).standard_normal((16, 16))
    w *= radius / np.max(np.abs(np.linalg.eigvals(w)))
    v = flow_verdict(_zero_input_tanh(w, T=40))
    assert v["verdict"] == verdict
    assert 7 <= v["k"] <= 14
    assert v["rate"] == pytest.approx(radius, rel=0.15)


def test_verdict_rejects_a_bad_gain():
    with pytest.raises(ValueError, match="gain must be"):
        flow_verdict([1.0])


def test_weight_spectra_of_constructed_matrices():
    """LSTM W_hh blocks built as c_k U diag(s) V^T (known singular values) and one block with
    known eigenvalues (P diag(lam) P^-1); the stacked matrix's largest singular value is that of
    [c_0 A; c_1 A; ...] = sqrt(sum c_k^2) max(s) when every block shares the factor A."""
    H = 4
    s = np.array([3.0, 2.0, 0.5, 0.25])
    A = _orthogonal(H, 1) @ np.diag(s) @ _orthogonal(H, 2).T
    scales = np.array([1.0, 2.0, 0.5, 1.5])
    layer = rnncore.LSTM(1, H, dtype=np.float64)
    w = np.concatenate([c * A for c in scales])
    layer.load_state_dict({**layer.state_dict(), "weight_hh_l0": w})
    rows = {r["block"]: r for r in weight_spectra(layer)}
    assert list(rows) == ["all", "i", "f", "g", "o"]
    for gate, c in zip("ifgo", scales):
        np.testing.assert_allclose(rows[gate]["singular_values"], c * s, rtol=1e-12)
        assert rows[gate]["condition"] == pytest.approx(12.0)
    assert rows["all"]["sigma_max"] == pytest.approx(np.sqrt(np.sum(scales ** 2)) * 3.0)
    assert rows["all"]["spectral_radius"] is None and rows["all"]["shape"] == [4 * H, H]
    P = np.random.default_rng(5).standard_normal((H, H))
    lam = np.array([0.9, -1.7, 0.3, 0.05])
    elman = rnncore.RNN(1, H, dtype=np.float64)
    elman.load_state_dict({**elman.state_dict(), "weight_hh_l0": P @ np.diag(lam) @ np.linalg.inv(P)})
    (row,) = weight_spectra(elman)
    assert row["spectral_radius"] == pytest.approx(1.7, rel=1e-10)


def test_weight_spectra_name_every_layer_and_direction():
    layer = rnncore.GRU(2, 3, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    rows = weight_spectra(layer)
    keys = [(r["layer"], r["direction"], r["block"]) for r in rows]
    assert keys == [(l, d, b) for l in (0, 1) for d in ("forward", "reverse") for b in ("all", "r", "z", "n")]
    w = layer.state_dict()["weight_hh_l1_reverse"][3:6]  # z block of layer 1 reverse
    z = next(r for r in rows if (r["layer"], r["direction"], r["block"]) == (1, "reverse", "z"))
    assert z["sigma_max"] == pytest.approx(np.sqrt(np.max(np.linalg.eigvalsh(w.T @ w))), rel=1e-10)


def test_gate_saturation_of_pinned_gates():
    """Zero weights and biases of +-20 pin each LSTM gate: i = sigmoid(20) ~ 1, f = sigmoid(-20) ~ 0,
    g = tanh(0) = 0, o = sigmoid(0) = 1/2."""
    H = 3
    layer = rnncore.LSTM(2, H, dtype=np.float64)
    b = np.concatenate([np.full(H, 20.0), np.full(H, -20.0), np.zeros(H), np.zeros(H)])
    layer.load_state_dict({"weight_ih_l0": np.zeros((4 * H, 2)), "weight_hh_l0": np.zeros((4 * H, H)),
                           "bias_ih_l0": b, "bias_hh_l0": np.zeros(4 * H)})
    x = np.random.default_rng(0).standard_normal((5, 2, 2))
    rows = {r["gate"]: r for r in gate_saturation(layer, x)}
    assert [(g, rows[g]["near_0"], rows[g]["near_1"]) for g in "ifgo"] == [
        ("i", 0.0, 1.0), ("f", 1.0, 0.0), ("g", 1.0, 0.0), ("o", 0.0, 0.0)]
    assert all(rows[g]["count"] == 5 * 2 * H == sum(rows[g]["hist"]) for g in "ifgo")
    assert rows["g"]["kind"] == "tanh" and rows["o"]["mean"] == pytest.approx(0.5)


def test_gate_saturation_counts_against_the_layer_output():
    """For an Elman layer the one 'gate' is its output: the fractions are counted directly."""
    layer = rnncore.RNN(3, 6, dtype=np.float64, seed=2)
    layer.load_state_dict({**layer.state_dict(), "weight_ih_l0": 4 * layer.state_dict()["weight_ih_l0"]})
    x = 3 * np.random.default_rng(1).standard_normal((9, 4, 3))
    (row,) = gate_saturation(layer, x)
    with rnncore.no_grad():
        out, _ = layer(x)
    assert row["near_1"] == pytest.approx(np.mean(np.abs(out) >= 0.99))
    assert row["near_0"] == pytest.approx(np.mean(np.abs(out) <= 0.01))
    assert 0 < row["near_1"] < 1


@pytest.mark.parametrize("make", [
    lambda: rnncore.GRU(2, 3, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, reset_after=False),
    lambda: rnncore.RNN(2, 3, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, nonlinearity="relu",
                        bias=False),
], ids=["gru_reset_before", "rnn_relu_no_bias"])
def test_direction_copies_reproduce_a_stacked_bidirectional_layer(make):
    """The copies keep the layer's options (reset_after, nonlinearity, bias): their outputs rebuild
    the layer's output (checked inside direction_inputs) and their last states its h_n."""
    layer = make()
    rng = np.random.default_rng(0)
    x, h0 = rng.standard_normal((5, 2, 2)), rng.standard_normal((4, 2, 3))
    entries = direction_inputs(layer, x, h0)  # checks the reconstruction itself
    assert [(e["layer"], e["direction"]) for e in entries] == [(0, "forward"), (0, "reverse"),
                                                               (1, "forward"), (1, "reverse")]
    with rnncore.no_grad():
        _, h_n = layer(x, h0)
    for idx, e in enumerate(entries):  # each copy's last state is the layer's h_n of that direction
        np.testing.assert_allclose(e["out"][-1], h_n[idx], rtol=1e-12)
    rows = gate_saturation(layer, x, h0)
    assert [(r["layer"], r["direction"], r["gate"]) for r in rows] == [
        (e["layer"], e["direction"], g) for e in entries for g in gate_names(layer)]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_captured_model_gradients_match_finite_differences_of_the_loss(cell):
    """End to end through a language model: the per-step gradients diagnose_model reports start at
    dL/ds_0, which must be the finite-difference derivative of the model's mean loss with respect
    to the state the batch starts from; and two stream chunks joined give the gradient of the sum
    of the two chunk losses."""
    from rnncore.data import Vocab
    from rnncore.data.sources import StreamSource
    from rnncore.diagnostics.run import diagnose_model
    from rnncore.models.language_model import LanguageModel

    text = "abcab cabba acbca bcabc " * 3
    vocab = Vocab.build([text], order="sorted")
    model = LanguageModel(vocab, cell=cell, embedding_dim=3, hidden_size=3, dtype="float64", seed=1)
    source = StreamSource(vocab.encode(text), 2, 5, shuffle=False)
    batches = list(source.batches(0))[:2]
    H = 3
    rng = np.random.default_rng(0)
    n_states = 2 if cell == "lstm" else 1
    state0 = tuple(0.5 * rng.standard_normal((1, 2, H)) for _ in range(n_states))
    state_arg = state0 if cell == "lstm" else state0[0]

    def summed_loss(state):
        total = 0.0
        for batch in batches:
            result = model.evaluate(batch, state)
            total, state = total + result.loss, result.state
        return total

    result = diagnose_model(model, batches, steps=10, sequences=1, state=state_arg)
    info = result["layers"]["rnn"]
    assert info["length"] == 10
    (direction,) = info["directions"]
    eps = 1e-6
    fd = np.zeros((n_states, 2, H))
    for k in range(n_states):
        for b in range(2):
            for j in range(H):
                plus = [s.copy() for s in state0]
                minus = [s.copy() for s in state0]
                plus[k][0, b, j] += eps
                minus[k][0, b, j] -= eps
                pack = (lambda s: tuple(s)) if cell == "lstm" else (lambda s: s[0])
                fd[k, b, j] = (summed_loss(pack(plus)) - summed_loss(pack(minus))) / (2 * eps)
    for k, state in enumerate(model.rnn.state_names):
        assert direction["grad_norms"][state][0] == pytest.approx(np.linalg.norm(fd[k]), rel=1e-6)
