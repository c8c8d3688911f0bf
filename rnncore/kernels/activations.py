"""Scalar activation helpers shared by every cell's kernels.

Elman nonlinearities are passed to kernels as integer codes so one compiled kernel serves all
of them; the code is branched on outside the inner loops (see ``activate_row``).
Derivatives are written in terms of the activation's output y, which is what the forward keeps.
"""

import numpy as np

from rnncore.kernels._jit import kernel

TANH, RELU, SIGMOID, IDENTITY = 0, 1, 2, 3
NONLINEARITIES = {"tanh": TANH, "relu": RELU, "sigmoid": SIGMOID, "identity": IDENTITY}


@kernel
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@kernel
def activate_row(out, pre, act):
    """out[j] = act(pre[j]) for a row; out (H,), pre (H,). May alias."""
    n = out.shape[0]
    if act == TANH:
        for j in range(n):
            out[j] = np.tanh(pre[j])
    elif act == RELU:
        for j in range(n):
            out[j] = pre[j] if pre[j] > 0 else 0.0
    elif act == SIGMOID:
        for j in range(n):
            out[j] = 1.0 / (1.0 + np.exp(-pre[j]))
    else:
        for j in range(n):
            out[j] = pre[j]


@kernel
def activation_grad_row(out, grad, y, act):
    """out[j] = grad[j] * act'(x[j]) written with y = act(x); out, grad, y (H,)."""
    n = out.shape[0]
    if act == TANH:
        for j in range(n):
            out[j] = grad[j] * (1.0 - y[j] * y[j])
    elif act == RELU:
        for j in range(n):
            out[j] = grad[j] if y[j] > 0 else 0.0
    elif act == SIGMOID:
        for j in range(n):
            out[j] = grad[j] * y[j] * (1.0 - y[j])
    else:
        for j in range(n):
            out[j] = grad[j]
