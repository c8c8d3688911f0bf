"""LayerNorm LSTM and GRU: SymPy reference gradients of unrolled networks, and LN's local derivative.

The cells (``rnncore.LSTM(..., layer_norm=True)``, ``rnncore.GRU(..., layer_norm=True)``) are written
out here from their equations alone, with layer normalisation from its definition:

    LN(v; gain, beta) = gain * (v - mean(v)) / sqrt(var(v) + eps) + beta,   var biased (divided by N)
    LSTM: a = LN(W_ih x; ih) + LN(W_hh h; hh) + b_ih + b_hh;  c' = f c + i g;  h' = o tanh(LN(c'; c))
    GRU:  a_x = LN(W_ih x; ih) + b_ih,  a_h = LN(W_hh h; hh) + b_hh;  r, z = sigmoid(a_x + a_h);
          n = tanh(a_x[n] + r a_h[n]);  h' = (1 - z) n + z h

each LN over the whole 4H (3H) vector of a projection, and over the H units of c'. The unrolled loss
(the random projection of ``cells``) is differentiated by ``symbolic.gradient`` with respect to
every weight, bias, gain, input and initial state and compared with the float64 layers. The local
derivative d LN / d v is derived by SymPy, proven equal to the form the kernels use, and the
kernels' LN forward and backward rows are compared with SymPy at random points.
"""

from dataclasses import dataclass

import numpy as np
import sympy as sp

import rnncore
from derivations import symbolic as S
from derivations.cells import CompiledNet, NetSpec, SymbolicNet, _affine, measure, point_checks, random_point
from derivations.checks import DerivationResult, array_check, identity_check
from rnncore.kernels import layernorm as K

FAMILY = "layer_norm"
TOLERANCE = 1e-10
LOCAL_TOLERANCE = 1e-12
PARTS = {"lstm": (("ih", 4), ("hh", 4), ("c", 1)), "gru": (("ih", 3), ("hh", 3))}


@dataclass(frozen=True)
class LNSpec(NetSpec):
    """A tiny layer-normalised network; cell 'lstm' or 'gru' (torch's reset placement)."""

    eps: float = 1e-5

    def layer(self, layer_class=None):
        cls = layer_class or {"lstm": rnncore.LSTM, "gru": rnncore.GRU}[self.cell]
        return cls(self.I, self.H, num_layers=self.num_layers, bias=self.bias,
                   bidirectional=self.bidirectional, dtype=np.float64, seed=0, layer_norm=True,
                   layer_norm_eps=self.eps)

    def describe(self):
        text = super().describe()
        eps = "" if self.eps == 1e-5 else f", eps={self.eps:g}"
        return f"LayerNorm {text}{eps}"


def layer_norm(v, gain, beta, eps):
    """LN of the list of expressions v, written from the definition (one mean and variance over v)."""
    n = len(v)
    mean = sp.Mul(sp.Rational(1, n), sp.Add(*v))
    dev = [sp.Add(e, sp.Mul(-1, mean)) for e in v]
    var = sp.Mul(sp.Rational(1, n), sp.Add(*[sp.Pow(d, 2) for d in dev]))
    inv_std = sp.Pow(sp.Add(var, sp.Float(eps)), sp.Rational(-1, 2))
    return [sp.Add(sp.Mul(g, d, inv_std), b) for d, g, b in zip(dev, gain, beta, strict=True)]


def ln_cell_step(spec, x, state, w_ih, w_hh, b_ih, b_hh, ln):
    """One step of the layer-normalised cell. ln: {'ih_weight': gain array, 'ih_bias': ..., ...}."""
    H = spec.H
    h = state[0]
    u = layer_norm(_affine(w_ih, x, None), ln["ih_weight"], ln["ih_bias"], spec.eps)
    v = layer_norm(_affine(w_hh, h, None), ln["hh_weight"], ln["hh_bias"], spec.eps)
    if b_ih is not None:
        u = [sp.Add(e, b) for e, b in zip(u, b_ih, strict=True)]
        v = [sp.Add(e, b) for e, b in zip(v, b_hh, strict=True)]
    if spec.cell == "lstm":
        a = [sp.Add(p, q) for p, q in zip(u, v, strict=True)]
        i = [S.sigmoid(e) for e in a[:H]]
        f = [S.sigmoid(e) for e in a[H:2 * H]]
        g = [sp.tanh(e) for e in a[2 * H:3 * H]]
        o = [S.sigmoid(e) for e in a[3 * H:]]
        c = [sp.Add(sp.Mul(f_, c_), sp.Mul(i_, g_)) for f_, c_, i_, g_ in zip(f, state[1], i, g, strict=True)]
        y = layer_norm(c, ln["c_weight"], ln["c_bias"], spec.eps)
        return [sp.Mul(o_, sp.tanh(y_)) for o_, y_ in zip(o, y, strict=True)], c
    r = [S.sigmoid(sp.Add(u[j], v[j])) for j in range(H)]
    z = [S.sigmoid(sp.Add(u[H + j], v[H + j])) for j in range(H)]
    n = [sp.tanh(sp.Add(u[2 * H + j], sp.Mul(r[j], v[2 * H + j]))) for j in range(H)]
    return ([sp.Add(sp.Mul(sp.Add(1, sp.Mul(-1, z_)), n_), sp.Mul(z_, h_))
             for z_, n_, h_ in zip(z, n, h, strict=True)],)


class LNSymbolicNet(SymbolicNet):
    """``cells.SymbolicNet`` with the gains and biases of the normalisations as further parameters."""

    def _loss(self):
        spec = self.spec
        self.ln = {}
        for layer in range(spec.num_layers):
            for suffix in ("", "_reverse")[:spec.directions]:
                key = f"l{layer}{suffix}"
                self.ln[key] = {}
                for part, rows in PARTS[spec.cell]:
                    for kind in ("weight", "bias"):
                        name = f"layernorm_{part}_{kind}_{key}"
                        arr = S.symbol_array(name, (rows * spec.H,))
                        self.params[name] = self.ln[key][f"{part}_{kind}"] = arr
        return super()._loss()

    def _step(self, key, t, b, x, state, w):
        return ln_cell_step(self.spec, x, state, *w, self.ln[key])


def ln_random_point(net, rng):
    """``cells.random_point``, with the gains drawn around 1 (N(1, 0.3^2)) and the LN biases N(0, 0.3^2)."""
    values = random_point(net, rng)
    for name in values:
        if name.startswith("layernorm_"):
            loc = 1.0 if "_weight_" in name else 0.0
            values[name] = loc + 0.3 * rng.standard_normal(values[name].shape)
    return values


def specs(quick):
    """The configurations checked (fewer in --quick)."""
    T = 2 if quick else 3
    out = [LNSpec("lstm", "lstm", T=3, B=2, I=2, H=2),
           LNSpec("gru", "gru", "reset_after", T=3, B=2, I=2, H=2),
           LNSpec("lstm_stacked_bidir_lengths", "lstm", T=T, B=2, I=1, H=2, num_layers=2, bidirectional=True,
                  lengths=(T, 1)),
           LNSpec("gru_stacked_bidir_lengths", "gru", "reset_after", T=T, B=2, I=1, H=2, num_layers=2,
                  bidirectional=True, lengths=(1, T))]
    if quick:
        return out + [LNSpec("lstm_H1", "lstm", T=3, B=1, I=2, H=1),
                      LNSpec("gru_nobias_eps1e-2", "gru", "reset_after", T=2, B=2, I=2, H=2, bias=False,
                             eps=1e-2)]
    for cell, option in (("lstm", ""), ("gru", "reset_after")):
        out += [LNSpec(f"{cell}_T4_H1_B1", cell, option, T=4, B=1, I=1, H=1),
                LNSpec(f"{cell}_H3", cell, option, T=2, B=1, I=3, H=3),
                LNSpec(f"{cell}_T4_B2_I3_H3", cell, option, T=4, B=2, I=3, H=3),
                LNSpec(f"{cell}_bidir_lengths", cell, option, T=4, B=2, I=2, H=2, bidirectional=True,
                       lengths=(4, 2)),
                LNSpec(f"{cell}_nobias_eps1e-2", cell, option, T=3, B=2, I=2, H=2, bias=False, eps=1e-2)]
    return out


def check_network(spec, points=2, seed=0):
    """The loss and every gradient of one configuration against the SymPy reference, at random points."""
    compiled = CompiledNet(LNSymbolicNet(spec))
    rng = np.random.default_rng(seed)
    refs, meas = [], []
    for _ in range(points):
        values = ln_random_point(compiled.net, rng)
        refs.append(compiled(values))
        meas.append(measure(spec, values))
    layer_name = {"lstm": "LSTM", "gru": "GRU"}[spec.cell] + "(layer_norm=True)"
    # LN of one unit: xhat = c - mean(c) = 0 exactly, so LN(c) = beta_c and the gain has no effect
    exact_zero = {name: "LN over the one unit of c is its bias" for name in compiled.shapes
                  if spec.H == 1 and name.startswith("layernorm_c_weight")}
    return point_checks(FAMILY, spec.label, f"{spec.describe()}; {points} random points", layer_name, refs,
                        meas, compiled.shapes, exact_zero=exact_zero)


# -- the local derivative of LN ------------------------------------------------------------------------
LN_LATEX = [
    ("LN", r"\mathrm{LN}(v;\gamma,\beta) = \gamma \odot \hat v + \beta,\quad "
           r"\hat v = \frac{v - \mu}{\sqrt{\sigma^2 + \epsilon}},\quad \mu = \frac{1}{N}\sum_k v_k,\quad "
           r"\sigma^2 = \frac{1}{N}\sum_k (v_k - \mu)^2"),
    ("LayerNorm LSTM",
     r"a_t = \mathrm{LN}(W_{ih} x_t; \gamma_{ih}, \beta_{ih}) + \mathrm{LN}(W_{hh} h_{t-1}; \gamma_{hh}, "
     r"\beta_{hh}) + b_{ih} + b_{hh},\quad c_t = f_t \odot c_{t-1} + i_t \odot g_t,\quad "
     r"h_t = o_t \odot \tanh(\mathrm{LN}(c_t; \gamma_c, \beta_c))"),
    ("LayerNorm GRU",
     r"a^x_t = \mathrm{LN}(W_{ih} x_t) + b_{ih},\ a^h_t = \mathrm{LN}(W_{hh} h_{t-1}) + b_{hh},\ "
     r"(r_t, z_t) = \sigma(a^x_{rz} + a^h_{rz}),\ n_t = \tanh(a^x_n + r_t \odot a^h_n),\ "
     r"h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}"),
]
JACOBIAN_LATEX = (
    r"\frac{\partial\, \mathrm{LN}(v)_i}{\partial v_j} = \frac{\gamma_i}{\sqrt{\sigma^2 + \epsilon}}"
    r"\left(\delta_{ij} - \frac{1}{N} - \frac{\hat v_i \hat v_j}{N}\right),\qquad "
    r"\bar v = \frac{1}{\sqrt{\sigma^2+\epsilon}}\left(\bar{\hat v} - \overline{\bar{\hat v}} - "
    r"\hat v\, \overline{\bar{\hat v} \odot \hat v}\right),\ \bar{\hat v} = \gamma \odot \bar y")


def _ln_symbols(n):
    v = sp.Matrix(sp.symbols(f"v0:{n}", real=True))
    gamma = sp.Matrix(sp.symbols(f"gamma0:{n}", real=True))
    beta = sp.Matrix(sp.symbols(f"beta0:{n}", real=True))
    return v, gamma, beta, sp.Symbol("epsilon", positive=True)


def _ln_definition(v, gamma, beta, eps):
    n = v.shape[0]
    mu = sum(v) / n
    var = sum((e - mu) ** 2 for e in v) / n
    s = sp.sqrt(var + eps)
    vhat = (v - sp.ones(n, 1) * mu) / s
    return gamma.multiply_elementwise(vhat) + beta, vhat, s


def jacobian_identity(n):
    """SymPy's Jacobian of LN's definition (n units) against the closed form the kernels use."""
    v, gamma, beta, eps = _ln_symbols(n)
    y, vhat, s = _ln_definition(v, gamma, beta, eps)
    J = y.jacobian(v)
    form = sp.diag(*gamma) * (sp.eye(n) - sp.ones(n, n) / n - vhat * vhat.T / n) / s
    residual = (J - form).applyfunc(lambda e: sp.simplify(sp.together(e)))
    return identity_check(FAMILY, f"{FAMILY}/ln_jacobian_identity_N{n}",
                          f"SymPy's Jacobian of LN's definition over N = {n} units equals gamma / "
                          "sqrt(var + eps) (I - 1 1^T / N - vhat vhat^T / N)", residual.norm(),
                          latex=JACOBIAN_LATEX)


def kernel_checks(rng, n, points):
    """rnncore.kernels.layernorm's rows (normalize_rows, backward_rows) against SymPy's LN and its
    vector-Jacobian product (random v, gain, upstream gradient; eps = 1e-5)."""
    v, gamma, beta, eps = _ln_symbols(n)
    y, vhat, _ = _ln_definition(v, gamma, beta, eps)
    dy = sp.Matrix(sp.symbols(f"dy0:{n}", real=True))
    vjp = (dy.T * y.jacobian(v)).T
    args = [*v, *gamma, *beta, eps, *dy]
    f_vhat, f_vjp = S.lambdify(args, list(vhat)), S.lambdify(args, list(vjp))
    scale, shift = rng.uniform(0.1, 3.0, (points, 1)), rng.standard_normal((points, 1))
    vs = rng.standard_normal((points, n)) * scale + shift
    gain, dys = 1 + 0.3 * rng.standard_normal(n), rng.standard_normal((points, n))
    zeros = np.zeros(n)
    rows = list(zip(vs, dys, strict=True))
    ref_hat = np.array([f_vhat(*row, *gain, *zeros, 1e-5, *g) for row, g in rows], dtype=float)
    ref_vjp = np.array([f_vjp(*row, *gain, *zeros, 1e-5, *g) for row, g in rows], dtype=float)
    xhat, mean, rstd = vs.copy(), np.empty(points), np.empty(points)
    K.normalize_rows(xhat, mean, rstd, np.float64(1e-5))
    dv = np.empty_like(vs)
    K.backward_rows(dv, dys, xhat, rstd, gain)
    where = f"N = {n}, {points} random rows"
    return [array_check(FAMILY, f"{FAMILY}/ln_forward_kernel_N{n}", f"LN's normalised row vhat, {where}",
                        "SymPy's definition, lambdified", "rnncore.kernels.layernorm.normalize_rows", ref_hat,
                        xhat, LOCAL_TOLERANCE),
            array_check(FAMILY, f"{FAMILY}/ln_backward_kernel_N{n}", f"dy^T d LN / d v, {where}",
                        "SymPy's Jacobian of the definition, lambdified",
                        "rnncore.kernels.layernorm.backward_rows", ref_vjp, dv, LOCAL_TOLERANCE)]


def run(quick=False):
    rng = np.random.default_rng(0)
    checks = [jacobian_identity(n) for n in ((2, 3) if quick else (2, 3, 4))]
    for n in (1, 3, 8):
        checks += kernel_checks(rng, n, 20)
    spec_list = specs(quick)
    for spec in spec_list:
        checks += check_network(spec, points=2 if quick else 3)
    description = (
        "The layer-normalised LSTM (Ba, Kiros & Hinton 2016) and GRU (torch's reset placement) of "
        "`rnncore.LSTM(..., layer_norm=True)` and `rnncore.GRU(..., layer_norm=True)`. LN normalises the "
        "whole 4H (LSTM) or 3H (GRU) vector of each projection, W_ih x and W_hh h, with one mean and "
        "variance per row, and the LSTM's new cell state over its H units; the carried cell state is the "
        "un-normalised one. The unrolled loss of tiny networks is written out in SymPy from these "
        "equations and LN's definition, and differentiated with respect to every weight, bias, LN gain "
        "and bias, input and initial state (reverse accumulation of SymPy's local derivatives, as in "
        "`cells`); the float64 layers are compared with it at random points. "
        f"{len(spec_list)} configurations, each named in its checks: both cells at input and hidden size "
        "2, a 2-layer bidirectional stack with unequal lengths, no biases with eps = 0.01, and hidden "
        "size 1, where LN over the one unit of the cell state is exactly its bias (the gain's gradient is"
        " then 0: checked as such)"
        + ("" if quick else "; also H = 3 and T = 4 with batch 2") + ".\n\n"
        "The local derivative d LN / d v is derived by SymPy from the definition and proven equal to the "
        "closed form the kernels use; the kernels' LN rows (forward and backward) are compared with SymPy"
        " at random points, including N = 1.")
    return DerivationResult(FAMILY, "LayerNorm LSTM and GRU: SymPy reference gradients and d LN / d v",
                            description, checks,
                            LN_LATEX + [("d LN / d v (and the kernels' backward)", JACOBIAN_LATEX)])
