"""LSTM peepholes, gate clipping and the coupled input-forget gate against onnxruntime's LSTM operator.

onnxruntime implements all three (ONNX's ``P`` input, ``clip`` and ``input_forget=1`` attributes) and
runs them in float32 only; ``onnx.reference`` ignores clip and input_forget, so it is not used here.
The graph is the library's export of the layer (``rnncore.io.to_onnx_model``: one LSTM operator per
layer, the weights in the ONNX layout of ``rnncore.io.onnx_layout``, which tests/io checks against the
operator specification and onnxruntime); the reference is onnxruntime's own implementation of the
operator. Forward outputs and final states are compared (the operator has no backward), one-layer
networks, each direction, with sequence lengths and initial states. Error measure:
max|a - b| / max|b|, within 1e-4 (the torch float32 parity tolerance), for rnncore's float32 layer
(training and inference kernels) and its float64 layer on the same values (measured: 1e-7 to 3.2e-7,
the level of onnxruntime's own float32 rounding).
Each case also checks that its option changes the output by far more than that, so a layer that
ignored the option would fail.
"""

import numpy as np
import pytest

import rnncore
from rnncore.io import to_onnx_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-4


def run_onnxruntime(layer, x, h0, c0, lengths):
    """Output (T, B, D*H), h_n and c_n (D, B, H) from onnxruntime running the layer's float32 ONNX export."""
    proto = to_onnx_model(layer, dtype=np.float32)
    ops = [n.op_type for n in proto.graph.node if n.op_type == "LSTM"]
    assert ops == ["LSTM"], ops  # one layer: one operator computes it
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": x.astype(np.float32), "h0": h0.astype(np.float32), "c0": c0.astype(np.float32),
             "lengths": np.asarray(lengths, np.int64)}
    return tuple(session.run(["output", "h_n", "c_n"], feeds))


def rel_err(a, b):
    scale = max(float(np.max(np.abs(b))), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / scale


# name: LSTM options; (T, B, I, H, bidirectional, lengths)
CASES = {
    "peephole": ({"peephole": True}, (5, 3, 3, 4, False, [5, 2, 4])),
    "peephole_bidir": ({"peephole": True}, (4, 2, 2, 3, True, [4, 1])),
    "clip": ({"gate_clip": 0.6}, (5, 3, 3, 4, False, [5, 5, 3])),
    "clip_bidir": ({"gate_clip": 1.0}, (4, 3, 2, 3, True, [2, 4, 1])),
    "input_forget": ({"coupled_input_forget": True}, (5, 3, 3, 4, False, [3, 5, 5])),
    "input_forget_bidir": ({"coupled_input_forget": True}, (4, 2, 3, 2, True, [4, 3])),
    "all_three_bidir": ({"peephole": True, "gate_clip": 0.8, "coupled_input_forget": True},
                        (6, 3, 3, 4, True, [6, 2, 5])),
}


def draw(options, shape, dtype, seed):
    """A layer with weights N(0, 0.7^2) (so gates saturate and clipping bites) and its inputs."""
    T, B, I, H, bidir, lengths = shape
    layer = rnncore.LSTM(I, H, bidirectional=bidir, dtype=dtype, seed=seed, **options)
    rng = np.random.default_rng(seed)
    layer.load_state_dict({k: 0.7 * rng.standard_normal(v.shape) for k, v in layer.state_dict().items()})
    D = 2 if bidir else 1
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = (0.8 * rng.standard_normal((D, B, H))).astype(dtype)
    c0 = (1.5 * rng.standard_normal((D, B, H))).astype(dtype)
    return layer, x, h0, c0, lengths


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_onnxruntime(name):
    options, shape = CASES[name]
    layer, x, h0, c0, lengths = draw(options, shape, np.float32, seed=sorted(CASES).index(name))
    want = run_onnxruntime(layer, x, h0, c0, lengths)
    with rnncore.no_grad():
        infer = layer(x, (h0, c0), lengths)
    out, (h_n, c_n) = layer(x, (h0, c0), lengths)
    errors = {}
    for label, (o, h, c) in (("train", (out, h_n, c_n)), ("no_grad", (infer[0], *infer[1]))):
        for key, got, ref in (("out", o, want[0]), ("h_n", h, want[1]), ("c_n", c, want[2])):
            errors[f"{key} ({label})"] = rel_err(got, ref)
    # float64 rnncore on the same (float32-representable) values: the semantics, free of float32 rounding
    layer64 = rnncore.LSTM(shape[2], shape[3], bidirectional=shape[4], dtype=np.float64, **options)
    layer64.load_state_dict(layer.state_dict())
    with rnncore.no_grad():
        o64, (h64, c64) = layer64(x.astype(np.float64), (h0.astype(np.float64), c0.astype(np.float64)),
                                  lengths)
    for key, got, ref in (("out", o64, want[0]), ("h_n", h64, want[1]), ("c_n", c64, want[2])):
        errors[f"{key} (float64)"] = rel_err(got, ref)
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, f"{name}: relative errors above {TOL:g}: {bad}"

    # The option matters: the same weights without it give a clearly different output.
    plain = rnncore.LSTM(shape[2], shape[3], bidirectional=shape[4], dtype=np.float32)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k in plain.state_dict()})
    with rnncore.no_grad():
        out_plain, _ = plain(x, (h0, c0), lengths)
    assert rel_err(out_plain, want[0]) > 100 * TOL, f"{name}: the option does not change the output"


def test_onnxruntime_sees_the_options():
    """The harness itself: onnxruntime's output moves with each option (clip, input_forget, P)."""
    options, shape = CASES["all_three_bidir"]
    layer, x, h0, c0, lengths = draw(options, shape, np.float32, seed=5)
    base = run_onnxruntime(layer, x, h0, c0, lengths)[0]
    for change in ({"gate_clip": None}, {"coupled_input_forget": False}, {"peephole": False}):
        other = rnncore.LSTM(shape[2], shape[3], bidirectional=True, dtype=np.float32,
                             **{**options, **change})
        other.load_state_dict({k: v for k, v in layer.state_dict().items() if k in other.state_dict()})
        assert rel_err(run_onnxruntime(other, x, h0, c0, lengths)[0], base) > 100 * TOL, change
