"""rnncore.io.keras against Keras 3: stored fixtures always, live Keras (torch backend) when it imports.

Each configuration (tests/fixtures/make_keras_fixtures.py) checks both directions on the same
input: random Keras weights converted into rnncore give Keras's output sequence and final states,
and random rnncore weights (both biases nonzero) converted for Keras give what Keras computes with
them. Error measure: max |rnncore - Keras| (float32 within 1e-5, float64 within 1e-12).
The ``masked_*`` configurations run right- and left-padded batches through a Bidirectional Keras
layer called with the matching ``mask`` (and zero_output_for_mask=True) against rnncore's
``lengths`` with ``padding_side``: out, h_n, c_n and the gradient for x (torch autograd through Keras).

Keras 3.15's ``ops.matmul`` returns float32 for two float64 operands (its type promotion maps 64-bit
results to 32-bit, "aligned with JAX's default behavior"), so its float64 SimpleRNN and GRU
reset_after=False, which run Keras's own cell loop, are only float32-accurate (about 1e-7 here);
LSTM and GRU reset_after=True run a torch kernel in float64 and are held to 1e-12.
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

import rnncore
from rnncore.io.keras import (
    from_keras,
    from_keras_weights,
    keras_weights,
    keras_weights_from_state_dict,
    load_keras_weights,
    state_dict_from_keras,
    to_keras,
)

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "keras"
FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
FLOAT64_THROUGH_FLOAT32_MATMUL = 1e-6  # see the module docstring
# Keras 3.15's Variable.numpy() calls np.array(variable), which numpy 2 warns about (keras's code only)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning:keras")
_spec = importlib.util.spec_from_file_location("make_keras_fixtures",
                                               FIXTURE_DIR.parent / "make_keras_fixtures.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


def _keras():
    """keras on the torch backend, or a skip when it is not installed (the fixtures still run)."""
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError as exc:  # not installed, or installed without torch for its backend
        pytest.skip(f"keras does not import ({exc}); the fixture tests still check the conversions")
    return keras


def load(path):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(arrays.pop("__meta__").item())["config"], arrays


def layer_lists(arrays, prefix, num_layers):
    """The per-layer ``get_weights()`` lists stored under ``prefix.l{k}.{i}``."""
    out = []
    for k in range(num_layers):
        n = len([key for key in arrays if key.startswith(f"{prefix}.l{k}.")])
        out.append([arrays[f"{prefix}.l{k}.{i}"] for i in range(n)])
    return out


def compare(module, arrays, prefix, tol):
    """rnncore's out and final states on arrays["x"] against Keras's; returns the max abs error."""
    out, state = module(arrays["x"])
    got = {"out": out}
    if isinstance(state, tuple):
        got["h_n"], got["c_n"] = state
    else:
        got["h_n"] = state
    worst = 0.0
    for name, value in got.items():
        want = arrays[f"{prefix}.{name}"]
        assert value.shape == want.shape and value.dtype == want.dtype, name
        err = float(np.max(np.abs(value.astype(np.float64) - want)))
        assert err <= tol, f"{prefix}.{name}: max abs error {err:.3g} > {tol:g}"
        worst = max(worst, err)
    return worst


def check_both_directions(cfg, arrays):
    """Keras -> rnncore and rnncore -> Keras for one configuration; the two max abs errors."""
    cell = make.CELL_OF[cfg["keras_class"]]
    tol = TOLERANCE[cfg["dtype"]]
    if cfg["dtype"] == "float64" and (cell == "rnn" or not cfg["options"].get("reset_after", True)):
        tol = FLOAT64_THROUGH_FLOAT32_MATMUL
    kwargs = make.rnncore_kwargs(cfg)
    keras_w = layer_lists(arrays, "keras", cfg["num_layers"])
    # Keras weights -> a new rnncore layer, and into an existing one
    module = from_keras_weights(cell, keras_w, cfg["bidirectional"],
                                nonlinearity=kwargs.get("nonlinearity", "tanh"), dtype=kwargs["dtype"])
    err_from = compare(module, arrays, "keras", tol)
    existing = type(module)(**kwargs, seed=1)
    compare(load_keras_weights(existing, keras_w), arrays, "keras", tol)
    # back to Keras: the same arrays (bias_hh is zero after the import, so nothing is lost)
    for got, want in zip(keras_weights(module), keras_w, strict=True):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    # rnncore weights -> Keras: the converted arrays are the ones Keras ran, and its output is rnncore's
    state = {k[len("torch."):]: v for k, v in arrays.items() if k.startswith("torch.")}
    converted = keras_weights_from_state_dict(cell, state, cfg["options"].get("reset_after", True))
    for got, want in zip(converted, layer_lists(arrays, "torch_as_keras", cfg["num_layers"]), strict=True):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=0, atol=4 * np.finfo(w.dtype).eps)
    module = type(module)(**kwargs).load_state_dict(state)
    err_to = compare(module, arrays, "torch_as_keras", tol)
    return err_from, err_to


def check_masked(cfg, arrays):
    """A right- or left-padded batch through rnncore (``lengths``, ``padding_side``) against the
    masked Keras Bidirectional layer: out, h_n, c_n and dx; returns the max abs error."""
    cell = make.CELL_OF[cfg["keras_class"]]
    module = from_keras_weights(cell, [layer_lists(arrays, "keras", 1)[0]], bidirectional=True)
    out, state = module(arrays["x"], lengths=arrays["lengths"], padding_side=cfg["padding_side"])
    lstm = isinstance(state, tuple)
    grad_state = (arrays["upstream.h_n"], None) if lstm else arrays["upstream.h_n"]
    dx, _ = module.backward(arrays["upstream.out"], grad_state)
    got = {"out": out, "h_n": state[0] if lstm else state, "grad_x": dx}
    if lstm:
        got["c_n"] = state[1]
    worst = 0.0
    for name, value in got.items():
        err = float(np.max(np.abs(value - arrays[f"keras.{name}"])))
        assert err <= TOLERANCE["float32"], f"{cfg['name']} {name}: max abs error {err:.3g}"
        worst = max(worst, err)
    return worst


def test_fixtures_present():
    names = {c["name"] for c in make.configs() + make.masked_configs()}
    assert {p.stem for p in FIXTURES} == names, make.REGENERATE


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture(path):
    cfg, arrays = load(path)
    if cfg.get("masked"):
        check_masked(cfg, arrays)
    else:
        check_both_directions(cfg, arrays)


LIVE = make.configs() + [dict(c, name=c["name"] + "_float64", dtype="float64") for c in make.configs()]


@pytest.mark.parametrize("cfg", LIVE, ids=[c["name"] for c in LIVE])
def test_live(cfg):
    _keras()
    check_both_directions(cfg, make.keras_reference(cfg, seed=12345))


@pytest.mark.parametrize("cfg", make.masked_configs(), ids=[c["name"] for c in make.masked_configs()])
def test_live_masked(cfg):
    _keras()
    check_masked(cfg, make.keras_masked_reference(cfg, seed=54321))


# -- Keras layer objects (live) --------------------------------------------------------------------
def _random_weights(layers, rng):
    for layer in layers:
        layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(w.dtype) for w in layer.get_weights()])


def _run(keras, layers, x):
    for layer in layers:
        x = keras.ops.convert_to_numpy(layer(x))
    return x


@pytest.mark.parametrize(("kind", "options", "bidirectional"), [
    ("LSTM", {}, True), ("GRU", {"reset_after": False}, False), ("GRU", {}, True),
    ("SimpleRNN", {"activation": "sigmoid"}, False), ("SimpleRNN", {"activation": "linear"}, True)])
def test_layer_objects_both_ways(kind, options, bidirectional):
    keras = _keras()
    rng = np.random.default_rng(7)
    layers = []
    for k in range(2):
        layer = getattr(keras.layers, kind)(3, return_sequences=True, **options)
        if bidirectional:
            layer = keras.layers.Bidirectional(layer)
        layer.build((None, None, 4 if k == 0 else 3 * (1 + bidirectional)))
        layers.append(layer)
    _random_weights(layers, rng)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    module = from_keras(layers)
    assert module.num_layers == 2 and module.bidirectional == bidirectional
    np.testing.assert_allclose(module(x)[0], _run(keras, layers, x), rtol=0, atol=1e-5)
    # rnncore with both biases nonzero -> new Keras layers -> the same outputs
    state = {k: (0.5 * rng.standard_normal(v.shape)).astype(np.float32)
             for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    rebuilt = to_keras(module)
    np.testing.assert_allclose(_run(keras, rebuilt, x), module(x)[0], rtol=0, atol=1e-5)


def test_refuses_unrepresentable_keras_layers():
    keras = _keras()

    def built(layer, width=4):
        layer.build((None, None, width))
        return layer

    with pytest.raises(ValueError, match="activation='tanh' and recurrent_activation='sigmoid'"):
        from_keras(built(keras.layers.LSTM(3, activation="relu")))
    with pytest.raises(ValueError, match="recurrent_activation"):
        from_keras(built(keras.layers.GRU(3, recurrent_activation="hard_sigmoid")))
    with pytest.raises(ValueError, match="SimpleRNN activation must be one of"):
        from_keras(built(keras.layers.SimpleRNN(3, activation="elu")))
    with pytest.raises(ValueError, match="go_backwards=True"):
        from_keras(built(keras.layers.LSTM(3, go_backwards=True)))
    with pytest.raises(ValueError, match="merge_mode='sum'"):
        from_keras(built(keras.layers.Bidirectional(keras.layers.GRU(3), merge_mode="sum")))
    with pytest.raises(ValueError, match="not built"):
        from_keras(keras.layers.LSTM(3))
    with pytest.raises(ValueError, match="differs from layers"):
        from_keras([built(keras.layers.LSTM(3, return_sequences=True)), built(keras.layers.GRU(3), 3)])
    with pytest.raises(TypeError, match="SimpleRNN, LSTM or GRU"):
        from_keras(built(keras.layers.Dense(3)))
    # reset_after=False Keras weights into torch's GRU form
    with pytest.raises(ValueError, match="reset_after=False"):
        load_keras_weights(rnncore.GRU(4, 3), [built(keras.layers.GRU(3, reset_after=False)).get_weights()])


# -- refusals of the array functions (no Keras needed) ---------------------------------------------
def _gru_reset_before_weights(I=4, H=3, rng=None):
    rng = rng or np.random.default_rng(0)
    return [[rng.standard_normal((I, 3 * H)), rng.standard_normal((H, 3 * H)), rng.standard_normal(3 * H)]]


def test_reset_before_weights_refused_for_torch_gru():
    weights = _gru_reset_before_weights()
    with pytest.raises(ValueError, match=r"reset_after=False.*rnncore.GRU\(reset_after=False\)"):
        load_keras_weights(rnncore.GRU(4, 3), weights)
    with pytest.raises(ValueError, match="cannot represent"):
        state_dict_from_keras("gru", weights, reset_after=True)
    module = rnncore.GRU(4, 3, seed=0)
    before = module.state_dict()
    with pytest.raises(ValueError, match="reset_after"):
        load_keras_weights(module, weights)
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # nothing written
    # into the original GRU it loads; the form is read from the bias shape
    assert from_keras_weights("gru", weights, dtype=np.float64).reset_after is False
    load_keras_weights(rnncore.GRU(4, 3, reset_after=False, dtype=np.float64), weights)
    with pytest.raises(ValueError, match="reset_after must be given"):
        state_dict_from_keras("gru", [weights[0][:2]])


def test_projection_and_unknown_keys_refused():
    state = rnncore.LSTM(3, 4).state_dict()
    with pytest.raises(ValueError, match=r"projection.*weight_hr_l0"):
        keras_weights_from_state_dict("lstm", {**state, "weight_hr_l0": np.zeros((2, 4), np.float32)})
    with pytest.raises(ValueError, match="cannot represent.*ln_weight_l0"):
        keras_weights_from_state_dict("lstm", {**state, "ln_weight_l0": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="missing"):
        keras_weights_from_state_dict("lstm", {k: v for k, v in state.items() if k != "bias_hh_l0"})
    with pytest.raises(ValueError, match="G = 3H for gru"):
        keras_weights_from_state_dict("gru", state)
    with pytest.raises(ValueError, match="cell must be one of"):
        keras_weights_from_state_dict("transformer", state)


def test_bad_keras_arrays_named():
    rng = np.random.default_rng(1)
    good = [rng.standard_normal((4, 12)), rng.standard_normal((3, 12)), rng.standard_normal(12)]
    with pytest.raises(ValueError, match=r"layer_weights\[0\] recurrent_kernel must have shape \(H, 4H\)"):
        state_dict_from_keras("lstm", [[good[0], good[1][:, :9], good[2]]])
    with pytest.raises(ValueError, match=r"layer_weights\[0\] kernel must have shape \(I, 4H\) = \(I, 12\)"):
        state_dict_from_keras("lstm", [[good[0][:, :8], good[1], good[2]]])
    with pytest.raises(ValueError, match=r"bias must have shape \(4H,\) = \(12,\)"):
        state_dict_from_keras("lstm", [[good[0], good[1], good[2][:8]]])
    with pytest.raises(ValueError, match=r"layer_weights\[0\] must list the 4 or 6 arrays"):
        state_dict_from_keras("lstm", [good], bidirectional=True)
    with pytest.raises(ValueError, match=r"layer_weights\[1\] must have hidden size 3, input size 3"):
        state_dict_from_keras("lstm", [good, good])
    with pytest.raises(ValueError, match="describe hidden_size=3"):
        load_keras_weights(rnncore.LSTM(4, 5), [good])
    with pytest.raises(TypeError, match="rnncore RNN, LSTM or GRU"):
        keras_weights(rnncore.Linear(3, 4))
