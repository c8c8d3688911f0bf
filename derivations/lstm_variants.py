"""LSTM variants: SymPy reference gradients of unrolled networks with a projection, peepholes, gate
clipping and the coupled input-forget gate.

The machinery is that of ``derivations.cells`` (the unrolled loss of a tiny network with
packed-sequence semantics, a random symbolic projection of everything the layer returns, reverse
accumulation of SymPy's local derivatives, lambdify, random points); only the cell's equations
differ. They are written here from the definitions, not from the kernels:

    a = W_ih x + b_ih + W_hh h + b_hh                       (rows i | f | g | o)
    i = sigma(k(a_i + p_i c)),  f = sigma(k(a_f + p_f c))   or, coupled, f = 1 - i
    g = tanh(k(a_g)),  c' = f c + i g,  o = sigma(k(a_o + p_o c'))
    h' = W_hr (o tanh(c'))                                  (h' = o tanh(c') without projection)

with k(v) = (|v + clip| - |v - clip|) / 2 when clipping, and k(v) = v otherwise. That is
min(max(v, -clip), clip) written with Abs, whose derivative SymPy gives as sign: k'(v) is 1 inside the
bounds and 0 outside, so a clipped gate passes no gradient. (SymPy's Min and Max order their
arguments even when not evaluating, a walk of the whole expression tree that never finishes on a
stacked network.) The random points put gate pre-activations of order 1 on both sides of the clip
bounds used (0.5 and 0.8).
"""

from dataclasses import dataclass

import numpy as np
import sympy as sp

import rnncore
from derivations import cells
from derivations import symbolic as S
from derivations.checks import DerivationResult

FAMILY = "lstm_variants"


@dataclass(frozen=True)
class VariantSpec(cells.NetSpec):
    """A tiny LSTM with variant options, named as ``rnncore.LSTM``'s."""

    cell: str = "lstm"
    proj_size: int = 0
    peephole: bool = False
    gate_clip: float = None
    coupled_input_forget: bool = False

    @property
    def out_size(self):
        return self.proj_size or self.H

    def state_size(self, name):
        return self.H if name == "c" else self.out_size

    def extra_params(self):
        shapes = {}
        if self.proj_size:
            shapes["weight_hr"] = (self.proj_size, self.H)
        if self.peephole:
            shapes["weight_peephole"] = (3 * self.H,)
        return shapes

    def options(self):
        return {"proj_size": self.proj_size, "peephole": self.peephole, "gate_clip": self.gate_clip,
                "coupled_input_forget": self.coupled_input_forget}

    def layer(self, layer_class=None):
        cls = layer_class or rnncore.LSTM
        return cls(self.I, self.H, num_layers=self.num_layers, bias=self.bias,
                   bidirectional=self.bidirectional, dtype=np.float64, seed=0, **self.options())

    def describe(self):
        parts = [f"proj_size={self.proj_size}"] if self.proj_size else []
        parts += ["peepholes"] if self.peephole else []
        parts += [f"gate_clip={self.gate_clip}"] if self.gate_clip else []
        parts += ["coupled input-forget gate"] if self.coupled_input_forget else []
        return super().describe().replace("LSTM", f"LSTM ({', '.join(parts)})", 1)


class VariantNet(cells.SymbolicNet):
    """The unrolled network of a VariantSpec: ``cells.SymbolicNet`` with the variant cell."""

    def _step(self, key, t, b, x, state, w):
        extra = self.extra_params(key)
        spec = self.spec
        H = spec.H
        h, c_prev = state
        w_ih, w_hh, b_ih, b_hh = w
        u = cells._affine(w_ih, x, b_ih)
        v = cells._affine(w_hh, h, b_hh)
        a = [sp.Add(p, q) for p, q in zip(u, v, strict=True)]
        peep = extra.get("weight_peephole")

        def k(e):  # ONNX's clip of the input of every activation: min(max(e, -clip), clip)
            if spec.gate_clip:
                kappa = sp.Float(spec.gate_clip)
                upper, lower = sp.Abs(sp.Add(e, kappa)), sp.Abs(sp.Add(e, sp.Mul(-1, kappa)))
                return sp.Mul(sp.Rational(1, 2), sp.Add(upper, sp.Mul(-1, lower)))
            return e

        def peephole(e, row, cell):
            return e if peep is None else sp.Add(e, sp.Mul(peep[row], cell))

        i = [S.sigmoid(k(peephole(a[j], j, c_prev[j]))) for j in range(H)]
        if spec.coupled_input_forget:
            f = [sp.Add(1, sp.Mul(-1, i_)) for i_ in i]
        else:
            f = [S.sigmoid(k(peephole(a[H + j], H + j, c_prev[j]))) for j in range(H)]
        g = [sp.tanh(k(a[2 * H + j])) for j in range(H)]
        c = [sp.Add(sp.Mul(f[j], c_prev[j]), sp.Mul(i[j], g[j])) for j in range(H)]
        o = [S.sigmoid(k(peephole(a[3 * H + j], 2 * H + j, c[j]))) for j in range(H)]
        m = [sp.Mul(o_, sp.tanh(c_)) for o_, c_ in zip(o, c, strict=True)]
        if spec.proj_size:
            return cells._affine(extra["weight_hr"], m, None), c
        return m, c


ALL = {"proj_size": 2, "peephole": True, "gate_clip": 0.8, "coupled_input_forget": True}


def specs(quick):
    """Each variant alone on a basic network, all four together on a stacked bidirectional network with
    unequal lengths; the full run adds each variant stacked, bidirectional with lengths, and at H = 3."""
    single = {"proj": {"proj_size": 2}, "peephole": {"peephole": True}, "clip": {"gate_clip": 0.5},
              "coupled": {"coupled_input_forget": True}}
    out = [VariantSpec(f"lstm_{tag}", T=3, B=2, I=2, H=3 if tag == "proj" else 2, **opts)
           for tag, opts in single.items()]
    out.append(VariantSpec("lstm_all_stacked_bidir_lengths", T=3, B=2, I=1, H=2, num_layers=2,
                           bidirectional=True, lengths=(3, 1), **{**ALL, "proj_size": 1}))
    if quick:
        return out
    for tag, opts in single.items():
        out += [
            VariantSpec(f"lstm_{tag}_stacked", T=3, B=1, I=2, H=3, num_layers=2, **opts),
            VariantSpec(f"lstm_{tag}_bidir_lengths", T=4, B=2, I=2, H=3 if tag == "proj" else 2,
                        bidirectional=True, lengths=(4, 2), **opts),
            VariantSpec(f"lstm_{tag}_H3", T=3, B=1, I=3, H=3, **opts),
        ]
    out += [VariantSpec("lstm_all_T4_B2_I3_H3", T=4, B=2, I=3, H=3, **ALL),
            VariantSpec("lstm_peephole_clip_lengths_nobias", T=4, B=2, I=2, H=2, peephole=True, gate_clip=0.5,
                        lengths=(4, 2), bias=False)]
    return out


LATEX = [
    ("Peepholes (p_i, p_f see the previous cell state, p_o the new one)",
     r"i_t = \sigma(a_i + p_i \odot c_{t-1}),\ f_t = \sigma(a_f + p_f \odot c_{t-1}),\ "
     r"o_t = \sigma(a_o + p_o \odot c_t)"),
    ("Gate clipping (ONNX clip): the input of every activation",
     r"\sigma(a) \to \sigma(k(a)),\ k(a) = \min(\max(a, -\kappa), \kappa) = "
     r"\tfrac{1}{2}(|a + \kappa| - |a - \kappa|),\quad k'(a) = \tfrac{1}{2}(\operatorname{sign}(a + \kappa) "
     r"- \operatorname{sign}(a - \kappa))"),
    ("Coupled input-forget gate (ONNX input_forget = 1)", r"f_t = 1 - i_t"),
    ("Projection (torch proj_size)", r"h_t = W_{hr} (o_t \odot \tanh(c_t))"),
]


def run(quick=False):
    spec_list = specs(quick)
    checks = []
    # plain sympy.diff walks the unrolled tree: feasible for T = 2, H = 1 with two options at a time
    smallest = [VariantSpec("lstm_clip_coupled_T2", T=2, B=1, I=1, H=1, gate_clip=0.5,
                            coupled_input_forget=True),
                VariantSpec("lstm_peephole_coupled_T2", T=2, B=1, I=1, H=1, peephole=True,
                            coupled_input_forget=True)]
    for spec in smallest[:1] if quick else smallest:
        checks.append(cells.check_against_sympy_diff(spec, net_class=VariantNet, family=FAMILY))
    for spec in spec_list:
        compiled = cells.CompiledNet(VariantNet(spec))
        checks += cells.check_network(spec, points=2 if quick else 3, compiled=compiled, family=FAMILY)
    description = (
        "The LSTM variants of `rnncore.LSTM` (proj_size, peephole, gate_clip, coupled_input_forget), each "
        "checked like the plain cells: the unrolled loss of a tiny network is written out in SymPy from the "
        "variant's equations (below), differentiated with respect to every weight (weight_hr and "
        "weight_peephole included), bias, input and initial state, and compared at random points with "
        f"the float64 layer's explicit BPTT (the variant kernels). {len(spec_list)} configurations: each "
        "variant alone, and all four together on a 2-layer bidirectional network with unequal lengths"
        + ("" if quick else "; each variant also stacked, bidirectional with unequal lengths and at "
           "H = 3, all four at T = 4, B = 2, I = 3, H = 3, and peepholes with clipping without biases")
        + ". At the random points roughly half of the gate pre-activations lie beyond the clip bound, so "
        "both the passing and the blocked branch of the clip are exercised. The `method` checks compare "
        "the reverse accumulation with plain `sympy.diff` on the smallest networks (T = 2, one unit) with "
        "clipping and the coupled gate" + ("" if quick else ", and with peepholes and the coupled gate")
        + ".")
    return DerivationResult(FAMILY, "LSTM variants: projection, peepholes, gate clipping, coupled gates",
                            description, checks, LATEX)
