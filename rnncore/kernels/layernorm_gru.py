"""LayerNorm GRU kernels, torch.nn gate order r, z, n and torch's reset placement (reset_after):

    a_x = LN(W_ih x; gain_ih, beta_ih) + b_ih,   a_h = LN(W_hh h; gain_hh, beta_hh) + b_hh   (rows r | z | n)
    r = sigmoid(a_x[r] + a_h[r]),  z = sigmoid(a_x[z] + a_h[z]),  n = tanh(a_x[n] + r * a_h[n])
    h' = (1 - z) * n + z * h

LN (see ``layernorm``) normalises the whole 3H-vector of each projection with one mean and variance,
as the LayerNorm LSTM does with its 4H-vector; the reset gate multiplies the normalised recurrent
n-block (with its gain, beta and b_hn), the place where torch's GRU puts it. The GRU has no cell
state, so there is no third normalisation.

Letters: T = steps, B = batch, I = input, H = hidden, G = 3H. Storage layout and packed-sequence
semantics: see ``_common``. Every function lists outputs first, then inputs, then weights.
``mean`` and ``rstd`` (2, T, B) keep the statistics of the input [0] and recurrent [1] projections;
``aux`` (T, B, H) keeps a_h[n], what backward needs besides the gates.
"""

import numpy as np

from rnncore.kernels._common import (
    INFER_CHUNK,
    add_output_grad,
    carry_inactive,
    chunk_bounds,
    copy_into,
    init_slot,
    num_chunks,
    prev_offset,
    time_index,
    write_output,
)
from rnncore.kernels._jit import kernel
from rnncore.kernels.activations import sigmoid, tanh
from rnncore.kernels.gru import blend_grads_row, reset_grads_row
from rnncore.kernels.layernorm import backward_projections, backward_rows, normalize_rows, project_normalized
from rnncore.kernels.packed import given_or_pack, pack_with_scratch, product_into


@kernel
def cell(h_new, a, aux, xh, mean_h, rstd_h, xi, h_prev, lengths, t, w_hh, p_hh, tmp, bias_x, bias_h, gain_ih,
         gain_hh, eps):
    """One step for the whole batch.
    h_new (B, H): output state; a (B, 3H): output, the activated gates r, z, n
    aux (B, H): output, a_h[n]; xh (B, 3H): output, the normalised recurrent projection
    mean_h, rstd_h (B,): outputs, its statistics; xi (B, 3H): the normalised input projection of this step
    h_prev (B, H); w_hh (3H, H); p_hh, tmp: ``pack_with_scratch(w_hh, B)``; bias_x (3H,): beta_ih + b_ih;
    bias_h (3H,): beta_hh + b_hh; gain_ih, gain_hh (3H,)."""
    B, H = h_prev.shape
    product_into(xh, h_prev, w_hh, p_hh, tmp)
    normalize_rows(xh, mean_h, rstd_h, eps)
    n_ = slice(2 * H, 3 * H)  # the n rows, as 0-based slices (which vectorise)
    gi_n, gh_n, bx_n, bh_n = gain_ih[n_], gain_hh[n_], bias_x[n_], bias_h[n_]
    for b in range(B):
        ab, xib, xhb = a[b], xi[b], xh[b]
        for j in range(2 * H):  # r, z
            ab[j] = sigmoid(gain_ih[j] * xib[j] + bias_x[j] + gain_hh[j] * xhb[j] + bias_h[j])
        r, z, nb, xin, xhn = ab[:H], ab[H : 2 * H], ab[n_], xib[n_], xhb[n_]
        auxb, hb, hp = aux[b], h_new[b], h_prev[b]
        for j in range(H):
            hn = gh_n[j] * xhn[j] + bh_n[j]
            auxb[j] = hn
            n = tanh(gi_n[j] * xin[j] + bx_n[j] + r[j] * hn)
            nb[j] = n
            hb[j] = n + z[j] * (hp[j] - n)  # (1 - z) n + z h
    carry_inactive(h_new, h_prev, lengths, t)


@kernel
def forward_train(out, hs, gates, aux, xhat_ih, xhat_hh, mean, rstd, x, lengths, h0, w_ih, w_hh, b_ih, b_hh,
                  gain_ih, beta_ih, gain_hh, beta_hh, eps, reverse, col, row, panels):
    """Forward that keeps what backward needs, for the window of b rows at row (``_common``); panels:
    ``pack(w_hh, .)`` made by the caller, or ``no_panels`` (``packed.given_or_pack``).
    out (T, B, O): writes out[:, row:row+b, col:col+H]; hs (T+2, b, H): states (layout in ``_common``)
    gates (T, b, 3H): activated r, z, n; aux (T, b, H): a_h[n]
    xhat_ih, xhat_hh (T, b, 3H): the normalised projections; mean, rstd (2, T, b): their statistics
    x (T, B, I); lengths (b,) in 1..T; h0 (b, H); w_ih (3H, I); w_hh (3H, H); b_ih, b_hh (3H,)
    gain_ih, beta_ih, gain_hh, beta_hh (3H,); eps: scalar of x's dtype."""
    T = x.shape[0]
    project_normalized(xhat_ih, mean[0], rstd[0], x, w_ih, eps, row)
    bias_x, bias_h = beta_ih + b_ih, beta_hh + b_hh
    p_hh, tmp = given_or_pack(panels, w_hh, h0.shape[0])
    first, off = init_slot(T, reverse), prev_offset(reverse)
    copy_into(hs[first], h0)
    for s in range(T):
        t = time_index(s, T, reverse)
        cell(hs[t + 1], gates[t], aux[t], xhat_hh[t], mean[1, t], rstd[1, t], xhat_ih[t], hs[t + off],
             lengths, t, w_hh, p_hh, tmp, bias_x, bias_h, gain_ih, gain_hh, eps)
        write_output(out, hs[t + 1], lengths, t, col, row)


@kernel
def forward_infer(out, h_n, x, lengths, h0, w_ih, w_hh, b_ih, b_hh, gain_ih, beta_ih, gain_hh, beta_hh, eps,
                  reverse, col, row, panels):
    """Forward that keeps nothing; the input projection is done a block of steps at a time.
    out (T, B, O): writes out[:, row:row+b, col:col+H]; h_n (b, H): final state; other arguments as in
    ``forward_train``."""
    T, B = x.shape[0], lengths.shape[0]
    G = w_ih.shape[0]
    h, h_new = h0.copy(), np.empty_like(h0)
    aux = np.empty_like(h0)
    a, xh = np.empty((B, G), dtype=x.dtype), np.empty((B, G), dtype=x.dtype)
    stats = np.empty((2, B), dtype=x.dtype)
    xi_block = np.empty((min(T, INFER_CHUNK), B, G), dtype=x.dtype)
    block_stats = np.empty((2, min(T, INFER_CHUNK), B), dtype=x.dtype)
    bias_x, bias_h = beta_ih + b_ih, beta_hh + b_hh
    p_hh, tmp = given_or_pack(panels, w_hh, B)
    for k in range(num_chunks(T)):
        start, n = chunk_bounds(k, T, reverse)
        xi = xi_block[:n]
        project_normalized(xi, block_stats[0, :n], block_stats[1, :n], x[start : start + n], w_ih, eps, row)
        for s in range(n):
            t = start + time_index(s, n, reverse)
            cell(h_new, a, aux, xh, stats[0], stats[1], xi[t - start], h, lengths, t, w_hh, p_hh, tmp,
                 bias_x, bias_h, gain_ih, gain_hh, eps)
            write_output(out, h_new, lengths, t, col, row)
            h, h_new = h_new, h
    copy_into(h_n, h)


@kernel
def step(h_new, x, h, w_ih, w_hh, b_ih, b_hh, gain_ih, beta_ih, gain_hh, beta_hh, eps):
    """One generation step, nothing kept. h_new (B, H); x (B, I); h (B, H)."""
    B = x.shape[0]
    G = w_ih.shape[0]
    xi = np.empty((1, B, G), dtype=x.dtype)
    stats = np.empty((4, B), dtype=x.dtype)
    project_normalized(xi, stats[2:3], stats[3:4], x.reshape(1, B, x.shape[1]), w_ih, eps, 0)
    a, xh = np.empty((B, G), dtype=x.dtype), np.empty((B, G), dtype=x.dtype)
    aux = np.empty_like(h)
    lengths = np.full(B, 1, dtype=np.int64)
    p_hh, tmp = pack_with_scratch(w_hh, 0)  # one step: packing would cost what it saves
    cell(h_new, a, aux, xh, stats[0], stats[1], xi[0], h, lengths, 0, w_hh, p_hh, tmp, beta_ih + b_ih,
         beta_hh + b_hh, gain_ih, gain_hh, eps)


@kernel
def backward(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, dgain_ih, dbeta_ih, dgain_hh, dbeta_hh, d_ax, d_ah, d_rec,
             d_in, grad_out, grad_hn, x, lengths, hs, gates, aux, xhat_ih, xhat_hh, rstd, w_ih, w_hh, gain_ih,
             gain_hh, reverse, col, row, panels):
    """BPTT through one direction of one layer, window of b rows at row; every output is accumulated
    into (``+=``). dx (T, B, I): rows row:row+b; dh0 (b, H); dw_ih (3H, I); dw_hh (3H, H); db_ih, db_hh,
    dgain_*, dbeta_* (3H,); d_ax, d_ah, d_rec (T, b, 3H), zeros: storage for the gradients of a_x, of a_h
    and of h_prev W_hh^T before its normalisation (padding rows stay 0); d_in (T, b, 3H), any contents:
    storage for the gradient of x W_ih^T (``layernorm.backward_projections``); all four the caller's
    workspace; grad_out (T, B, O): gradient of out, this direction's columns at col;
    grad_hn (b, H); x (T, B, I); lengths (b,); hs, gates, aux, xhat_ih, xhat_hh, rstd from
    ``forward_train``; w_ih (3H, I); w_hh (3H, H); gain_ih, gain_hh (3H,); panels: ``pack(w_hh.T, .)``
    made by the caller, or ``no_panels``."""
    T, B = x.shape[0], lengths.shape[0]
    H = w_hh.shape[1]
    dh = grad_hn.copy()  # gradient flowing into h after the current step
    dh_prev = np.empty_like(dh)
    direct = np.zeros_like(dh)  # the part of dh_prev that does not pass through W_hh
    p_t, tmp = given_or_pack(panels, w_hh.T, B)
    off = prev_offset(reverse)
    r, z, n = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)
    for s in range(T):
        t = time_index(s, T, not reverse)  # backward visits the steps in the opposite order
        add_output_grad(dh, grad_out, lengths, t, col, row)
        g_t, h_prev, dx_t, dh_t, aux_t = gates[t], hs[t + off], d_ax[t], d_ah[t], aux[t]
        for b in range(B):
            if t < lengths[b]:
                g, dxb, dhb = g_t[b], dx_t[b], dh_t[b]
                # forward was: h = (1 - z) * n + z * h_prev
                blend_grads_row(dxb[n], dxb[z], direct[b], dh[b], g[z], g[n], h_prev[b])
                # forward was: n = tanh(a_x[n] + r * a_h[n])
                reset_grads_row(dxb[r], dhb[n], dxb[n], g[r], aux_t[b])
                for j in range(2 * H):  # a_x and a_h enter r and z alike
                    dhb[j] = dxb[j]
        # forward was: a_h = gain_hh * LN(h_prev W_hh^T) + beta_hh + b_hh (padding rows: d_rec = 0)
        backward_rows(d_rec[t], dh_t, xhat_hh[t], rstd[1, t], gain_hh)
        product_into(dh_prev, d_rec[t], w_hh.T, p_t, tmp)
        for b in range(B):
            if t < lengths[b]:
                dpb, dirb = dh_prev[b], direct[b]
                for j in range(H):
                    dpb[j] += dirb[j]
        carry_inactive(dh_prev, dh, lengths, t)
        dh, dh_prev = dh_prev, dh
    dh0 += dh
    backward_projections(dx, dw_ih, dw_hh, db_ih, db_hh, dgain_ih, dbeta_ih, dgain_hh, dbeta_hh, d_in, d_ax,
                         d_ah, d_rec, x, hs[off : off + T], xhat_ih, xhat_hh, rstd[0], w_ih, gain_ih, row)
