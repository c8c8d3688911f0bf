"""The regularisers of the recurrent layers: their rates, and the masks of one forward pass.

    input_dropout      variational dropout of each layer's input (Gal & Ghahramani 2016): one
                       (B, I) mask per sequence and layer, the same at every time step
    recurrent_dropout  variational dropout of h_{t-1} before every product with W_hh: one (B, H)
                       mask per sequence, layer and direction, the same at every time step
    zoneout            h_t = z_t * h_{t-1} + (1 - z_t) * h~_t, z_t ~ Bernoulli(p) fresh at every step
                       and unit (Krueger et al. 2016); ``zoneout_cell`` does the same for the LSTM's c
    weight_drop        DropConnect on W_hh (Merity et al. 2017): one (G, H) mask per layer and
                       direction per forward pass; the raw weight stays the parameter

Dropout masks are inverted (kept entries scaled by 1/(1-p)); zoneout masks are 0/1. In eval mode
nothing is sampled: dropout and weight-drop are off and zoneout uses its expectation,
h_t = p h_{t-1} + (1 - p) h~_t. Masks are drawn from the layer's seeded generator, in a fixed order,
whether or not gradients are kept.
"""

from dataclasses import dataclass

import numpy as np

from rnncore.nn.layers import dropout_mask

RATE_NAMES = ("input_dropout", "recurrent_dropout", "zoneout", "zoneout_cell", "weight_drop")


def check_rate(name, value):
    """A rate in [0, 1) as a float, or a ValueError naming the argument."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return rate


@dataclass
class StepMasks:
    """The masks the masked kernels of one layer and direction read.
    recurrent (B, H): the recurrent-dropout mask (ones when it is off)
    zone: one (T, B, H) zoneout mask per state, h then c (zeros when off)."""

    recurrent: np.ndarray
    zone: tuple


def zoneout_masks(rng, rate, shape, training, dtype):
    """0/1 masks, 1 (keep the previous value) with probability ``rate``, in training; ``rate``
    everywhere in eval mode; zeros when the rate is 0 (no draw)."""
    if rate == 0.0:
        return np.zeros(shape, dtype=dtype)
    if not training:
        return np.full(shape, rate, dtype=dtype)
    return (rng.random(shape) < rate).astype(dtype)


def input_mask(layer, shape, drawn, key):
    """The variational (B, I) mask of a layer input of shape (T, B, I), the same for every step, in
    training with input_dropout > 0 (recorded in ``drawn`` under ``input{key}``), else None."""
    if not (layer.training and layer.input_dropout > 0.0):
        return None
    mask = drawn["input" + key] = dropout_mask(layer._rng, shape[1:], layer.input_dropout, layer.dtype)
    return mask


def step_masks(layer, T, B, drawn, key):
    """The kernel masks of one layer and direction for this forward, or None when the plain kernels
    apply (no recurrent dropout in training, no zoneout). The masks in use are also recorded in
    ``drawn`` under ``recurrent{key}`` and ``zoneout_h{key}`` / ``zoneout_c{key}``."""
    rates = [layer.zoneout, layer.zoneout_cell][: len(layer.state_names)]
    dropping = layer.training and layer.recurrent_dropout > 0.0
    if not dropping and not any(rates):
        return None
    H, dtype = layer.hidden_size, layer.dtype
    if dropping:
        recurrent = dropout_mask(layer._rng, (B, H), layer.recurrent_dropout, dtype)
        drawn["recurrent" + key] = recurrent
    else:
        recurrent = np.ones((B, H), dtype=dtype)
    zone = tuple(zoneout_masks(layer._rng, rate, (T, B, H), layer.training, dtype) for rate in rates)
    for name, rate, z in zip(layer.state_names, rates, zone):
        if rate:
            drawn[f"zoneout_{name}{key}"] = z
    return StepMasks(recurrent, zone)


def drop_weights(layer, w, drawn, key):
    """(w with the weight-dropped W_hh, its mask) in training with weight_drop > 0, else (w, None).
    w: (w_ih, w_hh, b_ih, b_hh, ...any further weights of the cell, passed on unchanged); the mask is
    recorded in ``drawn`` under ``weight_hh{key}``."""
    if not (layer.training and layer.weight_drop > 0.0):
        return w, None
    mask = drawn["weight_hh" + key] = dropout_mask(layer._rng, w[1].shape, layer.weight_drop, layer.dtype)
    return (w[0], w[1] * mask) + tuple(w[2:]), mask
