"""LSTM kernels, torch.nn gate order i, f, g, o:

    i, f, o = sigmoid(.), g = tanh(.)   of   W_ih x + b_ih + W_hh h + b_hh   (rows i | f | g | o)
    c' = f * c + i * g;   h' = o * tanh(c')

Letters: T = steps, B = batch, I = input, H = hidden, G = 4H. Storage layout and packed-sequence
semantics: see ``_common``. Every function lists outputs first, then inputs, then weights.
"""

import numpy as np

from rnncore.kernels import activations
from rnncore.kernels._common import (
    INFER_CHUNK,
    accumulate_weight_grads,
    add_output_grad,
    carry_inactive,
    chunk_bounds,
    copy_into,
    init_slot,
    joint_product,
    num_chunks,
    prev_offset,
    project_input_rows,
    project_inputs,
    time_index,
    write_output,
)
from rnncore.kernels._jit import inline_kernel, kernel
from rnncore.kernels.activations import SIGMOID, TANH, activate_sum_row, sigmoid, tanh
from rnncore.kernels.blas import add_product
from rnncore.kernels.masks import mask_state, mask_states, prev_state_grad, zoneout_grad, zoneout_update
from rnncore.kernels.packed import given_or_pack, pack_with_scratch, product_into


@inline_kernel
def update_row(c_new, h_new, i, f, g, o, c_prev):
    """c' = f * c + i * g and h' = o * tanh(c') for one row; every argument (H,)."""
    for j in range(c_new.shape[0]):
        c = f[j] * c_prev[j] + i[j] * g[j]
        c_new[j] = c
        h_new[j] = o[j] * tanh(c)


@inline_kernel
def gates_row(h_new, c_new, a, r, bias, c_prev):
    """One row's gates and new states: a (4H) on entry the pre-activations but for r + bias, the
    activated i, f, g, o on exit; r, bias (4H): the terms still to add (h W_hh^T and b_hh in ``cell``,
    b_ih and b_hh in ``step_joint``); h_new, c_new, c_prev (H,)."""
    H = c_prev.shape[0]
    i_f, g, o = slice(0, 2 * H), slice(2 * H, 3 * H), slice(3 * H, 4 * H)
    activate_sum_row(a[i_f], r[i_f], bias[i_f], SIGMOID)  # i, f
    activate_sum_row(a[g], r[g], bias[g], TANH)
    activate_sum_row(a[o], r[o], bias[o], SIGMOID)
    update_row(c_new, h_new, a[:H], a[H : 2 * H], a[g], a[o], c_prev)


@kernel
def cell(h_new, c_new, a, h_prev, c_prev, rec, lengths, t, w_hh, p_hh, tmp, b_hh):
    """One step for the whole batch.
    h_new, c_new (B, H): output states
    a (B, 4H): input projection of this step on entry, activated gates i, f, g, o on exit
    h_prev, c_prev (B, H); rec (B, 4H): scratch for h_prev W_hh^T; w_hh (4H, H); p_hh, tmp:
    ``pack_with_scratch(w_hh, B)``; b_hh (4H,)."""
    B = h_prev.shape[0]
    product_into(rec, h_prev, w_hh, p_hh, tmp)
    for b in range(B):
        gates_row(h_new[b], c_new[b], a[b], rec[b], b_hh, c_prev[b])
    carry_inactive(h_new, h_prev, lengths, t)
    carry_inactive(c_new, c_prev, lengths, t)


@kernel
def forward_train(out, hs, cs, gates, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, col, row, panels):
    """Forward that keeps what backward needs, for the window of b rows at row (``_common``); panels:
    ``pack(w_hh, .)`` made by the caller, or ``no_panels`` (``packed.given_or_pack``).
    out (T, B, O): writes out[:, row:row+b, col:col+H]; hs, cs (T+2, b, H): states (layout in ``_common``)
    gates (T, b, 4H): activated i, f, g, o; x (T, B, I); lengths (b,) in 1..T; h0, c0 (b, H)
    w_ih (4H, I); w_hh (4H, H); b_ih, b_hh (4H,)."""
    T = x.shape[0]
    project_input_rows(gates, x, w_ih, b_ih, row)
    rec = np.empty((h0.shape[0], w_hh.shape[0]), dtype=h0.dtype)
    p_hh, tmp = given_or_pack(panels, w_hh, h0.shape[0])
    first, off = init_slot(T, reverse), prev_offset(reverse)
    copy_into(hs[first], h0)
    copy_into(cs[first], c0)
    for s in range(T):
        t = time_index(s, T, reverse)
        cell(hs[t + 1], cs[t + 1], gates[t], hs[t + off], cs[t + off], rec, lengths, t, w_hh, p_hh, tmp, b_hh)
        write_output(out, hs[t + 1], lengths, t, col, row)


@kernel
def forward_infer(out, h_n, c_n, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, col, row, panels):
    """Forward that keeps nothing; the input projection is done a block of steps at a time.
    out (T, B, O): writes out[:, row:row+b, col:col+H]; h_n, c_n (b, H): final states; other arguments
    as in ``forward_train``."""
    T, B = x.shape[0], lengths.shape[0]
    h, h_new = h0.copy(), np.empty_like(h0)
    c, c_new = c0.copy(), np.empty_like(c0)
    rec = np.empty((B, w_hh.shape[0]), dtype=h0.dtype)
    p_hh, tmp = given_or_pack(panels, w_hh, B)
    a_block = np.empty((min(T, INFER_CHUNK), B, w_ih.shape[0]), dtype=x.dtype)
    for k in range(num_chunks(T)):
        start, n = chunk_bounds(k, T, reverse)
        a = a_block[:n]
        project_input_rows(a, x[start : start + n], w_ih, b_ih, row)
        for s in range(n):
            t = start + time_index(s, n, reverse)
            cell(h_new, c_new, a[t - start], h, c, rec, lengths, t, w_hh, p_hh, tmp, b_hh)
            write_output(out, h_new, lengths, t, col, row)
            h, h_new = h_new, h
            c, c_new = c_new, c
    copy_into(h_n, h)
    copy_into(c_n, c)


@kernel
def step(h_new, c_new, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One generation step, nothing kept. h_new, c_new (B, H); x (B, I); h, c (B, H)."""
    B = x.shape[0]
    a = np.empty((1, B, w_ih.shape[0]), dtype=x.dtype)
    project_inputs(a, x.reshape(1, B, x.shape[1]), w_ih, b_ih)
    rec = np.empty_like(a[0])
    p_hh, tmp = pack_with_scratch(w_hh, 0)  # one step: packing would cost what it saves
    lengths = np.full(B, 1, dtype=np.int64)
    cell(h_new, c_new, a[0], h, c, rec, lengths, 0, w_hh, p_hh, tmp, b_hh)


@inline_kernel
def cell_state_grads(dc, c_prev, i, f, g, one):
    """c = f * c_prev + i * g backwards for one element, given dc, the gradient of c: returns the
    gradients of the i, f, g pre-activations and of c_prev; one: 1 in the dtype of the arguments."""
    return dc * g * (i - i * i), dc * c_prev * (f - f * f), dc * i * (one - g * g), dc * f


@inline_kernel
def gate_grads_row(d_i, d_f, d_g, d_o, dc, dh, c_new, c_prev, i, f, g, o):
    """``gate_grads`` for one row; every argument (H,)."""
    one = activations.one(dh)
    for j in range(dh.shape[0]):
        tc = tanh(c_new[j])
        # forward was: h~ = o * tanh(c~)
        d_o[j] = dh[j] * tc * (o[j] - o[j] * o[j])
        dcj = dc[j] + dh[j] * o[j] * (one - tc * tc)
        # forward was: c~ = f * c_prev + i * g
        d_i[j], d_f[j], d_g[j], dc[j] = cell_state_grads(dcj, c_prev[j], i[j], f[j], g[j], one)


@kernel
def step_joint(h_new, c_new, x, h, c, w_joint, panels, b_ih, b_hh):
    """``step`` over the weights side by side (``_common.joint_product``). h_new, c_new (B, H); x (B, I);
    h, c (B, H); w_joint (4H, I + H) = [W_ih | W_hh]; panels: ``pack(w_joint, MIN_ROWS)``;
    b_ih, b_hh (4H,)."""
    B, H = h.shape
    a = np.empty((B, 4 * H), dtype=x.dtype)
    joint_product(a, x, h, w_joint, panels)
    for b in range(B):
        gates_row(h_new[b], c_new[b], a[b], b_ih, b_hh, c[b])


@inline_kernel
def gate_grads(d_t, dc, dh, c_new, c_prev, g_t, lengths, t):
    """The gate gradients of one step (active rows; padding rows untouched), for ``backward`` and
    ``backward_masked`` (there c~ and h~ are the candidates before zoneout).
    d_t (B, 4H): gate pre-activation gradients (output); dc (B, H): on entry the gradient for c~ from
    the c path, on exit the gradient for c_{t-1} through f * c_{t-1}; dh (B, H): gradient for h~
    c_new (B, H): c~; c_prev (B, H); g_t (B, 4H): activated gates."""
    B, H = dh.shape
    i, f, g, o = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H), slice(3 * H, 4 * H)
    for b in range(B):
        if t < lengths[b]:
            d, gb = d_t[b], g_t[b]
            gate_grads_row(d[i], d[f], d[g], d[o], dc[b], dh[b], c_new[b], c_prev[b], gb[i], gb[f], gb[g],
                           gb[o])


@kernel
def backward(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dgates, grad_out, grad_hn, grad_cn, x, lengths, hs,
             cs, gates, w_ih, w_hh, reverse, col, row, panels):
    """BPTT through one direction of one layer, window of b rows at row; every output is accumulated
    into (``+=``). dx (T, B, I): rows row:row+b; dh0, dc0 (b, H); dw_ih (4H, I); dw_hh (4H, H);
    db_ih, db_hh (4H,); dgates (T, b, 4H), zeros: storage for the gradients of the gate pre-activations
    (the caller's workspace; padding rows stay 0); grad_out (T, B, O): gradient of out, this
    direction's columns at col; grad_hn, grad_cn (b, H); x (T, B, I); lengths (b,); hs, cs (T+2, b, H),
    gates (T, b, 4H) from ``forward_train``; panels: ``pack(w_hh.T, .)`` made by the caller, or
    ``no_panels``."""
    T, B = x.shape[0], lengths.shape[0]
    dh = grad_hn.copy()  # gradient flowing into h after the current step
    dc = grad_cn.copy()  # gradient flowing into c after the current step
    dh_prev = np.empty_like(dh)
    p_t, tmp = given_or_pack(panels, w_hh.T, B)
    off = prev_offset(reverse)
    for s in range(T):
        t = time_index(s, T, not reverse)  # backward visits the steps in the opposite order
        add_output_grad(dh, grad_out, lengths, t, col, row)
        # padding rows: dh and dc pass through unchanged, gate gradients stay 0
        gate_grads(dgates[t], dc, dh, cs[t + 1], cs[t + off], gates[t], lengths, t)
        # forward was: gates = ... + h_prev W_hh^T
        product_into(dh_prev, dgates[t], w_hh.T, p_t, tmp)
        carry_inactive(dh_prev, dh, lengths, t)
        dh, dh_prev = dh_prev, dh
    dh0 += dh
    dc0 += dc
    accumulate_weight_grads(dx, dw_ih, db_ih, dw_hh, db_hh, dgates, dgates, x, hs[off : off + T], w_ih, row)


# -- masked kernels: recurrent dropout and zoneout (definitions in ``masks``) ----------------------
@kernel
def forward_masked(out, hs, cs, cand_h, cand_c, gates, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, m, zone_h,
                   zone_c, reverse, col):
    """Forward with the gates reading m * h_{t-1} in their W_hh product, candidates
    c~ = f * c_{t-1} + i * g, h~ = o * tanh(c~), and zoneout on both states:
    h_t = zh_t * h_{t-1} + (1 - zh_t) * h~, c_t = zc_t * c_{t-1} + (1 - zc_t) * c~.
    cand_h, cand_c (T, B, H): the candidates; m (B, H): recurrent-dropout mask; zone_h, zone_c (T, B, H):
    zoneout masks; other arguments as in ``forward_train``."""
    T = x.shape[0]
    project_inputs(gates, x, w_ih, b_ih)
    rec = np.empty((h0.shape[0], w_hh.shape[0]), dtype=h0.dtype)
    p_hh, tmp = pack_with_scratch(w_hh, h0.shape[0])
    h_rec = np.empty_like(h0)
    first, off = init_slot(T, reverse), prev_offset(reverse)
    copy_into(hs[first], h0)
    copy_into(cs[first], c0)
    for s in range(T):
        t = time_index(s, T, reverse)
        mask_state(h_rec, hs[t + off], m)
        cell(cand_h[t], cand_c[t], gates[t], h_rec, cs[t + off], rec, lengths, t, w_hh, p_hh, tmp, b_hh)
        zoneout_update(hs[t + 1], hs[t + off], cand_h[t], zone_h[t], lengths, t)
        zoneout_update(cs[t + 1], cs[t + off], cand_c[t], zone_c[t], lengths, t)
        write_output(out, hs[t + 1], lengths, t, col, 0)


@kernel
def backward_masked(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dgates, h_rec, grad_out, grad_hn, grad_cn, x,
                    lengths, hs, cs, cand_c, gates, w_ih, w_hh, m, zone_h, zone_c, reverse, col):
    """BPTT of ``forward_masked`` with the same masks; outputs accumulated into as in ``backward``.
    dgates (T, B, 4H), zeros, and h_rec (T, B, H), any contents: storage for the gate pre-activation
    gradients and the masked states m * h_{t-1} (the caller's workspace); hs, cs, cand_c, gates from
    ``forward_masked``; m (B, H); zone_h, zone_c (T, B, H)."""
    T, B, _ = x.shape
    dh = grad_hn.copy()
    dc = grad_cn.copy()
    dh_prev = np.empty_like(dh)
    p_t, tmp = pack_with_scratch(w_hh.T, B)
    dh_cand = np.empty_like(dh)
    dc_prev = np.empty_like(dc)
    no_direct = np.zeros_like(dh)
    no_mask = np.ones_like(dh)
    off = prev_offset(reverse)
    for s in range(T):
        t = time_index(s, T, not reverse)
        add_output_grad(dh, grad_out, lengths, t, col, 0)
        # forward was: h_t = zh * h_prev + (1 - zh) * h~,  c_t = zc * c_prev + (1 - zc) * c~
        zoneout_grad(dh_cand, dh, zone_h[t])
        zoneout_grad(dc_prev, dc, zone_c[t])
        gate_grads(dgates[t], dc_prev, dh_cand, cand_c[t], cs[t + off], gates[t], lengths, t)
        # forward was: gates = ... + (m * h_prev) W_hh^T
        product_into(dh_prev, dgates[t], w_hh.T, p_t, tmp)
        prev_state_grad(dh_prev, m, no_direct, dh, zone_h[t], lengths, t)
        prev_state_grad(dc_prev, no_mask, no_direct, dc, zone_c[t], lengths, t)
        dh, dh_prev = dh_prev, dh
        dc, dc_prev = dc_prev, dc
    dh0 += dh
    dc0 += dc
    mask_states(h_rec, hs[off : off + T], m)
    accumulate_weight_grads(dx, dw_ih, db_ih, dw_hh, db_hh, dgates, dgates, x, h_rec, w_ih, 0)


# -- variants: projection, peepholes, gate clipping, coupled input-forget gate --------------------------
# Separate kernels, so the default ones above carry no flags. Letters as above, and P = the size of h
# (proj_size with a projection, else H). Variant arguments, the same in every function below:
#   w_hr (P, H): h = W_hr (o * tanh(c)); shape (0, H) for no projection (then h = o * tanh(c), P = H)
#   peep (3H,): peephole weights, rows i | f | o; i and f see c_{t-1}, o sees c_t; shape (0,) for none
#   clip: every gate pre-activation (peephole term included) is clipped to [-clip, clip]; <= 0 for none
#   coupled: f = 1 - i (the forget rows of the weights are not used)


@inline_kernel
def clip_activate_row(v, clip, act):
    """v[j] = act(clip v[j] to [-clip, clip]) in place (sigmoid or tanh; clip <= 0: no clipping); v (n,)."""
    if clip > 0:
        for j in range(v.shape[0]):
            v[j] = min(max(v[j], -clip), clip)
    if act == SIGMOID:
        for j in range(v.shape[0]):
            v[j] = sigmoid(v[j])
    else:
        for j in range(v.shape[0]):
            v[j] = tanh(v[j])


@inline_kernel
def add_peephole_row(v, p, c):
    """v += p * c, a peephole term of one row; every argument (H,)."""
    for j in range(v.shape[0]):
        v[j] += p[j] * c[j]


@kernel
def cell_variant(h_new, c_new, m, a, pre, h_prev, c_prev, rec, lengths, t, w_hh, p_hh, tmp_hh, b_hh, w_hr,
                 p_hr, tmp_hr, peep, clip, coupled):
    """One step for the whole batch.
    h_new (B, P), c_new (B, H): output states; m (B, H): o * tanh(c') on exit
    a (B, 4H): input projection of this step on entry, activated gates i, f, g, o on exit
    pre (B, 4H) or (0, 4H): on exit the gate pre-activations before clipping (kept only when clip > 0)
    h_prev (B, P), c_prev (B, H); rec (B, 4H): scratch; w_hh (4H, P); b_hh (4H,)
    p_hh, tmp_hh and p_hr, tmp_hr: ``pack_with_scratch(w_hh, B)`` and ``pack_with_scratch(w_hr, B)``.
    The gate loops run over 0-based slices of each row (i, f, g, o), which the compiler vectorises."""
    B, H = c_prev.shape
    use_peep, keep_pre = peep.shape[0] > 0, pre.shape[0] > 0
    one = activations.one(a)
    product_into(rec, h_prev, w_hh, p_hh, tmp_hh)
    for b in range(B):
        ab, rb, cp, cn, mb = a[b], rec[b], c_prev[b], c_new[b], m[b]
        for j in range(4 * H):
            ab[j] += rb[j] + b_hh[j]
        i, f, g, o = ab[:H], ab[H : 2 * H], ab[2 * H : 3 * H], ab[3 * H :]
        if use_peep:
            add_peephole_row(i, peep[:H], cp)
            add_peephole_row(f, peep[H : 2 * H], cp)
        if keep_pre:
            pb = pre[b]
            for j in range(3 * H):
                pb[j] = ab[j]
        clip_activate_row(i, clip, SIGMOID)
        if coupled:
            for j in range(H):
                f[j] = one - i[j]
        else:
            clip_activate_row(f, clip, SIGMOID)
        clip_activate_row(g, clip, TANH)
        for j in range(H):
            cn[j] = f[j] * cp[j] + i[j] * g[j]
        if use_peep:
            add_peephole_row(o, peep[2 * H :], cn)
        if keep_pre:
            po = pre[b, 3 * H :]
            for j in range(H):
                po[j] = o[j]
        clip_activate_row(o, clip, SIGMOID)
        for j in range(H):
            mb[j] = o[j] * tanh(cn[j])
    if w_hr.shape[0] > 0:
        product_into(h_new, m, w_hr, p_hr, tmp_hr)
    else:
        copy_into(h_new, m)
    carry_inactive(h_new, h_prev, lengths, t)
    carry_inactive(c_new, c_prev, lengths, t)


@kernel
def forward_train_variant(out, hs, cs, ms, gates, pre, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep,
                          clip, coupled, reverse, col, row, panels):
    """Forward that keeps what ``backward_variant`` needs, for the window of b rows at row (``_common``);
    panels: ``pack(w_hh, .)`` made by the caller, or ``no_panels`` (``packed.given_or_pack``).
    out (T, B, O): writes out[:, row:row+b, col:col+P]; hs (T+2, b, P), cs (T+2, b, H): states (layout in
    ``_common``); ms (T, b, H): o * tanh(c) of each step; gates (T, b, 4H): activated i, f, g, o
    pre (T, b, 4H) when clip > 0, else (T, 0, 4H): pre-activations before clipping
    x (T, B, I); lengths (b,); h0 (b, P), c0 (b, H); w_ih (4H, I); w_hh (4H, P); b_ih, b_hh (4H,)."""
    T = x.shape[0]
    project_input_rows(gates, x, w_ih, b_ih, row)
    rec = np.empty((h0.shape[0], w_hh.shape[0]), dtype=h0.dtype)
    p_hh, tmp_hh = given_or_pack(panels, w_hh, h0.shape[0])
    p_hr, tmp_hr = pack_with_scratch(w_hr, h0.shape[0])
    first, off = init_slot(T, reverse), prev_offset(reverse)
    copy_into(hs[first], h0)
    copy_into(cs[first], c0)
    for s in range(T):
        t = time_index(s, T, reverse)
        cell_variant(hs[t + 1], cs[t + 1], ms[t], gates[t], pre[t], hs[t + off], cs[t + off], rec, lengths, t,
                     w_hh, p_hh, tmp_hh, b_hh, w_hr, p_hr, tmp_hr, peep, clip, coupled)
        write_output(out, hs[t + 1], lengths, t, col, row)


@kernel
def forward_infer_variant(out, h_n, c_n, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, clip,
                          coupled, reverse, col, row, panels):
    """Forward that keeps nothing (input projection a block of steps at a time).
    out (T, B, O): writes out[:, row:row+b, col:col+P]; h_n (b, P), c_n (b, H): final states; other
    arguments as in ``forward_train_variant``."""
    T, B = x.shape[0], lengths.shape[0]
    h, h_new = h0.copy(), np.empty_like(h0)
    c, c_new = c0.copy(), np.empty_like(c0)
    m = np.empty_like(c0)
    pre = np.empty((0, w_hh.shape[0]), dtype=h0.dtype)
    rec = np.empty((B, w_hh.shape[0]), dtype=h0.dtype)
    p_hh, tmp_hh = given_or_pack(panels, w_hh, B)
    p_hr, tmp_hr = pack_with_scratch(w_hr, B)
    a_block = np.empty((min(T, INFER_CHUNK), B, w_ih.shape[0]), dtype=x.dtype)
    for k in range(num_chunks(T)):
        start, n = chunk_bounds(k, T, reverse)
        a = a_block[:n]
        project_input_rows(a, x[start : start + n], w_ih, b_ih, row)
        for s in range(n):
            t = start + time_index(s, n, reverse)
            cell_variant(h_new, c_new, m, a[t - start], pre, h, c, rec, lengths, t, w_hh, p_hh, tmp_hh, b_hh,
                         w_hr, p_hr, tmp_hr, peep, clip, coupled)
            write_output(out, h_new, lengths, t, col, row)
            h, h_new = h_new, h
            c, c_new = c_new, c
    copy_into(h_n, h)
    copy_into(c_n, c)


@kernel
def step_variant(h_new, c_new, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, peep, clip, coupled):
    """One generation step, nothing kept. h_new (B, P), c_new (B, H); x (B, I); h (B, P), c (B, H)."""
    B = x.shape[0]
    a = np.empty((1, B, w_ih.shape[0]), dtype=x.dtype)
    project_inputs(a, x.reshape(1, B, x.shape[1]), w_ih, b_ih)
    rec = np.empty_like(a[0])
    pre = np.empty((0, w_ih.shape[0]), dtype=x.dtype)
    m = np.empty_like(c)
    lengths = np.full(B, 1, dtype=np.int64)
    p_hh, tmp_hh = pack_with_scratch(w_hh, 0)  # one step: packing would cost what it saves
    p_hr, tmp_hr = pack_with_scratch(w_hr, 0)
    cell_variant(h_new, c_new, m, a[0], pre, h, c, rec, lengths, 0, w_hh, p_hh, tmp_hh, b_hh, w_hr, p_hr,
                 tmp_hr, peep, clip, coupled)


@inline_kernel
def clip_grads_row(d, pre, clip):
    """The gate clip of ``clip_activate_row`` backwards for one row: d[j] = 0 where pre[j] lay outside
    [-clip, clip] (NaN included); d, pre (n,)."""
    zero = activations.one(d) * 0
    for j in range(d.shape[0]):
        d[j] = d[j] if -clip <= pre[j] <= clip else zero


@inline_kernel
def peephole_grads_row(dc, dpeep, d_a, peep, c):
    """A peephole term a += peep * c (``add_peephole_row``) backwards for one row: dc += d_a * peep and
    dpeep += d_a * c, with d_a the gradient of a; every argument (H,)."""
    for j in range(dc.shape[0]):
        dc[j] += d_a[j] * peep[j]
        dpeep[j] += d_a[j] * c[j]


@inline_kernel
def variant_gate_grads_row(d_i, d_f, d_g, d_o, dc, dm, dpeep, c_new, c_prev, i, f, g, o, pre, peep, clip,
                           coupled):
    """The gate gradients of one row of ``backward_variant``.
    d_i, d_f, d_g, d_o (H,): gradients of the gate pre-activations (outputs); dc (H,): on entry the gradient
    for c from the next step, on exit the one for c_prev; dm (H,): gradient of m = o * tanh(c); dpeep (3H,):
    accumulated into (``+=``) when there are peepholes; c_new, c_prev, i, f, g, o (H,) from the forward;
    pre (4H,): the pre-activations before clipping, or (0,) without clipping; peep (3H,) or (0,)."""
    H = dc.shape[0]
    one = activations.one(dc)
    for j in range(H):
        tc = tanh(c_new[j])
        # forward was: m = o * tanh(c),  o = sigmoid(clip(a_o + p_o * c))
        d_o[j] = dm[j] * tc * (o[j] - o[j] * o[j])
        dc[j] += dm[j] * o[j] * (one - tc * tc)
    if pre.shape[0]:
        clip_grads_row(d_o, pre[3 * H :], clip)
    if peep.shape[0]:
        peephole_grads_row(dc, dpeep[2 * H :], d_o, peep[2 * H :], c_new)
    # forward was: c = f * c_prev + i * g, with f = 1 - i when coupled
    if coupled:
        for j in range(H):
            dcj = dc[j]
            d_i[j] = dcj * (g[j] - c_prev[j]) * (i[j] - i[j] * i[j])
            d_f[j] = one - one
            d_g[j] = dcj * i[j] * (one - g[j] * g[j])
            dc[j] = dcj * f[j]
    else:
        for j in range(H):
            d_i[j], d_f[j], d_g[j], dc[j] = cell_state_grads(dc[j], c_prev[j], i[j], f[j], g[j], one)
    if pre.shape[0]:
        clip_grads_row(d_i, pre[:H], clip)
        clip_grads_row(d_f, pre[H : 2 * H], clip)
        clip_grads_row(d_g, pre[2 * H : 3 * H], clip)
    if peep.shape[0]:
        # forward was: a_i += p_i * c_prev, a_f += p_f * c_prev
        peephole_grads_row(dc, dpeep[:H], d_i, peep[:H], c_prev)
        peephole_grads_row(dc, dpeep[H : 2 * H], d_f, peep[H : 2 * H], c_prev)


@kernel
def backward_variant(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dpeep, dgates, dhs, grad_out, grad_hn,
                     grad_cn, x, lengths, hs, cs, ms, gates, pre, w_ih, w_hh, w_hr, peep, clip, coupled,
                     reverse, col, row, panels):
    """BPTT through one direction of one layer, window of b rows at row; every output is accumulated
    into (``+=``). dx (T, B, I): rows row:row+b; dh0 (b, P), dc0 (b, H); dw_ih (4H, I); dw_hh (4H, P);
    db_ih, db_hh (4H,); dw_hr like w_hr; dpeep like peep; dgates (T, b, 4H) and dhs (T, b, P) with a
    projection, else (0, b, P), zeros: storage for the gradients of the gate pre-activations and of each
    h_t (padding rows stay 0; the caller's workspace); grad_out (T, B, O): this direction's columns
    at col; grad_hn (b, P), grad_cn (b, H); x (T, B, I); lengths (b,); hs, cs, ms, gates, pre from
    ``forward_train_variant``; panels: ``pack(w_hh.T, .)`` made by the caller, or ``no_panels``."""
    T, B = x.shape[0], lengths.shape[0]
    H = cs.shape[2]
    proj, clipped = w_hr.shape[0] > 0, pre.shape[1] > 0
    dh = grad_hn.copy()  # gradient flowing into h after the current step
    dc = grad_cn.copy()  # gradient flowing into c after the current step
    dm = np.empty_like(dc)  # gradient of o * tanh(c)
    dh_prev = np.empty_like(dh)
    p_hh_t, tmp_hh = given_or_pack(panels, w_hh.T, B)
    p_hr_t, tmp_hr = pack_with_scratch(w_hr.T, B)
    off = prev_offset(reverse)
    no_pre = np.empty(0, dtype=x.dtype)
    i, f, g, o = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H), slice(3 * H, 4 * H)
    for s in range(T):
        t = time_index(s, T, not reverse)  # backward visits the steps in the opposite order
        add_output_grad(dh, grad_out, lengths, t, col, row)
        if proj:
            # forward was: h = W_hr m
            product_into(dm, dh, w_hr.T, p_hr_t, tmp_hr)
            for b in range(B):
                if t < lengths[b]:
                    for j in range(dh.shape[1]):
                        dhs[t, b, j] = dh[b, j]
        else:
            copy_into(dm, dh)
        c_t, c_prev, g_t, d_t = cs[t + 1], cs[t + off], gates[t], dgates[t]
        for b in range(B):
            if t < lengths[b]:  # padding: dh and dc pass through unchanged, gate gradients stay 0
                d, gb = d_t[b], g_t[b]
                pb = pre[t, b] if clipped else no_pre
                variant_gate_grads_row(d[i], d[f], d[g], d[o], dc[b], dm[b], dpeep, c_t[b], c_prev[b], gb[i],
                                       gb[f], gb[g], gb[o], pb, peep, clip, coupled)
        # forward was: gates = ... + h_prev W_hh^T
        product_into(dh_prev, d_t, w_hh.T, p_hh_t, tmp_hh)
        carry_inactive(dh_prev, dh, lengths, t)
        dh, dh_prev = dh_prev, dh
    dh0 += dh
    dc0 += dc
    accumulate_weight_grads(dx, dw_ih, db_ih, dw_hh, db_hh, dgates, dgates, x, hs[off : off + T], w_ih, row)
    if proj:
        P = hs.shape[2]
        add_product(dw_hr, dhs.reshape(T * B, P).T, ms.reshape(T * B, H))
