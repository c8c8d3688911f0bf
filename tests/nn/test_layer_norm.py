"""LSTM(layer_norm=True) and GRU(layer_norm=True): finite differences, the three forward paths, float32
against float64, parameters and checkpoints, bad options, and an independent torch composition
(torch.nn.functional.layer_norm and matrix products, differentiated by autograd) as the peer.
The SymPy reference is the ``layer_norm`` derivation of ``rnncore verify`` (tests/derivations)."""

import numpy as np
import pytest

import rnncore
from rnncore.gradcheck import check_recurrent
from rnncore.kernels._common import INFER_CHUNK
from rnncore.nn.layernorm import LayerNormLSTM

CELLS = {"lstm": rnncore.LSTM, "gru": rnncore.GRU}

# (T, B, I, H, num_layers, bidirectional, batch_first, lengths, with_state, bias)
CONFIGS = {
    "plain": (4, 3, 3, 4, 1, False, False, None, False, True),
    "h0": (4, 3, 3, 4, 1, False, False, None, True, True),
    "stacked_bidirectional_lengths": (5, 3, 2, 3, 2, True, False, [5, 2, 1], True, True),
    "batch_first_lengths": (4, 3, 2, 3, 1, False, True, [4, 1, 3], True, True),
    "unbatched": (4, None, 3, 3, 1, True, False, None, True, True),
    "T1": (1, 2, 3, 3, 1, True, False, None, True, True),
    "H1": (4, 2, 3, 1, 2, True, False, [4, 2], True, True),
    "no_bias": (3, 2, 2, 3, 1, True, False, [3, 1], True, False),
}


def _perturb(layer, rng, scale=0.3):
    """Move the gains away from 1 and the LN biases away from 0, so that every parameter matters."""
    for name, value in layer.named_parameters():
        if name.startswith("layernorm_"):
            value += scale * rng.standard_normal(value.shape)


def _make(cell, config, dtype=np.float64, seed=0, eps=1e-5):
    T, B, I, H, L, bi, bf, lengths, with_state, bias = config  # noqa: E741
    layer = CELLS[cell](I, H, num_layers=L, bidirectional=bi, batch_first=bf, bias=bias, dtype=dtype,
                        seed=seed, layer_norm=True, layer_norm_eps=eps)
    rng = np.random.default_rng(seed + 100)
    _perturb(layer, rng)
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


def _as_list(s):
    return [s] if isinstance(s, np.ndarray) else list(s)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gradients_against_finite_differences(cell, config):
    layer, x, hx, lengths = _make(cell, CONFIGS[config])
    results = check_recurrent(layer, x, hx, lengths, seed=1, tolerance=1e-6)
    failures = [str(r) for r in results if not r.passed]
    assert not failures, "\n".join(failures)
    names = {r.name for r in results}
    assert "x" in names and set(layer.state_dict()) <= names
    assert any(n.startswith("layernorm_hh_weight") for n in names)


def test_one_unit_cell_norm_is_its_bias():
    """H = 1: LN over the single unit of c is degenerate (variance 0): LN(c) = beta_c exactly, so
    h = o * tanh(beta_c), the gain of c has no effect and gets a zero gradient, and nothing is NaN."""
    layer, x, hx, _ = _make("lstm", (5, 3, 2, 1, 1, False, False, None, True, True))
    out, (h_n, c_n) = layer(x, hx)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(c_n))
    layer.zero_grad()
    rng = np.random.default_rng(7)
    g_state = (rng.standard_normal(h_n.shape), rng.standard_normal(c_n.shape))
    layer.backward(rng.standard_normal(out.shape), g_state)
    assert np.all(layer.grads["layernorm_c_weight_l0"] == 0)
    assert np.all(layer.grads["layernorm_c_bias_l0"] != 0)
    layer._params["layernorm_c_weight_l0"][...] = 5.0
    out2, _ = layer(x, hx)
    np.testing.assert_array_equal(out2, out)
    beta = layer._params["layernorm_c_bias_l0"][0]
    ratio = out / np.tanh(beta)  # = o, a sigmoid
    assert np.all((ratio > 0) & (ratio < 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_inference_and_step_paths_equal_the_training_path(cell, dtype):
    """T above the inference chunk, both directions, unequal lengths; then step by step."""
    T, B = INFER_CHUNK + 5, 3
    m = CELLS[cell](4, 5, num_layers=2, bidirectional=True, dtype=dtype, seed=0, layer_norm=True)
    rng = np.random.default_rng(1)
    _perturb(m, rng)
    x = rng.standard_normal((T, B, 4)).astype(dtype)
    hx = tuple(rng.standard_normal((4, B, 5)).astype(dtype) for _ in m.state_names)
    hx = hx[0] if len(hx) == 1 else hx
    lengths = [T, INFER_CHUNK + 1, 7]
    out_train, s_train = m(x, hx, lengths)
    dx, _ = m.backward(rng.standard_normal(out_train.shape).astype(dtype), None)
    assert dx.dtype == dtype and all(g.dtype == dtype for g in m.grads.values())
    with rnncore.no_grad():
        out_infer, s_infer = m(x, hx, lengths)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out_infer, out_train, rtol=tol, atol=tol)
    for a, b in zip(_as_list(s_infer), _as_list(s_train), strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    assert np.all(out_train[7:, 2] == 0) and np.all(out_infer[INFER_CHUNK + 1:, 1] == 0)

    uni = CELLS[cell](4, 5, num_layers=2, dtype=dtype, seed=2, layer_norm=True)
    _perturb(uni, rng)
    with rnncore.no_grad():
        out, final = uni(x[:6])
    state = None
    for t in range(6):
        y, state = uni.step(x[t], state)
        np.testing.assert_allclose(y, out[t], rtol=tol, atol=tol)
    for a, b in zip(_as_list(state), _as_list(final), strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_float32_agrees_with_float64(cell):
    """The same weights and inputs in both dtypes: outputs, states and every gradient within 1e-4
    relative (float32's rational tanh, and its rounding, against exact float64)."""
    config = (12, 4, 6, 16, 2, True, False, [12, 9, 3, 1], True, True)
    m64, x, hx, lengths = _make(cell, config)
    m32 = CELLS[cell](6, 16, num_layers=2, bidirectional=True, dtype=np.float32, layer_norm=True)
    m32.load_state_dict(m64.state_dict())
    hx32 = tuple(s.astype(np.float32) for s in _as_list(hx))
    outs = {}
    for m, xx, h in ((m64, x, hx), (m32, x.astype(np.float32), hx32 if len(hx32) > 1 else hx32[0])):
        out, finals = m(xx, h, lengths)
        g = np.random.default_rng(3).standard_normal(out.shape).astype(m.dtype)
        m.zero_grad()
        dx, d0 = m.backward(g, None)
        outs[m.dtype.name] = {"out": out, "dx": dx,
                              **{f"d{k}0": v for k, v in zip("hc", _as_list(d0), strict=False)},
                              **{f"final_{k}": v for k, v in zip("hc", _as_list(finals), strict=False)},
                              **{k: v.copy() for k, v in m.grads.items()}}
    errors = {name: _rel(outs["float32"][name].astype(np.float64), ref)
              for name, ref in outs["float64"].items()}
    print(f"float32 vs float64, {cell}: worst {max(errors.values()):.2e}, out {errors['out']:.2e}")
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-4, (worst, errors[worst])


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_parameters_names_init_and_state_dict(cell, tmp_path):
    m = CELLS[cell](3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, layer_norm=True)
    plain = CELLS[cell](3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    assert isinstance(m, CELLS[cell]) and type(m).__name__ == f"LayerNorm{cell.upper()}"
    assert "layer_norm=True" in repr(m)
    G = {"lstm": 16, "gru": 12}[cell]
    parts = {"ih": G, "hh": G} | ({"c": 4} if cell == "lstm" else {})
    sd = m.state_dict()
    expected = []
    for layer in range(2):
        for suffix in ("", "_reverse"):
            key = f"_l{layer}{suffix}"
            expected += [f"{k}{key}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            expected += [f"layernorm_{p}_{kind}{key}" for p in parts for kind in ("weight", "bias")]
    assert list(sd) == expected
    for name, value in sd.items():
        if name.startswith("layernorm_"):
            part = name.split("_")[1]
            assert value.shape == (parts[part],)
            np.testing.assert_array_equal(value, 1.0 if "_weight_" in name else 0.0)
        else:
            np.testing.assert_array_equal(value, plain.state_dict()[name])  # same draws as the plain layer
    with pytest.raises(ValueError, match="missing keys.*layernorm_ih_weight_l0"):
        m.load_state_dict(plain.state_dict())
    _perturb(m, np.random.default_rng(0))
    other = CELLS[cell](3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=9, layer_norm=True)
    other.load_state_dict(m.state_dict())
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    np.testing.assert_array_equal(other(x)[0], m(x)[0])


@pytest.mark.parametrize("cell", ["lstm_ln", "gru_ln"])
def test_checkpoints_carry_the_normalisation(cell, tmp_path):
    from rnncore.data import Vocab
    from rnncore.models.language_model import LanguageModel
    from rnncore.train.checkpoint import load_model, save_model

    vocab = Vocab.build(["abcab"], order="sorted")
    model = LanguageModel(vocab, cell=cell, embedding_dim=4, hidden_size=5, dtype=np.float64, seed=0)
    assert model.rnn.layer_norm
    _perturb(model.rnn, np.random.default_rng(2))
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert type(loaded.rnn) is type(model.rnn)
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b) and any(k.startswith("rnn.layernorm_hh_bias") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_bad_options():
    with pytest.raises(TypeError, match="layer_norm must be True or False"):
        rnncore.LSTM(3, 4, layer_norm="yes")
    for eps in (0.0, -1e-5, float("nan")):
        with pytest.raises(ValueError, match="layer_norm_eps must be a finite number > 0"):
            rnncore.GRU(3, 4, layer_norm=True, layer_norm_eps=eps)
    with pytest.raises(ValueError, match="reset_after=True only"):
        rnncore.GRU(3, 4, layer_norm=True, reset_after=False)
    assert type(rnncore.GRU(3, 4, layer_norm=np.bool_(True))).__name__ == "LayerNormGRU"
    with pytest.raises(ValueError, match="is the layer_norm=True layer"):
        LayerNormLSTM(3, 4, layer_norm=False)
    m = rnncore.LSTM(3, 4, layer_norm=False)
    assert type(m) is rnncore.LSTM and not any(k.startswith("layernorm") for k in m.state_dict())


# -- an independent peer: the same equations composed from torch operations ----------------------------
def _torch_reference(torch, cell, params, x, states, lengths, L, D, H, eps, bias):
    """out and the final states of the layer-normalised cell written with torch.nn.functional.layer_norm,
    with packed-sequence semantics by masking (an inactive step keeps the state and outputs zeros)."""
    F = torch.nn.functional
    T, B, _ = x.shape
    mask = torch.tensor([[t < n for n in lengths] for t in range(T)], dtype=x.dtype)[:, :, None]
    layer_in, finals = x, [[None] * (D * L) for _ in states]
    for layer in range(L):
        outs = []
        for d in range(D):
            key = f"_l{layer}{('', '_reverse')[d]}"
            p = {k[: -len(key)]: v for k, v in params.items() if k.endswith(key)}
            idx = layer * D + d
            h = states[0][idx]
            c = states[1][idx] if cell == "lstm" else None
            G = p["weight_ih"].shape[0]
            out = [None] * T
            for t in (range(T) if d == 0 else reversed(range(T))):
                u = F.layer_norm(layer_in[t] @ p["weight_ih"].T, (G,), p["layernorm_ih_weight"],
                                 p["layernorm_ih_bias"], eps)
                v = F.layer_norm(h @ p["weight_hh"].T, (G,), p["layernorm_hh_weight"], p["layernorm_hh_bias"],
                                 eps)
                if bias:
                    u, v = u + p["bias_ih"], v + p["bias_hh"]
                m = mask[t]
                if cell == "lstm":
                    i, f, g, o = (u + v).chunk(4, 1)
                    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h_new = torch.sigmoid(o) * torch.tanh(F.layer_norm(c_new, (H,), p["layernorm_c_weight"],
                                                                       p["layernorm_c_bias"], eps))
                    c = m * c_new + (1 - m) * c
                else:
                    ur, uz, un = u.chunk(3, 1)
                    vr, vz, vn = v.chunk(3, 1)
                    r, z = torch.sigmoid(ur + vr), torch.sigmoid(uz + vz)
                    n = torch.tanh(un + r * vn)
                    h_new = (1 - z) * n + z * h
                h = m * h_new + (1 - m) * h
                out[t] = m * h_new
            outs.append(torch.stack(out))
            finals[0][idx] = h
            if cell == "lstm":
                finals[1][idx] = c
        layer_in = torch.cat(outs, dim=2)
    return layer_in, [torch.stack(f) for f in finals]


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_against_a_torch_composition(cell, eps):
    """Forward and every gradient against torch autograd through the equations written with torch ops
    (float64, 1e-10 relative): larger than the SymPy networks (T 7, B 4, H 6, 2 layers, bidirectional,
    unequal lengths), with each eps."""
    torch = pytest.importorskip("torch")
    T, B, I, H, L, D = 7, 4, 5, 6, 2, 2  # noqa: E741
    lengths = [7, 5, 1, 3]
    m, x, hx, _ = _make(cell, (T, B, I, H, L, True, False, lengths, True, True), eps=eps)
    out, finals = m(x, hx, lengths)
    rng = np.random.default_rng(11)
    g_out = rng.standard_normal(out.shape)
    g_finals = [rng.standard_normal(f.shape) for f in _as_list(finals)]
    m.zero_grad()
    dx, d0 = m.backward(g_out, g_finals[0] if cell == "gru" else tuple(g_finals))

    params = {k: torch.tensor(v, requires_grad=True) for k, v in m.state_dict().items()}
    tx = torch.tensor(x, requires_grad=True)
    tstates = [torch.tensor(s, requires_grad=True) for s in _as_list(hx)]
    t_out, t_finals = _torch_reference(torch, cell, params, tx, tstates, lengths, L, D, H, eps, True)
    loss = (t_out * torch.tensor(g_out)).sum() + sum((f * torch.tensor(g)).sum()
                                                     for f, g in zip(t_finals, g_finals, strict=True))
    loss.backward()
    assert _rel(out, t_out.detach().numpy()) < 1e-12
    for f, tf in zip(_as_list(finals), t_finals, strict=True):
        assert _rel(f, tf.detach().numpy()) < 1e-12
    assert _rel(dx, tx.grad.numpy()) < 1e-10
    for d, ts in zip(_as_list(d0), tstates, strict=True):
        assert _rel(d, ts.grad.numpy()) < 1e-10
    for name, value in m.grads.items():
        assert _rel(value, params[name].grad.numpy()) < 1e-10, name


def test_train_and_generate_from_the_command_line(tmp_path):
    """`rnncore train lm --cell lstm_ln`: trains, saves, and `generate` reloads the layer-normalised model."""
    from click.testing import CliRunner

    from cli import main

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 30, encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", "lm", "--text", text, "--out", out, "--cell", "lstm_ln", "--bptt", 8, "--max-steps", 3,
            "--hidden-size", 8, "--embedding-dim", 4, "--batch-size", 4, "--quiet", "--seed", 1]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from safetensors.numpy import load_file

    from rnncore.train.checkpoint import weights_path

    assert "rnn.layernorm_c_weight_l0" in load_file(weights_path(out / "checkpoint"))
    args = ["generate", str(out), "--prime", "the ", "--length", "10", "--seed", "2"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("the ")
