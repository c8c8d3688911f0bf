"""The regularisers' reference gradients: unrolled networks with their masks as fixed numbers.

Each regulariser is written into the unrolled SymPy network of ``derivations.cells`` from its
definition alone (the masks are symbols, given the values the layer drew, and not differentiated):

    input dropout       x~_t = m_in * x_t, one (B, I) mask per layer for every step
    recurrent dropout   every product with W_hh reads m_rec * h_{t-1} (the GRU's z * h_{t-1} reads h)
    zoneout             h_t = z_t * h_{t-1} + (1 - z_t) * h~_t (and c for the LSTM), fresh z_t per step
    weight-drop         W_hh -> m_w * W_hh, differentiated with respect to the raw W_hh

The layer runs in training mode with a fixed mask seed (``reseed``): a first forward reads the
masks it draws (``last_masks``), and the same seed gives the same masks in the measured pass. In
eval mode zoneout is its expectation, z_t = p. Then, as in ``cells``, the lambdified loss and
gradients at random points are compared with the float64 layers' forward and explicit BPTT.
"""

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp

import rnncore
from derivations import cells as C
from derivations import symbolic as S
from derivations.checks import DerivationResult

FAMILY = "regularisers"
TOLERANCE = 1e-10
RATE = 0.5  # every mask has both values often at this rate, even on two units


@dataclass(frozen=True)
class RegSpec:
    """A tiny network (``cells.NetSpec``) with regulariser rates, in training or eval mode."""

    label: str
    net: C.NetSpec
    rates: tuple = ()  # (name, rate) pairs: keyword arguments of the layer
    training: bool = True

    def layer(self, *args, **kwargs):
        """The layer factory given to ``cells.measure``: rates set, masks seeded, mode set."""
        return self._make(self.mask_seed, *args, **kwargs)

    def _make(self, mask_seed, *args, **kwargs):
        cls = {"rnn": rnncore.RNN, "lstm": rnncore.LSTM, "gru": rnncore.GRU}[self.net.cell]
        layer = cls(*args, **kwargs, **dict(self.rates))
        layer.reseed(mask_seed)
        return layer.train(self.training)

    @functools.cached_property
    def mask_seed(self):
        """The first seed whose masks all hold both values (dropped and kept; a mask of one entry:
        kept), so none is trivial (eval mode draws nothing: seed 0)."""
        if not self.training:
            return 0
        for seed in range(1000):
            masks = self._draw(seed)
            if all(np.unique(m).size > 1 if m.size > 1 else m.flat[0] != 0 for m in masks.values()):
                return seed
        raise RuntimeError(f"{self.label}: no seed below 1000 gives non-trivial masks")

    def _draw(self, seed):
        """The masks a forward draws at this seed (they depend on the shapes only, not the values)."""
        n = self.net
        layer = n.layer(functools.partial(self._make, seed))
        layer(np.zeros((n.T, n.B, n.I)), None, None if n.lengths is None else list(n.lengths))
        return layer.last_masks()

    def mask_values(self):
        """The masks the layer applies at ``mask_seed``, keyed like ``last_masks``."""
        return self._draw(self.mask_seed)

    def describe(self):
        mode = "training" if self.training else "eval mode"
        rates = ", ".join(f"{k}={v}" for k, v in self.rates)
        return f"{self.net.describe()}; {rates}, {mode}"


class RegularisedNet(C.SymbolicNet):
    """``cells.SymbolicNet`` with mask symbols (``mask_<last_masks key>``) in the forward equations."""

    def __init__(self, reg):
        self.reg = reg
        spec = reg.net
        self.masks = {name: S.symbol_array(f"mask_{name}", m.shape) for name, m in reg.mask_values().items()}
        if any(k.startswith("dropout_") for k in self.masks):
            raise ValueError("the between-layer dropout is not part of this derivation")
        super().__init__(spec)

    def _layer_input(self, layer, layer_in):
        m = self.masks.get(f"input_l{layer}")
        if m is None:
            return layer_in
        return [[[sp.Mul(v, m[b, k]) for k, v in enumerate(row)] for b, row in enumerate(step)]
                for step in layer_in]

    def _direction_weights(self, key):
        w_ih, w_hh, b_ih, b_hh = super()._direction_weights(key)
        m = self.masks.get(f"weight_hh_{key}")
        if m is not None:
            dropped = np.empty(w_hh.shape, dtype=object)
            for index in np.ndindex(*w_hh.shape):
                dropped[index] = sp.Mul(m[index], w_hh[index])
            w_hh = dropped
        return w_ih, w_hh, b_ih, b_hh

    def _step(self, key, t, b, x, state, w):
        m = self.masks.get(f"recurrent_{key}")
        h_rec = None if m is None else [sp.Mul(m[b, j], h) for j, h in enumerate(state[0])]
        new = list(C.cell_step(self.spec, x, state, *w, h_rec=h_rec))
        for k, name in enumerate(self.spec.states):
            z = self.masks.get(f"zoneout_{name}_{key}")
            if z is not None:  # s_t = z * s_{t-1} + (1 - z) * s~_t
                new[k] = [sp.Add(sp.Mul(z[t, b, j], old), sp.Mul(sp.Add(1, sp.Mul(-1, z[t, b, j])), cand))
                          for j, (old, cand) in enumerate(zip(state[k], new[k], strict=True))]
        return tuple(new)

    def arrays(self):
        return {**super().arrays(), **{f"mask_{k}": v for k, v in self.masks.items()}}


def specs(quick):
    """Every regulariser on every cell variant at T = 3, B = 2, I = H = 2; zoneout in eval mode; and
    all of them at once in a 2-layer bidirectional network with unequal lengths (fewer in --quick)."""
    cells = [("rnn", "tanh"), ("lstm", ""), ("gru", "reset_after"), ("gru", "reset_before")]
    if quick:
        cells = [("rnn", "tanh"), ("lstm", "")]
    out = []
    for cell, option in cells:
        tag = f"{cell}_{option}" if option else cell
        base = C.NetSpec(tag, cell, option, T=3, B=2, I=2, H=2)
        names = ["input_dropout", "recurrent_dropout", "zoneout", "weight_drop"]
        if cell == "lstm":
            names.insert(3, "zoneout_cell")
        out += [RegSpec(f"{tag}_{name}", base, ((name, RATE),)) for name in names]
        zoneout = (("zoneout", RATE),) + ((("zoneout_cell", 0.3),) if cell == "lstm" else ())
        out.append(RegSpec(f"{tag}_zoneout_eval", base, zoneout, training=False))
        every = (("input_dropout", RATE), ("recurrent_dropout", RATE), ("weight_drop", RATE)) + zoneout
        net = C.NetSpec(f"{tag}_stacked_bidir_lengths", cell, option, T=3, B=2, I=1, H=2, num_layers=2,
                        bidirectional=True, lengths=(3, 2))
        out.append(RegSpec(f"{tag}_all_stacked_bidir_lengths", net, every))
    return out


def check_regularised(reg, points=2, seed=0):
    """The loss and every gradient of one regularised network, max error over random points."""
    net = RegularisedNet(reg)
    compiled = C.CompiledNet(net)
    masks = {f"mask_{k}": v for k, v in reg.mask_values().items()}
    rng = np.random.default_rng(seed)
    refs, meas = [], []
    for _ in range(points):
        values = C.random_point(net, rng)
        values.update(masks)
        refs.append(compiled(values))
        meas.append(C.measure(reg.net, values, reg.layer))
    name = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[reg.net.cell]
    return C.point_checks(FAMILY, reg.label, f"{reg.describe()}; mask seed {reg.mask_seed}; {points} random "
                          "points", name, refs, meas, compiled.shapes,
                          what="unrolled loss with the layer's masks")


LATEX = [
    ("Variational input dropout", r"\tilde x_t = m^{in} \odot x_t,\ m^{in}_{b,k} \sim "
                                  r"\frac{\mathrm{Bernoulli}(1-p)}{1-p}\ \text{for every } t"),
    ("Variational recurrent dropout", r"W_{hh} h_{t-1} \to W_{hh} (m^{rec} \odot h_{t-1}),\ m^{rec} \in \{0, "
                                      r"\tfrac{1}{1-p}\}^{B \times H}\ \text{for every } t"),
    ("Zoneout", r"h_t = z_t \odot h_{t-1} + (1 - z_t) \odot \tilde h_t,\ z_t \sim \mathrm{Bernoulli}(p)"
                r"\ \text{fresh at every } t;\ \text{eval: } z_t = p"),
    ("Weight-drop", r"W_{hh} \to m^{w} \odot W_{hh},\ \frac{\partial L}{\partial W_{hh}} = m^{w} \odot "
                    r"\frac{\partial L}{\partial (m^{w} \odot W_{hh})}"),
]


def run(quick=False):
    spec_list = specs(quick)
    checks = []
    for reg in spec_list:
        checks += check_regularised(reg, points=2 if quick else 3)
    description = (
        "Each regulariser is written into the unrolled SymPy network of the `cells` derivation from its "
        "definition alone, with the masks as fixed numbers: the masks the float64 layer draws in training "
        "mode from a fixed seed (read with `last_masks()`; the first seed at which every mask holds both "
        "values), or zoneout's expectation p in eval mode. SymPy differentiates the projected loss with "
        "respect to every weight (the raw W_hh under weight-drop), bias, input and initial state, and the "
        "lambdified gradients at random points are compared with the layers' masked BPTT kernels. "
        f"{len(spec_list)} configurations: "
        + ("Elman tanh and LSTM" if quick else "Elman tanh, LSTM and both GRU placements")
        + f" with each regulariser alone at rate {RATE} (T = 3, batch 2, input and hidden size 2), zoneout "
        "in eval mode, and all regularisers at once in a 2-layer bidirectional network with unequal lengths."
    )
    return DerivationResult(FAMILY, "Regularisers: variational and recurrent dropout, zoneout, weight-drop",
                            description, checks, LATEX)
