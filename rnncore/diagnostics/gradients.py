"""Per-time-step gradients of the hidden state, dL/dh_t, and Jacobian norms ||dh_T/ds_t||, from the
layers' own explicit backward (no other differentiation).

The kernels carry dL/dh_t through their backward loop but do not return it. It can be read without
touching them, because the recurrence after step t depends on the past only through the state
s_t = h_t (and c_t for an LSTM). For a one-layer unidirectional layer and

    L = sum_t out[t - 1] . grad_out[t - 1] + h_n . grad_h_n (+ c_n . grad_c_n),   t = 1..T

(0-based arrays: out[t - 1] = h_t, the state after step t), write L_{>t} for the part computed by
the steps after t (everything but the output terms of steps 1..t). Running the layer for the one
step t from s_{t-1}, with output gradient grad_out[t - 1] and final-state gradient dL_{>t}/ds_t,
its backward returns dL_{>t-1}/ds_{t-1}. Chaining these one-step backward passes from t = T down
to 1, starting from dL_{>T}/ds_T = (grad_h_n, grad_c_n), gives every per-step gradient in O(T)
steps (T one-step forwards for the states s_t, then T one-step forward and backward pairs), and

    dL/dh_t = grad_out[t - 1] + dL_{>t}/dh_t,      dL/dc_t = dL_{>t}/dc_t.

These are the total gradients the BPTT loop carries (the "dh" after step t has added its output
gradient), partial with respect to h_t with c_t held fixed for an LSTM.

Jacobians: with L = h_T . e_j the chain gives row j of J_t = dh_T/ds_t. ``state_jacobian_norms``
puts the H unit vectors e_j into the batch (each sequence repeated H times), so one chain gives the
whole H x n matrix J_t for every t (n = H, or 2H for an LSTM's (h, c)), and reports its Frobenius
norm and its spectral norm (largest singular value) at every t.
"""

import numpy as np

from rnncore.nn.module import no_grad

__all__ = ["VERDICT_THRESHOLDS", "flow_verdict", "gradient_norms", "hidden_state_gradients",
           "state_jacobian_norms"]

# spectral norm of dh_T/ds_(T-k) below which the gradient has vanished, above which it explodes
VERDICT_THRESHOLDS = {"vanish": 1e-3, "explode": 1e2}


def _as_tuple(state):
    return (state,) if isinstance(state, np.ndarray) else tuple(state)


def _check_layer(layer, x, name):
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError(f"{name} needs a one-layer unidirectional layer, got "
                         f"num_layers={layer.num_layers}, bidirectional={layer.bidirectional}")
    if layer.batch_first:
        raise ValueError(f"{name} takes x as (T, B, I); use a layer with batch_first=False")
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be (T, B, I), got shape {x.shape}")
    return x


def _backward_chain(layer, x, states0, grad_out, finals, repeat=1):
    """Yields (t, [dL_{>t}/ds_t per state, each (B * repeat, H)]) for t = T, T-1, ..., 0.

    states0, finals: lists of (1, B, H) / (1, B * repeat, H) arrays; grad_out (T, B * repeat, H).
    With ``repeat`` each sequence of x is run ``repeat`` times side by side in the backward chain
    (row b * repeat + r), its states computed once. The layer must be in eval mode (no dropout);
    its parameter gradients are restored by the caller."""
    T = x.shape[0]
    pack = (lambda s: s[0]) if len(states0) == 1 else tuple
    states = [pack(states0)]
    with no_grad():
        for t in range(T - 1):  # s_1 .. s_{T-1}
            _, fin = layer.step(x[t], states[-1])
            states.append(fin)

    def rep(a):
        return a if repeat == 1 else np.ascontiguousarray(np.repeat(a, repeat, axis=1))

    d = [np.ascontiguousarray(f) for f in finals]
    yield T, [g[0] for g in d]
    for t in range(T, 0, -1):  # the step from s_{t-1} to s_t reads x[t - 1]
        s = states[t - 1]
        layer(rep(x[t - 1:t]), rep(s) if isinstance(s, np.ndarray) else tuple(rep(a) for a in s))
        _, d0 = layer.backward(grad_out[t - 1:t], pack(d))
        d = list(_as_tuple(d0))
        yield t - 1, [g[0] for g in d]


def _prepare(layer, x, hx, grad_out, grad_state):
    T, B, _ = x.shape
    H, n_states = layer.hidden_size, len(layer.state_names)
    zeros = np.zeros((1, B, H), dtype=layer.dtype)
    grad_out = np.zeros((T, B, H), dtype=layer.dtype) if grad_out is None else np.asarray(grad_out,
                                                                                          layer.dtype)
    if grad_out.shape != (T, B, H):
        raise ValueError(f"grad_out must have shape {(T, B, H)}, got {grad_out.shape}")
    finals = [zeros] * n_states if grad_state is None else [zeros if g is None else np.asarray(g, layer.dtype)
                                                            for g in _as_tuple(grad_state)]
    states0 = [zeros] * n_states if hx is None else [zeros if s is None else np.asarray(s, layer.dtype)
                                                     for s in _as_tuple(hx)]
    for name, arrays in (("grad_state", finals), ("hx", states0)):
        if len(arrays) != n_states or any(a.shape != (1, B, H) for a in arrays):
            raise ValueError(f"{name} must be {n_states} array(s) of shape {(1, B, H)}, got "
                             f"{[a.shape for a in arrays]}")
    return grad_out, finals, states0


class _restored:
    """Keeps a layer's parameter gradients and training mode as they were; eval mode inside."""

    def __init__(self, layer):
        self.layer = layer

    def __enter__(self):
        self.saved = {name: g.copy() for name, g in self.layer.grads.items()}
        self.training = self.layer.training
        self.layer.eval()

    def __exit__(self, *exc):
        for name, g in self.layer.grads.items():
            g[...] = self.saved[name]
        self.layer.train(self.training)


def hidden_state_gradients(layer, x, hx=None, grad_out=None, grad_state=None):
    """dL/ds_t for t = 0..T of a one-layer unidirectional RNN, LSTM or GRU, in O(T) steps.

    x: (T, B, I) (``batch_first=False``) in the layer's dtype; hx as in the layer's forward (None for
    zeros); grad_out (T, B, H) and grad_state (grad_h_n, or (grad_h_n, grad_c_n) for an LSTM, each
    (1, B, H)) define L as in the module docstring; None counts as zeros.

    Returns a tuple with one array per state (h, and c for an LSTM), each (T + 1, B, H): index 0 is
    the initial state, index t the state after step t (1-based). The layer's accumulated parameter
    gradients and training mode are left as they were; its forward cache is consumed.
    """
    x = _check_layer(layer, x, "hidden_state_gradients")
    T, B, _ = x.shape
    grad_out, finals, states0 = _prepare(layer, x, hx, grad_out, grad_state)
    out = [np.empty((T + 1, B, layer.hidden_size), dtype=layer.dtype) for _ in finals]
    with _restored(layer):
        for t, d in _backward_chain(layer, x, states0, grad_out, finals):
            for k, g in enumerate(d):
                out[k][t] = g
            if t > 0:
                out[0][t] += grad_out[t - 1]
    return tuple(out)


def gradient_norms(grads):
    """||dL/dh_t|| per step (T + 1,) from one (T + 1, B, H) array of ``hidden_state_gradients``
    (the Euclidean norm over the batch and the units)."""
    g = np.asarray(grads)
    return np.sqrt(np.sum(g.reshape(g.shape[0], -1) ** 2, axis=1))


def _largest_singular_values(J):
    """sigma_max of each (H, n) matrix of J (B, H, n): the square root of the largest eigenvalue of
    the H x H Gram matrix J J^T (2-3x faster than an SVD here, and as accurate for sigma_max)."""
    gram = J @ J.transpose(0, 2, 1)
    return np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[:, -1], 0.0))


def state_jacobian_norms(layer, x, hx=None):
    """Norms of J_t = dh_T/ds_t, t = 0..T, for each sequence of a one-layer unidirectional layer.

    s_t is the whole state after t steps: h_t, or (h_t, c_t) for an LSTM (then J_t = [dh_T/dh_t,
    dh_T/dc_t] is H x 2H). One backward chain over a batch of B * H rows (see the module docstring).
    Returns a dict of (T + 1, B) float64 arrays: ``spectral`` (largest singular value of J_t),
    ``frobenius`` (||J_t||_F) and ``spectral_h`` (largest singular value of dh_T/dh_t alone, c_t held
    fixed; the same as ``spectral`` without a cell state). J_T = [I, 0], so its norms are 1 and sqrt(H).
    """
    x = _check_layer(layer, x, "state_jacobian_norms")
    T, B, _ = x.shape
    H, n_states = layer.hidden_size, len(layer.state_names)
    _, _, states0 = _prepare(layer, x, hx, None, None)
    eye = np.ascontiguousarray(np.tile(np.eye(H, dtype=layer.dtype), (B, 1))[None])
    finals = [eye] + [np.zeros_like(eye)] * (n_states - 1)
    grad_out = np.zeros((T, B * H, H), dtype=layer.dtype)
    result = {key: np.empty((T + 1, B)) for key in ("spectral", "frobenius", "spectral_h")}
    with _restored(layer):
        for t, d in _backward_chain(layer, x, states0, grad_out, finals, repeat=H):  # row b*H + j: e_j
            blocks = [g.reshape(B, H, H).astype(np.float64) for g in d]  # [b, j, :] = d h_T[j] / d s_t
            J = np.concatenate(blocks, axis=2)
            result["spectral"][t] = _largest_singular_values(J)
            result["frobenius"][t] = np.sqrt(np.sum(J ** 2, axis=(1, 2)))
            result["spectral_h"][t] = (result["spectral"][t] if n_states == 1
                                       else _largest_singular_values(blocks[0]))
    return result


def flow_verdict(gain, thresholds=None):
    """A verdict on the gradient flow from g(k) = ||dh_T/ds_(T-k)||_2, k = 0..K (g(0) = 1).

    ``gain``: (K + 1,) values, or (T + 1, B) from ``state_jacobian_norms(...)["spectral"]`` (then the
    median over the sequences, reversed so that k counts steps back from T). Thresholds (default
    ``VERDICT_THRESHOLDS``): ``exploding`` if g(k) exceeds ``explode`` for some k (k = the first such);
    else ``vanishing`` if g(k) falls below ``vanish`` (k = the first such); else ``healthy``.
    Returns a dict: verdict, k, line (the verdict with its evidence), rate (the per-step factor
    exp(slope) of a least-squares fit of log g(k) over the k = 1..K where g(k) > 1e-30), gain (the
    (K + 1,) curve used), thresholds.
    """
    th = dict(VERDICT_THRESHOLDS, **(thresholds or {}))
    g = np.asarray(gain, dtype=np.float64)
    if g.ndim == 2:
        g = np.median(g, axis=1)[::-1]
    if g.ndim != 1 or g.size < 2:
        raise ValueError(f"gain must be (K + 1,) with K >= 1 or (T + 1, B), got shape {np.shape(gain)}")
    K = g.size - 1
    ks = np.arange(1, K + 1)
    fit = g[1:] > 1e-30  # leave out what underflowed to (almost) zero
    if np.count_nonzero(fit) >= 2:
        rate = float(np.exp(np.polyfit(ks[fit], np.log(g[1:][fit]), 1)[0]))
    else:
        rate = float(g[1] / g[0]) if g[0] > 0 else float("nan")
    evidence = f"g(1) = {g[1]:.3g}, g({K}) = {g[K]:.3g}, max {g.max():.3g}; fitted factor {rate:.3g} per step"
    above = np.nonzero(g > th["explode"])[0]
    below = np.nonzero(g < th["vanish"])[0]
    if above.size:
        k = int(above[0])
        verdict = "exploding"
        line = (f"exploding: g(k) = ||dh_T/ds_(T-k)||_2 exceeds {th['explode']:g} from k = {k} "
                f"(g({k}) = {g[k]:.3g}; {evidence})")
    elif below.size:
        k = int(below[0])
        verdict = "vanishing"
        line = (f"vanishing after ~{k} steps: g(k) = ||dh_T/ds_(T-k)||_2 falls below {th['vanish']:g} at "
                f"k = {k} (g({k}) = {g[k]:.3g}; {evidence})")
    else:
        k = None
        verdict = "healthy"
        line = (f"healthy: g(k) = ||dh_T/ds_(T-k)||_2 stays within [{th['vanish']:g}, {th['explode']:g}] "
                f"for k <= {K} ({evidence})")
    return {"verdict": verdict, "k": k, "line": line, "rate": rate, "gain": g, "thresholds": th}
