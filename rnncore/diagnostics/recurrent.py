"""Diagnostics of a recurrent layer's weights and activations: the spectra of W_hh per layer,
direction and gate block, and gate saturation on real inputs.

Every (layer, direction) of a stacked or bidirectional layer is looked at through a one-layer
unidirectional copy with the same weights (``single_direction``): a reverse direction reads its
input reversed in time, which for full-length sequences is exactly what the reverse pass does.
``direction_inputs`` runs the copies layer by layer and checks that their outputs reproduce the
original layer's output, so the diagnostics look at the network that was trained.

Gate rows follow torch.nn: LSTM i, f, g, o; GRU r, z, n; an Elman layer has one "gate", its
activation. Saturation: the fraction of activations within ``tol`` of 0 and of 1, where a tanh
activation (LSTM g, GRU n, Elman tanh) counts by its magnitude |a| (near 1 means near +-1).
"""

import inspect

import numpy as np

from rnncore.nn._shards import Sharded
from rnncore.nn.module import no_grad
from rnncore.nn.recurrent import GRU, LSTM, RNN, RecurrentBase

__all__ = ["direction_inputs", "gate_names", "gate_saturation", "single_direction", "weight_spectra"]


def gate_names(layer):
    """The gate blocks of W_hh's rows, in order: ('i', 'f', 'g', 'o'), ('r', 'z', 'n') or (act,)."""
    if isinstance(layer, LSTM):
        return ("i", "f", "g", "o")
    if isinstance(layer, GRU):
        return ("r", "z", "n")
    if isinstance(layer, RNN):
        return (layer.nonlinearity,)
    raise TypeError(f"layer must be an rnncore RNN, LSTM or GRU, got {type(layer).__name__}")


def _gate_kind(layer, gate):
    """'sigmoid', 'tanh', or the Elman nonlinearity: what range the activation lives in."""
    if isinstance(layer, RNN):
        return layer.nonlinearity
    return "tanh" if gate in ("g", "n") else "sigmoid"


def _suffix(layer, index, direction):
    return f"_l{index}{'_reverse' if direction else ''}"


_STRUCTURE = {"input_size", "hidden_size", "num_layers", "bidirectional", "batch_first", "dropout", "seed"}


def _options(layer):
    """Every constructor option the layer keeps under its own name (nonlinearity, bias, reset_after,
    dtype, ...), from the named parameters of each ``__init__`` / ``__new__`` in its class hierarchy,
    so that cell variants are copied with their options; the structure (sizes, stacking) is not."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = set()
    for klass in type(layer).__mro__:
        for fn in (klass.__dict__.get("__init__"), klass.__dict__.get("__new__")):
            try:
                params = inspect.signature(fn).parameters.values() if fn is not None else ()
            except (TypeError, ValueError):  # builtins without a signature
                continue
            names |= {p.name for p in params if p.kind in kinds}
    return {name: getattr(layer, name) for name in sorted(names - _STRUCTURE - {"self", "cls"})
            if hasattr(layer, name)}


def single_direction(layer, index=0, direction=0):
    """A one-layer unidirectional copy of layer ``index``, direction ``direction`` (0 forward, 1 reverse)."""
    if not isinstance(layer, RecurrentBase):
        raise TypeError(f"layer must be an rnncore RNN, LSTM or GRU, got {type(layer).__name__}")
    if not 0 <= index < layer.num_layers or not 0 <= direction < layer.num_directions:
        raise ValueError(f"(index, direction) must lie in 0..{layer.num_layers - 1} x "
                         f"0..{layer.num_directions - 1}, got ({index}, {direction})")
    size = layer.input_size if index == 0 else layer.num_directions * layer.hidden_size
    copy = type(layer)(size, layer.hidden_size, **_options(layer))
    suffix = _suffix(layer, index, direction)
    params = dict(layer.named_parameters())
    copy.load_state_dict({name: params[name.replace("_l0", suffix)] for name, _ in copy.named_parameters()})
    copy.eval()
    return copy


def weight_spectra(layer):
    """Singular values of W_hh for every layer and direction, whole and per gate block.

    Returns a list of dicts: layer, direction ('forward' / 'reverse'), block ('all' or a gate name),
    shape, singular_values (descending), sigma_max, sigma_min, condition (sigma_max / sigma_min),
    and spectral_radius (largest |eigenvalue|) for the square blocks (H x H; None for the stacked
    4H x H or 3H x H matrix). For an Elman layer the whole matrix is the one block."""
    names = gate_names(layer)
    H = layer.hidden_size
    params = dict(layer.named_parameters())
    rows = []
    for index in range(layer.num_layers):
        for direction in range(layer.num_directions):
            w = params["weight_hh" + _suffix(layer, index, direction)].astype(np.float64)
            blocks = [("all", w)]
            if len(names) > 1:
                blocks += [(g, w[k * H:(k + 1) * H]) for k, g in enumerate(names)]
            for block, m in blocks:
                s = np.linalg.svd(m, compute_uv=False)
                radius = float(np.max(np.abs(np.linalg.eigvals(m)))) if m.shape[0] == m.shape[1] else None
                rows.append({"layer": index, "direction": ("forward", "reverse")[direction], "block": block,
                             "shape": list(m.shape), "singular_values": s.tolist(), "sigma_max": float(s[0]),
                             "sigma_min": float(s[-1]),
                             "condition": float(s[0] / s[-1]) if s[-1] > 0 else float("inf"),
                             "spectral_radius": radius})
    return rows


def _state_slice(hx, idx, n_states, rows=slice(None)):
    if hx is None:
        return None
    parts = (hx,) if n_states == 1 else tuple(hx)
    parts = tuple(None if p is None else np.ascontiguousarray(np.asarray(p)[idx:idx + 1, rows])
                  for p in parts)
    return parts[0] if n_states == 1 else parts


def direction_inputs(layer, x, hx=None, check=True):
    """The one-layer copies of every (layer, direction) with the inputs each one reads.

    x: (T, B, I) time-major full-length sequences; hx as in the layer's forward. Returns a list of
    dicts {layer, direction, copy, x (the copy's input, time-reversed for a reverse direction),
    hx (its initial state), out (its output, in its own time order)}. With ``check`` the copies'
    top-layer outputs are compared with the layer's own forward (a RuntimeError if they differ by
    more than rounding)."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != layer.input_size:
        raise ValueError(f"x must be (T, B, I={layer.input_size}), got shape {x.shape}")
    n_states, D = len(layer.state_names), layer.num_directions
    entries, layer_in = [], x
    with no_grad():
        for index in range(layer.num_layers):
            outs = []
            for direction in range(D):
                copy = single_direction(layer, index, direction)
                xin = np.ascontiguousarray(layer_in[::-1] if direction else layer_in)
                h0 = _state_slice(hx, index * D + direction, n_states)
                out, _ = copy(xin, h0)
                entries.append({"layer": index, "direction": ("forward", "reverse")[direction], "copy": copy,
                                "x": xin, "hx": h0, "out": out})
                outs.append(out[::-1] if direction else out)
            layer_in = np.concatenate(outs, axis=2) if D > 1 else outs[0]
        if check:
            training = layer.training
            layer.eval()
            try:
                ref, _ = layer(np.ascontiguousarray(x), hx)
            finally:
                layer.train(training)
            tol = 1e-4 if layer.dtype == np.float32 else 1e-10
            err = float(np.max(np.abs(ref - layer_in))) if ref.size else 0.0
            if not err <= tol * max(1.0, float(np.max(np.abs(ref)))):
                raise RuntimeError(f"the per-direction copies of {type(layer).__name__} do not reproduce its "
                                   f"output (largest difference {err:.3g}); the diagnostics do not support "
                                   "this layer")
    return entries


def _gate_activations(copy, x, hx):
    """{gate: activations (T, B, H)} of a one-layer copy's forward on x."""
    names = gate_names(copy)
    out, _ = copy(x, hx)  # outside no_grad: keeps the activated gates for backward
    saved = copy._cache["layers"][0]["saved"][0]
    if isinstance(saved, Sharded):  # a large batch ran as shards of rows (``rnncore.nn._shards``)
        saved = saved.joined()
    copy._cache = None
    if len(names) == 1:
        return {names[0]: out}
    T, B, _ = x.shape
    H = copy.hidden_size
    # the activated gates: the first (T, B, G) array the forward keeps (pre-activations may follow)
    gates = next((a for a in saved if a.shape == (T, B, len(names) * H)), None)
    acts = None if gates is None else {g: gates[:, :, k * H:(k + 1) * H] for k, g in enumerate(names)}
    if acts is None or not all(np.all((a >= -1.0) & (a <= 1.0)) and
                               (_gate_kind(copy, g) == "tanh" or np.all(a >= 0.0)) for g, a in acts.items()):
        raise RuntimeError(f"the gate activations of {type(copy).__name__} are not among what its forward "
                           "keeps; gate saturation does not support this layer")
    return acts


def gate_saturation(layer, x, hx=None, tol=0.01, bins=40, entries=None):
    """Saturation of every gate of every (layer, direction) on the inputs x (T, B, I), full length.

    Returns a list of dicts: layer, direction, gate, kind ('sigmoid', 'tanh', 'relu', ...), count,
    near_0 and near_1 (fractions of activations a with a <= tol / a >= 1 - tol; |a| for tanh;
    near_1 is None for relu and identity, which have no upper bound), mean, and a histogram
    (hist counts over ``edges``: [0, 1] for sigmoid, [-1, 1] for tanh, the data's range otherwise).
    ``entries``: the result of ``direction_inputs(layer, x, hx)`` if already computed."""
    rows = []
    for entry in entries if entries is not None else direction_inputs(layer, x, hx):
        acts = _gate_activations(entry["copy"], entry["x"], entry["hx"])
        for gate, a in acts.items():
            a = np.asarray(a, dtype=np.float64).ravel()
            kind = _gate_kind(layer, gate)
            mag = np.abs(a) if kind in ("tanh", "identity") else a
            bounded = kind in ("sigmoid", "tanh")
            lo, hi = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}.get(kind, (float(a.min()), float(a.max())))
            hist, edges = np.histogram(a, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
            rows.append({"layer": entry["layer"], "direction": entry["direction"], "gate": gate, "kind": kind,
                         "count": int(a.size), "near_0": float(np.mean(mag <= tol)),
                         "near_1": float(np.mean(mag >= 1.0 - tol)) if bounded else None,
                         "mean": float(np.mean(a)), "hist": hist.tolist(), "edges": edges.tolist()})
    return rows
