"""Initialisation study: how the hidden state and its gradient grow per step in a ReLU RNN.

A ReLU RNN with zero bias and zero input, h_t = relu(W h_{t-1}), whose recurrent weights are drawn
i.i.d. N(0, g/n) (n = hidden size). For a fixed h_{t-1} each pre-activation is N(0, g ||h_{t-1}||^2 / n)
and relu keeps half of its second moment, so over a fresh W

    E ||h_t||^2 = (g / 2) ||h_{t-1}||^2.

Backwards, dL/dh_{t-1} = W^T D_t dL/dh_t with D_t the 0/1 mask of active units, about half of them,
so ||dL/dh_t||^2 shrinks or grows by about g/2 per step as well: g = 2 (He initialisation) keeps the
scale, g = 3 explodes as 1.5^t, g = 1.5 vanishes as 0.75^t. Within one sequence the same W is reused
at every step, so the steps are not independent draws; the per-step factor is then g/2 up to
fluctuations of order 1/n, which is what ``relu_rnn_growth`` lets one measure.
"""

import numpy as np

from rnncore.diagnostics.gradients import hidden_state_gradients
from rnncore.nn.recurrent import RNN

__all__ = ["relu_rnn_growth"]


def relu_rnn_growth(gain, hidden_size=256, steps=40, seeds=range(16), batch=4, gradients=True):
    """Squared norms of the hidden state and of its gradient per step, one RNN per seed.

    For each seed: W ~ N(0, gain / hidden_size) (float64, bias=False, relu), x = 0, h0 ~ N(0, I)
    for ``batch`` sequences, L = sum_b <h_T^b, G^b> with G ~ N(0, I).
    Returns {"h": (S, steps + 1, batch) ||h_t||^2, "grad": (S, steps + 1, batch) ||dL/dh_t||^2 or None},
    S = len(seeds), index t = state after t steps (0: the initial state).
    """
    seeds = list(seeds)
    n = int(hidden_size)
    h_sq = np.empty((len(seeds), steps + 1, batch))
    g_sq = np.empty((len(seeds), steps + 1, batch)) if gradients else None
    x = np.zeros((steps, batch, 1))
    for k, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        layer = RNN(1, n, nonlinearity="relu", bias=False, dtype=np.float64)
        w_hh = rng.standard_normal((n, n)) * np.sqrt(gain / n)
        layer.load_state_dict({"weight_ih_l0": np.zeros((n, 1)), "weight_hh_l0": w_hh})
        h0 = rng.standard_normal((1, batch, n))
        out, _ = layer(x, h0)
        h_sq[k, 0] = np.sum(h0[0] ** 2, axis=-1)
        h_sq[k, 1:] = np.sum(out ** 2, axis=-1)
        if gradients:
            G = rng.standard_normal((1, batch, n))
            (dh,) = hidden_state_gradients(layer, x, h0, None, G)
            g_sq[k] = np.sum(dh ** 2, axis=-1)
    return {"h": h_sq, "grad": g_sq}
