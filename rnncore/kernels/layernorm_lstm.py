"""LayerNorm LSTM kernels (Ba, Kiros & Hinton 2016, the layer-normalised LSTM), gate order i, f, g, o:

    a = LN(W_ih x; gain_ih, beta_ih) + LN(W_hh h; gain_hh, beta_hh) + b_ih + b_hh      (rows i | f | g | o)
    i, f, o = sigmoid(.), g = tanh(.)   of the rows of a
    c' = f * c + i * g;   h' = o * tanh(LN(c'; gain_c, beta_c))

LN (see ``layernorm``) normalises the whole 4H-vector of each projection with one mean and variance
(not each gate block separately), as the paper's equations and its reference code do; the cell state
is normalised over its H units. The carried state c' is the un-normalised one. With H = 1 the cell
state's normalisation is degenerate: LN(c') = beta_c exactly, so h' = o * tanh(beta_c).

Letters: T = steps, B = batch, I = input, H = hidden, G = 4H. Storage layout and packed-sequence
semantics: see ``_common``. Every function lists outputs first, then inputs, then weights.
``mean`` and ``rstd`` (3, T, B) keep the statistics of the three normalisations, [0] the input
projection, [1] the recurrent projection, [2] the cell state.
"""

import numpy as np

from rnncore.kernels import activations
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
from rnncore.kernels._jit import inline_kernel, kernel
from rnncore.kernels.activations import SIGMOID, TANH, sigmoid, tanh
from rnncore.kernels.layernorm import backward_projections, backward_rows, normalize_rows, project_normalized
from rnncore.kernels.lstm import cell_state_grads
from rnncore.kernels.packed import given_or_pack, pack_with_scratch, product_into


@inline_kernel
def normalized_gates_row(a, xi, xh, gain_ih, gain_hh, bias, act):
    """a = act(gain_ih * xi + gain_hh * xh + bias) for one block of gate rows (sigmoid or tanh); every
    argument (n,): xi, xh the normalised projections."""
    if act == SIGMOID:
        for j in range(a.shape[0]):
            a[j] = sigmoid(gain_ih[j] * xi[j] + gain_hh[j] * xh[j] + bias[j])
    else:
        for j in range(a.shape[0]):
            a[j] = tanh(gain_ih[j] * xi[j] + gain_hh[j] * xh[j] + bias[j])


@kernel
def cell(h_new, c_new, a, xh, chat, mean_h, rstd_h, mean_c, rstd_c, xi, h_prev, c_prev, lengths, t, w_hh,
         p_hh, tmp, bias, gain_ih, gain_hh, gain_c, beta_c, eps):
    """One step for the whole batch.
    h_new, c_new (B, H): output states; a (B, 4H): output, the activated gates i, f, g, o
    xh (B, 4H): output, the normalised recurrent projection; chat (B, H): output, the normalised c'
    mean_h, rstd_h, mean_c, rstd_c (B,): outputs, the statistics of xh and chat
    xi (B, 4H): the normalised input projection of this step; h_prev, c_prev (B, H)
    w_hh (4H, H); p_hh, tmp: ``pack_with_scratch(w_hh, B)``; bias (4H,): b_ih + b_hh + beta_ih + beta_hh;
    gain_ih, gain_hh (4H,); gain_c, beta_c (H,)."""
    B, H = h_prev.shape
    product_into(xh, h_prev, w_hh, p_hh, tmp)
    normalize_rows(xh, mean_h, rstd_h, eps)
    i_f, g, o = slice(0, 2 * H), slice(2 * H, 3 * H), slice(3 * H, 4 * H)  # 0-based row slices vectorise
    for b in range(B):
        ab, xib, xhb, cp, cn, chb = a[b], xi[b], xh[b], c_prev[b], c_new[b], chat[b]
        normalized_gates_row(ab[i_f], xib[i_f], xhb[i_f], gain_ih[i_f], gain_hh[i_f], bias[i_f], SIGMOID)
        normalized_gates_row(ab[g], xib[g], xhb[g], gain_ih[g], gain_hh[g], bias[g], TANH)
        normalized_gates_row(ab[o], xib[o], xhb[o], gain_ih[o], gain_hh[o], bias[o], SIGMOID)
        ib, fb, gb = ab[:H], ab[H : 2 * H], ab[g]
        for j in range(H):
            c = fb[j] * cp[j] + ib[j] * gb[j]
            cn[j] = c
            chb[j] = c
    normalize_rows(chat, mean_c, rstd_c, eps)
    for b in range(B):
        ob, hb, chb = a[b, o], h_new[b], chat[b]
        for j in range(H):
            hb[j] = ob[j] * tanh(gain_c[j] * chb[j] + beta_c[j])
    carry_inactive(h_new, h_prev, lengths, t)
    carry_inactive(c_new, c_prev, lengths, t)


@kernel
def forward_train(out, hs, cs, gates, xhat_ih, xhat_hh, chat, mean, rstd, x, lengths, h0, c0, w_ih, w_hh,
                  b_ih, b_hh, gain_ih, beta_ih, gain_hh, beta_hh, gain_c, beta_c, eps, reverse, col, row,
                  panels):
    """Forward that keeps what backward needs, for the window of b rows at row (``_common``); panels:
    ``pack(w_hh, .)`` made by the caller, or ``no_panels`` (``packed.given_or_pack``).
    out (T, B, O): writes out[:, row:row+b, col:col+H]; hs, cs (T+2, b, H): states (layout in ``_common``)
    gates (T, b, 4H): activated i, f, g, o; xhat_ih, xhat_hh (T, b, 4H): the normalised projections
    chat (T, b, H): the normalised cell states; mean, rstd (3, T, b): see the module docstring
    x (T, B, I); lengths (b,) in 1..T; h0, c0 (b, H); w_ih (4H, I); w_hh (4H, H); b_ih, b_hh (4H,)
    gain_ih, beta_ih, gain_hh, beta_hh (4H,); gain_c, beta_c (H,); eps: scalar of x's dtype."""
    T = x.shape[0]
    project_normalized(xhat_ih, mean[0], rstd[0], x, w_ih, eps, row)
    bias = b_ih + b_hh + beta_ih + beta_hh
    p_hh, tmp = given_or_pack(panels, w_hh, h0.shape[0])
    first, off = init_slot(T, reverse), prev_offset(reverse)
    copy_into(hs[first], h0)
    copy_into(cs[first], c0)
    for s in range(T):
        t = time_index(s, T, reverse)
        cell(hs[t + 1], cs[t + 1], gates[t], xhat_hh[t], chat[t], mean[1, t], rstd[1, t], mean[2, t],
             rstd[2, t], xhat_ih[t], hs[t + off], cs[t + off], lengths, t, w_hh, p_hh, tmp, bias, gain_ih,
             gain_hh, gain_c, beta_c, eps)
        write_output(out, hs[t + 1], lengths, t, col, row)


@kernel
def forward_infer(out, h_n, c_n, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, gain_ih, beta_ih, gain_hh,
                  beta_hh, gain_c, beta_c, eps, reverse, col, row, panels):
    """Forward that keeps nothing; the input projection is done a block of steps at a time.
    out (T, B, O): writes out[:, row:row+b, col:col+H]; h_n, c_n (b, H): final states; other arguments as
    in ``forward_train``."""
    T, B = x.shape[0], lengths.shape[0]
    G = w_ih.shape[0]
    h, h_new = h0.copy(), np.empty_like(h0)
    c, c_new = c0.copy(), np.empty_like(c0)
    a, xh = np.empty((B, G), dtype=x.dtype), np.empty((B, G), dtype=x.dtype)
    chat = np.empty_like(h0)
    stats = np.empty((4, B), dtype=x.dtype)
    xi_block = np.empty((min(T, INFER_CHUNK), B, G), dtype=x.dtype)
    block_stats = np.empty((2, min(T, INFER_CHUNK), B), dtype=x.dtype)
    bias = b_ih + b_hh + beta_ih + beta_hh
    p_hh, tmp = given_or_pack(panels, w_hh, B)
    for k in range(num_chunks(T)):
        start, n = chunk_bounds(k, T, reverse)
        xi = xi_block[:n]
        project_normalized(xi, block_stats[0, :n], block_stats[1, :n], x[start : start + n], w_ih, eps, row)
        for s in range(n):
            t = start + time_index(s, n, reverse)
            cell(h_new, c_new, a, xh, chat, stats[0], stats[1], stats[2], stats[3], xi[t - start], h, c,
                 lengths, t, w_hh, p_hh, tmp, bias, gain_ih, gain_hh, gain_c, beta_c, eps)
            write_output(out, h_new, lengths, t, col, row)
            h, h_new = h_new, h
            c, c_new = c_new, c
    copy_into(h_n, h)
    copy_into(c_n, c)


@kernel
def step(h_new, c_new, x, h, c, w_ih, w_hh, b_ih, b_hh, gain_ih, beta_ih, gain_hh, beta_hh, gain_c, beta_c,
         eps):
    """One generation step, nothing kept. h_new, c_new (B, H); x (B, I); h, c (B, H)."""
    B = x.shape[0]
    G = w_ih.shape[0]
    xi = np.empty((1, B, G), dtype=x.dtype)
    stats = np.empty((6, B), dtype=x.dtype)
    project_normalized(xi, stats[4:5], stats[5:6], x.reshape(1, B, x.shape[1]), w_ih, eps, 0)
    a, xh = np.empty((B, G), dtype=x.dtype), np.empty((B, G), dtype=x.dtype)
    chat = np.empty_like(h)
    lengths = np.full(B, 1, dtype=np.int64)
    bias = b_ih + b_hh + beta_ih + beta_hh
    p_hh, tmp = pack_with_scratch(w_hh, 0)  # one step: packing would cost what it saves
    cell(h_new, c_new, a, xh, chat, stats[0], stats[1], stats[2], stats[3], xi[0], h, c, lengths, 0, w_hh,
         p_hh, tmp, bias, gain_ih, gain_hh, gain_c, beta_c, eps)


@inline_kernel
def output_grads_row(d_o, dchat, dgain_c, dbeta_c, dh, o, chat, gain_c, beta_c):
    """h = o * tanh(y), y = gain_c * chat + beta_c backwards for one row: d_o, the gradient of the output
    gate's pre-activation, and dchat, of chat (outputs); dgain_c, dbeta_c accumulated into (``+=``);
    dh the gradient of h; every argument (H,). Returns the sums of dchat and of dchat * chat, which the
    gradient through chat's normalisation needs (``cell_grads_row``)."""
    one = activations.one(dh)
    m1 = one - one
    m2 = m1
    for j in range(dh.shape[0]):
        tc = tanh(gain_c[j] * chat[j] + beta_c[j])
        d_o[j] = dh[j] * tc * (o[j] - o[j] * o[j])
        dy = dh[j] * o[j] * (one - tc * tc)
        dgain_c[j] += dy * chat[j]
        dbeta_c[j] += dy
        dch = dy * gain_c[j]
        dchat[j] = dch
        m1 += dch
        m2 += dch * chat[j]
    return m1, m2


@inline_kernel
def cell_grads_row(d_i, d_f, d_g, dc, dchat, chat, c_prev, i, f, g, rstd, mean_dchat, mean_dchat_chat):
    """chat = (c - mean(c)) * rstd and c = f * c_prev + i * g backwards for one row: d_i, d_f, d_g, the
    gradients of the gate pre-activations (outputs); dc: on entry the gradient for c from the next step,
    on exit the one for c_prev; dchat from ``output_grads_row``, with the means of dchat and of
    dchat * chat; rstd: chat's 1 / standard deviation; every array (H,)."""
    one = activations.one(dc)
    for j in range(dc.shape[0]):
        dcj = dc[j] + rstd * (dchat[j] - mean_dchat - chat[j] * mean_dchat_chat)
        d_i[j], d_f[j], d_g[j], dc[j] = cell_state_grads(dcj, c_prev[j], i[j], f[j], g[j], one)


@kernel
def backward(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dgain_ih, dbeta_ih, dgain_hh, dbeta_hh, dgain_c,
             dbeta_c, dgates, d_rec, d_in, grad_out, grad_hn, grad_cn, x, lengths, hs, cs, gates, xhat_ih,
             xhat_hh, chat, rstd, w_ih, w_hh, gain_ih, gain_hh, gain_c, beta_c, reverse, col, row, panels):
    """BPTT through one direction of one layer, window of b rows at row; every output is accumulated
    into (``+=``). dx (T, B, I): rows row:row+b; dh0, dc0 (b, H); dw_ih (4H, I); dw_hh (4H, H);
    db_ih, db_hh (4H,); dgain_ih, dbeta_ih, dgain_hh, dbeta_hh (4H,); dgain_c, dbeta_c (H,)
    dgates, d_rec (T, b, 4H), zeros: storage for the gradients of the gate pre-activations a and of
    h_prev W_hh^T before its normalisation (padding rows stay 0); d_in (T, b, 4H), any contents: storage
    for the gradient of x W_ih^T (``layernorm.backward_projections``); all three the caller's workspace
    grad_out (T, B, O): gradient of out, this direction's columns at col; grad_hn, grad_cn (b, H)
    x (T, B, I); lengths (b,); hs, cs, gates, xhat_ih, xhat_hh, chat, rstd from ``forward_train``
    w_ih (4H, I); w_hh (4H, H); gain_ih, gain_hh (4H,); gain_c, beta_c (H,); panels:
    ``pack(w_hh.T, .)`` made by the caller, or ``no_panels``."""
    T, B = x.shape[0], lengths.shape[0]
    H = w_hh.shape[1]
    dh = grad_hn.copy()  # gradient flowing into h after the current step
    dc = grad_cn.copy()  # gradient flowing into c after the current step
    dh_prev = np.empty_like(dh)
    dchat = np.empty(H, dtype=x.dtype)
    p_t, tmp = given_or_pack(panels, w_hh.T, B)
    off = prev_offset(reverse)
    inv_h = activations.one(x) / H
    i, f, g, o = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H), slice(3 * H, 4 * H)
    for s in range(T):
        t = time_index(s, T, not reverse)  # backward visits the steps in the opposite order
        add_output_grad(dh, grad_out, lengths, t, col, row)
        c_prev, g_t, d_t, ch_t = cs[t + off], gates[t], dgates[t], chat[t]
        for b in range(B):
            if t < lengths[b]:  # padding: dh and dc pass through unchanged, gate gradients stay 0
                d, gb, chb = d_t[b], g_t[b], ch_t[b]
                m1, m2 = output_grads_row(d[o], dchat, dgain_c, dbeta_c, dh[b], gb[o], chb, gain_c, beta_c)
                cell_grads_row(d[i], d[f], d[g], dc[b], dchat, chb, c_prev[b], gb[i], gb[f], gb[g],
                               rstd[2, t, b], m1 * inv_h, m2 * inv_h)
        # forward was: a = ... + gain_hh * LN(h_prev W_hh^T) + ... (padding rows have d_t = 0, so d_rec = 0)
        backward_rows(d_rec[t], d_t, xhat_hh[t], rstd[1, t], gain_hh)
        product_into(dh_prev, d_rec[t], w_hh.T, p_t, tmp)
        carry_inactive(dh_prev, dh, lengths, t)
        dh, dh_prev = dh_prev, dh
    dh0 += dh
    dc0 += dc
    backward_projections(dx, dw_ih, dw_hh, db_ih, db_hh, dgain_ih, dbeta_ih, dgain_hh, dbeta_hh, d_in, dgates,
                         dgates, d_rec, x, hs[off : off + T], xhat_ih, xhat_hh, rstd[0], w_ih, gain_ih, row)
