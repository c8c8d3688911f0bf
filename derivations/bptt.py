"""The BPTT recurrence a_t = b_t + c_t a_{t-1} and its closed form with products of c_j.

Backpropagation through time computes, going backwards, the gradient of the loss with respect to
each state: dL/ds_t = (direct gradient of step t) + J_{t+1}^T dL/ds_{t+1}, with J_{t+1} = ds_{t+1}/ds_t
the one-step Jacobian. With time reversed that is the linear recurrence a_t = b_t + c_t a_{t-1},
a_0 = 0, whose solution is

    a_t = b_t + sum_{i<t} (c_t c_{t-1} ... c_{i+1}) b_i.

SymPy proves it for a symbolic t (base case and induction step, each rewriting step checked), and
by expansion up to t = 10 with commuting and with non-commuting symbols (the matrix case, where
the order of the product matters). Then the closed form, with the c_j the one-step Jacobians that
SymPy derives for each cell, is compared with the kernels' per-step gradients dL/dh_t read by
``rnncore.diagnostics.hidden_state_gradients``.
"""

import numpy as np
import sympy as sp
from sympy.simplify.simplify import product_simplify, sum_simplify

import rnncore
from derivations import symbolic as S
from derivations.cells import NetSpec, cell_step
from derivations.checks import DerivationResult, array_check, identity_check
from rnncore.diagnostics import gradient_norms, hidden_state_gradients

FAMILY = "bptt"
TOLERANCE = 1e-10
CLOSED_FORM_TEX = (r"a_t = b_t + c_t\,a_{t-1},\ a_0 = 0\ \Rightarrow\ a_t = b_t + \sum_{i=1}^{t-1} "
                   r"\left(\prod_{j=i+1}^{t} c_j\right) b_i")


def _induction():
    """Base case and induction step for a symbolic t; returns one check per step of the proof."""
    b, c = sp.IndexedBase("b"), sp.IndexedBase("c")
    t, i, j = sp.symbols("t i j", integer=True, positive=True)

    def P(lo, hi):
        return sp.Product(c[j], (j, lo, hi))

    def A(n):  # the claimed closed form
        return b[n] + sp.Sum(P(i + 1, n) * b[i], (i, 1, n - 1))

    tail = sp.Sum(P(i + 1, t - 1) * b[i], (i, 1, t - 2))
    moved = sp.Sum(P(t, t) * P(i + 1, t - 1) * b[i], (i, 1, t - 2))
    last = sp.Sum(P(i + 1, t) * b[i], (i, t - 1, t - 1))
    merged = sum_simplify(sp.Sum(product_simplify(P(t, t) * P(i + 1, t - 1)) * b[i], (i, 1, t - 2)) + last)
    steps = [
        ("base case t = 1: the sum is empty, a_1 = b_1 + c_1 a_0 = b_1", A(1).doit() - b[1]),
        ("step: b_t + c_t A(t-1) = b_t + c_t b_(t-1) + c_t sum_(i<t-1) ...",
         sp.expand(b[t] + c[t] * A(t - 1)) - (b[t] + c[t] * b[t - 1] + c[t] * tail)),
        ("step: c_t = prod_(j=t..t) c_j moves into the sum", (c[t] * tail - moved).doit()),
        ("step: prod_(j=t..t) c_j prod_(j=i+1..t-1) c_j = prod_(j=i+1..t) c_j",
         product_simplify(P(t, t) * P(i + 1, t - 1)) - P(i + 1, t)),
        ("step: c_t b_(t-1) is the i = t-1 term of the sum", last.doit() - c[t] * b[t - 1]),
        ("step: the sums over i <= t-2 and i = t-1 merge into i <= t-1, giving A(t)",
         A(t) - (b[t] + merged)),
    ]
    checks = []
    for k, (what, residual) in enumerate(steps):
        checks.append(identity_check(FAMILY, f"{FAMILY}/induction/{k}", what, residual,
                                     latex=CLOSED_FORM_TEX if k == len(steps) - 1 else None))
    return checks, sp.latex(A(t))


def _expansion(n=10):
    """The recursion unrolled against the closed form for t = 1..n, commuting and non-commuting c."""
    checks = []
    for commutative in (True, False):
        b = sp.symbols(f"b1:{n + 1}", commutative=commutative)
        c = sp.symbols(f"c1:{n + 1}", commutative=commutative)
        a = sp.S.Zero
        bad = []
        for t in range(1, n + 1):
            a = sp.expand(b[t - 1] + c[t - 1] * a)
            closed = b[t - 1]
            for i in range(1, t):
                prod = sp.S.One
                for jj in range(t, i, -1):  # c_t c_{t-1} ... c_{i+1}, in this order
                    prod = prod * c[jj - 1]
                closed = closed + prod * b[i - 1]
            if sp.expand(a - closed) != 0:
                bad.append(t)
        kind = "commuting symbols" if commutative else "non-commuting symbols (matrices: product order kept)"
        tag = "scalar" if commutative else "matrix"
        checks.append(identity_check(FAMILY, f"{FAMILY}/expansion_t1_{n}_{tag}",
                                     f"recursion unrolled for t = 1..{n} equals the closed form, {kind} "
                                     f"(mismatches at t = {bad or 'none'})", sp.Integer(len(bad))))
    return checks


def _jacobian_function(spec):
    """SymPy's one-step Jacobian ds_t/ds_{t-1} of a cell (s = h, or (h, c)), lambdified; arguments
    w_ih, w_hh, b_ih, b_hh, x_t, s_{t-1} flattened."""
    H, G = spec.H, spec.gate_rows * spec.H
    arrays = [S.symbol_array("w_ih", (G, spec.I)), S.symbol_array("w_hh", (G, H)),
              S.symbol_array("b_ih", (G,)), S.symbol_array("b_hh", (G,)), S.symbol_array("x", (spec.I,))]
    states = [S.symbol_array(f"{n}_prev", (H,)) for n in spec.states]
    with S.unevaluated():
        new = cell_step(spec, list(arrays[4]), tuple(list(s) for s in states), *arrays[:4])
    prev = [e for s in states for e in s]
    rows = [S.gradient(e, prev) for s in new for e in s]
    fn = S.lambdify(S.flat_symbols(arrays + states), [e for row in rows for e in row])
    n = len(prev)
    return lambda *values: np.array([float(v) for v in fn(*S.flat_values(values))]).reshape(n, n)


def _prefix_states(layer, x, hx):
    """s_t for t = 0..T from forward runs of the prefixes, each (n_states, B, H)."""
    T = x.shape[0]
    states = [np.stack([s[0] for s in (hx if isinstance(hx, tuple) else (hx,))])]
    for t in range(1, T + 1):
        _, fin = layer(x[:t], hx)
        states.append(np.stack([f[0] for f in (fin if isinstance(fin, tuple) else (fin,))]))
    return states


def closed_form_check(spec, seed=0):
    """The kernels' dL/ds_t against b_t + sum_(u>t) J_(t+1)^T ... J_u^T b_u with SymPy's Jacobians."""
    rng = np.random.default_rng(seed)
    T, B, n_in, H = spec.T, spec.B, spec.I, spec.H
    layer = spec.layer()
    weights = layer.state_dict()
    w = [weights["weight_ih_l0"], weights["weight_hh_l0"], weights["bias_ih_l0"], weights["bias_hh_l0"]]
    x = rng.standard_normal((T, B, n_in))
    n_states = len(spec.states)
    hx = tuple(0.5 * rng.standard_normal((1, B, H)) for _ in spec.states)
    hx_arg = hx[0] if n_states == 1 else hx
    grad_out = rng.standard_normal((T, B, H))
    grad_final = tuple(rng.standard_normal((1, B, H)) for _ in spec.states)
    measured = hidden_state_gradients(layer, x, hx_arg, grad_out,
                                      grad_final[0] if n_states == 1 else grad_final)
    measured = np.concatenate(measured, axis=-1)  # (T + 1, B, n_states * H)

    jac = _jacobian_function(spec)
    states = _prefix_states(layer, x, hx_arg)
    n = n_states * H
    reference = np.zeros_like(measured)
    for b in range(B):
        # direct gradients b_t (t = 0..T): the output gradient of step t, and the final-state gradient at T
        direct = np.zeros((T + 1, n))
        direct[1:, :H] = grad_out[:, b]
        direct[T] += np.concatenate([g[0, b] for g in grad_final])
        J = [None]  # J[t] = ds_t/ds_(t-1), at the forward's x_t and s_(t-1)
        for t in range(1, T + 1):
            J.append(jac(*w, x[t - 1, b], *(states[t - 1][k, b] for k in range(n_states))))
        for t in range(T + 1):
            acc, prod = direct[t].copy(), np.eye(n)
            for u in range(t + 1, T + 1):
                prod = prod @ J[u].T  # J_{t+1}^T J_{t+2}^T ... J_u^T
                acc += prod @ direct[u]
            reference[t, b] = acc
    name = {"rnn": f"Elman {spec.option}", "lstm": "LSTM (state h, c)",
            "gru": f"GRU {spec.option}"}[spec.cell]
    return array_check(FAMILY, f"{FAMILY}/closed_form/{spec.label}",
                       f"dL/ds_t for t = 0..{T}, {name}, B = {B}, I = {n_in}, H = {H}, random output "
                       "gradient at every step",
                       "closed form b_t + sum_(u>t) J_(t+1)^T ... J_u^T b_u, J = SymPy's one-step Jacobians",
                       "rnncore.diagnostics.hidden_state_gradients (the layers' backward)",
                       reference, measured, TOLERANCE, latex=CLOSED_FORM_TEX)


def gradient_norm_curves(steps, hidden=32, seed=0):
    """||dL/dh_t|| for Elman (tanh), LSTM and GRU on the same sequence: the first characters of the
    Python documentation, one-hot, L = <h_T, G> (the gradient enters at the last step only)."""
    from rnncore.data import python_docs_text

    text = python_docs_text(4000)[1000:1000 + steps]
    vocab = sorted(set(text))
    x = np.zeros((steps, 1, len(vocab)))
    x[np.arange(steps), 0, [vocab.index(ch) for ch in text]] = 1.0
    G = np.random.default_rng(seed).standard_normal((1, 1, hidden))
    curves = {}
    for label, layer in (("Elman tanh", rnncore.RNN(len(vocab), hidden, dtype=np.float64, seed=seed)),
                         ("LSTM", rnncore.LSTM(len(vocab), hidden, dtype=np.float64, seed=seed)),
                         ("GRU", rnncore.GRU(len(vocab), hidden, dtype=np.float64, seed=seed))):
        grads = hidden_state_gradients(layer, x, None, None, (G, None) if label == "LSTM" else G)
        curves[label] = gradient_norms(grads[0])
        if label == "LSTM":
            curves["LSTM (cell state c)"] = gradient_norms(grads[1])
    return {"text": text, "hidden": hidden, "curves": curves}


def run(quick=False):
    checks, sym_tex = _induction()
    checks += _expansion(6 if quick else 10)
    specs = [NetSpec("rnn_tanh", "rnn", "tanh", T=10, B=2, I=2, H=3),
             NetSpec("lstm", "lstm", T=10, B=2, I=2, H=3),
             NetSpec("gru_reset_after", "gru", "reset_after", T=10, B=2, I=2, H=3),
             NetSpec("gru_reset_before", "gru", "reset_before", T=10, B=2, I=2, H=3)]
    if quick:
        specs = [NetSpec(s.label, s.cell, s.option, T=5, B=2, I=2, H=2) for s in specs]
    checks += [closed_form_check(spec) for spec in specs]
    data = gradient_norm_curves(30 if quick else 80)
    description = (
        "BPTT's backward pass is the linear recurrence dL/ds_t = b_t + J_(t+1)^T dL/ds_(t+1) (b_t the "
        "direct gradient of step t, J the one-step Jacobian of the state s = h, or (h, c) for an LSTM); "
        "with time reversed it is a_t = b_t + c_t a_(t-1), a_0 = 0. SymPy proves the closed form for a "
        "symbolic t by induction (every rewriting step of the induction is a separate check whose residual "
        "simplifies to 0: distributing c_t, moving it into the sum, merging the products, splitting off "
        "the last term, merging the sums) and by expansion, also with non-commuting symbols, which is the "
        "matrix case. The closed form evaluated with SymPy's one-step Jacobians of each cell is then "
        "compared with the per-step gradients the layers' backward produces (read with "
        "`rnncore.diagnostics.hidden_state_gradients`, which chains the layer's backward of one step at a "
        "time from the last step to the first; see its docstring). The figure shows ||dL/dh_t|| for "
        f"Elman, LSTM and GRU layers (H = {data['hidden']}, torch's default initialisation) on the same "
        f"{len(data['text'])} characters of the Python documentation, with the loss on the last state only."
    )
    return DerivationResult(FAMILY, "BPTT recurrence and its closed form", description, checks,
                            [("Closed form", CLOSED_FORM_TEX),
                             ("SymPy's closed form A(t)", "A(t) = " + sym_tex)],
                            data=data)


def plot(result, out_dir):
    from derivations.plots import gradient_norms_figure

    return [gradient_norms_figure(result.data, out_dir)]

