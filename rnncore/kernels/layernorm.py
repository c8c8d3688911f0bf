"""Layer normalisation helpers shared by the LayerNorm LSTM and GRU kernels.

For a row v of N values (Ba, Kiros & Hinton 2016, "Layer Normalization"):

    mu = mean(v),  var = mean((v - mu)^2),  rstd = 1 / sqrt(var + eps)
    xhat = (v - mu) * rstd,  LN(v; gain, beta) = gain * xhat + beta

and its local derivative, with dxhat = gain * dy (the gradient of xhat):

    dv = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))

i.e. d LN / d v = diag(gain) * rstd * (I - 1 1^T / N - xhat xhat^T / N). The variance is the biased
one (divided by N) and is computed in two passes (mean first), as torch.nn.LayerNorm does. For N = 1
the row equals its mean: xhat = 0, LN(v) = beta exactly and dv = 0 (a degenerate but well-defined
case: the one-unit cell-state normalisation of an LSTM with H = 1).

Letters: T = steps, B = batch, I = input, H = hidden, G = gate rows (LSTM 4H, GRU 3H); N = rows.
Every function lists outputs first, then inputs, then weights.
"""

import numpy as np

from rnncore.kernels._common import accumulate_weight_grads, add_column_sums, project_input_rows
from rnncore.kernels._jit import kernel, ordered_kernel


@ordered_kernel
def ordered_dot(a, b):
    """sum_j a[j] * b[j] in one fixed order: eight interleaved partial sums, added pairwise at the end.
    a, b (n,), n >= 1. An ``ordered_kernel``: every compiled copy rounds the same, and the eight chains
    keep the vector units busy where one chain would wait on each add."""
    n = a.shape[0]
    s0 = a[0] * 0
    s1 = s2 = s3 = s4 = s5 = s6 = s7 = s0
    j = 0
    while j + 8 <= n:
        s0 += a[j] * b[j]
        s1 += a[j + 1] * b[j + 1]
        s2 += a[j + 2] * b[j + 2]
        s3 += a[j + 3] * b[j + 3]
        s4 += a[j + 4] * b[j + 4]
        s5 += a[j + 5] * b[j + 5]
        s6 += a[j + 6] * b[j + 6]
        s7 += a[j + 7] * b[j + 7]
        j += 8
    while j < n:
        s0 += a[j] * b[j]
        j += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@ordered_kernel
def normalize_rows(v, mean, rstd, eps):
    """Normalise every row of v in place: v = (v - mu) * rstd.
    v (N, G): values on entry, xhat on exit; mean, rstd (N,): outputs; eps: scalar of v's dtype.
    An ``ordered_kernel``, its sums through ``ordered_dot``: every compiled copy rounds the same."""
    N, G = v.shape
    one = v.dtype.type(1.0)
    inv_g = one / G
    ones = np.ones(G, dtype=v.dtype)
    for r in range(N):
        row = v[r]
        mu = ordered_dot(row, ones) * inv_g
        for j in range(G):
            row[j] -= mu
        rs = one / np.sqrt(ordered_dot(row, row) * inv_g + eps)
        mean[r] = mu
        rstd[r] = rs
        for j in range(G):
            row[j] *= rs


@ordered_kernel
def backward_rows(dv, dy, xhat, rstd, gain):
    """The gradient of v for y = gain * xhat + beta, xhat = LN's normalised v (written, not added).
    dv (N, G): output; dy (N, G): gradient of y; xhat (N, G); rstd (N,); gain (G,). An ``ordered_kernel``,
    its sums through ``ordered_dot``."""
    N, G = dy.shape
    inv_g = dy.dtype.type(1.0) / G
    ones = np.ones(G, dtype=dy.dtype)
    for r in range(N):
        g = dv[r]
        for j in range(G):
            g[j] = dy[r, j] * gain[j]  # kept rounded, so that g - mean(g) is exactly 0 for G = 1
        m1 = ordered_dot(g, ones) * inv_g
        m2 = ordered_dot(g, xhat[r]) * inv_g
        rs = rstd[r]
        for j in range(G):
            g[j] = rs * (g[j] - m1 - xhat[r, j] * m2)


@kernel
def add_gain_grads(dgain, dbeta, dy, xhat):
    """dgain += sum_r dy[r] * xhat[r]; dbeta += sum_r dy[r]. dgain, dbeta (G,); dy, xhat (N, G)."""
    N, G = dy.shape
    for r in range(N):
        for j in range(G):
            dgain[j] += dy[r, j] * xhat[r, j]
            dbeta[j] += dy[r, j]


@kernel
def project_normalized(xhat, mean, rstd, x, w_ih, eps, row):
    """The input projection of all steps of the window of b rows at row (``_common``), normalised row by
    row: xhat = LN's xhat of x[:, row:row+b] W_ih^T. xhat (T, b, G), mean, rstd (T, b): outputs;
    x (T, B, I); w_ih (G, I)."""
    T, b, G = xhat.shape
    project_input_rows(xhat, x, w_ih, np.zeros(G, dtype=x.dtype), row)  # the biases enter after LN
    normalize_rows(xhat.reshape(T * b, G), mean.reshape(T * b), rstd.reshape(T * b), eps)


@kernel
def backward_projections(dx, dw_ih, dw_hh, db_ih, db_hh, dgain_ih, dbeta_ih, dgain_hh, dbeta_hh, d_ax, d_ah,
                         d_rec, x, h_prev, xhat_ih, xhat_hh, rstd_ih, w_ih, gain_ih, row):
    """The after-loop part of both cells' backward (accumulating, ``+=``), for the window of b rows at row
    (``_common``). The forward was

        a_x = gain_ih * LN(x W_ih^T) + beta_ih + b_ih,   a_h = gain_hh * LN(h_prev W_hh^T) + beta_hh + b_hh

    dx (T, B, I): rows row:row+b; dw_ih (G, I); dw_hh (G, H); db_ih, db_hh, dgain_*, dbeta_* (G,)
    d_ax, d_ah (T, b, G): gradients of a_x and a_h (equal for the LSTM)
    d_rec (T, b, G): gradient of h_prev W_hh^T (the loop computes it: it feeds dh_prev)
    x (T, B, I); h_prev (T, b, H): state entering each step; xhat_ih, xhat_hh (T, b, G); rstd_ih (T, b)
    w_ih (G, I); gain_ih (G,)."""
    T, B, G = d_ax.shape
    d_ax2, d_ah2 = d_ax.reshape(T * B, G), d_ah.reshape(T * B, G)
    add_column_sums(db_ih, d_ax2)
    add_column_sums(db_hh, d_ah2)
    add_gain_grads(dgain_ih, dbeta_ih, d_ax2, xhat_ih.reshape(T * B, G))
    add_gain_grads(dgain_hh, dbeta_hh, d_ah2, xhat_hh.reshape(T * B, G))
    # forward was: a_x = gain_ih * LN(x W_ih^T) + ...; the normalisation of all steps at once
    d_in = np.empty_like(d_ax)
    backward_rows(d_in.reshape(T * B, G), d_ax2, xhat_ih.reshape(T * B, G), rstd_ih.reshape(T * B), gain_ih)
    # the biases enter after the normalisation: their gradients are the sums above, not the column sums
    # of d_in and d_rec that accumulate_weight_grads adds into its bias arguments (given scratch here)
    unused = np.zeros(G, dtype=x.dtype)
    accumulate_weight_grads(dx, dw_ih, unused, dw_hh, unused, d_in, d_rec, x, h_prev, w_ih, row)
