"""rnncore.RNN / LSTM / GRU against stored torch.nn results (no torch needed).

The fixtures come from tests/fixtures/make_torch_fixtures.py (see its docstring for the keys).
Each file is one test: build the layer from the stored config, load torch's weights, run forward
and backward with torch's random upstream gradients, and compare every output and every gradient
by name; the outputs of a forward under ``rnncore.no_grad()`` (the inference kernels) as well.
Error measure per array: max|a - b| / max|b| (float64 within 1e-10, float32 within 1e-4).
"""

import json
from pathlib import Path

import numpy as np
import pytest

import rnncore

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "torch"
FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
CELLS = {"RNN": rnncore.RNN, "LSTM": rnncore.LSTM, "GRU": rnncore.GRU}
INPUT_KEYS = {"x", "h0", "c0", "lengths", "__meta__"}
OUTPUT_KEYS = {"out", "h_n", "c_n"}
REGENERATE_HINT = "regenerate with: python tests/fixtures/make_torch_fixtures.py"


def load(path):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(arrays.pop("__meta__").item()), arrays


def rel_err(a, b):
    """max|a - b| / max|b|, with max|b| floored so an all-zero reference compares absolutely."""
    scale = max(float(np.max(np.abs(b), initial=0.0)), np.finfo(b.dtype).tiny)
    return float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0)) / scale


def assert_close(name, got, want, tol):
    assert got.shape == want.shape, f"{name}: shape {got.shape}, torch {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype}, torch {want.dtype}"
    err = rel_err(got, want)
    if not err <= tol:
        worst = np.unravel_index(np.argmax(np.abs(got.astype(np.float64) - want)), want.shape)
        raise AssertionError(f"{name}: relative error {err:.3g} > {tol:g} (worst at {worst}: "
                             f"rnncore {got[worst]!r}, torch {want[worst]!r})")
    return err


def run_rnncore(meta, arrays):
    """rnncore's outputs and gradients under the fixture's key names."""
    cfg = meta["config"]
    dtype = np.dtype(cfg["dtype"])
    layer = CELLS[cfg["cell"]](**cfg["kwargs"], dtype=dtype)
    param_names = list(layer.state_dict())
    layer.load_state_dict({k: arrays[k] for k in param_names})
    lstm = cfg["cell"] == "LSTM"
    hx = None
    if cfg["has_h0"]:
        hx = (arrays["h0"], arrays["c0"]) if lstm else arrays["h0"]
    with rnncore.no_grad():  # the inference kernels, which keep nothing for backward
        out_infer, state_infer = layer(arrays["x"], hx, lengths=arrays.get("lengths"))
    infer = {"out": out_infer}
    infer |= {"h_n": state_infer[0], "c_n": state_infer[1]} if lstm else {"h_n": state_infer}
    out, state = layer(arrays["x"], hx, lengths=arrays.get("lengths"))
    up_state = (arrays["upstream.h_n"], arrays["upstream.c_n"]) if lstm else arrays["upstream.h_n"]
    dx, dstate = layer.backward(arrays["upstream.out"], up_state)
    got = {"out": out, "grad.x": dx}
    if lstm:
        got.update({"h_n": state[0], "c_n": state[1]})
        if cfg["has_h0"]:
            got.update({"grad.h0": dstate[0], "grad.c0": dstate[1]})
    else:
        got["h_n"] = state
        if cfg["has_h0"]:
            got["grad.h0"] = dstate
    got.update({f"grad.{k}": v for k, v in layer.grads.items()})
    return got, infer, param_names


def test_fixtures_present():
    assert len(FIXTURES) >= 40, f"expected the torch fixtures in {FIXTURE_DIR}; {REGENERATE_HINT}"



@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_matches_torch(path):
    meta, arrays = load(path)
    cfg = meta["config"]
    got, infer, param_names = run_rnncore(meta, arrays)
    # Every parameter of the layer is in the file, and the file holds nothing unaccounted for.
    upstream = {k for k in arrays if k.startswith("upstream.")}
    expected_keys = set(got) | set(param_names) | INPUT_KEYS | upstream
    assert set(arrays) <= expected_keys, f"unexpected keys {sorted(set(arrays) - expected_keys)}"
    compared = {k for k in arrays if k in OUTPUT_KEYS or k.startswith("grad.")}
    assert compared == set(got), f"torch has {sorted(compared)}, rnncore gave {sorted(got)}"
    tol = TOLERANCE[cfg["dtype"]]
    failures = []
    checks = [(name, got[name]) for name in sorted(compared)]
    checks += [(f"{name} (no_grad)", value) for name, value in infer.items()]
    for label, value in checks:
        try:
            assert_close(label, value, arrays[label.split(" ")[0]], tol)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{cfg['name']}:\n" + "\n".join(failures)


def one_direction_whole_sequences(path):
    cfg = load(path)[0]["config"]
    return not (cfg["kwargs"]["bidirectional"] or cfg["lengths"])


STEPPED = [p for p in FIXTURES if one_direction_whole_sequences(p)]


@pytest.mark.parametrize("path", STEPPED, ids=[p.stem for p in STEPPED])
def test_stepper_matches_torch(path):
    """A ``Stepper`` run step by step over the fixture's sequence gives torch's out and final states (the
    fixtures that run in one direction over whole sequences: a stepper steps forward)."""
    meta, arrays = load(path)
    cfg = meta["config"]
    layer = CELLS[cfg["cell"]](**cfg["kwargs"], dtype=np.dtype(cfg["dtype"]))
    layer.load_state_dict({k: arrays[k] for k in layer.state_dict()})
    stepper = layer.stepper()
    assert stepper.joint == (not cfg["kwargs"].get("proj_size"))  # a projection's LSTM steps on a copy
    lstm = cfg["cell"] == "LSTM"
    state = None
    if cfg["has_h0"]:
        state = (arrays["h0"], arrays["c0"]) if lstm else arrays["h0"]
    x = arrays["x"]
    time_axis = 1 if cfg["kwargs"]["batch_first"] and not cfg["unbatched"] else 0
    outs = []
    for t in range(x.shape[time_axis]):
        out, state = stepper.step(np.take(x, t, axis=time_axis), state)
        outs.append(out)
    tol = TOLERANCE[cfg["dtype"]]
    assert_close("out (stepper)", np.stack(outs, axis=time_axis), arrays["out"], tol)
    names, finals = (("h_n", "c_n"), state) if lstm else (("h_n",), (state,))
    for name, value in zip(names, finals, strict=True):
        assert_close(f"{name} (stepper)", value, arrays[name], tol)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_header(path):
    meta, arrays = load(path)
    assert meta["torch_version"].split("+")[0] == "2.13.0"
    assert meta["numpy_version"]
    assert meta["regenerate"] == REGENERATE_HINT
    assert path.stem == meta["config"]["name"]
    for k, v in arrays.items():
        if k.startswith("upstream."):
            assert not np.all(v == 1), f"{k} is all ones: it would hide transposes and sign errors"
            assert v.dtype == np.dtype(meta["config"]["dtype"])


def test_fixtures_cover_the_configurations():
    cfgs = [load(p)[0]["config"] for p in FIXTURES]

    def some(pred):
        return any(pred(c, c["kwargs"]) for c in cfgs)

    for cell in CELLS:
        for dtype in TOLERANCE:
            mine = [c for c in cfgs if c["cell"] == cell and c["dtype"] == dtype]
            assert any(not c["kwargs"]["bias"] for c in mine), (cell, dtype, "bias=False")
            assert any(c["unbatched"] for c in mine), (cell, dtype, "unbatched")
            assert any(c["lengths"] for c in mine), (cell, dtype, "packed lengths")
            assert any(c["kwargs"]["bidirectional"] for c in mine), (cell, dtype, "bidirectional")
            assert any(c["kwargs"]["batch_first"] for c in mine), (cell, dtype, "batch_first")
            assert any(c["has_h0"] for c in mine) and any(not c["has_h0"] for c in mine), (cell, dtype, "h0")
            assert {c["kwargs"]["num_layers"] for c in mine} >= {1, 2}, (cell, dtype, "layers")
    assert some(lambda c, k: k.get("nonlinearity") == "relu")
    for dtype in TOLERANCE:  # LSTM with projection: stacked, bidirectional, packed, without state or bias
        proj = [c for c in cfgs if c["kwargs"].get("proj_size") and c["dtype"] == dtype]
        assert any(c["kwargs"]["bidirectional"] and c["kwargs"]["num_layers"] > 1 and c["lengths"]
                   for c in proj)
        assert any(not c["has_h0"] and not c["kwargs"]["bias"] and c["kwargs"]["proj_size"] == 1
                   for c in proj)
    assert some(lambda c, k: k["num_layers"] == 3)
    assert some(lambda c, k: c["lengths"] and 1 in c["lengths"] and len(set(c["lengths"])) > 1)
    assert some(lambda c, k: c["lengths"] and max(c["lengths"]) < c["T"])
    assert some(lambda c, k: c["lengths"] and k["bidirectional"] and k["num_layers"] > 1)
    for size in ("T", "B"):
        assert some(lambda c, k, s=size: c[s] == 1 and not c["unbatched"]), size
    for size in ("input_size", "hidden_size"):
        assert some(lambda c, k, s=size: k[s] == 1), size
