"""rnncore.io.to_onnx: exported layers, language models and classifiers run in onnxruntime (float32)
and in onnx's ReferenceEvaluator (float64) and give rnncore's forward.

Error measure: max|ours - theirs| / max|theirs| per output; float32 within 1e-5 (onnxruntime),
float64 within 1e-10 (ReferenceEvaluator, which ignores sequence_lens and knows only Tanh for RNN:
full-length batches there).
"""

import numpy as np
import pytest

import rnncore
from rnncore.data import Vocab
from rnncore.io import to_onnx, to_onnx_model
from rnncore.models.classifier import SequenceClassifier
from rnncore.models.language_model import LanguageModel
from rnncore.models.tagger import SequenceRegressor, SequenceTagger

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx.reference import ReferenceEvaluator  # noqa: E402

RNG = np.random.default_rng(11)
VOCAB = Vocab(list("abcdefghij"))
LABELS = Vocab(["x", "y", "z"], specials=())


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def run_ort(proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def run_reference(proto, feeds):
    sess = ReferenceEvaluator(proto)
    return dict(zip(sess.output_names, sess.run(None, feeds)))


def layer_case(layer, T=7, B=4, lengths=True, dtype=np.float32):
    """feeds and rnncore's outputs for a layer."""
    D, L, H = layer.num_directions, layer.num_layers, layer.hidden_size
    x = RNG.standard_normal((B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size))
    feeds = {"x": x.astype(dtype), "h0": 0.5 * RNG.standard_normal((D * L, B, H)).astype(dtype)}
    is_lstm = isinstance(layer, rnncore.LSTM)
    if is_lstm:
        feeds["c0"] = 0.5 * RNG.standard_normal((D * L, B, H)).astype(dtype)
    lens = None
    if lengths:
        lens = np.array(([T, 3, 1, T - 2] * B)[:B], dtype=np.int64)
        feeds["lengths"] = lens
    with rnncore.no_grad():
        out, state = layer(feeds["x"], (feeds["h0"], feeds["c0"]) if is_lstm else feeds["h0"], lens)
    expected = {"output": out, "h_n": state[0] if is_lstm else state}
    if is_lstm:
        expected["c_n"] = state[1]
    return feeds, expected


LAYER_CASES = [
    ("RNN", {"nonlinearity": "tanh", "num_layers": 2, "bidirectional": True}),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2, "bidirectional": True}),
    ("RNN", {"nonlinearity": "sigmoid", "num_layers": 2}),
    ("RNN", {"nonlinearity": "identity", "bidirectional": True}),
    ("LSTM", {"num_layers": 3, "bidirectional": True}),
    ("LSTM", {"batch_first": True, "num_layers": 2}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"reset_after": False, "num_layers": 2, "bidirectional": True}),
    ("GRU", {"bias": False}),
]


@pytest.mark.parametrize(("kind", "kwargs"), LAYER_CASES,
                         ids=["-".join([k] + [f"{a}={b}" for a, b in kw.items()]) for k, kw in LAYER_CASES])
def test_layers_in_onnxruntime_with_variable_lengths(kind, kwargs):
    layer = getattr(rnncore, kind)(3, 5, seed=2, **kwargs)
    proto = to_onnx_model(layer)
    feeds, expected = layer_case(layer)
    got = run_ort(proto, feeds)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].shape == value.shape
        assert rel_err(got[name], value) < 1e-5, name
    # padded positions are zero in both
    out = expected["output"] if not layer.batch_first else expected["output"].transpose(1, 0, 2)
    assert np.all(out[3:, 1] == 0)


def test_gru_needs_linear_before_reset_1():
    """The same graph with linear_before_reset=0 (what torch's dynamo exporter writes) is far off."""
    layer = rnncore.GRU(3, 5, num_layers=2, bidirectional=True, seed=4)
    proto = to_onnx_model(layer)
    feeds, expected = layer_case(layer)
    gru_nodes = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(gru_nodes) == 2
    for node in gru_nodes:
        (attr,) = [a for a in node.attribute if a.name == "linear_before_reset"]
        assert attr.i == 1
    assert rel_err(run_ort(proto, feeds)["output"], expected["output"]) < 1e-5
    for node in gru_nodes:
        for a in node.attribute:
            if a.name == "linear_before_reset":
                a.i = 0
    assert rel_err(run_ort(proto, feeds)["output"], expected["output"]) > 1e-3


def test_relu_elman_sets_the_activations_attribute():
    proto = to_onnx_model(rnncore.RNN(2, 3, nonlinearity="relu", bidirectional=True))
    (node,) = [n for n in proto.graph.node if n.op_type == "RNN"]
    (attr,) = [a for a in node.attribute if a.name == "activations"]
    assert [s.decode() for s in attr.strings] == ["Relu", "Relu"]


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_float64_through_the_reference_evaluator(kind):
    layer = getattr(rnncore, kind)(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=5)
    proto = to_onnx_model(layer, lengths=False)
    feeds, expected = layer_case(layer, lengths=False, dtype=np.float64)
    got = run_reference(proto, feeds)
    for name, value in expected.items():
        assert got[name].dtype == np.float64
        assert rel_err(got[name], value) < 1e-10, name


def test_graph_metadata_versions_and_symbolic_dims(tmp_path):
    layer = rnncore.LSTM(3, 4, num_layers=2)
    path = to_onnx(layer, tmp_path / "lstm.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == 7 and proto.opset_import[0].version == 14
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["T", "B", 3]
    assert [o.name for o in proto.graph.output] == ["output", "h_n", "c_n"]
    newer = to_onnx_model(layer, opset=22, ir_version=10)
    feeds, expected = layer_case(layer, T=3, B=2)
    assert rel_err(run_ort(newer, feeds)["h_n"], expected["h_n"]) < 1e-5
    class Variant(rnncore.LSTM):
        pass

    with pytest.raises(TypeError, match="exports rnncore.RNN, LSTM and GRU layers, got Variant"):
        to_onnx_model(Variant(2, 3))
    broken = rnncore.GRU(2, 3)
    broken._params["weight_hh_l0"][1, 2] = np.nan
    with pytest.raises(ValueError, match="'weight_hh_l0' holds NaN or Inf"):
        to_onnx_model(broken)
    with pytest.raises(ValueError, match="opset must lie in 14..22"):
        to_onnx_model(layer, opset=7)
    with pytest.raises(TypeError, match="exports RNN, LSTM, GRU, LanguageModel, SequenceClassifier"):
        to_onnx_model(rnncore.Linear(2, 3))
    with pytest.raises(TypeError, match="must be an rnncore layer or task model, got dict"):
        to_onnx_model({"weight_ih_l0": np.zeros((4, 2))})


# -- language model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cell", "layers", "embedding_dim"),
                         [("lstm", 2, 4), ("gru", 2, 4), ("rnn", 1, None)])
def test_language_model_whole_sequence_and_stepped(cell, layers, embedding_dim):
    model = LanguageModel(VOCAB, cell=cell, embedding_dim=embedding_dim, hidden_size=6, num_layers=layers,
                          dropout=0.2 if layers > 1 else 0.0, seed=1).eval()
    proto = to_onnx_model(model)
    T, B = 8, 3
    ids = RNG.integers(0, len(VOCAB), size=(T, B))
    h0 = 0.3 * RNG.standard_normal((layers, B, 6)).astype(np.float32)
    state = (h0, 0.3 * RNG.standard_normal((layers, B, 6)).astype(np.float32)) if cell == "lstm" else h0
    with rnncore.no_grad():
        logits, final = model.logits(ids, state)
    feeds = {"ids": ids, "h0": h0}
    if cell == "lstm":
        feeds["c0"] = state[1]
    got = run_ort(proto, feeds)
    assert got["logits"].shape == (T, B, len(VOCAB))
    assert rel_err(got["logits"], logits) < 1e-5
    finals = final if cell == "lstm" else (final,)
    for name, value in zip(("h_n", "c_n"), finals):
        assert rel_err(got[name], value) < 1e-5
    # stepped one token at a time, the state fed back
    for t in range(T):
        out = run_ort(proto, {**feeds, "ids": ids[t : t + 1]})
        assert rel_err(out["logits"][0], logits[t]) < 1e-5
        feeds = {**feeds, "h0": out["h_n"]}
        if cell == "lstm":
            feeds["c0"] = out["c_n"]
    assert rel_err(feeds["h0"], finals[0]) < 1e-5


def test_language_model_float64_reference_and_lengths():
    model = LanguageModel(VOCAB, cell="lstm", embedding_dim=4, hidden_size=5, num_layers=2, dtype="float64",
                          seed=2)
    ids = RNG.integers(0, len(VOCAB), size=(6, 2))
    zeros = np.zeros((2, 2, 5))
    with rnncore.no_grad():
        logits, _ = model.logits(ids)
    got = run_reference(to_onnx_model(model), {"ids": ids, "h0": zeros, "c0": zeros})
    assert rel_err(got["logits"], logits) < 1e-10
    model32 = LanguageModel(VOCAB, cell="gru", embedding_dim=4, hidden_size=5, seed=2)
    lengths = np.array([6, 2])
    with rnncore.no_grad():
        logits, h_n = model32.logits(ids, None, lengths)
    z32 = np.zeros((1, 2, 5), np.float32)
    got = run_ort(to_onnx_model(model32, lengths=True), {"ids": ids, "h0": z32, "lengths": lengths})
    # past a sequence's length the layer outputs zero, so the logits there are the head's bias in both
    assert rel_err(got["logits"], logits) < 1e-5 and rel_err(got["h_n"], h_n) < 1e-5


# -- classifier -------------------------------------------------------------------------------------------
CLASSIFIERS = [
    {"cell": "lstm", "num_layers": 2, "bidirectional": True, "merge": "concat"},
    {"cell": "gru", "num_layers": 2, "bidirectional": True, "merge": "sum"},
    {"cell": "rnn_relu", "bidirectional": True, "merge": "product"},
    {"cell": "gru", "num_layers": 1},
]


@pytest.mark.parametrize("options", CLASSIFIERS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_classifier_with_variable_lengths(options):
    model = SequenceClassifier(LABELS, VOCAB, embedding_dim=4, hidden_size=5, dropout=0.1, seed=3, **options)
    proto = to_onnx_model(model)
    T, B = 9, 5
    lengths = np.array([9, 1, 4, 7, 2])
    ids = RNG.integers(4, len(VOCAB), size=(T, B))
    ids[np.arange(T)[:, None] >= lengths[None, :]] = VOCAB.pad_id
    with rnncore.no_grad():
        logits = model.eval().logits(ids, lengths)
    got = run_ort(proto, {"ids": ids, "lengths": lengths})
    assert got["logits"].shape == (B, len(LABELS))
    assert rel_err(got["logits"], logits) < 1e-5
    assert np.max(np.abs(got["probabilities"] - model.predict_proba(ids, lengths))) < 1e-6


def test_classifier_on_features_in_float64():
    model = SequenceClassifier(LABELS, input_size=3, cell="lstm", hidden_size=4, bidirectional=True,
                               dtype="float64", seed=4)
    x = RNG.standard_normal((6, 3, 3))
    got = run_reference(to_onnx_model(model, lengths=False), {"x": x})
    with rnncore.no_grad():
        assert rel_err(got["logits"], model.logits(x)) < 1e-10
    lengths = np.array([6, 2, 4])
    got = run_ort(to_onnx_model(model, dtype=np.float32), {"x": x.astype(np.float32), "lengths": lengths})
    with rnncore.no_grad():
        assert rel_err(got["logits"], model.logits(x, lengths)) < 1e-5


# -- tagger and regressor ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("cell", "merge"), [("lstm", "concat"), ("gru", "sum"), ("rnn", "product")])
def test_tagger_with_variable_lengths(cell, merge):
    model = SequenceTagger(VOCAB, LABELS, embedding_dim=4, hidden_size=5, cell=cell, num_layers=2,
                           merge=merge, dropout=0.1, seed=6).eval()
    T, B = 8, 4
    lengths = np.array([8, 2, 5, 1])
    ids = RNG.integers(4, len(VOCAB), size=(T, B))
    with rnncore.no_grad():
        logits = model.forward(ids, lengths)
    got = run_ort(to_onnx_model(model), {"ids": ids, "lengths": lengths})
    assert got["logits"].shape == (T, B, len(LABELS))
    assert rel_err(got["logits"], logits) < 1e-5


def test_regressor_float32_and_float64():
    model = SequenceRegressor(3, output_size=2, hidden_size=5, cell="lstm", num_layers=2, seed=7)
    x = RNG.standard_normal((6, 3, 3)).astype(np.float32)
    lengths = np.array([6, 4, 1])
    with rnncore.no_grad():
        pred = model.forward(x, lengths)
    got = run_ort(to_onnx_model(model), {"x": x, "lengths": lengths})
    assert rel_err(got["output"], pred) < 1e-5
    model64 = SequenceRegressor(3, output_size=2, hidden_size=5, cell="gru", bidirectional=True, merge="sum",
                                dtype="float64", seed=7)
    with rnncore.no_grad():
        pred = model64.forward(x.astype(np.float64))
    got = run_reference(to_onnx_model(model64, lengths=False), {"x": x.astype(np.float64)})
    assert rel_err(got["output"], pred) < 1e-10


def test_a_layer_option_the_graph_does_not_compute_is_refused(monkeypatch):
    """A constructor option outside the exported set, at a non-default value, is refused by name."""
    original = rnncore.GRU.__init__

    def init(self, input_size, hidden_size, num_layers=1, frobnicate=False, **kwargs):
        original(self, input_size, hidden_size, num_layers, **kwargs)
        self.frobnicate = frobnicate

    monkeypatch.setattr(rnncore.GRU, "__init__", init)
    x, h0 = np.ones((2, 1, 2), np.float32), np.zeros((1, 1, 3), np.float32)
    got = run_ort(to_onnx_model(rnncore.GRU(2, 3, seed=0), lengths=False), {"x": x, "h0": h0})
    assert rel_err(got["h_n"], rnncore.GRU(2, 3, seed=0)(x)[1]) < 1e-5
    with pytest.raises(ValueError, match=r"cannot export GRU\(frobnicate=True\)"):
        to_onnx_model(rnncore.GRU(2, 3, frobnicate=True))


def test_projection_and_zoneout_are_refused():
    """proj_size has no ONNX form (layers and task models alike); eval-mode zoneout mixes the states
    with the rate, which the operators do not compute."""
    with pytest.raises(ValueError, match=r"cannot export LSTM\(proj_size=2\): ONNX's LSTM operator has no "
                                         "projection"):
        to_onnx_model(rnncore.LSTM(3, 4, proj_size=2, peephole=True))
    model = LanguageModel(VOCAB, cell="lstm", embedding_dim=2, hidden_size=3, num_layers=2,
                          lstm_options={"proj_size": 2, "gate_clip": 1.0})
    with pytest.raises(ValueError, match=r"cannot export LSTM\(proj_size=2\)"):
        to_onnx_model(model)
    classifier = SequenceClassifier(LABELS, VOCAB, embedding_dim=2, hidden_size=3, cell="lstm")
    classifier.rnn.proj_size = 1  # any task model's layer
    with pytest.raises(ValueError, match=r"cannot export LSTM\(proj_size=1\)"):
        to_onnx_model(classifier)
    for kind, option in (("LSTM", "zoneout"), ("LSTM", "zoneout_cell"), ("GRU", "zoneout")):
        layer = getattr(rnncore, kind)(2, 3, **{option: 0.25}).eval()
        with pytest.raises(ValueError, match=rf"cannot export {kind}\({option}=0.25\): in eval mode zoneout"):
            to_onnx_model(layer)
    # the training-only regularisers are off in eval mode, so the graph is the layer
    layer = rnncore.LSTM(3, 4, num_layers=2, input_dropout=0.3, recurrent_dropout=0.3, weight_drop=0.3,
                         seed=8).eval()
    feeds, expected = layer_case(layer)
    got = run_ort(to_onnx_model(layer), feeds)
    assert all(rel_err(got[name], value) < 1e-5 for name, value in expected.items())


# -- LSTM variants ----------------------------------------------------------------------------------------
VARIANTS = {
    "peephole": {"peephole": True},
    "gate_clip": {"gate_clip": 0.7},
    "coupled_input_forget": {"coupled_input_forget": True},
    "unit_forget_bias": {"unit_forget_bias": True},
    "all": {"peephole": True, "gate_clip": 0.9, "coupled_input_forget": True},
}


def variant_layer(options, seed, scale=0.7, **kwargs):
    """A float32 LSTM with the options and weights N(0, scale^2) (gates saturate, so clipping bites); for
    unit_forget_bias the initialisation is kept (that is the option)."""
    layer = rnncore.LSTM(3, 5, seed=seed, **options, **kwargs)
    if not options.get("unit_forget_bias"):
        rng = np.random.default_rng(seed)
        layer.load_state_dict({k: scale * rng.standard_normal(v.shape)
                               for k, v in layer.state_dict().items()})
    return layer


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_lstm_variants_in_onnxruntime(name):
    """Each variant alone and all together, three layers, bidirectional, variable lengths and initial
    states: onnxruntime runs the exported graph as rnncore's forward; the same graph without the
    variant's attribute or input is far off, so the export is what carries the option."""
    options = VARIANTS[name]
    layer = variant_layer(options, seed=sorted(VARIANTS).index(name), num_layers=3, bidirectional=True)
    proto = to_onnx_model(layer)
    feeds, expected = layer_case(layer)
    got = run_ort(proto, feeds)
    assert set(got) == set(expected)
    errors = {k: rel_err(got[k], v) for k, v in expected.items()}
    assert all(e < 1e-5 for e in errors.values()), errors
    nodes = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert len(nodes) == 3
    attrs = {a.name: a for a in nodes[0].attribute}
    assert ("clip" in attrs) == ("gate_clip" in options)
    assert ("input_forget" in attrs) == ("coupled_input_forget" in options)
    assert all((len(n.input) == 8 and n.input[7] != "") == ("peephole" in options) for n in nodes)
    if name == "unit_forget_bias":
        # ONNX's gate order i, o, f, c and B = [W_b, R_b]: the forget rows of W_b are 1, of R_b 0
        H = layer.hidden_size
        for n in nodes:
            (b,) = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == n.input[3]]
            assert np.all(b[:, 2 * H:3 * H] == 1) and np.all(b[:, 6 * H:7 * H] == 0)
        return
    for n in nodes:  # strip the variant from the graph: the output moves
        kept = [a for a in n.attribute if a.name not in ("clip", "input_forget")]
        del n.attribute[:]
        n.attribute.extend(kept)
        if len(n.input) == 8:
            n.input[7] = ""
    assert rel_err(run_ort(proto, feeds)["output"], expected["output"]) > 1e-3


def test_lstm_variants_batch_first_and_float64_peepholes_in_the_reference_evaluator():
    layer = variant_layer(VARIANTS["all"], seed=9, num_layers=2, batch_first=True)
    feeds, expected = layer_case(layer)
    got = run_ort(to_onnx_model(layer), feeds)
    assert all(rel_err(got[k], v) < 1e-5 for k, v in expected.items())
    # onnx.reference computes P (it ignores clip and input_forget): float64 peepholes, full lengths
    layer64 = rnncore.LSTM(3, 5, num_layers=2, bidirectional=True, peephole=True, dtype=np.float64, seed=10)
    layer64.load_state_dict(variant_layer(VARIANTS["peephole"], seed=10, num_layers=2,
                                          bidirectional=True).state_dict())
    feeds, expected = layer_case(layer64, lengths=False, dtype=np.float64)
    got = run_reference(to_onnx_model(layer64, lengths=False), feeds)
    assert all(rel_err(got[k], v) < 1e-10 for k, v in expected.items())


def test_language_model_with_lstm_options():
    options = {"peephole": True, "gate_clip": 0.8, "coupled_input_forget": True}
    model = LanguageModel(VOCAB, cell="lstm", embedding_dim=4, hidden_size=6, num_layers=2, dropout=0.2,
                          seed=12, lstm_options=options).eval()
    rng = np.random.default_rng(12)
    model.load_state_dict({k: 0.7 * rng.standard_normal(v.shape) for k, v in model.state_dict().items()})
    proto = to_onnx_model(model)
    T, B = 8, 3
    ids = RNG.integers(0, len(VOCAB), size=(T, B))
    h0, c0 = (0.3 * RNG.standard_normal((2, B, 6)).astype(np.float32) for _ in range(2))
    with rnncore.no_grad():
        logits, (h_n, c_n) = model.logits(ids, (h0, c0))
    got = run_ort(proto, {"ids": ids, "h0": h0, "c0": c0})
    errors = {"logits": rel_err(got["logits"], logits), "h_n": rel_err(got["h_n"], h_n),
              "c_n": rel_err(got["c_n"], c_n)}
    assert all(e < 1e-5 for e in errors.values()), errors
    feeds = {"ids": ids, "h0": h0, "c0": c0}  # stepped, the state fed back
    for t in range(T):
        out = run_ort(proto, {**feeds, "ids": ids[t : t + 1]})
        assert rel_err(out["logits"][0], logits[t]) < 1e-5
        feeds = {**feeds, "h0": out["h_n"], "c0": out["c_n"]}
    # with lengths
    lengths = np.array([8, 3, 5])
    with rnncore.no_grad():
        logits, _ = model.logits(ids, (h0, c0), lengths)
    got = run_ort(to_onnx_model(model, lengths=True), {"ids": ids, "h0": h0, "c0": c0, "lengths": lengths})
    assert rel_err(got["logits"], logits) < 1e-5
    plain = LanguageModel(VOCAB, cell="lstm", embedding_dim=4, hidden_size=6, num_layers=2, seed=12).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    with rnncore.no_grad():
        assert rel_err(plain.logits(ids, (h0, c0), lengths)[0], got["logits"]) > 1e-3
