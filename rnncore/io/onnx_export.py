"""ONNX export of recurrent layers, language models, classifiers and taggers, built with
``onnx.helper`` from the weights alone (no tracing).

# T = steps, B = batch, I = input, E = embedding, H = hidden, D = directions, L = layers,
# V = vocabulary, K = classes

Each recurrent layer of a stack is one ONNX ``RNN`` / ``LSTM`` / ``GRU`` operator with its weights
reordered by ``rnncore.io.onnx_layout``; its output Y (T, D, B, H) is transposed and reshaped to
(T, B, D*H), the next layer's input, and the layers' final states are concatenated into
(D*L, B, H), rnncore's (and torch's) state layout. T and B are symbolic.

Graphs (inputs -> outputs):

- RNN / LSTM / GRU: ``x`` (T, B, I) (``(B, T, I)`` with batch_first), ``h0`` (D*L, B, H)
  [, ``c0``] [, ``lengths`` (B,) int64] -> ``output`` (T, B, D*H), ``h_n`` [, ``c_n``].
- LanguageModel: ``ids`` (T, B) int64, ``h0`` (L, B, H) [, ``c0``] [, ``lengths``] ->
  ``logits`` (T, B, V), ``h_n`` [, ``c_n``]: Gather (embedding, or rows of the identity for one-hot
  input) -> layers -> MatMul + Add. Feeding ``h_n`` back as ``h0`` steps it token by token.
- SequenceClassifier: ``ids`` (T, B) int64 or ``x`` (T, B, F) [, ``lengths``] -> ``logits`` (B, K),
  ``probabilities`` (B, K): the top layer's final state (at each sequence's own last step, and the
  reverse direction's at step 0), the two directions merged (concat, sum, product) as the model does.
- SequenceTagger: ``ids`` (T, B) [, ``lengths``] -> ``logits`` (T, B, C); SequenceRegressor: ``x``
  (T, B, F) [, ``lengths``] -> ``output`` (T, B, O): the layers' outputs at every step, the
  directions merged as the model does, through the head.

LSTM variants: peepholes are the LSTM operator's input P, ``gate_clip`` its ``clip`` attribute,
``coupled_input_forget`` ``input_forget=1``; ``unit_forget_bias`` only initialises the weights.
``proj_size`` has no ONNX form and is refused, and so is zoneout (in eval mode it mixes each step's
state with the previous one). Dropout is left out (the graph is the model in eval mode).

With ``lengths``, positions past a sequence's length are zero and the final states are taken at its
own last step (the operators' ``sequence_lens``), as rnncore computes.

Runtimes: onnxruntime runs these operators in float32 only; ``onnx.reference.ReferenceEvaluator``
runs float64 (it ignores ``sequence_lens``, the LSTM's ``clip`` and ``input_forget``, and knows only the
Tanh activation of ``RNN``).
"""

import inspect
import json
from pathlib import Path

import numpy as np

from rnncore._version import __version__
from rnncore.io.files import write_atomic
from rnncore.io.onnx_layout import linear_before_reset, to_onnx_weights

__all__ = ["DEFAULT_IR_VERSION", "DEFAULT_OPSET", "to_onnx", "to_onnx_model"]

# Opset 14: the recurrent operators in their current form (layout attribute) and Reshape with
# allowzero; IR version 7 is the oldest that carries opset 14 (ONNX 1.9), so older runtimes load it.
DEFAULT_OPSET = 14
DEFAULT_IR_VERSION = 7
SUPPORTED_OPSETS = range(14, 23)
_ACTIVATIONS = {"tanh": ("Tanh", None), "relu": ("Relu", None), "sigmoid": ("Sigmoid", None),
                "identity": ("Affine", (1.0, 0.0))}


def _onnx():
    try:
        import onnx
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx package: pip install 'rnncore[onnx]'") from err
    return onnx


class _Graph:
    """Nodes, initializers and unique names of the graph being built."""

    def __init__(self, dtype):
        self.onnx = _onnx()
        self.dtype = np.dtype(dtype)
        self.elem = self.onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self._names = set()

    def name(self, base):
        name, n = base, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def const(self, base, value, dtype=None):
        value = np.asarray(value, dtype=dtype if dtype is not None else self.dtype)
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(value.copy(order="C"), name))  # keeps 0-d
        return name

    def ints(self, base, values):
        return self.const(base, values, np.int64)

    def node(self, op, inputs, outputs=1, base=None, **attrs):
        """Add a node; ``outputs`` is a count (fresh names from ``base``) or a list of names. Returns
        the output names (one name when there is one)."""
        if isinstance(outputs, int):
            outputs = [self.name(f"{base or op.lower()}_{i}" if outputs > 1 else (base or op.lower()))
                       for i in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), list(outputs),
                                                     name=self.name(f"{op}_node"), **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def input(self, name, elem, shape):
        self._names.add(name)
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, source, name, elem, shape):
        self.node("Identity", [source], [name])
        self._names.add(name)
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, elem, shape))

    def model(self, graph_name, opset, ir_version, props):
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", opset)],
                                  producer_name="rnncore", producer_version=__version__)
        model.ir_version = ir_version
        helper.set_model_props(model, {k: str(v) for k, v in props.items()})
        return model


# Constructor options the graphs reproduce; any other option left at a non-default value is refused,
# so that a layer variant the ONNX operators do not compute is never exported as the plain cell.
# The LSTM variants map onto the LSTM operator: peepholes -> input P, gate_clip -> ``clip``,
# coupled_input_forget -> ``input_forget=1``; unit_forget_bias is only an initialisation (the weights say
# it). proj_size has no ONNX form (the operator's output is its hidden state, unprojected).
_EXPORTED_OPTIONS = {"input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                     "bidirectional", "check_finite", "nonlinearity", "reset_after", "dtype", "seed",
                     "peephole", "gate_clip", "coupled_input_forget", "unit_forget_bias"}


def _cell_of(layer):
    """``rnn``, ``lstm`` or ``gru`` for an exportable layer; anything else is refused."""
    from rnncore.nn.recurrent import GRU, LSTM, RNN

    cells = {RNN: "rnn", LSTM: "lstm", GRU: "gru"}
    if type(layer) not in cells:  # subclasses compute something else
        raise TypeError(f"to_onnx exports rnncore.RNN, LSTM and GRU layers, got {type(layer).__name__}")
    proj_size = getattr(layer, "proj_size", 0)
    if proj_size:
        raise ValueError(f"to_onnx cannot export LSTM(proj_size={proj_size!r}): ONNX's LSTM operator has no "
                         "projection (its hidden state is its output, unprojected)")
    for name in ("zoneout", "zoneout_cell"):  # keyword-only regularisers, not in the signature's names
        rate = getattr(layer, name, 0.0)
        if rate:
            raise ValueError(f"to_onnx cannot export {type(layer).__name__}({name}={rate!r}): in eval mode "
                             "zoneout mixes each step's state with the previous one (h_t = p h_(t-1) + "
                             "(1 - p) h~_t), which the ONNX operators do not compute")
    for name, param in inspect.signature(type(layer).__init__).parameters.items():
        if name == "self" or name in _EXPORTED_OPTIONS or param.default is param.empty:
            continue
        value = getattr(layer, name, param.default)
        if value is not param.default and value != param.default:
            raise ValueError(f"to_onnx cannot export {type(layer).__name__}({name}={value!r}): the ONNX "
                             "graph would compute the layer without that option")
    return cells[type(layer)]


def _recurrent(g, layer, x, lengths=None, h0=None, c0=None, prefix=""):
    """The ONNX nodes of an rnncore RNN / LSTM / GRU stack on the time-major ``x`` (T, B, I).
    Returns (output (T, B, D*H), h_n (D*L, B, H), c_n or None, top layer's Y_h (D, B, H))."""
    cell = _cell_of(layer)
    D, H, L = layer.num_directions, layer.hidden_size, layer.num_layers
    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if cell == "gru":
        attrs["linear_before_reset"] = linear_before_reset(layer)
    if cell == "lstm":
        if layer.gate_clip is not None:
            attrs["clip"] = float(layer.gate_clip)
        if layer.coupled_input_forget:
            attrs["input_forget"] = 1
    if cell == "rnn":
        act, alpha_beta = _ACTIVATIONS[layer.nonlinearity]
        attrs["activations"] = [act] * D
        if alpha_beta is not None:
            attrs["activation_alpha"] = [alpha_beta[0]] * D
            attrs["activation_beta"] = [alpha_beta[1]] * D
    weights = to_onnx_weights(layer.state_dict(), cell)
    seq_lens = ""
    if lengths:  # the operators take int32 sequence_lens
        seq_lens = g.node("Cast", [lengths], base=f"{prefix}seq_lens", to=g.onnx.TensorProto.INT32)
    finals_h, finals_c, top_h = [], [], None
    for k, w in enumerate(weights):
        names = [x, g.const(f"{prefix}W_l{k}", w["W"]), g.const(f"{prefix}R_l{k}", w["R"]),
                 g.const(f"{prefix}B_l{k}", w["B"]) if w["B"] is not None else "", seq_lens]
        for state in (h0, c0) if cell == "lstm" else (h0,):
            if state is None:
                names.append("")
            else:
                names.append(g.node("Slice", [state, g.ints("start", [k * D]), g.ints("end", [(k + 1) * D]),
                                              g.ints("axis", [0])], base=f"{state}_l{k}"))
        if w.get("P") is not None:  # the LSTM's eighth input
            names.append(g.const(f"{prefix}P_l{k}", w["P"]))
        outs = g.node(op, names, 3 if cell == "lstm" else 2, base=f"{prefix}{cell}_l{k}", **attrs)
        y, y_h = outs[0], outs[1]
        finals_h.append(y_h)
        if cell == "lstm":
            finals_c.append(outs[2])
        top_h = y_h
        if D == 1:  # (T, 1, B, H) -> (T, B, H)
            x = g.node("Squeeze", [y, g.ints("axes", [1])], base=f"{prefix}out_l{k}")
        else:  # (T, 2, B, H) -> (T, B, 2, H) -> (T, B, 2H)
            t = g.node("Transpose", [y], base=f"{prefix}out_l{k}_tbdh", perm=[0, 2, 1, 3])
            x = g.node("Reshape", [t, g.ints("shape", [0, 0, -1])], base=f"{prefix}out_l{k}")
    h_n = g.node("Concat", finals_h, base=f"{prefix}h_n_all", axis=0) if L > 1 else finals_h[0]
    c_n = None
    if cell == "lstm":
        c_n = g.node("Concat", finals_c, base=f"{prefix}c_n_all", axis=0) if L > 1 else finals_c[0]
    return x, h_n, c_n, top_h


def _linear(g, x, linear, base):
    """x (..., in) @ W^T + b for an rnncore Linear."""
    state = linear.state_dict()
    y = g.node("MatMul", [x, g.const(f"{base}.weight_t", state["weight"].T)], base=f"{base}_matmul")
    if "bias" in state:
        y = g.node("Add", [y, g.const(f"{base}.bias", state["bias"])], base=base)
    return y


def _state_io(g, layer, lengths, elem):
    """Graph inputs h0 [, c0] [, lengths] of a recurrent layer."""
    shape = [layer.num_directions * layer.num_layers, "B", layer.hidden_size]
    h0 = g.input("h0", elem, shape)
    c0 = g.input("c0", elem, shape) if _cell_of(layer) == "lstm" else None
    lens = g.input("lengths", g.onnx.TensorProto.INT64, ["B"]) if lengths else None
    return h0, c0, lens


def _state_outputs(g, layer, h_n, c_n, elem):
    shape = [layer.num_directions * layer.num_layers, "B", layer.hidden_size]
    g.output(h_n, "h_n", elem, shape)
    if c_n is not None:
        g.output(c_n, "c_n", elem, shape)


def _export_layer(g, layer, lengths):
    elem, D, H = g.elem, layer.num_directions, layer.hidden_size
    in_shape = ["B", "T", layer.input_size] if layer.batch_first else ["T", "B", layer.input_size]
    x = g.input("x", elem, in_shape)
    h0, c0, lens = _state_io(g, layer, lengths, elem)
    if layer.batch_first:
        x = g.node("Transpose", [x], base="x_tbi", perm=[1, 0, 2])
    out, h_n, c_n, _ = _recurrent(g, layer, x, lens, h0, c0)
    if layer.batch_first:
        out = g.node("Transpose", [out], base="output_bth", perm=[1, 0, 2])
    g.output(out, "output", elem, (["B", "T"] if layer.batch_first else ["T", "B"]) + [D * H])
    _state_outputs(g, layer, h_n, c_n, elem)
    return {"module": type(layer).__name__}


def _embed(g, model, ids):
    if getattr(model, "embedding", None) is not None:
        table = model.embedding.state_dict()["weight"]
    else:  # one-hot input: rows of the identity
        table = np.eye(len(model.vocab))
    return g.node("Gather", [g.const("embedding.weight", table), ids], base="embedded", axis=0)


def _export_language_model(g, model, lengths):
    elem, rnn = g.elem, model.rnn
    ids = g.input("ids", g.onnx.TensorProto.INT64, ["T", "B"])
    h0, c0, lens = _state_io(g, rnn, lengths, elem)
    out, h_n, c_n, _ = _recurrent(g, rnn, _embed(g, model, ids), lens, h0, c0, prefix="rnn.")
    logits = _linear(g, out, model.head, "head")
    g.output(logits, "logits", elem, ["T", "B", model.head.out_features])
    _state_outputs(g, rnn, h_n, c_n, elem)
    return _task_props(model)


def _export_classifier(g, model, lengths):
    elem, rnn = g.elem, model.rnn
    if model.embedding is not None:
        x = _embed(g, model, g.input("ids", g.onnx.TensorProto.INT64, ["T", "B"]))
    else:
        x = g.input("x", elem, ["T", "B", rnn.input_size])
    lens = g.input("lengths", g.onnx.TensorProto.INT64, ["B"]) if lengths else None
    _, _, _, top = _recurrent(g, rnn, x, lens, prefix="rnn.")
    # top (D, B, H): forward state at each sequence's last step, reverse state at step 0
    if rnn.num_directions == 1:
        feat = g.node("Squeeze", [top, g.ints("axes", [0])], base="features")
    else:
        fwd = g.node("Gather", [top, g.ints("forward", 0)], base="final_forward", axis=0)
        rev = g.node("Gather", [top, g.ints("reverse", 1)], base="final_reverse", axis=0)
        mode = model.merge.mode
        if mode == "concat":
            feat = g.node("Concat", [fwd, rev], base="features", axis=1)
        else:
            feat = g.node("Add" if mode == "sum" else "Mul", [fwd, rev], base="features")
    logits = _linear(g, feat, model.head, "head")
    K = model.head.out_features
    g.output(logits, "logits", elem, ["B", K])
    g.output(g.node("Softmax", [logits], base="softmax", axis=1), "probabilities", elem, ["B", K])
    return _task_props(model)


def _export_many_to_many(g, model, lengths):
    from rnncore.models.tagger import SequenceTagger

    elem, rnn = g.elem, model.rnn
    tagger = isinstance(model, SequenceTagger)
    if tagger:
        x = _embed(g, model, g.input("ids", g.onnx.TensorProto.INT64, ["T", "B"]))
    else:
        x = g.input("x", elem, ["T", "B", rnn.input_size])
    lens = g.input("lengths", g.onnx.TensorProto.INT64, ["B"]) if lengths else None
    out, _, _, _ = _recurrent(g, rnn, x, lens, prefix="rnn.")
    mode, H = model.merge.mode, rnn.hidden_size
    if rnn.num_directions == 2 and mode != "concat":  # (T, B, 2H): forward half, reverse half
        axis = g.ints("axis", [2])
        fwd = g.node("Slice", [out, g.ints("start", [0]), g.ints("end", [H]), axis], base="out_forward")
        rev = g.node("Slice", [out, g.ints("start", [H]), g.ints("end", [2 * H]), axis], base="out_reverse")
        out = g.node("Add" if mode == "sum" else "Mul", [fwd, rev], base="merged")
    y = _linear(g, out, model.head, "head")
    g.output(y, "logits" if tagger else "output", elem, ["T", "B", model.head.out_features])
    return _task_props(model)


def _task_props(model):
    return {"rnncore.kind": model.kind, "rnncore.config": json.dumps(model.get_config(), sort_keys=True),
            "rnncore.vocabs": json.dumps({n: v.to_dict() for n, v in model.vocabs.items()}, sort_keys=True)}


def to_onnx_model(model, lengths=None, opset=DEFAULT_OPSET, ir_version=DEFAULT_IR_VERSION, dtype=None):
    """The checked ``onnx.ModelProto`` of ``model`` (see the module docstring for the graphs).

    lengths: add the ``lengths`` input (B,) int64 (default: yes, except for a language model,
    whose graph is meant for stepping). dtype: of the weights and float inputs/outputs (default
    the model's; onnxruntime needs float32)."""
    from rnncore.models.classifier import SequenceClassifier
    from rnncore.models.language_model import LanguageModel
    from rnncore.models.tagger import SequenceRegressor, SequenceTagger
    from rnncore.nn.module import Module
    from rnncore.nn.recurrent import RecurrentBase

    onnx = _onnx()
    if not isinstance(model, Module):
        raise TypeError(f"model must be an rnncore layer or task model, got {type(model).__name__}")
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset must lie in {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}, "
                         f"got {opset!r}")
    dtype = np.dtype(model.dtype if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    for name, value in model.named_parameters():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{type(model).__name__}: parameter {name!r} holds NaN or Inf; refusing to "
                             "export it")
    g = _Graph(dtype)
    if isinstance(model, RecurrentBase):
        props = _export_layer(g, model, True if lengths is None else lengths)
    elif isinstance(model, LanguageModel):
        props = _export_language_model(g, model, False if lengths is None else lengths)
    elif isinstance(model, SequenceClassifier):
        props = _export_classifier(g, model, True if lengths is None else lengths)
    elif isinstance(model, (SequenceTagger, SequenceRegressor)):
        props = _export_many_to_many(g, model, True if lengths is None else lengths)
    else:
        raise TypeError(f"to_onnx exports RNN, LSTM, GRU, LanguageModel, SequenceClassifier, SequenceTagger "
                        f"and SequenceRegressor, got {type(model).__name__}")
    props["rnncore.dtype"] = dtype.name
    proto = g.model(type(model).__name__, opset, ir_version, props)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def to_onnx(model, path, lengths=None, opset=DEFAULT_OPSET, ir_version=DEFAULT_IR_VERSION, dtype=None):
    """Write ``model`` (an RNN / LSTM / GRU layer, a LanguageModel, SequenceClassifier,
    SequenceTagger or SequenceRegressor) as an ONNX file (atomically). Options as ``to_onnx_model``.
    Returns the path."""
    proto = to_onnx_model(model, lengths=lengths, opset=opset, ir_version=ir_version, dtype=dtype)
    path = Path(path)
    write_atomic(path, proto.SerializeToString())
    return path
