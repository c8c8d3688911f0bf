"""Every cell's full reference gradient: the unrolled loss of a tiny network, differentiated by SymPy.

For each configuration the forward equations of DESIGN.md are written out in SymPy for every
time step, batch element, layer and direction, with packed-sequence semantics (a sequence stops
at its own length; the reverse direction starts at its own last step). The loss is a random
projection of everything the layer returns,

    L = sum_{t, b active} out[t, b] . G_out[t, b] + sum h_n . G_h (+ sum c_n . G_c),

with the projections G as symbols too. SymPy differentiates L with respect to every weight, bias,
input and initial state (``symbolic.gradient``); the lambdified gradients, evaluated at random
points, are compared with ``rnncore``'s float64 layers given the same weights, inputs, states and
upstream gradients. The loss value itself is compared as well (the forward pass).
"""

from dataclasses import dataclass

import numpy as np
import sympy as sp

import rnncore
from derivations import symbolic as S
from derivations.checks import DerivationResult, array_check, bound_check, value_check

FAMILY = "cells"
TOLERANCE = 1e-10


@dataclass(frozen=True)
class NetSpec:
    """A tiny network. cell: 'rnn', 'lstm' or 'gru'; option: the nonlinearity (rnn) or
    'reset_after' / 'reset_before' (gru)."""

    label: str
    cell: str
    option: str = ""
    T: int = 3
    B: int = 2
    I: int = 2  # noqa: E741  (the project's dimension letters: T, B, I, H)
    H: int = 2
    num_layers: int = 1
    bidirectional: bool = False
    lengths: tuple = None
    bias: bool = True

    @property
    def gate_rows(self):
        return {"rnn": 1, "lstm": 4, "gru": 3}[self.cell]

    @property
    def states(self):
        return ("h", "c") if self.cell == "lstm" else ("h",)

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def out_size(self):
        """The width of h and of each direction's output (an LSTM with projection overrides it)."""
        return self.H

    def state_size(self, name):
        """The width of the state ``name``."""
        return self.H

    def extra_params(self):
        """{kind: shape} of each layer and direction's parameters beyond weight_ih ... bias_hh."""
        return {}

    def seq_lengths(self):
        return list(self.lengths) if self.lengths is not None else [self.T] * self.B

    def layer(self, layer_class=None):
        """The rnncore layer of this spec in float64."""
        cls = layer_class or {"rnn": rnncore.RNN, "lstm": rnncore.LSTM, "gru": rnncore.GRU}[self.cell]
        options = {}
        if self.cell == "rnn":
            options["nonlinearity"] = self.option
        elif self.cell == "gru":
            options["reset_after"] = self.option == "reset_after"
        return cls(self.I, self.H, num_layers=self.num_layers, bias=self.bias,
                   bidirectional=self.bidirectional, dtype=np.float64, seed=0, **options)

    def describe(self):
        parts = [f"T={self.T}", f"B={self.B}", f"I={self.I}", f"H={self.H}"]
        if self.num_layers > 1:
            parts.append(f"{self.num_layers} layers")
        if self.bidirectional:
            parts.append("bidirectional")
        if self.lengths is not None:
            parts.append(f"lengths {list(self.lengths)}")
        if not self.bias:
            parts.append("no bias")
        name = {"rnn": f"Elman {self.option}", "lstm": "LSTM", "gru": f"GRU {self.option}"}[self.cell]
        return f"{name}, {', '.join(parts)}"


ELMAN = ("tanh", "relu", "sigmoid", "identity")


def specs(quick):
    """The configurations checked. Every cell variant gets a basic network; stacking, a bidirectional
    layer and unequal lengths are each covered for every cell type (fewer in --quick)."""
    out = [NetSpec(f"rnn_{a}", "rnn", a, T=3, B=2, I=2, H=2) for a in ELMAN]
    out += [NetSpec("lstm", "lstm", T=3, B=2, I=2, H=2),
            NetSpec("gru_reset_after", "gru", "reset_after", T=3, B=2, I=2, H=2),
            NetSpec("gru_reset_before", "gru", "reset_before", T=3, B=2, I=2, H=2)]
    variants = [("rnn", "tanh"), ("lstm", ""), ("gru", "reset_after"), ("gru", "reset_before")]
    if quick:
        return out + [
            NetSpec("rnn_tanh_stacked_bidir_lengths", "rnn", "tanh", T=3, B=2, I=1, H=2, num_layers=2,
                    bidirectional=True, lengths=(3, 1)),
            NetSpec("gru_reset_before_stacked_bidir_lengths", "gru", "reset_before", T=3, B=2, I=1, H=1,
                    num_layers=2, bidirectional=True, lengths=(2, 3)),
        ]
    for cell, option in variants:
        tag = f"{cell}_{option}" if option else cell
        out += [
            NetSpec(f"{tag}_T4_H1_B1", cell, option, T=4, B=1, I=1, H=1),
            NetSpec(f"{tag}_H3", cell, option, T=2, B=1, I=3, H=3),
            NetSpec(f"{tag}_stacked", cell, option, T=3, B=1, I=2, H=2, num_layers=2),
            NetSpec(f"{tag}_bidir_lengths", cell, option, T=4, B=2, I=2, H=2, bidirectional=True,
                    lengths=(4, 2)),
            NetSpec(f"{tag}_stacked_bidir_lengths", cell, option, T=3, B=2, I=1, H=1, num_layers=2,
                    bidirectional=True, lengths=(1, 3)),
        ]
    out.append(NetSpec("rnn_relu_lengths_nobias", "rnn", "relu", T=4, B=2, I=2, H=2, lengths=(4, 2),
                       bias=False))
    # the largest size the issue asks for, every cell variant
    out += [NetSpec(f"{s.label}_T4_B2_I3_H3", s.cell, s.option, T=4, B=2, I=3, H=3) for s in out[:7]]
    return out


# -- the symbolic network -------------------------------------------------------------------------
def _affine(w, v, b):
    """[sum_k w[j, k] v[k] (+ b[j])] for each row j; w, b object arrays, v a list."""
    rows = []
    for j in range(w.shape[0]):
        terms = [sp.Mul(w[j, k], v[k]) for k in range(len(v))]
        if b is not None:
            terms.append(b[j])
        rows.append(sp.Add(*terms))
    return rows


def _ew(f, *vectors):
    return [f(*xs) for xs in zip(*vectors, strict=True)]


def cell_step(spec, x, state, w_ih, w_hh, b_ih, b_hh, h_rec=None):
    """One step of the cell, written from DESIGN.md's equations. state: (h,) or (h, c) as lists.
    h_rec: what the products with W_hh read instead of h (recurrent dropout; GRU's z * h reads h)."""
    H = spec.H
    h = state[0]
    hr = h if h_rec is None else h_rec
    u = _affine(w_ih, x, b_ih)  # W_ih x + b_ih
    if spec.cell == "rnn":
        act = S.ACTIVATIONS[spec.option]
        v = _affine(w_hh, hr, b_hh)
        return ([act(sp.Add(a, b)) for a, b in zip(u, v, strict=True)],)
    if spec.cell == "lstm":
        v = _affine(w_hh, hr, b_hh)
        a = [sp.Add(p, q) for p, q in zip(u, v, strict=True)]
        i = [S.sigmoid(e) for e in a[:H]]
        f = [S.sigmoid(e) for e in a[H:2 * H]]
        g = [sp.tanh(e) for e in a[2 * H:3 * H]]
        o = [S.sigmoid(e) for e in a[3 * H:]]
        c = _ew(lambda f_, c_, i_, g_: sp.Add(sp.Mul(f_, c_), sp.Mul(i_, g_)), f, state[1], i, g)
        return [sp.Mul(o_, sp.tanh(c_)) for o_, c_ in zip(o, c, strict=True)], c
    # GRU, gate rows r, z, n
    rz_rec = _affine(w_hh[:2 * H], hr, None if b_hh is None else b_hh[:2 * H])
    r = [S.sigmoid(sp.Add(u[j], rz_rec[j])) for j in range(H)]
    z = [S.sigmoid(sp.Add(u[H + j], rz_rec[H + j])) for j in range(H)]
    b_hn = None if b_hh is None else b_hh[2 * H:]
    if spec.option == "reset_after":  # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        hn = _affine(w_hh[2 * H:], hr, b_hn)
        n = [sp.tanh(sp.Add(u[2 * H + j], sp.Mul(r[j], hn[j]))) for j in range(H)]
    else:  # n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
        rh = [sp.Mul(r_, h_) for r_, h_ in zip(r, hr, strict=True)]
        hn = _affine(w_hh[2 * H:], rh, b_hn)
        n = [sp.tanh(sp.Add(u[2 * H + j], hn[j])) for j in range(H)]
    # h' = (1 - z) * n + z * h
    return ([sp.Add(sp.Mul(sp.Add(1, sp.Mul(-1, z_)), n_), sp.Mul(z_, h_))
             for z_, n_, h_ in zip(z, n, h, strict=True)],)


class SymbolicNet:
    """The symbols of a spec (parameters with torch.nn names and shapes, x, initial states, upstream
    projections) and the unrolled loss."""

    def __init__(self, spec):
        self.spec = spec
        T, B, I, H, D, L = spec.T, spec.B, spec.I, spec.H, spec.directions, spec.num_layers  # noqa: E741
        G, P = spec.gate_rows * H, spec.out_size
        self.params = {}
        for layer in range(L):
            layer_in = I if layer == 0 else D * P
            for suffix in ("", "_reverse")[:D]:
                key = f"l{layer}{suffix}"
                self.params[f"weight_ih_{key}"] = S.symbol_array(f"weight_ih_{key}", (G, layer_in))
                self.params[f"weight_hh_{key}"] = S.symbol_array(f"weight_hh_{key}", (G, P))
                if spec.bias:
                    self.params[f"bias_ih_{key}"] = S.symbol_array(f"bias_ih_{key}", (G,))
                    self.params[f"bias_hh_{key}"] = S.symbol_array(f"bias_hh_{key}", (G,))
                for kind, shape in spec.extra_params().items():
                    self.params[f"{kind}_{key}"] = S.symbol_array(f"{kind}_{key}", shape)
        self.inputs = {"x": S.symbol_array("x", (T, B, I))}
        for name in spec.states:
            self.inputs[f"{name}0"] = S.symbol_array(f"{name}0", (D * L, B, spec.state_size(name)))
        self.upstream = {"grad_out": S.symbol_array("G_out", (T, B, D * P))}
        for name in spec.states:
            self.upstream[f"grad_{name}_n"] = S.symbol_array(f"G_{name}n", (D * L, B, spec.state_size(name)))
        with S.unevaluated():
            self.loss = self._loss()

    def _loss(self):
        spec = self.spec
        T, B, H, D = spec.T, spec.B, spec.out_size, spec.directions
        lengths = spec.seq_lengths()
        x = self.inputs["x"]
        layer_in = [[list(x[t, b]) for b in range(B)] for t in range(T)]
        finals = {}
        for layer in range(spec.num_layers):
            layer_in = self._layer_input(layer, layer_in)
            out = [[[sp.S.Zero] * (D * H) for _ in range(B)] for _ in range(T)]
            for d in range(D):
                key = f"l{layer}{('', '_reverse')[d]}"
                w = self._direction_weights(key)
                idx = layer * D + d
                for b in range(B):
                    state = tuple(list(self.inputs[f"{n}0"][idx, b]) for n in spec.states)
                    steps = range(lengths[b]) if d == 0 else reversed(range(lengths[b]))
                    for t in steps:
                        state = self._step(key, t, b, layer_in[t][b], state, w)
                        out[t][b][d * H:(d + 1) * H] = state[0]
                    for n, s in zip(spec.states, state, strict=True):
                        finals[(n, idx, b)] = s
            layer_in = out
        terms = []
        g_out = self.upstream["grad_out"]
        for t in range(T):
            for b in range(B):
                if t < lengths[b]:
                    terms += [sp.Mul(layer_in[t][b][j], g_out[t, b, j]) for j in range(D * H)]
        for (n, idx, b), s in finals.items():
            g = self.upstream[f"grad_{n}_n"]
            terms += [sp.Mul(s[j], g[idx, b, j]) for j in range(len(s))]
        return sp.Add(*terms)

    # hooks for networks that add to the forward equations (derivations.regularisers, .layer_norm)
    def _layer_input(self, layer, layer_in):
        """The input of a layer, [t][b] lists of expressions, as the layer's cells see it."""
        return layer_in

    def _direction_weights(self, key):
        """(w_ih, w_hh, b_ih, b_hh) of one layer and direction (key 'l0', 'l0_reverse', ...)."""
        p = self.params
        return p[f"weight_ih_{key}"], p[f"weight_hh_{key}"], p.get(f"bias_ih_{key}"), p.get(f"bias_hh_{key}")

    def _step(self, key, t, b, x, state, w):
        """The state after step t of sequence b in one layer and direction (a subclass writes a
        variant's equations here; ``extra_params(key)`` gives its further parameters)."""
        return cell_step(self.spec, x, state, *w)

    def extra_params(self, key):
        """{kind: symbol array} of the spec's further parameters (``spec.extra_params()``) of one layer
        and direction."""
        return {kind: self.params[f"{kind}_{key}"] for kind in self.spec.extra_params()}

    def arrays(self):
        """Every symbol array by name: parameters, inputs, upstream projections (a fixed order)."""
        return {**self.params, **self.inputs, **self.upstream}

    def wrt(self):
        """The arrays the loss is differentiated with respect to: parameters and inputs."""
        return {**self.params, **self.inputs}


class CompiledNet:
    """The lambdified loss and gradients of a SymbolicNet."""

    def __init__(self, net, grads=None):
        self.net = net
        arrays = net.arrays()
        self.names = list(arrays)
        self.args = S.flat_symbols(arrays.values())
        wrt = net.wrt()
        self.shapes = {name: a.shape for name, a in wrt.items()}
        if grads is None:
            grads = S.gradient(net.loss, S.flat_symbols(wrt.values()))
        self.fn = S.lambdify(self.args, [net.loss, *grads])

    def __call__(self, values):
        """(loss, {name: gradient array}) at values {name: array} for every array of the net."""
        result = self.fn(*S.flat_values(values[n] for n in self.names))
        loss, flat = float(result[0]), np.array([float(v) for v in result[1:]])
        grads, start = {}, 0
        for name, shape in self.shapes.items():
            size = int(np.prod(shape))
            grads[name] = flat[start:start + size].reshape(shape)
            start += size
        return loss, grads


def random_point(net, rng):
    """Random values for every symbol array: weights and inputs N(0, 0.6^2) (pre-activations of
    order 1, where every nonlinearity is far from linear), upstream projections N(0, 1). ReLU
    networks get biases N(0.4, 0.3^2), so that most units are active: a network whose units are
    all off has a zero gradient, and comparing zeros proves nothing."""
    values = {}
    relu = net.spec.cell == "rnn" and net.spec.option == "relu"
    for name, arr in net.arrays().items():
        if name.startswith("grad_"):
            values[name] = rng.standard_normal(arr.shape)
        elif relu and name.startswith("bias_"):
            values[name] = 0.4 + 0.3 * rng.standard_normal(arr.shape)
        else:
            values[name] = 0.6 * rng.standard_normal(arr.shape)
    return values


def measure(spec, values, layer_class=None):
    """rnncore's loss and gradients at the same point: forward, then backward with the projections."""
    layer = spec.layer(layer_class)
    layer.load_state_dict({k: v for k, v in values.items() if k in layer.state_dict()})
    states = tuple(values[f"{n}0"] for n in spec.states)
    hx = states[0] if len(states) == 1 else states
    lengths = None if spec.lengths is None else list(spec.lengths)
    out, finals = layer(values["x"], hx, lengths)
    finals = (finals,) if len(spec.states) == 1 else finals
    g_finals = tuple(values[f"grad_{n}_n"] for n in spec.states)
    loss = float(np.sum(out * values["grad_out"])
                 + sum(np.sum(f * g) for f, g in zip(finals, g_finals, strict=True)))
    layer.zero_grad()
    dx, d0 = layer.backward(values["grad_out"], g_finals[0] if len(g_finals) == 1 else g_finals)
    d0 = (d0,) if len(spec.states) == 1 else d0
    grads = {"x": dx, **{f"{n}0": d for n, d in zip(spec.states, d0, strict=True)}}
    grads.update({k: v.copy() for k, v in layer.grads.items()})
    return loss, grads


def check_network(spec, points=2, seed=0, layer_class=None, compiled=None, family=FAMILY):
    """Checks of one configuration: the loss and every gradient, max error over random points.
    ``layer_class`` replaces rnncore's layer (the tests pass a deliberately broken one); ``compiled``
    a CompiledNet of a SymbolicNet subclass (a variant's equations); ``family`` names the checks."""
    compiled = compiled or CompiledNet(SymbolicNet(spec))
    rng = np.random.default_rng(seed)
    refs, meas = [], []
    for _ in range(points):
        values = random_point(compiled.net, rng)
        refs.append(compiled(values))
        meas.append(measure(spec, values, layer_class))
    layer_name = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[spec.cell]
    return point_checks(family, spec.label, f"{spec.describe()}; {points} random points", layer_name, refs,
                        meas, compiled.shapes)


def point_checks(family, label, where, layer_name, refs, meas, names, what="unrolled loss",
                 exact_zero=None):
    """Checks of the loss (at the worst point) and of every gradient in ``names`` (max error over the
    points) from the reference and the measured (loss, {name: gradient}) of each random point.
    ``what`` names the SymPy expression. A gradient whose reference is 0 at every point proves
    nothing and fails as vacuous, unless ``exact_zero`` ({name: reason}) says why the equations make
    it exactly 0: then the measured gradient must be exactly 0 too."""
    exact_zero = exact_zero or {}
    worst = max(range(len(refs)), key=lambda k: abs(refs[k][0] - meas[k][0]) / max(abs(refs[k][0]), 1e-300))
    checks = [value_check(family, f"{family}/{label}/loss", f"loss value (forward pass), {where}; "
                          "the worst point", f"SymPy {what}, lambdified",
                          f"rnncore.{layer_name} forward (float64)", refs[worst][0], meas[worst][0],
                          TOLERANCE)]
    for name in names:
        ref = np.stack([r[1][name] for r in refs])
        got = np.stack([m[1][name] for m in meas])
        if not np.any(ref) and name in exact_zero:
            checks.append(bound_check(family, f"{family}/{label}/{name}", f"dL/d{name} = 0 "
                                      f"({exact_zero[name]}), {where}", "SymPy: the reference gradient is "
                                      "exactly 0", f"max |rnncore.{layer_name}.backward|",
                                      float(np.max(np.abs(got))), 0.0))
            continue
        check = array_check(family, f"{family}/{label}/{name}", f"dL/d{name}, {where}",
                            f"SymPy gradient of the {what}, lambdified",
                            f"rnncore.{layer_name}.backward (float64)", ref, got, TOLERANCE)
        if not np.any(ref):  # a comparison of zeros proves nothing: report it as failed
            check.compared += " (vacuous: the reference gradient is 0 at every point)"
            check.max_rel_error = check.max_abs_error = float("inf")
        checks.append(check)
    return checks


def check_against_sympy_diff(spec, seed=1, net_class=None, family=FAMILY):
    """The reverse accumulation of ``symbolic.gradient`` against plain ``sympy.diff`` of the same
    loss (feasible only for the smallest networks)."""
    net = (net_class or SymbolicNet)(spec)
    wrt = S.flat_symbols(net.wrt().values())
    ours = CompiledNet(net)
    plain = CompiledNet(net, grads=[sp.diff(net.loss, s) for s in wrt])
    rng = np.random.default_rng(seed)
    values = random_point(net, rng)
    _, g1 = ours(values)
    _, g2 = plain(values)
    a = np.concatenate([g1[n].ravel() for n in g1])
    b = np.concatenate([g2[n].ravel() for n in g2])
    return array_check(family, f"{family}/method/{spec.label}", f"every gradient of {spec.describe()}: "
                       "reverse accumulation of SymPy's local derivatives vs sympy.diff of the whole loss",
                       "sympy.diff of the unrolled loss", "derivations.symbolic.gradient", b, a, 1e-12)


CELL_LATEX = [
    ("Elman", r"h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),\ \phi \in \{\tanh,"
              r" \mathrm{relu}, \sigma, \mathrm{id}\}"),
    ("LSTM", r"c_t = f_t \odot c_{t-1} + i_t \odot g_t,\quad h_t = o_t \odot \tanh(c_t)"),
    ("GRU (reset_after, torch)", r"n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})),"
                                 r"\quad h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}"),
    ("GRU (reset_before, original)",
     r"n_t = \tanh(W_{in} x_t + b_{in} + W_{hn} (r_t \odot h_{t-1}) + b_{hn})"),
    ("Loss", r"L = \sum_{t,b:\ t < \ell_b} \langle \mathrm{out}_{t,b}, G_{t,b} \rangle "
             r"+ \langle h_n, G_h \rangle + \langle c_n, G_c \rangle"),
]


def _example_latex():
    """SymPy's derivative of the smallest Elman tanh network (T = 2, one unit, no bias), shown."""
    w, u, h0, x1, x2, g1, g2 = sp.symbols("w_{hh} w_{ih} h_0 x_1 x_2 G_1 G_2", real=True)
    h1 = sp.tanh(u * x1 + w * h0)
    h2 = sp.tanh(u * x2 + w * h1)
    loss = g1 * h1 + g2 * h2
    d = sp.diff(loss, w)
    return r"\frac{\partial L}{\partial w_{hh}} = " + sp.latex(d)


def run(quick=False):
    spec_list = specs(quick)
    checks = []
    smallest = [NetSpec("rnn_tanh_T2", "rnn", "tanh", T=2, B=1, I=1, H=1),
                NetSpec("rnn_relu_T2", "rnn", "relu", T=2, B=1, I=1, H=1),
                NetSpec("lstm_T2", "lstm", T=2, B=1, I=1, H=1),
                NetSpec("gru_reset_after_T2", "gru", "reset_after", T=2, B=1, I=1, H=1),
                NetSpec("gru_reset_before_T2", "gru", "reset_before", T=2, B=1, I=1, H=1)]
    for spec in smallest[:2] if quick else smallest:
        checks.append(check_against_sympy_diff(spec))
    for spec in spec_list:
        checks += check_network(spec, points=2 if quick else 3)
    description = (
        "For every cell (Elman with each nonlinearity, LSTM, GRU with the reset gate after and before "
        "the recurrent product), the unrolled loss of a tiny network is written out in SymPy from the "
        "forward equations alone, with packed-sequence semantics for unequal lengths, and differentiated "
        "with respect to every weight, bias, input and initial state. The loss is a random projection "
        "of the outputs and final states (the projection is symbolic too). The lambdified gradients are "
        "evaluated at random points and compared with the float64 layers' explicit BPTT given the same "
        f"values. {len(spec_list)} configurations, each named in its checks: every cell variant at "
        + ("input and hidden size 2, T = 3, batch 2, and one stacked bidirectional network with unequal "
           "lengths each for Elman and for GRU" if quick else
           "input and hidden sizes 1 to 3, T up to 4, batch 1 and 2; for each of Elman tanh, LSTM and both "
           "GRUs a 2-layer stack, a bidirectional layer with unequal lengths, and both at once; a ReLU "
           "network without biases with unequal lengths") + ".\n\n"
        "How SymPy differentiates: `sympy.diff` walks an unrolled network as a tree, which is "
        "exponential in T, so `derivations.symbolic.gradient` applies SymPy's derivative of each node "
        "once and sums over paths by reverse accumulation. The `cells/method/*` checks compare it with "
        "plain `sympy.diff` of the whole loss on the smallest networks."
    )
    return DerivationResult(FAMILY, "Cells: SymPy reference gradients of unrolled networks", description,
                            checks, CELL_LATEX + [("SymPy's derivative, Elman tanh, T = 2, H = 1 (no bias)",
                                                   _example_latex())])
