"""The scalar recurrence h_t = w h_{t-1}: dh_T/dw = T w^(T-1) h0, vanishing, steady and exploding.

SymPy differentiates h_T = w^T h0 for a symbolic T. The product rule applied step by step,
d_t = h_{t-1} + w d_{t-1} with d_0 = 0, is unrolled symbolically for T = 1..20 and agrees with
the closed form exactly. Then the kernel: an Elman RNN with one unit, no bias and zero input
(relu, or identity) is exactly this recurrence, and its BPTT gradient of L = h_T with respect
to weight_hh is compared with T w^(T-1) h0 (computed exactly from the float64 w) for every T up to
200 and w in {0.9, 1.0, 1.1}: the gradient vanishes geometrically below 1, grows linearly at 1 and
explodes above.
"""

from fractions import Fraction

import numpy as np
import sympy as sp

import rnncore
from derivations.checks import DerivationResult, elementwise_check, identity_check

FAMILY = "scalar"
TOLERANCE = 1e-10
WEIGHTS = (0.9, 1.0, 1.1)
H0 = 0.5


def _symbolic():
    T = sp.Symbol("T", integer=True, positive=True)
    w, h0 = sp.symbols("w h_0", positive=True)
    derived = sp.diff(w ** T * h0, w)
    closed = T * w ** (T - 1) * h0
    tex = r"h_T = w^T h_0 \ \Rightarrow\ \frac{d h_T}{d w} = " + sp.latex(derived) + " = " + sp.latex(closed)
    check = identity_check(FAMILY, f"{FAMILY}/symbolic_T", "SymPy's d(w^T h0)/dw for a symbolic T equals "
                           "T w^(T-1) h0", derived - closed, latex=tex)
    return check, tex


def _recursion(n=20):
    """The product rule unrolled: d_t = h_{t-1} + w d_{t-1}; exact agreement for T = 1..n."""
    w, h0 = sp.symbols("w h_0")
    h, d = h0, sp.S.Zero
    mismatches = []
    for t in range(1, n + 1):
        h, d = w * h, h + w * d
        if sp.expand(d - t * w ** (t - 1) * h0) != 0 or sp.expand(sp.diff(h, w) - d) != 0:
            mismatches.append(t)
    tex = (r"d_t = \frac{d h_t}{d w} = h_{t-1} + w\, d_{t-1},\ d_0 = 0 \ \Rightarrow\ d_T = \sum_{t=1}^{T} "
           r"w^{T-t} h_{t-1} = T w^{T-1} h_0")
    residual = sp.Integer(len(mismatches))
    check = identity_check(FAMILY, f"{FAMILY}/recursion_T1_{n}", f"the product-rule recursion unrolled for "
                           f"T = 1..{n} equals T w^(T-1) h0 and SymPy's d h_T/dw (mismatches at T = "
                           f"{mismatches or 'none'})", residual, latex=tex)
    return check, tex


def kernel_gradients(nonlinearity, w, steps, h0=H0):
    """dL/dw and dL/dh0 of L = h_T for T = 1..steps from rnncore's RNN (H = 1, no bias, x = 0)."""
    layer = rnncore.RNN(1, 1, nonlinearity=nonlinearity, bias=False, dtype=np.float64)
    layer.load_state_dict({"weight_ih_l0": np.ones((1, 1)), "weight_hh_l0": np.full((1, 1), w)})
    dw, dh0 = np.empty(steps), np.empty(steps)
    for T in range(1, steps + 1):
        layer.zero_grad()
        layer(np.zeros((T, 1, 1)), np.full((1, 1, 1), h0))
        _, d0 = layer.backward(None, np.ones((1, 1, 1)))
        dw[T - 1] = layer.grads["weight_hh_l0"][0, 0]
        dh0[T - 1] = d0[0, 0, 0]
    return dw, dh0


def exact_gradient(w, steps, h0=H0):
    """T w^(T-1) h0 and w^T for T = 1..steps, exactly for the float64 w, rounded once."""
    wf, hf = Fraction(float(w)), Fraction(float(h0))
    dw = np.array([float(T * wf ** (T - 1) * hf) for T in range(1, steps + 1)])
    dh0 = np.array([float(wf ** T) for T in range(1, steps + 1)])
    return dw, dh0


def run(quick=False):
    steps = 200
    sym_check, sym_tex = _symbolic()
    rec_check, rec_tex = _recursion()
    checks = [sym_check, rec_check]
    data = {"T": np.arange(1, steps + 1), "h0": H0, "reference": {}, "measured": {}}
    for w in WEIGHTS:
        ref_dw, ref_dh0 = exact_gradient(w, steps)
        data["reference"][w] = ref_dw
        for act in ("identity", "relu"):
            dw, dh0 = kernel_gradients(act, w, steps)
            data["measured"][(act, w)] = dw
            where = f"Elman {act}, H = 1, no bias, x = 0, h0 = {H0}, w = {w}, T = 1..{steps}"
            checks.append(elementwise_check(
                FAMILY, f"{FAMILY}/{act}_w{w}/dw", f"dh_T/dw_hh, {where} (|value| from {ref_dw.min():.2g} to "
                f"{ref_dw.max():.2g})", "T w^(T-1) h0, exact for the float64 w", "rnncore.RNN.backward",
                ref_dw, dw, TOLERANCE))
            checks.append(elementwise_check(
                FAMILY, f"{FAMILY}/{act}_w{w}/dh0", f"dh_T/dh0, {where}", "w^T, exact for the float64 w",
                "rnncore.RNN.backward", ref_dh0, dh0, TOLERANCE))
    description = (
        f"The recurrence h_t = w h_(t-1) has h_T = w^T h0, so dh_T/dw = T w^(T-1) h0 and dh_T/dh0 = w^T. "
        f"SymPy derives the first for a symbolic T; the product rule unrolled step by step agrees with it "
        f"exactly for T = 1..20. The kernel runs this very network (one unit, no bias, zero input, relu "
        f"or identity, h0 = {H0} > 0 so relu is the identity on it) and its BPTT gradients match the "
        f"closed forms for every T up to {steps}: with w = 0.9 the gradient of weight_hh falls to "
        f"{data['reference'][0.9][-1]:.2g} at T = {steps} (vanishing), with w = 1 it is T h0 (steady, "
        f"linear), with w = 1.1 it reaches {data['reference'][1.1][-1]:.2g} (exploding). The error is "
        "the per-T relative error, since the values span "
        f"{np.log10(data['reference'][1.1][-1] / data['reference'][0.9][-1]):.0f} "
        "orders of magnitude."
    )
    return DerivationResult(FAMILY, "Scalar recurrence: vanishing and exploding gradients", description,
                            checks,
                            [("Closed form (symbolic T)", sym_tex), ("Product rule, step by step", rec_tex)],
                            data=data)


def plot(result, out_dir):
    from derivations.plots import scalar_figure

    return [scalar_figure(result.data, out_dir)]
