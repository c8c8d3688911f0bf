"""Softmax cross-entropy: dL/dz = softmax(z) - y, derived for a symbolic number of classes and
checked against ``rnncore.losses.softmax_cross_entropy``.

SymPy differentiates L = -sum_c y_c log softmax(z)_c with indexed symbols and a symbolic C and
finds exp(z_k) (sum_c y_c) / sum_j exp(z_j) - y_k; with sum_c y_c = 1 (a one-hot target, or a
label-smoothed one) that is softmax(z)_k - y_k. The loss kernel is then compared with SymPy's
derivative of the concrete loss (C = 5) for the sum and mean reductions, ignored positions and
label smoothing.
"""

import numpy as np
import sympy as sp

from derivations import symbolic as S
from derivations.checks import DerivationResult, array_check, identity_check, value_check
from rnncore.losses import softmax, softmax_cross_entropy

FAMILY = "softmax"
TOLERANCE = 1e-12


def _symbolic_C():
    """The derivative for symbolic C, and its residual against softmax(z)_k - y_k."""
    C = sp.Symbol("C", integer=True, positive=True)
    z, y = sp.IndexedBase("z"), sp.IndexedBase("y")
    c, j, k = sp.symbols("c j k", integer=True, positive=True)
    Z = sp.Sum(sp.exp(z[j]), (j, 1, C))
    loss = -sp.Sum(y[c] * (z[c] - sp.log(Z)), (c, 1, C))
    derived = sp.simplify(sp.diff(loss, z[k]).doit())
    # for 1 <= k <= C SymPy gives a Piecewise whose first branch is the derivative
    inside = derived.args[0][0] if isinstance(derived, sp.Piecewise) else derived
    claimed = sp.exp(z[k]) / Z - y[k]
    residual = inside.subs(sp.Sum(y[c], (c, 1, C)), 1) - claimed
    tex = (r"L = -\sum_{c=1}^{C} y_c \log \mathrm{softmax}(z)_c:\quad \frac{\partial L}{\partial z_k} = "
           + sp.latex(inside) + r" = \mathrm{softmax}(z)_k - y_k\quad \left(\sum_c y_c = 1\right)")
    check = identity_check(FAMILY, f"{FAMILY}/symbolic_C", "SymPy's dL/dz_k for a symbolic number of classes "
                           "C, with sum_c y_c = 1, equals softmax(z)_k - y_k", residual, latex=tex)
    return check, tex


def _concrete(C):
    """SymPy's loss and gradient for C classes and a target distribution y, lambdified."""
    z = S.symbol_array("z", (C,))
    y = S.symbol_array("y", (C,))
    zs = list(z)
    denom = sum(sp.exp(e) for e in zs)
    loss = -sum(y[c] * sp.log(sp.exp(zs[c]) / denom) for c in range(C))
    grads = [sp.diff(loss, e) for e in zs]
    return S.lambdify([*z, *y], [loss, *grads])


def _kernel_checks(rng, rows):
    C = 5
    fn = _concrete(C)
    checks = []
    logits = 2.0 * rng.standard_normal((rows, C))
    targets = rng.integers(0, C, rows)
    targets[1] = -100  # ignored
    for reduction in ("sum", "mean"):
        for smoothing in (0.0, 0.1):
            counted = targets != -100
            n = int(counted.sum())
            ref_loss, ref_grad = 0.0, np.zeros_like(logits)
            for r in np.flatnonzero(counted):
                y = np.full(C, smoothing / C)
                y[targets[r]] += 1.0 - smoothing
                out = [float(v) for v in fn(*logits[r], *y)]
                ref_loss += out[0]
                ref_grad[r] = out[1:]
            if reduction == "mean":
                ref_loss, ref_grad = ref_loss / n, ref_grad / n
            loss, grad = softmax_cross_entropy(logits, targets, reduction=reduction,
                                               label_smoothing=smoothing)
            tag = f"{reduction}" + (f"_smoothing{smoothing}" if smoothing else "")
            where = (f"{rows} rows x {C} classes, one row ignored, reduction={reduction!r}, "
                     f"label_smoothing={smoothing}")
            checks.append(value_check(FAMILY, f"{FAMILY}/kernel_{tag}/loss", f"loss, {where}",
                                      "SymPy loss, lambdified", "rnncore.losses.softmax_cross_entropy",
                                      ref_loss, loss, TOLERANCE))
            checks.append(array_check(FAMILY, f"{FAMILY}/kernel_{tag}/grad", f"dL/dlogits, {where}",
                                      "SymPy derivative of the loss, lambdified",
                                      "rnncore.losses.softmax_cross_entropy", ref_grad, grad, TOLERANCE))
    # the simplified form itself, as the kernel's docstring states it
    y = np.zeros_like(logits)
    y[np.arange(rows), np.where(targets < 0, 0, targets)] = 1.0
    keep = (targets != -100)[:, None]
    _, grad = softmax_cross_entropy(logits, targets, reduction="sum")
    checks.append(array_check(FAMILY, f"{FAMILY}/softmax_minus_y",
                              "dL/dz against softmax(z) - y (sum reduction, row 1 ignored)",
                              "softmax(z) - y with rnncore.losses.softmax",
                              "rnncore.losses.softmax_cross_entropy", (softmax(logits) - y) * keep, grad,
                              TOLERANCE))
    return checks


def run(quick=False):
    rng = np.random.default_rng(11)
    check, tex = _symbolic_C()
    checks = [check] + _kernel_checks(rng, 6 if quick else 40)
    description = (
        "SymPy differentiates the cross-entropy of a softmax with indexed symbols and a symbolic number "
        "of classes C; with a target distribution that sums to 1 (one-hot, or label-smoothed) the "
        "derivative reduces to softmax(z) - y. The loss kernel is compared with SymPy's derivative of "
        "the concrete loss (C = 5, logits N(0, 4)) for both reductions, an ignored position and label "
        "smoothing 0.1, and with the closed form softmax(z) - y."
    )
    return DerivationResult(FAMILY, "Softmax cross-entropy: dL/dz = softmax(z) - y", description, checks,
                            [("Softmax cross-entropy", tex)])
