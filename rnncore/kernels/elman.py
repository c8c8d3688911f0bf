"""Elman RNN kernels: h' = act(W_ih x + b_ih + W_hh h + b_hh), act in tanh, relu, sigmoid, identity.

Letters: T = steps, B = batch, I = input, H = hidden. Storage layout and packed-sequence
semantics: see ``_common``. Every function lists outputs first, then inputs, then weights.
"""

import numpy as np

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
    zero_inactive_rows,
)
from rnncore.kernels._jit import inline_kernel, kernel
from rnncore.kernels.activations import activate_row, activation_grad_row
from rnncore.kernels.masks import mask_state, mask_states, prev_state_grad, zoneout_grad, zoneout_update
from rnncore.kernels.packed import given_or_pack, pack_with_scratch, product_into


@inline_kernel
def sum_activate_row(h_new, a, r, bias, act):
    """h_new = act(a + r + bias) for one row, a used as scratch; every argument (H,). r, bias: h W_hh^T and
    b_hh in ``cell``, b_ih and b_hh in ``step_joint``."""
    for j in range(a.shape[0]):
        a[j] += r[j] + bias[j]
    activate_row(h_new, a, act)


@kernel
def cell(h_new, a, h_prev, rec, lengths, t, w_hh, p_hh, tmp, b_hh, act):
    """One step for the whole batch.
    h_new (B, H): output state; a (B, H): input projection of this step (used as scratch)
    h_prev (B, H); rec (B, H): scratch for h_prev W_hh^T; w_hh (H, H); p_hh, tmp:
    ``pack_with_scratch(w_hh, B)``; b_hh (H,)."""
    B = h_prev.shape[0]
    product_into(rec, h_prev, w_hh, p_hh, tmp)
    for b in range(B):
        sum_activate_row(h_new[b], a[b], rec[b], b_hh, act)
    carry_inactive(h_new, h_prev, lengths, t)


@kernel
def forward_train(out, hs, a, x, lengths, h0, w_ih, w_hh, b_ih, b_hh, act, reverse, col, row, panels):
    """Forward that keeps what backward needs, for the window of b rows at row (``_common``); panels:
    ``pack(w_hh, .)`` made by the caller, or ``no_panels`` (``packed.given_or_pack``).
    out (T, B, O): writes out[:, row:row+b, col:col+H]; hs (T+2, b, H): states (layout in ``_common``)
    a (T, b, H): storage for the pre-activations (the caller's workspace; contents overwritten)
    x (T, B, I); lengths (b,) in 1..T; h0 (b, H); w_ih (H, I); w_hh (H, H); b_ih, b_hh (H,)."""
    T, B = x.shape[0], lengths.shape[0]
    project_input_rows(a, x, w_ih, b_ih, row)
    rec = np.empty_like(h0)
    p_hh, tmp = given_or_pack(panels, w_hh, B)
    first, off = init_slot(T, reverse), prev_offset(reverse)
    copy_into(hs[first], h0)
    for s in range(T):
        t = time_index(s, T, reverse)
        cell(hs[t + 1], a[t], hs[t + off], rec, lengths, t, w_hh, p_hh, tmp, b_hh, act)
        write_output(out, hs[t + 1], lengths, t, col, row)


@kernel
def forward_infer(out, h_n, x, lengths, h0, w_ih, w_hh, b_ih, b_hh, act, reverse, col, row, panels):
    """Forward that keeps nothing; the input projection is done a block of steps at a time.
    out (T, B, O): writes out[:, row:row+b, col:col+H]; h_n (b, H): final state; other arguments as in
    ``forward_train``."""
    T, B = x.shape[0], lengths.shape[0]
    h, h_new = h0.copy(), np.empty_like(h0)
    rec = np.empty_like(h0)
    p_hh, tmp = given_or_pack(panels, w_hh, B)
    a_block = np.empty((min(T, INFER_CHUNK), B, w_ih.shape[0]), dtype=x.dtype)
    for k in range(num_chunks(T)):
        start, n = chunk_bounds(k, T, reverse)
        a = a_block[:n]
        project_input_rows(a, x[start : start + n], w_ih, b_ih, row)
        for s in range(n):
            t = start + time_index(s, n, reverse)
            cell(h_new, a[t - start], h, rec, lengths, t, w_hh, p_hh, tmp, b_hh, act)
            write_output(out, h_new, lengths, t, col, row)
            h, h_new = h_new, h
    copy_into(h_n, h)


@kernel
def step(h_new, x, h, w_ih, w_hh, b_ih, b_hh, act):
    """One generation step, nothing kept. h_new (B, H); x (B, I); h (B, H)."""
    B = x.shape[0]
    a = np.empty((1, B, w_ih.shape[0]), dtype=x.dtype)
    project_inputs(a, x.reshape(1, B, x.shape[1]), w_ih, b_ih)
    rec = np.empty_like(h)
    p_hh, tmp = pack_with_scratch(w_hh, 0)  # one step: packing would cost what it saves
    lengths = np.full(B, 1, dtype=np.int64)
    cell(h_new, a[0], h, rec, lengths, 0, w_hh, p_hh, tmp, b_hh, act)


@kernel
def step_joint(h_new, x, h, w_joint, panels, b_ih, b_hh, act):
    """``step`` over the weights side by side (``_common.joint_product``). h_new (B, H); x (B, I);
    h (B, H); w_joint (H, I + H) = [W_ih | W_hh]; panels: ``pack(w_joint, MIN_ROWS)``; b_ih, b_hh (H,)."""
    B, H = h.shape
    a = np.empty((B, H), dtype=x.dtype)
    joint_product(a, x, h, w_joint, panels)
    for b in range(B):
        sum_activate_row(h_new[b], a[b], b_ih, b_hh, act)


@kernel
def backward(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, da, grad_out, grad_hn, x, lengths, hs, w_ih, w_hh, act,
             reverse, col, row, panels):
    """BPTT through one direction of one layer, window of b rows at row; every output is accumulated
    into (``+=``). dx (T, B, I): rows row:row+b; dh0 (b, H); dw_ih (H, I); dw_hh (H, H); db_ih, db_hh (H,)
    da (T, b, H): storage for the gradients of the pre-activations (workspace; contents overwritten)
    grad_out (T, B, O): gradient of out, this direction's columns at col; grad_hn (b, H)
    x (T, B, I); lengths (b,); hs (T+2, b, H) from ``forward_train``; w_ih (H, I); w_hh (H, H)
    panels: ``pack(w_hh.T, .)`` made by the caller, or ``no_panels``."""
    T, B = x.shape[0], lengths.shape[0]
    dh = grad_hn.copy()  # gradient flowing into the state after the current step
    dh_prev = np.empty_like(dh)
    p_t, tmp = given_or_pack(panels, w_hh.T, B)
    for s in range(T):
        t = time_index(s, T, not reverse)  # backward visits the steps in the opposite order
        add_output_grad(dh, grad_out, lengths, t, col, row)
        # forward was: h_t = act(a_t)
        for b in range(B):
            activation_grad_row(da[t, b], dh[b], hs[t + 1, b], act)
        zero_inactive_rows(da[t], lengths, t)
        # forward was: a_t = ... + h_{t-1} W_hh^T
        product_into(dh_prev, da[t], w_hh.T, p_t, tmp)
        carry_inactive(dh_prev, dh, lengths, t)
        dh, dh_prev = dh_prev, dh
    dh0 += dh
    off = prev_offset(reverse)
    accumulate_weight_grads(dx, dw_ih, db_ih, dw_hh, db_hh, da, da, x, hs[off : off + T], w_ih, row)


# -- masked kernels: recurrent dropout and zoneout (definitions in ``masks``) ----------------------
@kernel
def forward_masked(out, hs, cand, a, x, lengths, h0, w_ih, w_hh, b_ih, b_hh, m, zone, act, reverse, col):
    """Forward with h~_t = act(W_ih x_t + b_ih + W_hh (m * h_{t-1}) + b_hh) and
    h_t = z_t * h_{t-1} + (1 - z_t) * h~_t; keeps what ``backward_masked`` needs.
    out, hs, x, lengths, h0 and the weights as in ``forward_train``; cand (T, B, H): candidates h~
    a (T, B, H): storage for the input projections (any contents; the caller's workspace)
    m (B, H): recurrent-dropout mask; zone (T, B, H): zoneout masks."""
    T, B, _ = x.shape
    project_inputs(a, x, w_ih, b_ih)
    rec = np.empty_like(h0)
    p_hh, tmp = pack_with_scratch(w_hh, B)
    h_rec = np.empty_like(h0)
    first, off = init_slot(T, reverse), prev_offset(reverse)
    copy_into(hs[first], h0)
    for s in range(T):
        t = time_index(s, T, reverse)
        mask_state(h_rec, hs[t + off], m)
        cell(cand[t], a[t], h_rec, rec, lengths, t, w_hh, p_hh, tmp, b_hh, act)
        zoneout_update(hs[t + 1], hs[t + off], cand[t], zone[t], lengths, t)
        write_output(out, hs[t + 1], lengths, t, col, 0)


@kernel
def backward_masked(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, da, h_rec, grad_out, grad_hn, x, lengths, hs, cand,
                    w_ih, w_hh, m, zone, act, reverse, col):
    """BPTT of ``forward_masked`` with the same masks; outputs accumulated into as in ``backward``.
    da, h_rec (T, B, H): storage for the pre-activation gradients and the masked states m * h_{t-1} (any
    contents; the caller's workspace); hs, cand (from ``forward_masked``), m (B, H), zone (T, B, H); other
    arguments as in ``backward``."""
    T, B, _ = x.shape
    dh = grad_hn.copy()
    dh_prev = np.empty_like(dh)
    p_t, tmp = pack_with_scratch(w_hh.T, B)
    d_cand = np.empty_like(dh)
    no_direct = np.zeros_like(dh)
    for s in range(T):
        t = time_index(s, T, not reverse)
        add_output_grad(dh, grad_out, lengths, t, col, 0)
        # forward was: h_t = z * h_prev + (1 - z) * h~
        zoneout_grad(d_cand, dh, zone[t])
        # forward was: h~ = act(a_t)
        for b in range(B):
            activation_grad_row(da[t, b], d_cand[b], cand[t, b], act)
        zero_inactive_rows(da[t], lengths, t)
        # forward was: a_t = ... + (m * h_{t-1}) W_hh^T
        product_into(dh_prev, da[t], w_hh.T, p_t, tmp)
        prev_state_grad(dh_prev, m, no_direct, dh, zone[t], lengths, t)
        dh, dh_prev = dh_prev, dh
    dh0 += dh
    off = prev_offset(reverse)
    mask_states(h_rec, hs[off : off + T], m)
    accumulate_weight_grads(dx, dw_ih, db_ih, dw_hh, db_hh, da, da, x, h_rec, w_ih, 0)
