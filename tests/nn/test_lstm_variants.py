"""LSTM variants (projection, peepholes, gate clipping, coupled input-forget gate, unit forget bias):
gradients against central finite differences (float64, random upstream gradients), the generation
step and LSTMCell against the layer, the initialisation option, and the validation of the options.
Peer parity lives in test_torch_live.py / test_torch_fixtures.py (projection, torch) and
test_lstm_variants_onnx.py (peepholes, clipping, input_forget, onnxruntime)."""

import numpy as np
import pytest

import rnncore
from rnncore.gradcheck import check_gradients, check_recurrent

TOL = 1e-6
VARIANTS = {
    "proj": {"proj_size": 2},
    "peephole": {"peephole": True},
    "clip": {"gate_clip": 0.5},
    "coupled": {"coupled_input_forget": True},
    "all": {"proj_size": 2, "peephole": True, "gate_clip": 0.7, "coupled_input_forget": True},
}
# (T, B, I, H, num_layers, bidirectional, batch_first, lengths, with_state)
CONFIGS = {
    "stacked_bidirectional_lengths_h0": (5, 3, 2, 3, 2, True, False, [5, 2, 1], True),
    "h0": (4, 3, 3, 4, 1, False, False, None, True),
    "batch_first_lengths": (4, 3, 2, 3, 2, True, True, [4, 1, 3], True),
    "unbatched": (4, None, 3, 3, 2, True, False, None, True),
    "T1_no_state": (1, 2, 3, 3, 1, True, False, None, False),
    # five rows: the per-step products of both passes on a 4-row tile of packed panels and a 1-row one
    "five_rows_lengths": (3, 5, 2, 3, 1, True, False, [3, 1, 2, 3, 2], True),
}


def make(options, config, seed=0, scale=0.7):
    """A float64 layer with weights N(0, scale^2) (large enough that gates saturate and clipping bites),
    its input and initial states."""
    T, B, I, H, L, bi, bf, lengths, with_state = config
    layer = rnncore.LSTM(I, H, num_layers=L, bidirectional=bi, batch_first=bf, dtype=np.float64, seed=seed,
                         **options)
    rng = np.random.default_rng(seed + 100)
    layer.load_state_dict({k: scale * rng.standard_normal(v.shape) for k, v in layer.state_dict().items()})
    D, P = 2 if bi else 1, options.get("proj_size") or H
    batch = () if B is None else (B,)
    x = rng.standard_normal(((B, T) if bf else (T, *batch)) + (I,))
    hx = None
    if with_state:
        hx = (rng.standard_normal((D * L, *batch, P)), 1.5 * rng.standard_normal((D * L, *batch, H)))
    return layer, x, hx, lengths


def clip_margins(layer, x, hx, lengths):
    """(fraction of active gate pre-activations beyond the clip bound, smallest distance to a bound)."""
    layer(x, hx, lengths)
    T = layer._cache["T"]
    active = np.arange(T)[:, None] < layer._cache["lengths"][None, :]
    pre = np.concatenate([saved[4][active] for entry in layer._cache["layers"] for saved in entry["saved"]])
    layer._cache = None
    beyond = np.abs(pre) > layer.gate_clip
    return float(beyond.mean()), float(np.min(np.abs(np.abs(pre) - layer.gate_clip)))


def assert_all_pass(results, layer, hx):
    failures = [str(r) for r in results if not r.passed]
    assert not failures, "\n".join(failures)
    names = {r.name for r in results}
    assert "x" in names and set(layer.state_dict()) <= names
    if hx is not None:
        assert {"h0", "c0"} <= names


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradients_stacked_bidirectional_lengths(variant):
    options = VARIANTS[variant]
    layer, x, hx, lengths = make(options, CONFIGS["stacked_bidirectional_lengths_h0"])
    if "gate_clip" in options:
        # finite differences are exact only away from the kinks of the clip
        beyond, margin = clip_margins(layer, x, hx, lengths)
        assert 0.1 < beyond < 0.9 and margin > 1e-4, (beyond, margin)
    assert_all_pass(check_recurrent(layer, x, hx, lengths, seed=1, tolerance=TOL), layer, hx)
    if options.get("coupled_input_forget"):
        H = layer.hidden_size
        for name, g in layer.grads.items():  # forget rows: [H:2H] of the gate rows and of p_i | p_f | p_o
            if not name.startswith("weight_hr"):
                assert np.all(g[H:2 * H] == 0), f"{name}: the unused forget rows got a gradient"


@pytest.mark.parametrize("config", sorted(set(CONFIGS) - {"stacked_bidirectional_lengths_h0"}))
def test_gradients_all_variants(config):
    layer, x, hx, lengths = make(VARIANTS["all"], CONFIGS[config], seed=3)
    _, margin = clip_margins(layer, x, hx, lengths)
    assert margin > 1e-4, margin
    assert_all_pass(check_recurrent(layer, x, hx, lengths, seed=2, tolerance=TOL), layer, hx)


def test_state_shapes_with_projection():
    layer = rnncore.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3, 3))
    out, (h_n, c_n) = layer(x)
    assert out.shape == (4, 3, 4) and h_n.shape == (4, 3, 2) and c_n.shape == (4, 3, 5)
    assert layer.state_dict()["weight_ih_l1"].shape == (20, 4)
    assert layer.state_dict()["weight_hh_l0"].shape == (20, 2)
    assert layer.state_dict()["weight_hr_l1_reverse"].shape == (2, 5)
    dx, (dh0, dc0) = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape and dh0.shape == (4, 3, 2) and dc0.shape == (4, 3, 5)
    with pytest.raises(ValueError, match=r"h0 must have shape .*\(4, 3, 2\), got \(4, 3, 5\)"):
        layer(x, (np.zeros((4, 3, 5)), np.zeros((4, 3, 5))))
    with pytest.raises(ValueError, match=r"c0 must have shape .*\(4, 3, 5\), got \(4, 3, 2\)"):
        layer(x, (np.zeros((4, 3, 2)), np.zeros((4, 3, 2))))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_step_matches_forward(variant):
    """Generation steps (the step kernel) reproduce the sequence forward of a 2-layer stack."""
    layer, x, hx, _ = make(VARIANTS[variant], (5, 2, 3, 4, 2, False, False, None, True))
    with rnncore.no_grad():
        out, (h_n, c_n) = layer(x, hx)
    state = hx
    for t in range(x.shape[0]):
        y, state = layer.step(x[t], state)
        np.testing.assert_allclose(y, out[t], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(state[0], h_n, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(state[1], c_n, rtol=1e-12, atol=1e-13)


def test_float32_matches_float64():
    layer64, x, hx, lengths = make(VARIANTS["all"], CONFIGS["stacked_bidirectional_lengths_h0"])
    layer32 = rnncore.LSTM(2, 3, num_layers=2, bidirectional=True, dtype=np.float32, **VARIANTS["all"])
    layer32.load_state_dict(layer64.state_dict())
    out64, _ = layer64(x, hx, lengths)
    out32, _ = layer32(x.astype(np.float32), tuple(s.astype(np.float32) for s in hx), lengths)
    g = np.random.default_rng(0).standard_normal(out64.shape)
    dx64, _ = layer64.backward(g)
    dx32, _ = layer32.backward(g.astype(np.float32))
    assert out32.dtype == dx32.dtype == np.float32
    assert np.max(np.abs(out32 - out64)) / np.max(np.abs(out64)) < 1e-5
    assert np.max(np.abs(dx32 - dx64)) / np.max(np.abs(dx64)) < 1e-4
    for name, g64 in layer64.grads.items():
        assert layer32.grads[name].dtype == np.float32
        assert np.max(np.abs(layer32.grads[name] - g64)) / np.max(np.abs(g64)) < 1e-4, name


def test_lstm_cell_variants():
    options = VARIANTS["all"]
    cell = rnncore.LSTMCell(3, 4, dtype=np.float64, seed=1, **options)
    assert list(cell.state_dict()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr",
                                       "weight_peephole"]
    rng = np.random.default_rng(2)
    cell.load_state_dict({k: 0.7 * rng.standard_normal(v.shape) for k, v in cell.state_dict().items()})
    x, h, c = rng.standard_normal((3, 3)), rng.standard_normal((3, 2)), rng.standard_normal((3, 4))
    with rnncore.no_grad():
        h_step, c_step = cell(x, (h, c))
    h1, c1 = cell(x, (h, c))
    np.testing.assert_allclose(h1, h_step, rtol=1e-12)
    np.testing.assert_allclose(c1, c_step, rtol=1e-12)
    gh, gc = rng.standard_normal(h1.shape), rng.standard_normal(c1.shape)
    cell.zero_grad()
    dx, (dh, dc) = cell.backward((gh, gc))

    def loss():
        with rnncore.no_grad():
            a, b = cell(x, (h, c))
        return float(np.sum(a * gh) + np.sum(b * gc))

    wrt = {"x": (x, dx), "h": (h, dh), "c": (c, dc)}
    wrt.update({k: (v, cell.grads[k].copy()) for k, v in cell.named_parameters()})
    failures = [str(r) for r in check_gradients(loss, wrt, tolerance=TOL) if not r.passed]
    assert not failures, "\n".join(failures)
    with pytest.raises(ValueError, match=r"h must have shape \(3, 2\), got \(3, 4\)"):
        cell(x, (c, c))
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['peepholes'\\]"):
        rnncore.LSTMCell(3, 4, peepholes=True)


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}, {"peephole": True}])
def test_unit_forget_bias(kwargs):
    """bias_ih's forget rows are 1 and bias_hh's are 0 (their sum, the forget gate's bias, is 1);
    everything else is what the same seed gives without the option."""
    H = 5
    plain = rnncore.LSTM(3, H, seed=7, **kwargs).state_dict()
    ufb = rnncore.LSTM(3, H, seed=7, unit_forget_bias=True, **kwargs)
    assert "unit_forget_bias=True" in repr(ufb)
    sd = ufb.state_dict()
    assert list(sd) == list(plain)
    for name, value in sd.items():
        expected = plain[name].copy()
        if name.startswith("bias_ih"):
            expected[H:2 * H] = 1.0
        elif name.startswith("bias_hh"):
            expected[H:2 * H] = 0.0
        np.testing.assert_array_equal(value, expected, err_msg=name)
    for suffix in {k[len("bias_ih"):] for k in sd if k.startswith("bias_ih")}:
        np.testing.assert_array_equal(sd["bias_ih" + suffix][H:2 * H] + sd["bias_hh" + suffix][H:2 * H], 1.0)
        assert not np.any(sd["bias_ih" + suffix][:H] == 1.0)  # the other gates keep their random biases
    # with zero weights the forget gate is sigmoid(1): c_1 = sigmoid(1) * c_0 when the input gate is shut
    layer = rnncore.LSTM(1, 1, unit_forget_bias=True, dtype=np.float64)
    layer.load_state_dict({**{k: np.zeros_like(v) for k, v in layer.state_dict().items()},
                           "bias_ih_l0": np.array([-1e3, 1.0, 0.0, 0.0])})
    _, (_, c_n) = layer(np.zeros((1, 1, 1)), (np.zeros((1, 1, 1)), np.full((1, 1, 1), 2.0)))
    assert c_n.item() == pytest.approx(2.0 / (1.0 + np.exp(-1.0)), rel=1e-14)


def test_state_dict_round_trip_and_strictness():
    layer = rnncore.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, peephole=True, seed=0)
    keys = list(layer.state_dict())
    assert keys[:6] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0",
                        "weight_peephole_l0"]
    assert layer.state_dict()["weight_peephole_l1_reverse"].shape == (12,)
    other = rnncore.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, peephole=True, seed=1)
    other.load_state_dict(layer.state_dict())
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v)
    plain = rnncore.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, seed=0)
    with pytest.raises(ValueError, match="unexpected keys.*weight_peephole_l0"):
        plain.load_state_dict(layer.state_dict())
    with pytest.raises(ValueError, match="missing keys.*weight_peephole_l0"):
        layer.load_state_dict(plain.state_dict())
    assert "proj_size=2" in repr(layer) and "peephole=True" in repr(layer)
    assert repr(rnncore.LSTM(3, 4)) == "LSTM(3, 4, dtype=float32)"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"proj_size": 4}, ValueError, r"proj_size must be smaller than hidden_size = 4, got 4"),
    ({"proj_size": 9}, ValueError, r"proj_size must be smaller than hidden_size = 4, got 9"),
    ({"proj_size": -1}, ValueError, r"proj_size must be an integer >= 0 \(0 for no projection\), got -1"),
    ({"proj_size": 1.5}, ValueError, r"proj_size must be an integer >= 0.*got 1.5"),
    ({"proj_size": True}, ValueError, r"proj_size must be an integer >= 0.*got True"),
    ({"gate_clip": 0}, ValueError, r"gate_clip must be a finite number > 0 or None, got 0"),
    ({"gate_clip": -1.0}, ValueError, r"gate_clip must be a finite number > 0 or None, got -1.0"),
    ({"gate_clip": float("inf")}, ValueError, r"gate_clip must be a finite number > 0 or None, got inf"),
    ({"gate_clip": "3"}, ValueError, r"gate_clip must be a finite number > 0 or None, got '3'"),
    ({"peephole": 1}, TypeError, r"peephole must be True or False, got 1"),
    ({"coupled_input_forget": "yes"}, TypeError, r"coupled_input_forget must be True or False, got 'yes'"),
    ({"unit_forget_bias": True, "bias": False}, ValueError, r"unit_forget_bias=True needs bias=True"),
    ({"unit_forget_bias": True, "coupled_input_forget": True}, ValueError,
     r"unit_forget_bias=True has no effect with coupled_input_forget=True"),
])
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        rnncore.LSTM(3, 4, **kwargs)


def test_default_layer_runs_the_default_kernels():
    assert not rnncore.LSTM(3, 4).variant
    assert not rnncore.LSTM(3, 4, unit_forget_bias=True).variant  # an initialisation, not a new cell
    for options in VARIANTS.values():
        assert rnncore.LSTM(3, 4, **options).variant


def test_language_model_with_lstm_options(tmp_path):
    """A task model built with LSTM variant options: gradients against finite differences, and a
    checkpoint that rebuilds the same variant (config and weights, weight_hr and weight_peephole)."""
    from rnncore.data import Batch, Vocab
    from rnncore.models.base import TaskModel, make_recurrent
    from rnncore.models.language_model import LanguageModel

    vocab = Vocab(list("abcdef"))
    options = {"proj_size": 2, "peephole": True, "gate_clip": 2.0, "unit_forget_bias": True}
    model = LanguageModel(vocab, cell="lstm", embedding_dim=3, hidden_size=4, num_layers=2, dtype="float64",
                          seed=3, lstm_options=options)
    assert model.rnn.proj_size == 2 and model.head.state_dict()["weight"].shape == (len(vocab), 2)
    assert model.get_config()["lstm_options"] == options
    assert "lstm_options" not in LanguageModel(vocab, hidden_size=4).get_config()
    rng = np.random.default_rng(0)
    ids = rng.integers(len(vocab.specials), len(vocab), size=(6, 2))
    batch = Batch(inputs=ids[:-1], targets=ids[1:])
    model.zero_grad()
    model.loss_and_backward(batch)
    grads = model.grads
    wrt = {name: (value, grads[name].copy()) for name, value in model.named_parameters()}
    results = check_gradients(lambda: model.evaluate(batch).loss, wrt, eps=1e-5, tolerance=TOL)
    failures = [str(r) for r in results if not r.passed]
    assert not failures, "\n".join(failures)
    model.save(tmp_path / "ckpt")
    loaded = TaskModel.load(tmp_path / "ckpt")
    assert loaded.rnn.variant_options() == model.rnn.variant_options()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
    assert {"rnn.weight_hr_l1", "rnn.weight_peephole_l1"} <= set(loaded.state_dict())
    with pytest.raises(ValueError, match="lstm_options apply to cell='lstm' only, got cell='gru'"):
        make_recurrent("gru", 3, 4, lstm_options={"peephole": True})
    with pytest.raises(ValueError, match=r"lstm_options: unknown options \['peepholes'\]"):
        make_recurrent("lstm", 3, 4, lstm_options={"peepholes": True})
