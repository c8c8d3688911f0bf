"""Local derivatives: the activations and the LSTM and GRU gate Jacobians, derived and shown.

Each derivative is derived by SymPy from the definition (e.g. sigma(x) = 1 / (1 + e^-x)) and
proven equal to the form the kernels use, written in terms of the forward's outputs (sigma' =
s (1 - s) with s = sigma(x)): the residual simplifies to 0. Then the kernels are measured:
``activation_grad_row`` (the Elman backward's helper) against SymPy's derivative at many points,
and the one-step Jacobians of the LSTM and GRU layers (T = 1, B = 1, H = 2; one backward per
output unit, read from the gradients of b_ih, b_hh and the initial states) against SymPy's
Jacobian of the same step.
"""

import numpy as np
import sympy as sp

from derivations import symbolic as S
from derivations.cells import NetSpec, cell_step
from derivations.checks import DerivationResult, array_check, identity_check
from rnncore.kernels import activations as K

FAMILY = "local"
TOLERANCE = 1e-12


def _activation_checks(rng, n_points):
    x = sp.Symbol("x", real=True)
    s = S.sigmoid(x)
    defs = {  # f, the kernels' form of f', that form in LaTeX and in words, f's definition in LaTeX
        "sigmoid": (s, s * (1 - s), r"\sigma(x)\,(1 - \sigma(x))", "s (1 - s), s = sigmoid(x)",
                    r"\sigma(x) = \frac{1}{1 + e^{-x}}"),
        "tanh": (sp.tanh(x), 1 - sp.tanh(x) ** 2, r"1 - \tanh^2 x", "1 - y^2, y = tanh(x)", r"\tanh x"),
        "relu": (S.relu(x), sp.Heaviside(x), r"\theta(x)\ \ (x \neq 0)", "the step function (x != 0)",
                 r"\mathrm{relu}(x) = \max(x, 0)"),
        "identity": (x, sp.S.One, "1", "1", r"\mathrm{id}(x) = x"),
    }
    checks, formulas = [], []
    xs = np.concatenate([rng.uniform(-6, 6, n_points), [-1e-3, 1e-3, 0.5, -0.5]])
    xs = xs[xs != 0]  # relu' is undefined at 0
    for name, (f, form, form_tex, form_text, def_tex) in defs.items():
        derived = sp.diff(f, x)
        tex = (rf"{def_tex}:\quad \frac{{d}}{{dx}} = {sp.latex(derived)} = {form_tex}"
               if derived != form else rf"{def_tex}:\quad \frac{{d}}{{dx}} = {form_tex}")
        formulas.append((f"{name}'", tex))
        checks.append(identity_check(FAMILY, f"{FAMILY}/{name}/identity",
                                     f"SymPy's d/dx of {name} equals the kernels' form {form_text}",
                                     derived - form, latex=tex))
        # the kernel: activation_grad_row(out, grad, y, act) = grad * act'(x), written with y = act(x)
        code = K.NONLINEARITIES[name]
        y = np.empty_like(xs)
        K.activate_row(y, xs.copy(), code)
        grad = rng.standard_normal(xs.shape)
        got = np.empty_like(xs)
        K.activation_grad_row(got, grad, y, code)
        ref = grad * np.broadcast_to(S.lambdify([x], derived)(xs), xs.shape)
        checks.append(array_check(FAMILY, f"{FAMILY}/{name}/kernel", f"grad * {name}'(x) at {xs.size} points "
                                  "in [-6, 6] (random grad)", "SymPy derivative, lambdified",
                                  "rnncore.kernels.activations.activation_grad_row", ref, got, TOLERANCE))
    return checks, formulas


def _lstm_identity():
    """d(h', c') / d(a_i, a_f, a_g, a_o, c) for one unit, proven equal to the gate form."""
    ai, af, ag, ao, c = sp.symbols("a_i a_f a_g a_o c_{t-1}", real=True)
    i, f, g, o = S.sigmoid(ai), S.sigmoid(af), sp.tanh(ag), S.sigmoid(ao)
    c_new = f * c + i * g
    h_new = o * sp.tanh(c_new)
    J = sp.Matrix([h_new, c_new]).jacobian([ai, af, ag, ao, c])
    tc = sp.tanh(c_new)
    dc = sp.Matrix([[g * i * (1 - i), c * f * (1 - f), i * (1 - g ** 2), 0, f]])
    gate_form = sp.Matrix.vstack(o * (1 - tc ** 2) * dc + sp.Matrix([[0, 0, 0, tc * o * (1 - o), 0]]), dc)
    tex = (r"\frac{\partial c_t}{\partial (a_i, a_f, a_g, a_o, c_{t-1})} = "
           r"\left(g\,i(1-i),\ c_{t-1} f(1-f),\ i(1-g^2),\ 0,\ f\right),\quad "
           r"\frac{\partial h_t}{\partial a_o} = \tanh(c_t)\,o(1-o),\quad "
           r"\frac{\partial h_t}{\partial a_k} = o\,(1-\tanh^2 c_t)\,\frac{\partial c_t}{\partial a_k}")
    return identity_check(FAMILY, f"{FAMILY}/lstm/gate_jacobian_identity",
                          "SymPy's Jacobian of (h_t, c_t) w.r.t. the gate pre-activations and c_{t-1} equals "
                          "the gate form (i, f, g, o the activated gates)",
                          (J - gate_form).applyfunc(sp.simplify).norm(), latex=tex), tex


def _gru_identity(reset_after):
    """dh'/d(a_r, a_z, u_n, v_n or r*h path, h) for one unit, proven equal to the gate form."""
    ar, az, un, vn, h, w = sp.symbols("a_r a_z u_n v_n h_{t-1} w_{hn}", real=True)
    r, z = S.sigmoid(ar), S.sigmoid(az)
    if reset_after:  # n = tanh(u_n + r * v_n), v_n = W_hn h + b_hn
        n = sp.tanh(un + r * vn)
        wrt = [ar, az, un, vn, h]
        dn = 1 - n ** 2
        form = sp.Matrix([[(1 - z) * dn * vn * r * (1 - r), (h - n) * z * (1 - z), (1 - z) * dn,
                           (1 - z) * dn * r, z]])
        tex = (r"\frac{\partial h_t}{\partial (a_r, a_z, u_n, v_n, h_{t-1})} = "
               r"\left((1-z)(1-n^2)\,v_n\,r(1-r),\ "
               r"(h_{t-1}-n)\,z(1-z),\ (1-z)(1-n^2),\ (1-z)(1-n^2)\,r,\ z\right)")
    else:  # n = tanh(u_n + w_hn * (r * h)), one unit
        n = sp.tanh(un + w * (r * h))
        wrt = [ar, az, un, h]
        dn = 1 - n ** 2
        form = sp.Matrix([[(1 - z) * dn * w * h * r * (1 - r), (h - n) * z * (1 - z), (1 - z) * dn,
                           z + (1 - z) * dn * w * r]])
        tex = (r"\frac{\partial h_t}{\partial (a_r, a_z, u_n, h_{t-1})} = "
               r"\left((1-z)(1-n^2)\,w_{hn} h_{t-1}\,r(1-r),\ (h_{t-1}-n)\,z(1-z),\ (1-z)(1-n^2),\ "
               r"z + (1-z)(1-n^2)\,w_{hn} r\right)")
    h_new = (1 - z) * n + z * h
    J = sp.Matrix([h_new]).jacobian(wrt)
    label = "reset_after" if reset_after else "reset_before"
    return identity_check(FAMILY, f"{FAMILY}/gru_{label}/gate_jacobian_identity",
                          f"SymPy's Jacobian of h_t ({label}) w.r.t. the gate pre-activations and h_(t-1) "
                          "(direct path) equals the gate form", (J - form).applyfunc(sp.simplify).norm(),
                          latex=tex), tex


def _step_jacobian_check(spec, rng):
    """The kernels' one-step Jacobians against SymPy's: outputs (h_1[, c_1]); inputs the input
    projection u = W_ih x + b_ih (gradient of b_ih), the recurrent projection (gradient of b_hh) and
    the initial states."""
    H = spec.H
    G = spec.gate_rows * H
    w_ih = S.symbol_array("w_ih", (G, spec.I))
    w_hh = S.symbol_array("w_hh", (G, H))
    b_ih = S.symbol_array("b_ih", (G,))
    b_hh = S.symbol_array("b_hh", (G,))
    x = S.symbol_array("x", (spec.I,))
    states = [S.symbol_array(f"{n}0", (H,)) for n in spec.states]
    with S.unevaluated():
        new = cell_step(spec, list(x), tuple(list(s) for s in states), w_ih, w_hh, b_ih, b_hh)
    outputs = [e for s in new for e in s]
    wrt = [*b_ih, *b_hh, *(e for s in states for e in s)]
    rows = [S.gradient(out, wrt) for out in outputs]
    arrays = [w_ih, w_hh, b_ih, b_hh, x, *states]
    fn = S.lambdify(S.flat_symbols(arrays), [e for row in rows for e in row])
    values = [0.6 * rng.standard_normal(a.shape) for a in arrays]
    ref = np.array([float(v) for v in fn(*S.flat_values(values))]).reshape(len(outputs), len(wrt))

    layer = spec.layer()
    layer.load_state_dict({"weight_ih_l0": values[0], "weight_hh_l0": values[1], "bias_ih_l0": values[2],
                           "bias_hh_l0": values[3]})
    x_in = values[4].reshape(1, 1, spec.I)
    hx = [v.reshape(1, 1, H) for v in values[5:]]
    got = np.empty_like(ref)
    for k in range(len(outputs)):
        which, unit = divmod(k, H)
        upstream = [np.zeros((1, 1, H)) for _ in spec.states]
        upstream[which][0, 0, unit] = 1.0
        layer.zero_grad()
        layer(x_in, hx[0] if len(hx) == 1 else tuple(hx))
        _, d0 = layer.backward(None, upstream[0] if len(upstream) == 1 else tuple(upstream))
        d0 = (d0,) if len(spec.states) == 1 else d0
        got[k] = np.concatenate([layer.grads["bias_ih_l0"], layer.grads["bias_hh_l0"],
                                 *(d.reshape(-1) for d in d0)])
    outs = " and ".join(f"{n}_1" for n in spec.states)
    ins = "b_ih (the input projection), b_hh (the recurrent projection), " + \
          " and ".join(f"{n}_0" for n in spec.states)
    return array_check(FAMILY, f"{FAMILY}/{spec.label}/step_jacobian",
                       f"Jacobian of {outs} w.r.t. {ins}; one step, H = {H}, random point",
                       "SymPy Jacobian of the cell step, lambdified",
                       f"rnncore.{type(layer).__name__}.backward, one pass per output unit", ref, got,
                       TOLERANCE)


def run(quick=False):
    rng = np.random.default_rng(7)
    checks, formulas = _activation_checks(rng, 200 if quick else 2000)
    lstm_check, lstm_tex = _lstm_identity()
    checks.append(lstm_check)
    formulas.append(("LSTM gate Jacobian", lstm_tex))
    for reset_after in (True, False):
        check, tex = _gru_identity(reset_after)
        checks.append(check)
        formulas.append((f"GRU gate Jacobian ({'reset_after' if reset_after else 'reset_before'})", tex))
    for spec in (NetSpec("lstm", "lstm", T=1, B=1, I=2, H=2),
                 NetSpec("gru_reset_after", "gru", "reset_after", T=1, B=1, I=2, H=2),
                 NetSpec("gru_reset_before", "gru", "reset_before", T=1, B=1, I=2, H=2),
                 NetSpec("rnn_tanh", "rnn", "tanh", T=1, B=1, I=2, H=2)):
        checks.append(_step_jacobian_check(spec, rng))
    description = (
        "Each local derivative is derived by SymPy from the definition and proven equal (residual "
        "simplified to 0) to the form the backward kernels use, written with the forward's outputs. "
        "Then measured: the Elman backward's activation helper against SymPy's derivative at many "
        "points, and the one-step Jacobians of the LSTM, both GRU placements and the Elman cell "
        "(all entries, H = 2) read from the layers' backward with one unit upstream gradient per "
        "output. relu'(0) is undefined; the kernels use 0 there (the derivative from the left)."
    )
    return DerivationResult(FAMILY, "Local derivatives: activations and gate Jacobians", description, checks,
                            formulas)

