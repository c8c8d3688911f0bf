"""Per-time-step gradients of the hidden state, dL/dh_t, from the layers' own backward.

The kernels carry dL/dh_t through their backward loop but do not return it. It can be read
without touching them, because the recurrence after step t depends on the past only through the
state s_t = h_t (and c_t for an LSTM). For a one-layer unidirectional layer and

    L = sum_t out[t] . grad_out[t] + h_n . grad_h_n (+ c_n . grad_c_n),

split L into the part that reads h_t directly, out[t] . grad_out[t], and the part L_{>t} computed
by the steps after t. Running the layer on the suffix x[t+1:] from the initial state s_t, with
the same upstream gradients, gives exactly L_{>t}; its backward's gradient for the initial state is
dL_{>t}/ds_t. Hence

    dL/dh_t = grad_out[t] + dL_{>t}/dh_t,      dL/dc_t = dL_{>t}/dc_t,

with dL_{>T}/ds_T = (grad_h_n, grad_c_n) at the last step, and dL/ds_0 the full backward's gradient
for the initial state. These are the total gradients the BPTT loop carries (the "dh" after step
t has added its output gradient), partial with respect to h_t with c_t held fixed for an LSTM.
The cost is one forward/backward of each suffix, O(T^2) steps: meant for diagnostics, not training.
"""

import numpy as np

__all__ = ["hidden_state_gradients", "gradient_norms"]


def _as_tuple(state):
    return (state,) if isinstance(state, np.ndarray) else tuple(state)


def hidden_state_gradients(layer, x, hx=None, grad_out=None, grad_state=None):
    """dL/ds_t for t = 0..T of a one-layer unidirectional RNN, LSTM or GRU.

    x: (T, B, I) (``batch_first=False``) in the layer's dtype; hx as in the layer's forward (None for
    zeros); grad_out (T, B, H) and grad_state (grad_h_n, or (grad_h_n, grad_c_n) for an LSTM, each
    (1, B, H)) define L as in the module docstring; None counts as zeros.

    Returns a tuple with one array per state (h, and c for an LSTM), each (T + 1, B, H): index 0 is
    the initial state, index t the state after step t (1-based). The layer's accumulated parameter
    gradients are left as they were; its forward cache is consumed.
    """
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError("hidden_state_gradients needs a one-layer unidirectional layer, got "
                         f"num_layers={layer.num_layers}, bidirectional={layer.bidirectional}")
    if layer.batch_first:
        raise ValueError("hidden_state_gradients takes x as (T, B, I); use a layer with batch_first=False")
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be (T, B, I), got shape {x.shape}")
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
    pack = (lambda s: s[0]) if n_states == 1 else tuple

    saved = {name: g.copy() for name, g in layer.grads.items()}
    try:
        # the states s_1 .. s_{T-1} that start each suffix (s_t: after t steps)
        states = [states0]
        for t in range(1, T):
            _, fin = layer(x[:t], pack(states0))
            states.append([np.asarray(f) for f in _as_tuple(fin)])
        out = [np.empty((T + 1, B, H), dtype=layer.dtype) for _ in range(n_states)]
        for k in range(n_states):
            out[k][T] = finals[k][0]
        out[0][T] += grad_out[T - 1]
        for t in range(T):  # suffix x[t:], starting from s_t
            layer(x[t:], pack(states[t]))
            _, d0 = layer.backward(grad_out[t:], pack(finals))
            for k, d in enumerate(_as_tuple(d0)):
                out[k][t] = d[0]
            if t > 0:
                out[0][t] += grad_out[t - 1]
    finally:
        for name, g in layer.grads.items():
            g[...] = saved[name]
    return tuple(out)


def gradient_norms(grads):
    """||dL/dh_t|| per step (T + 1,) from one (T + 1, B, H) array of ``hidden_state_gradients``
    (the Euclidean norm over the batch and the units)."""
    g = np.asarray(grads)
    return np.sqrt(np.sum(g.reshape(g.shape[0], -1) ** 2, axis=1))
