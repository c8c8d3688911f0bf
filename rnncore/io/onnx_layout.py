"""torch.nn-named recurrent weights <-> the ONNX RNN / LSTM / GRU operators' W, R, B inputs.

# L = layers, D = directions, H = hidden, I_l = layer l's input size, G = gate blocks
# (Elman 1, LSTM 4, GRU 3)

Per layer, ONNX takes W (D, G*H, I_l), R (D, G*H, H) and B (D, 2*G*H) = [W_b, R_b] with direction 0
forward, 1 reverse, and gate blocks in its own order:

    LSTM  torch i, f, g, o   ->  ONNX i, o, f, c
    GRU   torch r, z, n      ->  ONNX z, r, h
    Elman one block, no reordering

An LSTM's peepholes (rnncore's ``weight_peephole_l{k}`` (3H,), rows p_i | p_f | p_o) are the LSTM
operator's input P (D, 3H) in its order i, o, f: P[d] = [p_i, p_o, p_f]. Not every torch.nn layer has
an ONNX form: an LSTM with projections (``proj_size``, keys ``weight_hr_l{k}``) has none and is refused.
A GRU's two reset placements have the same weights; which one the operator computes is its
``linear_before_reset`` attribute (``reset_after=True``, torch's: 1; the original
``reset_after=False``: 0, which is exactly ONNX's default equation), see ``linear_before_reset``.
"""

import re

import numpy as np

__all__ = ["GATE_BLOCKS", "from_onnx_weights", "linear_before_reset", "to_onnx_weights"]

GATE_BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}
# ONNX block j is torch block _TO_ONNX[cell][j]; torch block j is ONNX block _FROM_ONNX[cell][j]
_TO_ONNX = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
_FROM_ONNX = {cell: list(np.argsort(order)) for cell, order in _TO_ONNX.items()}
# the same for the LSTM peepholes: ONNX P = [p_i, p_o, p_f], rnncore [p_i, p_f, p_o]
_PEEP_TO_ONNX = [0, 2, 1]
_PEEP_FROM_ONNX = list(np.argsort(_PEEP_TO_ONNX))
_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|weight_peephole)_l(\d+)(_reverse)?$")


def _cell_name(cell):
    name = {"rnn_relu": "rnn", "rnn_tanh": "rnn"}.get(cell, cell)
    if name not in GATE_BLOCKS:
        raise ValueError(f"cell must be one of {sorted(GATE_BLOCKS)}, got {cell!r}")
    return name


def _reorder(a, order, axis):
    """``a`` with its gate blocks along ``axis`` (G equal blocks) rearranged: block j of the result
    is block order[j] of ``a``."""
    blocks = np.split(a, len(order), axis=axis)
    return np.concatenate([blocks[j] for j in order], axis=axis)


def linear_before_reset(layer):
    """The ONNX GRU ``linear_before_reset`` attribute that computes ``layer`` (an rnncore GRU or
    GRUCell): 1 for torch's placement (``reset_after=True``), 0 for ``reset_after=False``."""
    reset_after = getattr(layer, "reset_after", None)
    if reset_after is None:
        reset_after = getattr(getattr(layer, "_layer", None), "reset_after", None)
    if reset_after is None:
        raise TypeError(f"layer must be a GRU or GRUCell, got {type(layer).__name__}")
    return 1 if reset_after else 0


def _layout(state_dict, prefix):
    """{(layer, direction): {kind: array}} from the keys under ``prefix``; other keys are ignored."""
    entries = {}
    for key, value in state_dict.items():
        key = str(key)
        if not key.startswith(prefix):
            continue
        m = _KEY.match(key[len(prefix):])
        if m is None:
            raise ValueError(f"state_dict key {key!r} is not a torch.nn recurrent weight (weight_ih_l0, "
                             "bias_hh_l1_reverse, weight_peephole_l0, ...)")
        kind, layer, reverse = m.group(1), int(m.group(2)), m.group(3) is not None
        if kind == "weight_hr":
            raise ValueError(f"state_dict has {key!r}: an LSTM with projections (proj_size > 0) has no ONNX "
                             "LSTM form (the ONNX operator's hidden state is its output, unprojected)")
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        entries.setdefault((layer, int(reverse)), {})[kind] = value
    return entries


def to_onnx_weights(state_dict, cell, prefix=""):
    """The ONNX inputs of each layer of a recurrent layer's torch.nn-named ``state_dict`` (numpy
    arrays or torch tensors; only keys starting with ``prefix`` are read, e.g. ``"rnn."`` for a
    task model's): a list, one dict per layer, {"W": (D, G*H, I_l), "R": (D, G*H, H),
    "B": (D, 2*G*H)}, "B" is None without biases; an LSTM's dicts also have "P" (D, 3H), its
    peepholes in ONNX's order i, o, f, or None without them. ``cell`` is ``rnn``, ``lstm`` or ``gru``."""
    cell = _cell_name(cell)
    G = GATE_BLOCKS[cell]
    entries = _layout(state_dict, prefix)
    if not entries:
        raise ValueError(f"state_dict has no recurrent weights under prefix {prefix!r} (keys: "
                         f"{sorted(map(str, state_dict))[:6]}...)")
    num_layers = max(layer for layer, _ in entries) + 1
    D = 2 if any(d for _, d in entries) else 1
    has_bias = any("bias_ih" in e for e in entries.values())
    has_peep = any("weight_peephole" in e for e in entries.values())
    if has_peep and cell != "lstm":
        raise ValueError(f"state_dict has peephole weights (weight_peephole_l{{k}}), which only an lstm has, "
                         f"got cell={cell!r}")
    needed = (("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if has_bias else ())
              + (("weight_peephole",) if has_peep else ()))
    layers = []
    for layer in range(num_layers):
        W, R, B, P = [], [], [], []
        for d in range(D):
            e = entries.get((layer, d), {})
            missing = [f"{prefix}{k}_l{layer}{'_reverse' if d else ''}" for k in needed if k not in e]
            extra = [k for k in e if k not in needed]
            if missing or extra:
                raise ValueError(f"state_dict is not a complete {cell} layer: missing {missing}, unexpected "
                                 f"{extra} (every layer and direction needs {list(needed)})")
            w_ih, w_hh = e["weight_ih"], e["weight_hh"]
            H = w_hh.shape[1]
            if w_hh.shape != (G * H, H) or w_ih.ndim != 2 or w_ih.shape[0] != G * H:
                raise ValueError(f"layer {layer} direction {d}: weight_hh must be (G*H, H) = ({G * H}, {H}) "
                                 f"and weight_ih (G*H, I) for a {cell} (G = {G}), got {w_hh.shape} and "
                                 f"{w_ih.shape}")
            W.append(_reorder(w_ih, _TO_ONNX[cell], 0))
            R.append(_reorder(w_hh, _TO_ONNX[cell], 0))
            if has_bias:
                for name in ("bias_ih", "bias_hh"):
                    if e[name].shape != (G * H,):
                        raise ValueError(f"{prefix}{name}_l{layer}: must have shape ({G * H},), got "
                                         f"{e[name].shape}")
                B.append(np.concatenate([_reorder(e["bias_ih"], _TO_ONNX[cell], 0),
                                         _reorder(e["bias_hh"], _TO_ONNX[cell], 0)]))
            if has_peep:
                if e["weight_peephole"].shape != (3 * H,):
                    raise ValueError(f"{prefix}weight_peephole_l{layer}{'_reverse' if d else ''}: must have "
                                     f"shape ({3 * H},), got {e['weight_peephole'].shape}")
                P.append(_reorder(e["weight_peephole"], _PEEP_TO_ONNX, 0))
        weights = {"W": np.stack(W), "R": np.stack(R), "B": np.stack(B) if has_bias else None}
        if cell == "lstm":
            weights["P"] = np.stack(P) if has_peep else None
        layers.append(weights)
    return layers


def from_onnx_weights(layers, cell, prefix="", bias=True):
    """The torch.nn-named state dict (numpy arrays, keys prefixed with ``prefix``) of ONNX per-layer
    inputs: a list of {"W", "R", "B"[, "P"]} dicts as ``to_onnx_weights`` returns (or (W, R, B[, P])
    tuples). ``bias=False`` gives a layer without bias keys and needs B None or all zeros. An LSTM's
    P (D, 3H), peepholes in ONNX's order i, o, f, gives ``weight_peephole_l{k}`` keys (rnncore's
    ``LSTM(peephole=True)``); P None or absent gives none. Either every layer has P or none."""
    cell = _cell_name(cell)
    G = GATE_BLOCKS[cell]
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(f"layers must be a non-empty list of per-layer (W, R, B), got "
                         f"{type(layers).__name__}")
    state, D, has_peep = {}, None, None
    for layer, entry in enumerate(layers):
        if isinstance(entry, dict):
            W, R, B, P = entry["W"], entry["R"], entry.get("B"), entry.get("P")
        else:
            entry = tuple(entry)
            if len(entry) not in (3, 4):
                raise ValueError(f"layer {layer}: expected (W, R, B) or (W, R, B, P), got {len(entry)} "
                                 "arrays")
            W, R, B, P = entry if len(entry) == 4 else entry + (None,)
        W, R = np.asarray(W), np.asarray(R)
        if R.ndim != 3 or R.shape[1] % G or R.shape[1] != G * R.shape[2]:
            raise ValueError(f"layer {layer}: R must be (D, G*H, H) with G = {G} for a {cell}, got {R.shape}")
        D_l, GH, H = R.shape
        if D is None:
            D = D_l
        if D_l != D or D not in (1, 2):
            expected = D if D in (1, 2) else "1 or 2"
            raise ValueError(f"layer {layer}: R has {D_l} directions, expected {expected}")
        if W.ndim != 3 or W.shape[:2] != (D, GH):
            raise ValueError(f"layer {layer}: W must be (D, G*H, I) = ({D}, {GH}, I), got {W.shape}")
        if layer > 0 and W.shape[2] != D * H:
            raise ValueError(f"layer {layer}: W must read the previous layer's D*H = {D * H} outputs, got "
                             f"input size {W.shape[2]}")
        if B is not None:
            B = np.asarray(B)
            if B.shape != (D, 2 * GH):
                raise ValueError(f"layer {layer}: B must be (D, 2*G*H) = ({D}, {2 * GH}), got {B.shape}")
            if not bias and np.any(B != 0):
                raise ValueError(f"layer {layer}: B is not zero, so the layer needs bias=True")
        if P is not None:
            P = np.asarray(P)
            if cell != "lstm":
                raise ValueError(f"layer {layer}: P (peepholes) belongs to an lstm, got cell={cell!r}")
            if P.shape != (D, 3 * H):
                raise ValueError(f"layer {layer}: P must be (D, 3*H) = ({D}, {3 * H}), got {P.shape}")
        if has_peep is None:
            has_peep = P is not None
        if has_peep != (P is not None):
            raise ValueError(f"layer {layer}: {'P is None' if has_peep else 'P is given'} but layer 0's "
                             f"{'is not' if has_peep else 'is None'} (every layer has peepholes or none)")
        for d in range(D):
            key = f"_l{layer}{'_reverse' if d else ''}"
            state[f"{prefix}weight_ih{key}"] = _reorder(W[d], _FROM_ONNX[cell], 0)
            state[f"{prefix}weight_hh{key}"] = _reorder(R[d], _FROM_ONNX[cell], 0)
            if bias:
                b = B[d] if B is not None else np.zeros(2 * GH, dtype=W.dtype)
                state[f"{prefix}bias_ih{key}"] = _reorder(b[:GH], _FROM_ONNX[cell], 0)
                state[f"{prefix}bias_hh{key}"] = _reorder(b[GH:], _FROM_ONNX[cell], 0)
            if P is not None:
                state[f"{prefix}weight_peephole{key}"] = _reorder(P[d], _PEEP_FROM_ONNX, 0)
    return state
