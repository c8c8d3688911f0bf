"""Keras 3 weights to and from rnncore's RNN, LSTM and GRU.

Keras layouts, one direction of one layer as ``keras_layer.get_weights()`` returns them
(I = input, H = hidden):

    SimpleRNN  kernel (I, H)    recurrent_kernel (H, H)    bias (H,)
    LSTM       kernel (I, 4H)   recurrent_kernel (H, 4H)   bias (4H,)     gates i, f, c, o
    GRU        kernel (I, 3H)   recurrent_kernel (H, 3H)   bias (2, 3H)   gates z, r, h; reset_after=True
                                                           bias (3H,)     reset_after=False

rnncore keeps torch.nn's layout: weight_ih (G, I), weight_hh (G, H), bias_ih (G,) and bias_hh (G,),
with the LSTM gates i, f, g, o (the same order as Keras's) and the GRU gates r, z, n (Keras's first
two blocks swapped). So weight_ih is the kernel transposed (gate blocks reordered), weight_hh the
recurrent kernel transposed. Biases:

- SimpleRNN, LSTM and GRU reset_after=False have one bias: to Keras, bias_ih + bias_hh; from
  Keras, the bias goes into bias_ih and bias_hh is zero (the sum, the only thing the cells use,
  is the same; the split between the two is not recoverable).
- GRU reset_after=True has two, input bias = bias[0] and recurrent bias = bias[1], exactly
  torch.nn's bias_ih and bias_hh (torch's GRU is this form).
- reset_after=False is the original GRU, n = tanh(W_in x + (r * h) W_hn + b): it loads into
  ``rnncore.GRU(reset_after=False)`` only; torch.nn.GRU and ``rnncore.GRU()`` (reset_after=True)
  cannot represent it, and asking for that is an error.

Stacks are a list of layers, one ``get_weights()`` list each, layer k going to the ``_l{k}`` names;
a ``keras.layers.Bidirectional`` layer's list is its forward layer's weights then its backward
layer's, the backward going to the ``_reverse`` names (merge_mode "concat", the only mode rnncore's
output has). Not representable, and refused with an error: a Keras LSTM or GRU whose activation is
not tanh or whose recurrent_activation is not sigmoid; a SimpleRNN activation other than tanh,
relu, sigmoid or linear (linear maps to rnncore's "identity"); a layer with go_backwards=True
outside Bidirectional; merge modes other than "concat"; and, towards Keras, any parameter besides
the weights and biases above (an LSTM projection ``weight_hr_l{k}``, normalisation parameters).
Dropout settings are not weights and are not carried over.

The array functions (``state_dict_from_keras``, ``keras_weights_from_state_dict``,
``from_keras_weights``, ``load_keras_weights``, ``keras_weights``) need numpy only; ``from_keras``
and ``to_keras`` take or build Keras layer objects and import keras.
"""

import re

import numpy as np

from rnncore.nn.module import as_numpy
from rnncore.nn.recurrent import GRU, LSTM, RNN

__all__ = ["CELLS", "from_keras", "from_keras_weights", "keras_weights", "keras_weights_from_state_dict",
           "load_keras_weights", "state_dict_from_keras", "to_keras"]

# cell name: (gate blocks G/H, torch block k taken from Keras block ORDER[k] (its own inverse), rnncore
# class, Keras class name)
_CELLS = {
    "rnn": (1, (0,), RNN, "SimpleRNN"),
    "lstm": (4, (0, 1, 2, 3), LSTM, "LSTM"),
    "gru": (3, (1, 0, 2), GRU, "GRU"),
}
CELLS = tuple(_CELLS)
_KERAS_CLASSES = {v[3]: k for k, v in _CELLS.items()}
# Keras SimpleRNN activation -> rnncore RNN nonlinearity
_RNN_ACTIVATIONS = {"tanh": "tanh", "relu": "relu", "sigmoid": "sigmoid", "linear": "identity"}
_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def _check_cell(cell):
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {list(CELLS)}, got {cell!r}")
    return _CELLS[cell]


def _reorder(a, order, H, axis):
    """The H-wide gate blocks of ``a`` along ``axis`` in the order ``order`` (a copy)."""
    return np.concatenate([np.take(a, np.arange(k * H, (k + 1) * H), axis=axis) for k in order], axis=axis)


# -- one direction ---------------------------------------------------------------------------------
def _direction_from_keras(cell, arrays, where, use_bias, reset_after):
    """(weight_ih, weight_hh, bias_ih, bias_hh) (biases None without bias) from Keras arrays
    (kernel (I, G), recurrent_kernel (H, G)[, bias]); ``where`` names them in errors."""
    n_gates, order, _, _ = _CELLS[cell]
    arrays = [np.asarray(a) for a in arrays]
    for name, a in zip(("kernel", "recurrent_kernel", "bias"), arrays):
        if a.dtype.kind != "f":
            raise TypeError(f"{where} {name} must hold floating-point values, got dtype {a.dtype}")
    kernel, recurrent = arrays[0], arrays[1]
    if recurrent.ndim != 2 or recurrent.shape[1] != n_gates * recurrent.shape[0]:
        raise ValueError(f"{where} recurrent_kernel must have shape (H, {n_gates}H), got {recurrent.shape}")
    H = recurrent.shape[0]
    G = n_gates * H
    if kernel.ndim != 2 or kernel.shape[1] != G:
        raise ValueError(f"{where} kernel must have shape (I, {n_gates}H) = (I, {G}), got {kernel.shape}")
    w_ih = _reorder(kernel.T, order, H, 0)
    w_hh = _reorder(recurrent.T, order, H, 0)
    if not use_bias:
        return w_ih, w_hh, None, None
    bias = arrays[2]
    if cell == "gru" and reset_after:
        if bias.shape != (2, G):
            if bias.shape == (G,):
                raise ValueError(
                    f"{where} is a Keras GRU with reset_after=False (bias (3H,) = ({G},)): the original "
                    "GRU, n = tanh(W_in x + (r * h) W_hn + b), which torch.nn.GRU and "
                    "rnncore.GRU(reset_after=True) cannot represent; load it into "
                    "rnncore.GRU(reset_after=False)")
            raise ValueError(f"{where} bias must have shape (2, 3H) = (2, {G}) (reset_after=True), "
                             f"got {bias.shape}")
        return w_ih, w_hh, _reorder(bias[0], order, H, 0), _reorder(bias[1], order, H, 0)
    if bias.shape != (G,):
        if cell == "gru" and bias.shape == (2, G):
            raise ValueError(f"{where} is a Keras GRU with reset_after=True (bias (2, 3H) = (2, {G})), but "
                             "reset_after=False was asked for")
        raise ValueError(f"{where} bias must have shape ({n_gates}H,) = ({G},), got {bias.shape}")
    return w_ih, w_hh, _reorder(bias, order, H, 0), np.zeros(G, dtype=bias.dtype)


def _direction_to_keras(cell, w_ih, w_hh, b_ih, b_hh, reset_after):
    """Keras arrays [kernel, recurrent_kernel(, bias)] of one direction from torch.nn-layout weights."""
    _, order, _, _ = _CELLS[cell]
    H = w_hh.shape[1]
    arrays = [np.ascontiguousarray(_reorder(w_ih, order, H, 0).T),
              np.ascontiguousarray(_reorder(w_hh, order, H, 0).T)]
    if b_ih is not None:
        if cell == "gru" and reset_after:
            arrays.append(np.stack([_reorder(b_ih, order, H, 0), _reorder(b_hh, order, H, 0)]))
        else:
            arrays.append(_reorder(b_ih + b_hh, order, H, 0))
    return arrays


# -- whole layers: arrays only ---------------------------------------------------------------------
def _parse_keras(cell, layer_weights, bidirectional, reset_after):
    """(state_dict, config) from per-layer Keras weight lists; see ``state_dict_from_keras``."""
    _check_cell(cell)
    if not isinstance(layer_weights, (list, tuple)) or not layer_weights:
        raise ValueError("layer_weights must be a non-empty list with one list of Keras arrays "
                         f"(keras_layer.get_weights()) per stacked layer, got {type(layer_weights).__name__}")
    D = 2 if bidirectional else 1
    if cell == "gru" and reset_after is None:
        first = layer_weights[0]
        if not isinstance(first, (list, tuple)) or len(first) != 3 * D:
            raise ValueError("reset_after must be given for Keras GRU weights without bias (it is read from "
                             "the bias shape: (2, 3H) for True, (3H,) for False)")
        reset_after = np.ndim(first[2]) == 2
    state, config = {}, None
    for layer, weights in enumerate(layer_weights):
        if not isinstance(weights, (list, tuple)) or len(weights) not in (2 * D, 3 * D):
            kind = "a Bidirectional layer (forward then backward)" if bidirectional else "one layer"
            got = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
            raise ValueError(f"layer_weights[{layer}] must list the {2 * D} or {3 * D} arrays of {kind} "
                             f"(kernel, recurrent_kernel[, bias] per direction), got {got}")
        use_bias = len(weights) == 3 * D
        per = len(weights) // D
        for d, suffix in enumerate(("", "_reverse")[:D]):
            where = f"layer_weights[{layer}]" + (f" ({('forward', 'backward')[d]})" if bidirectional else "")
            w = _direction_from_keras(cell, weights[d * per:(d + 1) * per], where, use_bias, reset_after)
            I, H = w[0].shape[1], w[1].shape[1]
            if config is None:
                config = {"input_size": I, "hidden_size": H, "num_layers": len(layer_weights),
                          "bidirectional": bidirectional, "bias": use_bias}
                if cell == "gru":
                    config["reset_after"] = bool(reset_after)
            expected_in = config["input_size"] if layer == 0 else D * config["hidden_size"]
            if H != config["hidden_size"] or I != expected_in or use_bias != config["bias"]:
                raise ValueError(
                    f"{where} must have hidden size {config['hidden_size']}, input size {expected_in} and "
                    f"{'a' if config['bias'] else 'no'} bias like the stack it belongs to; got hidden size "
                    f"{H}, input size {I}, {'a' if use_bias else 'no'} bias")
            key = f"_l{layer}{suffix}"
            state["weight_ih" + key], state["weight_hh" + key] = w[0], w[1]
            if use_bias:
                state["bias_ih" + key], state["bias_hh" + key] = w[2], w[3]
    return state, config


def state_dict_from_keras(cell, layer_weights, bidirectional=False, reset_after=None):
    """A state_dict with torch.nn names, shapes and gate orders from Keras weights.

    cell: "rnn" (SimpleRNN), "lstm" or "gru".
    layer_weights: one list per stacked layer, each ``keras_layer.get_weights()``: kernel (I, G),
        recurrent_kernel (H, G)[, bias]; for a Bidirectional layer the forward then the backward arrays.
    reset_after (GRU): None reads it from the bias shape (give it for weights without bias); True
        refuses reset_after=False weights, which only ``rnncore.GRU(reset_after=False)`` can hold.
    One-bias cells put the Keras bias into bias_ih and zeros into bias_hh."""
    return _parse_keras(cell, layer_weights, bool(bidirectional), reset_after)[0]


def from_keras_weights(cell, layer_weights, bidirectional=False, reset_after=None, nonlinearity="tanh",
                       dtype=np.float32, batch_first=True, **kwargs):
    """A new rnncore RNN, LSTM or GRU holding Keras weights (see ``state_dict_from_keras``).
    ``nonlinearity`` (rnncore's name) is for "rnn"; ``batch_first=True`` takes Keras's (B, T, I)
    input; other keyword arguments go to the layer's constructor."""
    state, config = _parse_keras(cell, layer_weights, bool(bidirectional), reset_after)
    cls = _CELLS[cell][2]
    if cell == "rnn":
        config["nonlinearity"] = nonlinearity
    module = cls(**config, dtype=dtype, batch_first=batch_first, **kwargs)
    return module.load_state_dict(state)


def _module_cell(module):
    for cell, (_, _, cls, _) in _CELLS.items():
        if type(module) is cls:
            return cell
    raise TypeError(f"module must be an rnncore RNN, LSTM or GRU, got {type(module).__name__}")


def load_keras_weights(module, layer_weights):
    """Copy Keras weights (one ``get_weights()`` list per stacked layer) into an existing rnncore
    RNN, LSTM or GRU of matching sizes; returns the module. A GRU's reset_after must match the
    weights' (its bias shape): reset_after=False weights into a reset_after=True GRU is an error."""
    cell = _module_cell(module)
    reset_after = getattr(module, "reset_after", None)
    if cell == "gru" and module.reset_after:
        first = layer_weights[0] if isinstance(layer_weights, (list, tuple)) and layer_weights else None
        if isinstance(first, (list, tuple)) and len(first) == 3 * module.num_directions \
                and np.ndim(first[2]) == 1:
            raise ValueError(
                "layer_weights hold a Keras GRU with reset_after=False (bias (3H,)): the original GRU, which "
                "this GRU (reset_after=True, torch.nn's form) cannot represent; use "
                "rnncore.GRU(reset_after=False)")
    state, config = _parse_keras(cell, layer_weights, module.bidirectional, reset_after)
    for name, value in config.items():
        if getattr(module, name) != value:
            raise ValueError(f"layer_weights describe {name}={value!r}, but the module has "
                             f"{name}={getattr(module, name)!r}")
    return module.load_state_dict(state)


def keras_weights_from_state_dict(cell, state_dict, reset_after=True):
    """Keras weights, one ``set_weights()`` list per stacked layer (a Bidirectional layer's: forward
    then backward), from a state_dict with torch.nn names. The two biases of SimpleRNN, LSTM and
    GRU reset_after=False add into Keras's one bias. Keys other than weight_ih/weight_hh/bias_ih/
    bias_hh_l{k}[_reverse] (e.g. an LSTM projection weight_hr_l{k}) are refused."""
    n_gates = _check_cell(cell)[0]
    state = {str(k): as_numpy(v) for k, v in state_dict.items()}
    unknown = sorted(k for k in state if not _TORCH_KEY.match(k))
    if any(k.startswith("weight_hr_l") for k in unknown):
        raise ValueError(f"state_dict has LSTM projection weights {[k for k in unknown if 'weight_hr' in k]} "
                         "(proj_size > 0): Keras's LSTM has no projection, so this cannot be converted")
    if unknown:
        raise ValueError(f"state_dict has keys that Keras's {_CELLS[cell][3]} cannot represent: {unknown}")
    layers = sorted({int(_TORCH_KEY.match(k).group(2)) for k in state})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"state_dict must hold layers 0..L-1 (keys weight_ih_l0, ...), got keys "
                         f"{sorted(state)}")
    bidirectional = any(k.endswith("_reverse") for k in state)
    use_bias = "bias_ih_l0" in state
    out = []
    for layer in layers:
        arrays = []
        for suffix in ("", "_reverse")[: 1 + bidirectional]:
            key = f"_l{layer}{suffix}"
            names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if use_bias else [])
            missing = [n + key for n in names if n + key not in state]
            if missing:
                raise ValueError(f"state_dict is missing {missing} (keys: {sorted(state)})")
            w = [state[n + key] for n in names] + ([None, None] if not use_bias else [])
            H = w[1].shape[1] if w[1].ndim == 2 else -1
            G = n_gates * H
            if w[1].shape != (G, H) or w[0].ndim != 2 or w[0].shape[0] != G or \
                    (use_bias and (w[2].shape != (G,) or w[3].shape != (G,))):
                raise ValueError(f"state_dict{key} must hold weight_ih (G, I), weight_hh (G, H) and biases "
                                 f"(G,) with G = {n_gates}H for {cell}; got shapes "
                                 f"{[np.shape(a) for a in w]}")
            arrays += _direction_to_keras(cell, *w, reset_after=reset_after)
        out.append(arrays)
    return out


def keras_weights(module):
    """Keras weights of an rnncore RNN, LSTM or GRU, one ``set_weights()`` list per stacked layer."""
    cell = _module_cell(module)
    if getattr(module, "proj_size", 0):
        raise ValueError(f"module has proj_size={module.proj_size}: Keras's LSTM has no projection, so this "
                         "cannot be converted")
    return keras_weights_from_state_dict(cell, module.state_dict(), getattr(module, "reset_after", True))


# -- Keras layer objects ---------------------------------------------------------------------------
def _keras_layer_spec(layer, k):
    """(cell, config, bidirectional, weights) of a built Keras RNN layer or Bidirectional wrapper."""
    where = f"layers[{k}]"
    name = type(layer).__name__
    bidirectional = name == "Bidirectional"
    if bidirectional:
        if layer.merge_mode != "concat":
            raise ValueError(f"{where} is Bidirectional with merge_mode={layer.merge_mode!r}; rnncore's "
                             "output concatenates the two directions (merge_mode='concat')")
        inner = [layer.forward_layer, layer.backward_layer]
        if inner[0].go_backwards or not inner[1].go_backwards:
            raise ValueError(f"{where}: the forward layer must run forwards and the backward layer backwards")
        if type(inner[0]).__name__ != type(inner[1]).__name__:
            raise ValueError(f"{where} wraps a {type(inner[0]).__name__} and a {type(inner[1]).__name__}; "
                             "both directions must be the same cell")
    else:
        inner = [layer]
        if getattr(layer, "go_backwards", False):
            raise ValueError(f"{where} has go_backwards=True: rnncore runs a reverse direction only inside a "
                             "bidirectional layer (wrap it in keras.layers.Bidirectional)")
    cls_name = type(inner[0]).__name__
    if cls_name not in _KERAS_CLASSES:
        raise TypeError(f"{where} must be a Keras SimpleRNN, LSTM or GRU (or Bidirectional of one), "
                        f"got {cls_name}")
    cell = _KERAS_CLASSES[cls_name]
    if not layer.built:
        raise ValueError(f"{where} ({cls_name}) is not built yet: call it on an input or build() it first")
    config = {}
    for d, sub in enumerate(inner):
        c = sub.get_config()
        if cell == "rnn":
            act = c["activation"]
            if act not in _RNN_ACTIVATIONS:
                raise ValueError(f"{where}: SimpleRNN activation must be one of {sorted(_RNN_ACTIVATIONS)}, "
                                 f"got {act!r}")
            found = {"nonlinearity": _RNN_ACTIVATIONS[act]}
        else:
            if c["activation"] != "tanh" or c["recurrent_activation"] != "sigmoid":
                raise ValueError(f"{where}: {cls_name} must have activation='tanh' and recurrent_activation="
                                 f"'sigmoid' (the only ones rnncore has), got {c['activation']!r} and "
                                 f"{c['recurrent_activation']!r}")
            found = {}
        if cell == "gru":
            found["reset_after"] = bool(c["reset_after"])
        if d and found != config:
            raise ValueError(f"{where}: the forward and backward layers differ: {config} against {found}")
        config = found
    return cell, config, bidirectional, list(layer.get_weights())


def from_keras(layers, dtype=np.float32, batch_first=True, **kwargs):
    """A new rnncore RNN, LSTM or GRU equal to built Keras layers: one SimpleRNN, LSTM or GRU layer
    (or keras.layers.Bidirectional of one), or a list of them for a stack (each taking the previous
    one's full output sequence). ``batch_first=True`` takes Keras's (B, T, I) input; other keyword
    arguments go to the rnncore constructor (e.g. ``seed``, ``check_finite``)."""
    layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    if not layers:
        raise ValueError("layers must hold at least one Keras layer")
    specs = [_keras_layer_spec(layer, k) for k, layer in enumerate(layers)]
    cell, config, bidirectional, _ = specs[0]
    for k, (c, cfg, bidir, _) in enumerate(specs[1:], 1):
        if (c, cfg, bidir) != (cell, config, bidirectional):
            raise ValueError(f"layers[{k}] ({c}, {cfg}, bidirectional={bidir}) differs from layers[0] "
                             f"({cell}, {config}, bidirectional={bidirectional}); an rnncore stack has one "
                             "cell")
    weights = [spec[3] for spec in specs]
    return from_keras_weights(cell, weights, bidirectional, config.get("reset_after"),
                              config.get("nonlinearity", "tanh"), dtype=dtype, batch_first=batch_first,
                              **kwargs)


def to_keras(module, return_sequences=True, **layer_kwargs):
    """A list of new, built Keras layers (one per stacked layer, Bidirectional for a bidirectional
    module) holding ``module``'s weights; feed them (B, T, I) input one after the other. Keyword
    arguments go to every Keras RNN layer (``return_sequences`` defaults to True so that layers
    chain and the outputs match rnncore's ``out``)."""
    import keras

    weights = keras_weights(module)
    cell = _module_cell(module)
    cls = getattr(keras.layers, _CELLS[cell][3])
    options = {"units": module.hidden_size, "use_bias": module.bias, "return_sequences": return_sequences,
               "dtype": module.dtype.name, **layer_kwargs}
    if cell == "rnn":
        options["activation"] = {v: k for k, v in _RNN_ACTIVATIONS.items()}[module.nonlinearity]
    if cell == "gru":
        options["reset_after"] = module.reset_after
    out = []
    for k, arrays in enumerate(weights):
        layer = cls(**options)
        if module.bidirectional:
            layer = keras.layers.Bidirectional(layer, merge_mode="concat", dtype=module.dtype.name)
        layer_in = module.input_size if k == 0 else module.num_directions * module.hidden_size
        layer.build((None, None, layer_in))
        layer.set_weights(arrays)
        out.append(layer)
    return out
