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

The row helpers are compiled as part of their callers (``inline_kernel``), so that a process that
compiled the kernels and one that loaded them from the cache run the same code (``_jit``).

Letters: T = steps, B = batch, I = input, H = hidden, G = gate rows (LSTM 4H, GRU 3H); N = rows.
Every function lists outputs first, then inputs, then weights.
"""

import numpy as np

from rnncore.kernels._common import accumulate_weight_grads, add_column_sums, project_input_rows
from rnncore.kernels._jit import inline_kernel, kernel


@inline_kernel
def normalize_rows(v, mean, rstd, eps):
    """Normalise every row of v in place: v = (v - mu) * rstd.
    v (N, G): values on entry, xhat on exit; mean, rstd (N,): outputs; eps: scalar of v's dtype."""
    N, G = v.shape
    one = v.dtype.type(1.0)
    inv_g = one / G
    for r in range(N):
        row = v[r]
        s = row[0] * 0
        for j in range(G):
            s += row[j]
        mu = s * inv_g
        q = s * 0
        for j in range(G):
            d = row[j] - mu
            q += d * d
        rs = one / np.sqrt(q * inv_g + eps)
        mean[r] = mu
        rstd[r] = rs
        for j in range(G):
            row[j] = (row[j] - mu) * rs


@inline_kernel
def backward_rows(dv, dy, xhat, rstd, gain):
    """The gradient of v for y = gain * xhat + beta, xhat = LN's normalised v (written, not added).
    dv (N, G): output; dy (N, G): gradient of y; xhat (N, G); rstd (N,); gain (G,)."""
    N, G = dy.shape
    inv_g = dy.dtype.type(1.0) / G
    for r in range(N):
        m1 = dy[r, 0] * 0
        m2 = m1
        for j in range(G):
            g = dy[r, j] * gain[j]
            dv[r, j] = g  # kept rounded, so that g - mean(g) is exactly 0 for G = 1 (no fused multiply-add)
            m1 += g
            m2 += g * xhat[r, j]
        m1 *= inv_g
        m2 *= inv_g
        rs = rstd[r]
        for j in range(G):
            dv[r, j] = rs * (dv[r, j] - m1 - xhat[r, j] * m2)


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


@inline_kernel
def backward_projections(dx, dw_ih, dw_hh, db_ih, db_hh, dgain_ih, dbeta_ih, dgain_hh, dbeta_hh, d_in, d_ax,
                         d_ah, d_rec, x, h_prev, xhat_ih, xhat_hh, rstd_ih, w_ih, gain_ih, row):
    """The after-loop part of both cells' backward (accumulating, ``+=``), for the window of b rows at row
    (``_common``). The forward was

        a_x = gain_ih * LN(x W_ih^T) + beta_ih + b_ih,   a_h = gain_hh * LN(h_prev W_hh^T) + beta_hh + b_hh

    dx (T, B, I): rows row:row+b; dw_ih (G, I); dw_hh (G, H); db_ih, db_hh, dgain_*, dbeta_* (G,)
    d_in (T, b, G): storage for the gradient of x W_ih^T (any contents on entry; the caller's workspace)
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
    backward_rows(d_in.reshape(T * B, G), d_ax2, xhat_ih.reshape(T * B, G), rstd_ih.reshape(T * B), gain_ih)
    # the biases enter after the normalisation: their gradients are the sums above, not the column sums
    # of d_in and d_rec that accumulate_weight_grads adds into its bias arguments (given scratch here)
    unused = np.zeros(G, dtype=x.dtype)
    accumulate_weight_grads(dx, dw_ih, unused, dw_hh, unused, d_in, d_rec, x, h_prev, w_ih, row)
