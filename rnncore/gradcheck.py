"""Central finite differences in float64: the gradient reference used by the tests and ``verify``.

Losses are random projections of the outputs, L = sum(out * G_out) + sum(h_n * G_h) (+ c_n),
with G drawn from a normal distribution: all-ones projections hide transposes and sign errors.
The numerical side runs the forward under ``no_grad()``, i.e. through the inference kernels, so a
check also compares the inference path with the training path.
"""

from dataclasses import dataclass

import numpy as np

from rnncore.nn.module import no_grad


@dataclass(frozen=True)
class GradCheck:
    """One compared gradient. ``max_rel_error`` is max|analytic - numeric| over the array divided
    by the largest magnitude of either (so it is scale-free and safe for zero entries)."""

    name: str
    max_abs_error: float
    max_rel_error: float
    tolerance: float

    @property
    def passed(self):
        return bool(self.max_rel_error <= self.tolerance)

    def __str__(self):
        status = "ok  " if self.passed else "FAIL"
        return f"{status} {self.name:<28} max abs {self.max_abs_error:.2e}  max rel {self.max_rel_error:.2e}"


def numerical_gradient(loss, array, eps=1e-6):
    """d loss() / d array by central differences, perturbing ``array`` in place (restored after)."""
    if array.dtype != np.float64:
        raise TypeError(f"finite differences need float64 arrays, got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError("array must be C-contiguous so it can be perturbed in place")
    flat = array.reshape(-1)
    grad = np.zeros(flat.size)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        plus = loss()
        flat[i] = original - eps
        minus = loss()
        flat[i] = original
        grad[i] = (plus - minus) / (2.0 * eps)
    return grad.reshape(array.shape)


def compare(name, analytic, numeric, tolerance):
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if analytic.shape != numeric.shape:
        raise ValueError(f"{name}: analytic gradient has shape {analytic.shape}, numeric {numeric.shape}")
    err = float(np.max(np.abs(analytic - numeric))) if analytic.size else 0.0
    scale = max(float(np.max(np.abs(numeric), initial=0.0)), float(np.max(np.abs(analytic), initial=0.0)),
                1e-300)
    return GradCheck(name, err, err / scale if err else 0.0, tolerance)


def check_gradients(loss, wrt, eps=1e-6, tolerance=1e-6):
    """Compare analytic gradients with central differences of ``loss()``.
    wrt: {name: (array perturbed in place, analytic gradient)}."""
    return [compare(name, analytic, numerical_gradient(loss, array, eps), tolerance)
            for name, (array, analytic) in wrt.items()]


def _as_list(state):
    return [state] if isinstance(state, np.ndarray) else list(state)


def check_recurrent(layer, x, hx=None, lengths=None, seed=0, eps=1e-6, tolerance=1e-6, mask_seed=None):
    """Check every gradient of a float64 RNN/LSTM/GRU layer (x, the given initial states, every
    parameter) against central differences. Returns a list of ``GradCheck``.
    mask_seed: for a layer that draws masks (dropout, zoneout, weight-drop in training mode), its
    generator is restarted from this seed before every forward, so every evaluation of the loss
    sees the masks of the analytic pass."""
    if layer.dtype != np.float64:
        raise TypeError(f"gradient checks need a float64 layer, got {layer.dtype}")
    if layer.samples_masks and mask_seed is None:
        raise ValueError("the layer draws new dropout/zoneout masks on every call: pass mask_seed to fix "
                         "them, or call layer.eval() before a gradient check")
    x = np.array(x, dtype=np.float64, order="C")
    states = None if hx is None else [np.array(s, dtype=np.float64, order="C") for s in _as_list(hx)]
    pack = (lambda s: s[0]) if len(layer.state_names) == 1 else tuple

    def run():
        if mask_seed is not None:
            layer.reseed(mask_seed)
        return layer(x, None if states is None else pack(states), lengths)

    out, finals = run()
    rng = np.random.default_rng(seed)
    g_out = rng.standard_normal(out.shape)
    g_finals = [rng.standard_normal(f.shape) for f in _as_list(finals)]

    def loss():
        with no_grad():
            o, f = run()
        return float(np.sum(o * g_out) + sum(np.sum(a * g) for a, g in zip(_as_list(f), g_finals)))

    layer.zero_grad()
    run()
    dx, d_states = layer.backward(g_out, pack(g_finals))
    wrt = {"x": (x, dx)}
    if states is not None:
        for name, s, d in zip(layer.state_names, states, _as_list(d_states)):
            wrt[f"{name}0"] = (s, d)
    grads = layer.grads
    for name, value in layer.named_parameters():
        wrt[name] = (value, grads[name].copy())
    return check_gradients(loss, wrt, eps, tolerance)
