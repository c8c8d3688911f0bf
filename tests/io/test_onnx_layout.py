"""to_onnx_weights / from_onnx_weights: torch.nn names <-> ONNX W (D, G*H, I), R (D, G*H, H), B (D, 2*G*H)
and an LSTM's peepholes P (D, 3H).

The block orders are checked against the ONNX operator specification (LSTM i, o, f, c; GRU z, r, h;
B = [W_b, R_b]; P = [p_i, p_o, p_f]), the conversions round-trip exactly, and weights drawn in the
ONNX layout, run through a one-operator graph in onnxruntime, give rnncore's outputs after
``from_onnx_weights``.
"""

import numpy as np
import pytest

import rnncore
from rnncore.io import from_onnx_weights, linear_before_reset, to_onnx_weights

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

LAYERS = {"rnn": rnncore.RNN, "lstm": rnncore.LSTM, "gru": rnncore.GRU}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_is_exact(cell, bias):
    layer = LAYERS[cell](3, 4, num_layers=3, bidirectional=True, bias=bias, dtype=np.float64, seed=0)
    sd = layer.state_dict()
    onnx_layers = to_onnx_weights(sd, cell)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    assert [w["W"].shape for w in onnx_layers] == [(2, G * 4, 3), (2, G * 4, 8), (2, G * 4, 8)]
    assert all(w["R"].shape == (2, G * 4, 4) for w in onnx_layers)
    assert all((w["B"] is None) if not bias else w["B"].shape == (2, 2 * G * 4) for w in onnx_layers)
    back = from_onnx_weights(onnx_layers, cell, bias=bias)
    assert list(back) == list(sd)  # torch.nn's key order too
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_peepholes_round_trip_as_P():
    layer = rnncore.LSTM(3, 4, num_layers=3, bidirectional=True, peephole=True, dtype=np.float64, seed=2)
    sd = layer.state_dict()
    onnx_layers = to_onnx_weights(sd, "lstm")
    assert all(w["P"].shape == (2, 12) for w in onnx_layers)
    for k, w in enumerate(onnx_layers):
        for d, suffix in enumerate(("", "_reverse")):
            p_i, p_f, p_o = np.split(sd[f"weight_peephole_l{k}{suffix}"], 3)  # rnncore: i, f, o
            np.testing.assert_array_equal(w["P"][d], np.concatenate([p_i, p_o, p_f]))  # ONNX: i, o, f
    back = from_onnx_weights(onnx_layers, "lstm")
    assert list(back) == list(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    as_tuples = from_onnx_weights([(w["W"], w["R"], w["B"], w["P"]) for w in onnx_layers], "lstm")
    assert all(np.array_equal(as_tuples[k], v) for k, v in sd.items())
    # without peepholes: P is None and no peephole keys come back
    plain = to_onnx_weights(rnncore.LSTM(3, 4, seed=2).state_dict(), "lstm")
    assert plain[0]["P"] is None
    assert not any("peephole" in k for k in from_onnx_weights(plain, "lstm"))
    assert "P" not in to_onnx_weights(rnncore.GRU(3, 4).state_dict(), "gru")[0]


def test_block_orders_follow_the_onnx_spec():
    H = 2
    sd = rnncore.LSTM(3, H, seed=1).state_dict()
    (w,) = to_onnx_weights(sd, "lstm")
    i, f, g, o = np.split(sd["weight_ih_l0"], 4)  # torch.nn: i, f, g, o
    np.testing.assert_array_equal(w["W"][0], np.concatenate([i, o, f, g]))  # ONNX: i, o, f, c
    bi, bf, bg, bo = np.split(sd["bias_hh_l0"], 4)
    np.testing.assert_array_equal(w["B"][0, 4 * H:], np.concatenate([bi, bo, bf, bg]))  # [Wb, Rb]
    sd = rnncore.GRU(3, H, bidirectional=True, seed=1).state_dict()
    (w,) = to_onnx_weights(sd, "gru")
    r, z, n = np.split(sd["weight_hh_l0_reverse"], 3)  # torch.nn: r, z, n
    np.testing.assert_array_equal(w["R"][1], np.concatenate([z, r, n]))  # ONNX: z, r, h
    r, z, n = np.split(sd["bias_ih_l0"], 3)
    np.testing.assert_array_equal(w["B"][0, :3 * H], np.concatenate([z, r, n]))


def test_task_model_prefix():
    from rnncore.data import Vocab
    from rnncore.models.language_model import LanguageModel

    model = LanguageModel(Vocab(list("abc")), cell="gru", embedding_dim=3, hidden_size=4, num_layers=2)
    layers = to_onnx_weights(model.state_dict(), "gru", prefix="rnn.")
    assert len(layers) == 2
    back = from_onnx_weights(layers, "gru", prefix="rnn.")
    assert set(back) == {k for k in model.state_dict() if k.startswith("rnn.")}


def test_refusals_are_clear():
    sd = rnncore.LSTM(3, 4, seed=0).state_dict()
    with_proj = dict(sd, weight_hr_l0=np.zeros((2, 4), np.float32))  # torch.nn.LSTM(proj_size=2)'s key
    with pytest.raises(ValueError, match=r"weight_hr_l0.*projections \(proj_size > 0\) has no ONNX"):
        to_onnx_weights(with_proj, "lstm")
    missing = {k: v for k, v in sd.items() if k != "bias_hh_l0"}
    with pytest.raises(ValueError, match=r"missing \['bias_hh_l0'\]"):
        to_onnx_weights(missing, "lstm")
    with pytest.raises(ValueError, match=r"weight_hh must be \(G\*H, H\) = \(12, 4\)"):
        to_onnx_weights(sd, "gru")  # LSTM weights are not a GRU's
    with pytest.raises(ValueError, match="cell must be one of"):
        to_onnx_weights(sd, "transformer")
    with pytest.raises(ValueError, match="no recurrent weights under prefix 'rnn.'"):
        to_onnx_weights(sd, "lstm", prefix="rnn.")
    layers = to_onnx_weights(sd, "lstm")
    with pytest.raises(ValueError, match="B is not zero, so the layer needs bias=True"):
        from_onnx_weights(layers, "lstm", bias=False)
    with pytest.raises(ValueError, match=r"R must be \(D, G\*H, H\) with G = 3"):
        from_onnx_weights(layers, "gru")
    peep = rnncore.LSTM(3, 4, num_layers=2, peephole=True, seed=0).state_dict()
    with pytest.raises(ValueError, match=r"missing \['weight_peephole_l1'\]"):
        to_onnx_weights({k: v for k, v in peep.items() if k != "weight_peephole_l1"}, "lstm")
    with pytest.raises(ValueError, match=r"weight_peephole_l0: must have shape \(12,\), got \(8,\)"):
        to_onnx_weights(dict(peep, weight_peephole_l0=np.zeros(8, np.float32)), "lstm")
    gru = rnncore.GRU(3, 4).state_dict()
    with pytest.raises(ValueError, match="peephole weights .* only an lstm has, got cell='gru'"):
        to_onnx_weights(dict(gru, weight_peephole_l0=np.zeros(12, np.float32)), "gru")
    peep_layers = to_onnx_weights(peep, "lstm")
    with pytest.raises(ValueError, match=r"layer 0: P must be \(D, 3\*H\) = \(1, 12\), got \(1, 16\)"):
        from_onnx_weights([dict(peep_layers[0], P=np.zeros((1, 16))), peep_layers[1]], "lstm")
    with pytest.raises(ValueError, match="layer 1: P is None but layer 0's is not"):
        from_onnx_weights([peep_layers[0], dict(peep_layers[1], P=None)], "lstm")
    with pytest.raises(ValueError, match="layer 0: P .peepholes. belongs to an lstm, got cell='gru'"):
        from_onnx_weights([dict(to_onnx_weights(gru, "gru")[0], P=np.zeros((1, 12)))], "gru")
    with pytest.raises(ValueError, match=r"expected \(W, R, B\) or \(W, R, B, P\), got 2 arrays"):
        from_onnx_weights([(peep_layers[0]["W"], peep_layers[0]["R"])], "lstm")
    assert linear_before_reset(rnncore.GRU(2, 2)) == 1
    assert linear_before_reset(rnncore.GRU(2, 2, reset_after=False)) == 0
    assert linear_before_reset(rnncore.GRUCell(2, 2, reset_after=False)) == 0
    with pytest.raises(TypeError, match="must be a GRU"):
        linear_before_reset(rnncore.LSTM(2, 2))


@pytest.mark.parametrize(("cell", "lbr"), [("rnn", None), ("lstm", None), ("lstm", "P"), ("gru", 1),
                                           ("gru", 0)])
def test_weights_in_onnx_layout_run_the_same_in_onnxruntime_and_rnncore(cell, lbr):
    """ONNX -> rnncore: random W, R, B (and an LSTM's peepholes P) in the ONNX layout through one
    ONNX operator in onnxruntime (the reference), and through rnncore after from_onnx_weights."""
    rng = np.random.default_rng(3)
    G, H, I, T, B, D = {"rnn": 1, "lstm": 4, "gru": 3}[cell], 4, 3, 6, 2, 2
    W = rng.uniform(-0.7, 0.7, (D, G * H, I)).astype(np.float32)
    R = rng.uniform(-0.7, 0.7, (D, G * H, H)).astype(np.float32)
    Bias = rng.uniform(-0.7, 0.7, (D, 2 * G * H)).astype(np.float32)
    weights = {"W": W, "R": R, "B": Bias}
    if lbr == "P":  # the three peephole vectors differ in scale, so a swapped pair shows
        weights["P"] = (rng.uniform(-1, 1, (D, 3 * H)) * np.repeat([0.3, 1.5, 3.0], H)).astype(np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    attrs = {"hidden_size": H, "direction": "bidirectional"}
    if cell == "gru":
        attrs["linear_before_reset"] = lbr
    names = ["x", "W", "R", "B"] + (["", "", "", "P"] if "P" in weights else [])
    node = helper.make_node(op, names, ["Y", "Y_h"], **attrs)
    f32 = TensorProto.FLOAT
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("x", f32, ["T", "B", I])],
                              [helper.make_tensor_value_info("Y", f32, ["T", D, "B", H]),
                               helper.make_tensor_value_info("Y_h", f32, [D, "B", H])],
                              [numpy_helper.from_array(a, n) for n, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 14)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    Y, Y_h = sess.run(None, {"x": x})
    kwargs = {"reset_after": bool(lbr)} if cell == "gru" else {"peephole": True} if lbr == "P" else {}
    layer = LAYERS[cell](I, H, bidirectional=True, seed=0, **kwargs)
    layer.load_state_dict(from_onnx_weights([weights], cell))
    with rnncore.no_grad():
        out, state = layer(x)
    h_n = state[0] if isinstance(state, tuple) else state
    expected_out = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    assert np.max(np.abs(out - expected_out)) < 1e-5 * np.max(np.abs(expected_out))
    assert np.max(np.abs(h_n - Y_h)) < 1e-5 * np.max(np.abs(Y_h))
