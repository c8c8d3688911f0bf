"""Gradient-flow diagnostics of a trained task model on its own data: what ``rnncore diagnose`` runs.

The model's recurrent layers are observed during an ordinary ``loss_and_backward`` in eval mode
(no dropout): each layer's forward input, initial state and the gradients its backward receives
are recorded (``capture_recurrent``), and then analysed with ``rnncore.diagnostics``:

- per (layer, direction): the singular values of W_hh (whole and per gate block), the gate
  saturation on those inputs, and ||dh_T/ds_t|| (spectral and Frobenius) over ``steps`` steps for a
  few sequences, with the verdict of ``flow_verdict``;
- for the top layer, ||dL/dh_t|| per step from the gradient the model's loss sends into it.

Running text (a truncated-BPTT stream) is read as consecutive chunks, whose inputs and output
gradients are concatenated up to ``steps`` steps: with the state carried and no dropout this is
exactly the long sequence, and the concatenated output gradients are the gradient of the summed
chunk losses. Batches of separate sequences use one batch, the rows of its longest length.
"""

import json
from pathlib import Path

import numpy as np

from rnncore.diagnostics.gradients import (
    flow_verdict,
    gradient_norms,
    hidden_state_gradients,
    state_jacobian_norms,
)
from rnncore.diagnostics.recurrent import direction_inputs, gate_saturation, weight_spectra
from rnncore.models.base import copy_state
from rnncore.nn.recurrent import RecurrentBase

__all__ = ["capture_recurrent", "diagnose_model", "recurrent_modules", "training_record", "worst_verdict",
           "write_json"]

_ORDER = {"exploding": 0, "vanishing": 1, "healthy": 2}


def recurrent_modules(module, prefix=""):
    """(dotted name, layer) of every recurrent layer inside ``module``."""
    for name, child in module._children.items():
        if isinstance(child, RecurrentBase):
            yield prefix + name, child
        else:
            yield from recurrent_modules(child, f"{prefix}{name}.")


def _copy(value):
    if value is None:
        return None
    return copy_state(tuple(value) if isinstance(value, list) else value)


def capture_recurrent(model, batch, state=None):
    """Run ``model.loss_and_backward(batch, state)`` in eval mode and record, for every recurrent
    layer called exactly once, {x (T, B, I) time-major, hx, lengths, grad_out (T, B, D*H) or None,
    grad_state}. Returns (records by layer name, the step's result). The model's parameter
    gradients and training mode are restored; no random generator is drawn from."""
    layers = dict(recurrent_modules(model))
    calls = {name: [] for name in layers}
    saved_grads = {name: g.copy() for name, g in model.grads.items()}
    training = model.training
    model.eval()

    def wrap(name, layer):
        forward, backward = layer.forward, layer.backward

        def fwd(x, hx=None, lengths=None, **kwargs):
            calls[name].append({"x": np.array(x, copy=True), "hx": _copy(hx),
                                "lengths": None if lengths is None else np.array(lengths)})
            return forward(x, hx, lengths, **kwargs)

        def bwd(grad_out=None, grad_state=None, **kwargs):
            if calls[name]:
                calls[name][-1].update(grad_out=None if grad_out is None else np.array(grad_out, copy=True),
                                       grad_state=_copy(grad_state))
            return backward(grad_out, grad_state, **kwargs)

        layer.forward, layer.backward = fwd, bwd

    try:
        for name, layer in layers.items():
            wrap(name, layer)
        result = model.loss_and_backward(batch, state)
    finally:
        for layer in layers.values():
            for attr in ("forward", "backward"):
                layer.__dict__.pop(attr, None)
        for name, g in model.grads.items():
            g[...] = saved_grads[name]
        model.train(training)
    records = {}
    for name, layer in layers.items():
        if len(calls[name]) != 1:
            continue
        rec = calls[name][0]
        if layer.batch_first:
            rec["x"] = rec["x"].transpose(1, 0, 2)
            if rec.get("grad_out") is not None:
                rec["grad_out"] = rec["grad_out"].transpose(1, 0, 2)
        rec.setdefault("grad_out", None)
        rec.setdefault("grad_state", None)
        records[name] = rec
    return records, result


def _gather(model, batches, steps, state=None):
    """Capture records over consecutive stream chunks until ``steps`` steps, or one batch of
    separate sequences (its longest rows). Returns {layer name: record} with full-length rows."""
    merged = None
    for batch in batches:
        if merged is not None and (batch.get("lengths") is not None or batch.get("reset_state", False)):
            break
        records, result = capture_recurrent(model, batch, state)
        state = copy_state(result.state)
        if merged is None:
            merged = records
            if any(r["lengths"] is not None for r in records.values()):
                break
        else:
            if any(name not in merged or r["x"].shape[1] != merged[name]["x"].shape[1]
                   or r["grad_state"] is not None or merged[name]["grad_state"] is not None
                   for name, r in records.items()):
                break
            for name, r in records.items():
                m = merged[name]
                m["x"] = np.concatenate([m["x"], r["x"]])
                if m["grad_out"] is not None and r["grad_out"] is not None:
                    m["grad_out"] = np.concatenate([m["grad_out"], r["grad_out"]])
                else:
                    m["grad_out"] = None
        if min(r["x"].shape[0] for r in merged.values()) >= steps:
            break
    if merged is None:
        raise ValueError("the data source gave no batches")
    return {name: _full_length_rows(r) for name, r in merged.items()}


def _full_length_rows(rec):
    """A record with lengths cut to the rows of the longest length (full-length sequences, for
    which a reverse direction is the time-reversed input), and to that length."""
    if rec["lengths"] is None:
        return rec
    T = int(np.max(rec["lengths"]))
    rows = np.nonzero(rec["lengths"] == T)[0]
    grad_out = None if rec["grad_out"] is None else rec["grad_out"][:T, rows]
    return dict(rec, x=rec["x"][:T, rows], grad_out=grad_out,
                hx=_rows(rec["hx"], rows), grad_state=_rows(rec["grad_state"], rows), lengths=None, rows=rows)


def _rows(state, rows):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(None if s is None else np.ascontiguousarray(s[:, rows]) for s in state)
    return np.ascontiguousarray(state[:, rows])


def _direction_grads(layer, rec, entry):
    """dL/dh_t (T + 1, B, H) and dL/dc_t of one top-layer direction, in its own time order."""
    D, H, L = layer.num_directions, layer.hidden_size, layer.num_layers
    d = 0 if entry["direction"] == "forward" else 1
    g = rec["grad_out"]
    if g is not None:
        g = np.ascontiguousarray(g[:, :, d * H:(d + 1) * H])
        g = np.ascontiguousarray(g[::-1]) if d else g
    idx = (L - 1) * D + d
    gs = rec["grad_state"]
    if gs is not None:
        parts = gs if isinstance(gs, tuple) else (gs,)
        gs = tuple(None if p is None else np.ascontiguousarray(p[idx:idx + 1]) for p in parts)
        gs = gs[0] if len(gs) == 1 else gs
    if g is None and gs is None:
        return None
    return hidden_state_gradients(entry["copy"], entry["x"], entry["hx"], g, gs)


def worst_verdict(verdicts):
    """The most serious of several ``flow_verdict`` results: exploding, then the earliest vanishing."""
    return min(verdicts, key=lambda v: (_ORDER[v["verdict"]], v["k"] if v["k"] is not None else 0))


def diagnose_model(model, batches, steps=100, sequences=4, tol=0.01, state=None):
    """Everything ``rnncore diagnose`` reports, for a model and an iterator of its batches (``state``:
    the model state the first batch starts from, None for zeros).

    Returns {"layers": {name: {...}}, "verdict": the worst verdict}; per recurrent layer name: cell,
    hidden_size, steps (T used), spectra (``weight_spectra``), saturation (``gate_saturation``),
    directions (a list: layer, direction, jacobian norms (T + 1, n) of the first ``sequences``
    sequences, verdict), and grad_norms ({"h": (T + 1,), "c": ...} of the top layer per direction).
    """
    records = _gather(model, iter(batches), steps, state)
    layers = dict(recurrent_modules(model))
    report, verdicts = {}, []
    for name, rec in records.items():
        layer = layers[name]
        T = min(int(steps), rec["x"].shape[0])
        entries = direction_inputs(layer, rec["x"], rec["hx"])
        dirs = []
        for entry in entries:
            n = min(int(sequences), rec["x"].shape[1])
            jac = state_jacobian_norms(entry["copy"], entry["x"][:T, :n], _rows(entry["hx"], slice(0, n)))
            verdict = flow_verdict(jac["spectral"])
            verdicts.append(dict(verdict, where=f"{name} layer {entry['layer']} {entry['direction']}"))
            item = {"layer": entry["layer"], "direction": entry["direction"], "jacobian": jac,
                    "verdict": verdict}
            if entry["layer"] == layer.num_layers - 1:
                grads = _direction_grads(layer, rec, entry)
                if grads is not None:
                    item["grad_norms"] = {s: gradient_norms(g) for s, g in zip(layer.state_names, grads)}
            dirs.append(item)
        report[name] = {"cell": type(layer).__name__, "hidden_size": layer.hidden_size,
                        "num_layers": layer.num_layers, "bidirectional": layer.bidirectional, "steps": T,
                        "length": int(rec["x"].shape[0]), "batch": int(rec["x"].shape[1]),
                        "spectra": weight_spectra(layer),
                        "saturation": gate_saturation(layer, rec["x"], rec["hx"], tol=tol, entries=entries),
                        "directions": dirs}
    if not report:
        raise ValueError("the model called no recurrent layer exactly once in a training step")
    return {"layers": report, "verdict": worst_verdict(verdicts)}


def training_record(model, batch, state=None, tol=0.01):
    """The cheap diagnostics of one training batch, as a JSON-ready dict: per recurrent layer, the
    W_hh spectra (sigma_max, sigma_min, spectral radius per block), gate saturation (near 0 / near 1
    fractions) and, for the top layer, ||dL/dh_t|| at every step; batches of separate sequences
    use their rows of the longest length. No Jacobians (see
    ``diagnose_model``). The model's gradients, mode and random generators are left as they were."""
    if batch.get("reset_state", False):
        state = None
    records, _ = capture_recurrent(model, batch, state)
    layers = dict(recurrent_modules(model))
    out = {}
    for name, rec in records.items():
        layer = layers[name]
        rec = _full_length_rows(rec)
        entries = direction_inputs(layer, rec["x"], rec["hx"], check=False)
        grads = {}
        for entry in entries:
            if entry["layer"] == layer.num_layers - 1:
                g = _direction_grads(layer, rec, entry)
                if g is not None:
                    grads[entry["direction"]] = gradient_norms(g[0]).tolist()
        out[name] = {
            "spectra": [{k: s[k] for k in ("layer", "direction", "block", "sigma_max", "sigma_min",
                                           "spectral_radius")} for s in weight_spectra(layer)],
            "saturation": [{k: s[k] for k in ("layer", "direction", "gate", "near_0", "near_1")}
                           for s in gate_saturation(layer, rec["x"], rec["hx"], tol=tol, entries=entries)],
            "grad_norms": grads,
        }
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k not in ("copy",)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path, value):
    Path(path).write_text(json.dumps(_jsonable(value), indent=1) + "\n", encoding="utf-8")
