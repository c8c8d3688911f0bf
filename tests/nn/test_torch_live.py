"""rnncore.RNN / LSTM / GRU against torch.nn run live (skipped without torch).

Thirty configurations drawn from fixed seeds over cell, nonlinearity, layers 1-3, directions,
batch_first, packed lengths, given or absent initial states, bias, unbatched input and dtype.
torch's weights are copied in with load_state_dict; forward outputs, final states and every
gradient (x, h0, c0, each parameter) are compared by name with random upstream gradients.
Error measure per array: max|a - b| / max|b| (float64 within 1e-10, float32 within 1e-4).
Also: the state_dict names and shapes of every layer kind match torch.nn's exactly; and the LSTM
configurations again with a projection (proj_size, torch's weight_hr_l{k}), compared the same way.
"""

import numpy as np
import pytest

import rnncore

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

SEEDS = list(range(30))
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
KINDS = [("RNN", "tanh"), ("RNN", "relu"), ("LSTM", None), ("GRU", None)]
CELLS = {"RNN": rnncore.RNN, "LSTM": rnncore.LSTM, "GRU": rnncore.GRU}


def draw_config(seed):
    """One configuration. Cell, dtype and input mode (full, packed, unbatched) cycle with the seed so
    every combination appears; sizes and flags are random."""
    rng = np.random.default_rng([2024, seed])
    cell, act = KINDS[seed % 4]
    dtype = ("float64", "float32")[(seed // 4) % 2]
    T, B = int(rng.integers(1, 7)), int(rng.integers(1, 5))
    kwargs = {"input_size": int(rng.integers(1, 6)), "hidden_size": int(rng.integers(1, 6)),
              "num_layers": int(rng.integers(1, 4)), "bias": bool(rng.random() < 0.8),
              "batch_first": bool(rng.random() < 0.5), "bidirectional": bool(rng.random() < 0.5)}
    if act is not None:
        kwargs["nonlinearity"] = act
    mode = ("full", "packed", "unbatched", "packed")[(seed // 8) % 4]
    lengths = None
    if mode == "packed":
        lengths = [int(v) for v in rng.integers(1, T + 1, size=B)]
    return {"seed": seed, "cell": cell, "kwargs": kwargs, "dtype": dtype, "T": T, "B": B,
            "unbatched": bool(mode == "unbatched"), "lengths": lengths, "has_h0": bool(rng.random() < 0.6)}


def config_id(cfg):
    k = cfg["kwargs"]
    parts = [str(cfg["seed"]), cfg["cell"] + (f"-{k['nonlinearity']}" if "nonlinearity" in k else ""),
             f"L{k['num_layers']}", f"T{cfg['T']}" + ("" if cfg["unbatched"] else f"B{cfg['B']}")
             + f"I{k['input_size']}H{k['hidden_size']}" + (f"P{k['proj_size']}" if "proj_size" in k else ""),
             cfg["dtype"]]
    parts += [flag for flag, on in (("bidir", k["bidirectional"]), ("bf", k["batch_first"]),
                                    ("nobias", not k["bias"]), ("packed", cfg["lengths"]),
                                    ("unbatched", cfg["unbatched"]), ("h0", cfg["has_h0"])) if on]
    return "-".join(parts)


CONFIGS = [draw_config(s) for s in SEEDS]


def with_projection(cfg):
    """An LSTM configuration with a projection: hidden size at least 2, proj_size in 1..H-1."""
    cfg = {**cfg, "kwargs": dict(cfg["kwargs"])}
    rng = np.random.default_rng([2025, cfg["seed"]])
    H = max(cfg["kwargs"]["hidden_size"], 2)
    cfg["kwargs"].update(hidden_size=H, proj_size=int(rng.integers(1, H)))
    return cfg


PROJ_CONFIGS = [with_projection(c) for c in CONFIGS if c["cell"] == "LSTM"]


def rel_err(a, b):
    """max|a - b| / max|b|, with max|b| floored so an all-zero reference compares absolutely."""
    scale = max(float(np.max(np.abs(b), initial=0.0)), np.finfo(b.dtype).tiny)
    return float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0)) / scale


def check_all(got, want, tol):
    assert set(got) == set(want), f"rnncore gave {sorted(got)}, torch {sorted(want)}"
    failures = []
    for name in sorted(want):
        a, b = got[name], want[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            failures.append(f"{name}: rnncore {a.dtype}{a.shape}, torch {b.dtype}{b.shape}")
            continue
        err = rel_err(a, b)
        if not err <= tol:
            failures.append(f"{name}: relative error {err:.3g} > {tol:g}")
    assert not failures, "\n".join(failures)


def torch_reference(cfg, module, arrays):
    """torch's outputs and gradients of sum(out * g_out) + sum(h_n * g_h) [+ sum(c_n * g_c)]."""
    lstm = cfg["cell"] == "LSTM"
    leaves = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in arrays.items()
              if k in ("x", "h0", "c0")}
    hx = None
    if cfg["has_h0"]:
        hx = (leaves["h0"], leaves["c0"]) if lstm else leaves["h0"]
    bf = cfg["kwargs"]["batch_first"]
    if cfg["lengths"] is None:
        out, state = module(leaves["x"], hx)
    else:
        packed = pack_padded_sequence(leaves["x"], torch.tensor(cfg["lengths"]), batch_first=bf,
                                      enforce_sorted=False)
        packed_out, state = module(packed, hx)
        out, _ = pad_packed_sequence(packed_out, batch_first=bf, total_length=cfg["T"])
    h_n, c_n = state if lstm else (state, None)
    loss = (out * torch.from_numpy(arrays["up.out"])).sum() + (h_n * torch.from_numpy(arrays["up.h_n"])).sum()
    if lstm:
        loss = loss + (c_n * torch.from_numpy(arrays["up.c_n"])).sum()
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(loss, list(leaves.values()) + list(params.values()))
    result = {"out": out, "h_n": h_n} | ({"c_n": c_n} if lstm else {})
    result |= {f"grad.{n}": g for n, g in zip(list(leaves) + list(params), grads)}
    return {k: v.detach().numpy() for k, v in result.items()}


def rnncore_run(cfg, layer, arrays):
    lstm = cfg["cell"] == "LSTM"
    hx = None
    if cfg["has_h0"]:
        hx = (arrays["h0"], arrays["c0"]) if lstm else arrays["h0"]
    with rnncore.no_grad():
        out_infer, state_infer = layer(arrays["x"], hx, lengths=cfg["lengths"])
    out, state = layer(arrays["x"], hx, lengths=cfg["lengths"])
    up_state = (arrays["up.h_n"], arrays["up.c_n"]) if lstm else arrays["up.h_n"]
    dx, dstate = layer.backward(arrays["up.out"], up_state)
    if not lstm:
        state, state_infer, dstate = (state,), (state_infer,), (dstate,)
    names = ("h", "c")[: len(state)]
    got = {"out": out, "grad.x": dx} | {f"{n}_n": s for n, s in zip(names, state)}
    if cfg["has_h0"]:
        got |= {f"grad.{n}0": d for n, d in zip(names, dstate)}
    got |= {f"grad.{k}": v for k, v in layer.grads.items()}
    infer = {"out": out_infer} | {f"{n}_n": s for n, s in zip(names, state_infer)}
    return got, infer


def test_configs_cover_the_space():
    for cell, act in KINDS:
        for dtype in TOLERANCE:
            mine = [c for c in CONFIGS if c["cell"] == cell and c["kwargs"].get("nonlinearity") == act
                    and c["dtype"] == dtype]
            assert mine, (cell, act, dtype)
    for cell in CELLS:
        mine = [c for c in CONFIGS if c["cell"] == cell]
        assert any(c["lengths"] and c["kwargs"]["bidirectional"] for c in mine), f"{cell}: packed bidir"
        assert any(c["lengths"] and c["has_h0"] for c in mine), f"{cell}: packed with h0"
    assert any(c["lengths"] and c["kwargs"]["bidirectional"] and c["kwargs"]["num_layers"] > 1
               for c in CONFIGS)
    assert any(c["lengths"] and len(set(c["lengths"])) > 1 and 1 in c["lengths"] for c in CONFIGS)
    for key in ("bidirectional", "batch_first"):
        assert {c["kwargs"][key] for c in CONFIGS} == {True, False}, key
    assert {c["kwargs"]["bias"] for c in CONFIGS} == {True, False}
    assert {c["kwargs"]["num_layers"] for c in CONFIGS} == {1, 2, 3}
    assert {c["has_h0"] for c in CONFIGS} == {True, False}
    assert any(c["unbatched"] for c in CONFIGS)
    assert {c["dtype"] for c in PROJ_CONFIGS} == set(TOLERANCE)
    assert any(c["lengths"] and c["kwargs"]["bidirectional"] and c["kwargs"]["num_layers"] > 1
               for c in PROJ_CONFIGS)
    assert any(c["unbatched"] for c in PROJ_CONFIGS) and any(c["has_h0"] for c in PROJ_CONFIGS)
    assert all(1 <= c["kwargs"]["proj_size"] < c["kwargs"]["hidden_size"] for c in PROJ_CONFIGS)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning")
@pytest.mark.parametrize("cfg", CONFIGS + PROJ_CONFIGS, ids=[config_id(c) for c in CONFIGS + PROJ_CONFIGS])
def test_matches_torch(cfg):
    kw, dtype = cfg["kwargs"], np.dtype(cfg["dtype"])
    torch.manual_seed(cfg["seed"])
    module = getattr(torch.nn, cfg["cell"])(**kw, dtype=getattr(torch, cfg["dtype"]))
    layer = CELLS[cfg["cell"]](**kw, dtype=dtype)
    layer.load_state_dict(module.state_dict())

    rng = np.random.default_rng([7, cfg["seed"]])
    T, B, I, H = cfg["T"], cfg["B"], kw["input_size"], kw["hidden_size"]
    D = 2 if kw["bidirectional"] else 1
    P = kw.get("proj_size") or H  # the width of h and of each direction's output
    batch = () if cfg["unbatched"] else (B,)
    time_batch = (B, T) if kw["batch_first"] and not cfg["unbatched"] else (T, *batch)
    arrays = {"x": rng.standard_normal((*time_batch, I)), "up.out": rng.standard_normal((*time_batch, D * P))}
    states = ("h", "c") if cfg["cell"] == "LSTM" else ("h",)
    for s in states:
        width = H if s == "c" else P
        arrays[f"up.{s}_n"] = rng.standard_normal((D * kw["num_layers"], *batch, width))
        if cfg["has_h0"]:
            arrays[f"{s}0"] = 0.8 * rng.standard_normal((D * kw["num_layers"], *batch, width))
    arrays = {k: v.astype(dtype) for k, v in arrays.items()}

    want = torch_reference(cfg, module, arrays)
    got, infer = rnncore_run(cfg, layer, arrays)
    tol = TOLERANCE[cfg["dtype"]]
    check_all(got, want, tol)
    check_all(infer, {k: want[k] for k in infer}, tol)


def test_rnn_20_10_weight_shapes():
    sd = rnncore.RNN(20, 10).state_dict()
    assert sd["weight_ih_l0"].shape == (10, 20)
    assert sd["weight_hh_l0"].shape == (10, 10)
    assert sd["bias_ih_l0"].shape == (10,)
    assert sd["bias_hh_l0"].shape == (10,)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_layers": 3}, {"bidirectional": True}, {"num_layers": 2, "bidirectional": True},
     {"bias": False}, {"num_layers": 2, "bidirectional": True, "bias": False}],
    ids=["single", "stacked", "bidir", "stacked-bidir", "nobias", "stacked-bidir-nobias"],
)
def test_state_dict_matches_torch(cell, kwargs):
    check_state_dict(cell, kwargs)


@pytest.mark.parametrize("kwargs", [{"proj_size": 3}, {"num_layers": 2, "bidirectional": True, "proj_size": 1},
                                    {"num_layers": 2, "bias": False, "proj_size": 4}], ids=["P3", "P1", "P4"])
def test_projection_state_dict_matches_torch(kwargs):
    check_state_dict("LSTM", kwargs)


def check_state_dict(cell, kwargs):
    ours = CELLS[cell](7, 5, **kwargs).state_dict()
    theirs = getattr(torch.nn, cell)(7, 5, **kwargs).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, tuple(v.shape)) for k, v in theirs.items()]
    assert list(CELLS[cell](7, 5, **kwargs).grads) == list(theirs)
