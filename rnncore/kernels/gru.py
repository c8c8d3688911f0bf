"""GRU kernels, torch.nn gate order r, z, n, in both placements of the reset gate:

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    reset_after=True  (torch.nn, cuDNN, Keras default): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    reset_after=False (the original GRU):               n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
    h' = (1 - z) * n + z * h

Letters: T = steps, B = batch, I = input, H = hidden, G = 3H. Storage layout and packed-sequence
semantics: see ``_common``. Every function lists outputs first, then inputs, then weights.
``aux`` (B, H) per step holds W_hn h + b_hn (reset_after) or r * h (reset_before): what
backward needs besides the gates. ``h_rec`` is the state the products with W_hh read: h itself, or
m * h under recurrent dropout (``masks``); the z * h term always reads h.
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
from rnncore.kernels.activations import SIGMOID, TANH, activate_sum_row, tanh
from rnncore.kernels.masks import mask_state, mask_states, prev_state_grad, zoneout_grad, zoneout_update
from rnncore.kernels.packed import given_or_pack, pack, pack_with_scratch, product_into


@inline_kernel
def blend_row(h_new, n, z, h_prev):
    """h' = (1 - z) n + z h for one row; every argument (H,)."""
    for j in range(h_new.shape[0]):
        h_new[j] = n[j] + z[j] * (h_prev[j] - n[j])


@inline_kernel
def candidate_after_row(n, aux, r, rec_n, b_n):
    """reset_after's candidate for one row: aux = W_hn h + b_hn, then n = tanh(x_n + r * aux) in place
    of the input projection x_n in n; every argument (H,)."""
    for j in range(n.shape[0]):
        hn = rec_n[j] + b_n[j]
        aux[j] = hn
        n[j] = tanh(n[j] + r[j] * hn)


@inline_kernel
def reset_after_row(h_new, a, r_rz, rec_n, b_hh, aux, h_prev):
    """reset_after's gates and new state for one row: a (3H) on entry the r, z pre-activations but for
    r_rz + b_hh and the n row's x projection with b_in, the activated r, z, n on exit; r_rz (2H): what the
    r, z rows still add (h W_hh^T in ``cell``, b_ih in ``step_joint``); rec_n (H): W_hn h; b_hh (3H,);
    aux (H): W_hn h + b_hn, kept for backward; h_new, h_prev (H,)."""
    H = h_prev.shape[0]
    activate_sum_row(a[: 2 * H], r_rz, b_hh[: 2 * H], SIGMOID)
    candidate_after_row(a[2 * H :], aux, a[:H], rec_n, b_hh[2 * H :])
    blend_row(h_new, a[2 * H :], a[H : 2 * H], h_prev)


@kernel
def pack_recurrent(w_hh, rows, reset_after, given):
    """(p_hh, p_n, tmp): the panels of ``cell``'s products, ``pack(., rows)``, and the scratch of p_hh.
    reset_after multiplies h by all of W_hh (p_n empty); reset_before multiplies h by the r, z rows and
    r * h by the n rows. w_hh (3H, H); given: p_hh made by the caller, or none (``given_or_pack``)."""
    H = w_hh.shape[1]
    if reset_after:
        p_hh, tmp = given_or_pack(given, w_hh, rows)
        return p_hh, pack(w_hh[2 * H :], 0), tmp
    p_hh, tmp = given_or_pack(given, w_hh[: 2 * H], rows)
    return p_hh, pack(w_hh[2 * H :], rows), tmp


@kernel
def cell(h_new, a, aux, h_prev, h_rec, rec, lengths, t, w_hh, p_hh, p_n, tmp, b_hh, reset_after):
    """One step for the whole batch.
    h_new (B, H): output state
    a (B, 3H): input projection of this step on entry, activated gates r, z, n on exit
    aux (B, H): W_hn h_rec + b_hn (reset_after) or r * h_rec (reset_before), kept for backward
    h_prev (B, H); h_rec (B, H): what W_hh multiplies (h_prev itself in the plain kernels)
    rec (B, 3H): scratch; w_hh (3H, H); p_hh, p_n, tmp: ``pack_recurrent(w_hh, B, reset_after, .)``;
    b_hh (3H,)."""
    B, H = h_prev.shape
    rz, z, n = slice(0, 2 * H), slice(H, 2 * H), slice(2 * H, 3 * H)
    if reset_after:
        product_into(rec, h_rec, w_hh, p_hh, tmp)
        for b in range(B):
            reset_after_row(h_new[b], a[b], rec[b, rz], rec[b, n], b_hh, aux[b], h_prev[b])
    else:
        flat = rec.reshape(B * 3 * H)  # contiguous (B, 2H) and (B, H) blocks of the scratch
        rec_rz, rec_n = flat[: B * 2 * H].reshape(B, 2 * H), flat[B * 2 * H :].reshape(B, H)
        product_into(rec_rz, h_rec, w_hh[rz], p_hh, tmp)
        for b in range(B):
            ab, ax, hr = a[b], aux[b], h_rec[b]
            activate_sum_row(ab[rz], rec_rz[b], b_hh[rz], SIGMOID)
            for j in range(H):
                ax[j] = ab[j] * hr[j]
        product_into(rec_n, aux, w_hh[n], p_n, tmp)
        for b in range(B):
            ab = a[b]
            activate_sum_row(ab[n], rec_n[b], b_hh[n], TANH)
            blend_row(h_new[b], ab[n], ab[z], h_prev[b])
    carry_inactive(h_new, h_prev, lengths, t)


@kernel
def forward_train(out, hs, gates, aux, x, lengths, h0, w_ih, w_hh, b_ih, b_hh, reset_after, reverse, col,
                  row, panels):
    """Forward that keeps what backward needs, for the window of b rows at row (``_common``).
    out (T, B, O): writes out[:, row:row+b, col:col+H]; hs (T+2, b, H): states (layout in ``_common``)
    gates (T, b, 3H): activated r, z, n; aux (T, b, H): see the module docstring
    x (T, B, I); lengths (b,) in 1..T; h0 (b, H); w_ih (3H, I); w_hh (3H, H); b_ih, b_hh (3H,)
    panels: p_hh of ``pack_recurrent`` made by the caller, or ``no_panels`` (``packed.given_or_pack``)."""
    T = x.shape[0]
    project_input_rows(gates, x, w_ih, b_ih, row)
    rec = np.empty((h0.shape[0], w_hh.shape[0]), dtype=h0.dtype)
    p_hh, p_n, tmp = pack_recurrent(w_hh, h0.shape[0], reset_after, panels)
    first, off = init_slot(T, reverse), prev_offset(reverse)
    copy_into(hs[first], h0)
    for s in range(T):
        t = time_index(s, T, reverse)
        h_prev = hs[t + off]
        cell(hs[t + 1], gates[t], aux[t], h_prev, h_prev, rec, lengths, t, w_hh, p_hh, p_n, tmp, b_hh,
             reset_after)
        write_output(out, hs[t + 1], lengths, t, col, row)


@kernel
def forward_infer(out, h_n, x, lengths, h0, w_ih, w_hh, b_ih, b_hh, reset_after, reverse, col, row, panels):
    """Forward that keeps nothing; the input projection is done a block of steps at a time.
    out (T, B, O): writes out[:, row:row+b, col:col+H]; h_n (b, H): final state; other arguments as in
    ``forward_train``."""
    T, B = x.shape[0], lengths.shape[0]
    h, h_new = h0.copy(), np.empty_like(h0)
    aux = np.empty_like(h0)
    rec = np.empty((B, w_hh.shape[0]), dtype=h0.dtype)
    p_hh, p_n, tmp = pack_recurrent(w_hh, B, reset_after, panels)
    a_block = np.empty((min(T, INFER_CHUNK), B, w_ih.shape[0]), dtype=x.dtype)
    for k in range(num_chunks(T)):
        start, n = chunk_bounds(k, T, reverse)
        a = a_block[:n]
        project_input_rows(a, x[start : start + n], w_ih, b_ih, row)
        for s in range(n):
            t = start + time_index(s, n, reverse)
            cell(h_new, a[t - start], aux, h, h, rec, lengths, t, w_hh, p_hh, p_n, tmp, b_hh, reset_after)
            write_output(out, h_new, lengths, t, col, row)
            h, h_new = h_new, h
    copy_into(h_n, h)


@kernel
def step(h_new, x, h, w_ih, w_hh, b_ih, b_hh, reset_after):
    """One generation step, nothing kept. h_new (B, H); x (B, I); h (B, H)."""
    B = x.shape[0]
    a = np.empty((1, B, w_ih.shape[0]), dtype=x.dtype)
    project_inputs(a, x.reshape(1, B, x.shape[1]), w_ih, b_ih)
    rec = np.empty_like(a[0])
    p_hh, p_n, tmp = pack_recurrent(w_hh, 0, reset_after, pack(w_hh, 0))  # one step: packing costs more
    aux = np.empty_like(h)
    lengths = np.full(B, 1, dtype=np.int64)
    cell(h_new, a[0], aux, h, h, rec, lengths, 0, w_hh, p_hh, p_n, tmp, b_hh, reset_after)


@inline_kernel
def blend_grads_row(dn, d_z, direct, dh, z, n, h_prev):
    """h = (1 - z) n + z h_prev backwards for one row: dn for n's pre-activation, d_z for z's and
    direct, the gradient for h_prev through z * h_prev; every argument (H,)."""
    one = activations.one(dh)
    for j in range(dh.shape[0]):
        dn[j] = (dh[j] - dh[j] * z[j]) * (one - n[j] * n[j])
        d_z[j] = dh[j] * (h_prev[j] - n[j]) * (z[j] - z[j] * z[j])
        direct[j] = dh[j] * z[j]


@inline_kernel
def reset_grads_row(d_r, d_via, d_out, r, v):
    """out = r * v backwards through r = sigmoid(.) for one row: d_r = d_out * v * r', d_via = d_out * r
    (reset_after: out = r * hn; reset_before: out = r * h_rec); every argument (H,)."""
    for j in range(d_r.shape[0]):
        d_r[j] = d_out[j] * v[j] * (r[j] - r[j] * r[j])
        d_via[j] = d_out[j] * r[j]


@kernel
def step_joint(h_new, x, h, w_joint, panels, b_ih, b_hh):
    """``step`` of reset_after over the weights side by side (``_common.joint_product``). h_new (B, H);
    x (B, I); h (B, H); w_joint (4H, I + H): rows r, z [W_ih | W_hh], then [W_in | 0] and [0 | W_hn]
    (``rnncore.nn.stepper.side_by_side`` with 2H shared rows); panels: ``pack(w_joint, MIN_ROWS)``;
    b_ih, b_hh (3H,)."""
    B, H = h.shape
    p = np.empty((B, 4 * H), dtype=x.dtype)  # r, z pre-activations without biases, W_in x, W_hn h
    aux = np.empty(H, dtype=x.dtype)
    joint_product(p, x, h, w_joint, panels)
    for b in range(B):
        pb = p[b]
        for j in range(2 * H, 3 * H):
            pb[j] += b_ih[j]  # the n row's x projection gets b_in
        reset_after_row(h_new[b], pb[: 3 * H], b_ih[: 2 * H], pb[3 * H :], b_hh, aux, h[b])


@inline_kernel
def gate_grads(d_rz, dr, dn_t, d_nrec, direct, via_rec, d_rh, dh, g_t, h_prev, h_rec, aux_t, lengths, t, w_hn,
               p_hn, tmp, reset_after):
    """The gate gradients of one step (active rows; padding rows are left as they are).
    d_rz (B, 2H): gradient of the r, z pre-activations, the same for the input projection and for
    h_rec W_hh^T + b_hh (output)
    dr (B, 3H): gradient of h_rec W_hh^T + b_hh (output; its n rows stay untouched for reset_before,
    so the caller zero-initialises it)
    dn_t (B, H): gradient of n's pre-activation, which is also the input projection's n rows (output)
    d_nrec (B, H): reset_after: the n rows of dr (output); reset_before: not touched (may be (B, 0))
    direct (B, H): the gradient for h_prev through z * h_prev (output)
    via_rec (B, H): the gradient for h_rec outside the GEMM over dr, through reset_before's r * h_rec
    (output; untouched for reset_after, so the caller zero-initialises it); d_rh (B, H): scratch
    dh (B, H): gradient for the step's output h; g_t (B, 3H), aux_t (B, H) from the forward
    h_prev, h_rec (B, H) as in ``cell``; w_hn (H, H); p_hn: ``pack(w_hn.T, B)`` (reset_before); tmp: a scratch
    for it (the one of ``pack_with_scratch(w_hh.T, B)``, the same shape)."""
    B, H = dh.shape
    r, z, n = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)
    for b in range(B):
        if t < lengths[b]:
            g = g_t[b]
            # forward was: h = (1 - z) * n + z * h_prev; x_n enters n's pre-activation directly
            blend_grads_row(dn_t[b], d_rz[b, z], direct[b], dh[b], g[z], g[n], h_prev[b])
            if reset_after:
                # forward was: n = tanh(x_n + r * hn), hn = W_hn h_rec + b_hn
                reset_grads_row(d_rz[b, r], d_nrec[b], dn_t[b], g[r], aux_t[b])
    if not reset_after:
        # forward was: n = tanh(x_n + (r * h_rec) W_hn^T + b_hn)
        product_into(d_rh, dn_t, w_hn.T, p_hn, tmp)
        for b in range(B):
            if t < lengths[b]:
                reset_grads_row(d_rz[b, r], via_rec[b], d_rh[b], g_t[b, r], h_rec[b])
    for b in range(B):
        if t < lengths[b]:
            drb, dzb = dr[b], d_rz[b]
            for j in range(2 * H):
                drb[j] = dzb[j]
            if reset_after:
                dnb, dnr = drb[n], d_nrec[b]
                for j in range(H):
                    dnb[j] = dnr[j]


@inline_kernel
def _weight_grads(dx, dw_ih, db_ih, dw_hh, db_hh, d_rz, dn_pre, d_nrec, x, h_rec, aux, w_ih, reset_after,
                  row):
    """The after-loop GEMMs of the GRU backward (accumulating, ``+=``), for the r, z rows and the n rows
    in turn. The input projection's gradient is [d_rz, dn_pre] and the recurrent product's [d_rz, d_nrec]
    (reset_after) or [d_rz, 0] with W_hn multiplying aux (reset_before), so neither is stored whole.
    dx (T, B, I); dw_ih (3H, I); db_ih (3H,); dw_hh (3H, H); db_hh (3H,)
    d_rz (T, b, 2H), dn_pre (T, b, H), d_nrec (T, b, H) (reset_after; (T, b, 0) otherwise): what
    ``gate_grads`` wrote at each step, zero in padding rows; x (T, B, I); h_rec (T, b, H): what W_hh
    multiplied at each step; aux (T, b, H) from the forward; w_ih (3H, I); row: the window's first row."""
    G2 = 2 * h_rec.shape[2]
    accumulate_weight_grads(dx, dw_ih[:G2], db_ih[:G2], dw_hh[:G2], db_hh[:G2], d_rz, d_rz, x, h_rec,
                            w_ih[:G2], row)
    if reset_after:
        accumulate_weight_grads(dx, dw_ih[G2:], db_ih[G2:], dw_hh[G2:], db_hh[G2:], dn_pre, d_nrec, x, h_rec,
                                w_ih[G2:], row)
    else:
        # forward was: n = tanh(... + aux W_hn^T + b_hn)
        accumulate_weight_grads(dx, dw_ih[G2:], db_ih[G2:], dw_hh[G2:], db_hh[G2:], dn_pre, dn_pre, x, aux,
                                w_ih[G2:], row)


@kernel
def backward(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, d_rz, dn_pre, d_nrec, grad_out, grad_hn, x, lengths, hs,
             gates, aux, w_ih, w_hh, reset_after, reverse, col, row, panels):
    """BPTT through one direction of one layer, window of b rows at row; every output is accumulated
    into (``+=``). dx (T, B, I): rows row:row+b; dh0 (b, H); dw_ih (3H, I); dw_hh (3H, H);
    db_ih, db_hh (3H,); zeros, the caller's workspace (padding rows stay 0): d_rz (T, b, 2H), the
    gradients of the r, z pre-activations; dn_pre (T, b, H), of n's pre-activation (the input projection's
    n rows); d_nrec (T, b, H if reset_after else 0), of the recurrent product's n rows;
    grad_out (T, B, O): gradient of out, this direction's columns at col;
    grad_hn (b, H); x (T, B, I); lengths (b,); hs (T+2, b, H), gates (T, b, 3H), aux (T, b, H) from
    ``forward_train``; panels: ``pack(w_hh.T, .)`` made by the caller, or ``no_panels``."""
    T, B = x.shape[0], lengths.shape[0]
    H = w_hh.shape[1]
    dr = np.zeros((B, 3 * H), dtype=x.dtype)  # gradient of h_rec W_hh^T + b_hh at the current step
    dh = grad_hn.copy()  # gradient flowing into h after the current step
    dh_prev = np.empty_like(dh)
    direct = np.zeros_like(dh)  # the part of dh_prev that does not pass through W_hh
    via_rec = np.zeros_like(dh)
    d_rh = np.empty_like(dh)
    w_hn = w_hh[2 * H :]
    (p_t, tmp), p_hn = given_or_pack(panels, w_hh.T, B), pack(w_hn.T, 0 if reset_after else B)
    off = prev_offset(reverse)
    for s in range(T):
        t = time_index(s, T, not reverse)  # backward visits the steps in the opposite order
        add_output_grad(dh, grad_out, lengths, t, col, row)
        h_prev = hs[t + off]
        gate_grads(d_rz[t], dr, dn_pre[t], d_nrec[t], direct, via_rec, d_rh, dh, gates[t], h_prev, h_prev,
                   aux[t], lengths, t, w_hn, p_hn, tmp, reset_after)
        # forward was: rec = h_prev W_hh^T + b_hh
        product_into(dh_prev, dr, w_hh.T, p_t, tmp)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh_prev[b, j] += direct[b, j] + via_rec[b, j]
        carry_inactive(dh_prev, dh, lengths, t)
        dh, dh_prev = dh_prev, dh
    dh0 += dh
    _weight_grads(dx, dw_ih, db_ih, dw_hh, db_hh, d_rz, dn_pre, d_nrec, x, hs[off : off + T], aux, w_ih,
                  reset_after, row)


# -- masked kernels: recurrent dropout and zoneout (definitions in ``masks``) ----------------------
@kernel
def forward_masked(out, hs, cand, gates, aux, x, lengths, h0, w_ih, w_hh, b_ih, b_hh, m, zone, reset_after,
                   reverse, col):
    """Forward with every W_hh product reading m * h_{t-1} and h_t = z_t * h_{t-1} + (1 - z_t) * h~_t
    (h~ the GRU's update); keeps what ``backward_masked`` needs.
    cand (T, B, H): candidates h~; m (B, H): recurrent-dropout mask; zone (T, B, H): zoneout masks;
    other arguments as in ``forward_train``."""
    T = x.shape[0]
    project_inputs(gates, x, w_ih, b_ih)
    rec = np.empty((h0.shape[0], w_hh.shape[0]), dtype=h0.dtype)
    p_hh, p_n, tmp = pack_recurrent(w_hh, h0.shape[0], reset_after, pack(w_hh, 0))
    h_rec = np.empty_like(h0)
    first, off = init_slot(T, reverse), prev_offset(reverse)
    copy_into(hs[first], h0)
    for s in range(T):
        t = time_index(s, T, reverse)
        mask_state(h_rec, hs[t + off], m)
        cell(cand[t], gates[t], aux[t], hs[t + off], h_rec, rec, lengths, t, w_hh, p_hh, p_n, tmp, b_hh,
             reset_after)
        zoneout_update(hs[t + 1], hs[t + off], cand[t], zone[t], lengths, t)
        write_output(out, hs[t + 1], lengths, t, col, 0)


@kernel
def backward_masked(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, d_rz, dn_pre, d_nrec, h_rec, grad_out, grad_hn, x,
                    lengths, hs, gates, aux, w_ih, w_hh, m, zone, reset_after, reverse, col):
    """BPTT of ``forward_masked`` with the same masks; outputs accumulated into as in ``backward``.
    d_rz, dn_pre, d_nrec: zeros, as in ``backward``; h_rec (T, B, H), any contents: storage for the masked
    states m * h_{t-1} (all four the caller's workspace); hs, gates, aux from ``forward_masked``; m (B, H);
    zone (T, B, H); other arguments as in ``backward``."""
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dr = np.zeros((B, 3 * H), dtype=x.dtype)  # gradient of h_rec W_hh^T + b_hh at the current step
    dh = grad_hn.copy()
    dh_prev = np.empty_like(dh)
    d_cand = np.empty_like(dh)
    direct = np.zeros_like(dh)
    via_rec = np.zeros_like(dh)
    d_rh = np.empty_like(dh)
    w_hn = w_hh[2 * H :]
    (p_t, tmp), p_hn = pack_with_scratch(w_hh.T, B), pack(w_hn.T, 0 if reset_after else B)
    off = prev_offset(reverse)
    mask_states(h_rec, hs[off : off + T], m)
    for s in range(T):
        t = time_index(s, T, not reverse)
        add_output_grad(dh, grad_out, lengths, t, col, 0)
        # forward was: h_t = z * h_prev + (1 - z) * h~
        zoneout_grad(d_cand, dh, zone[t])
        gate_grads(d_rz[t], dr, dn_pre[t], d_nrec[t], direct, via_rec, d_rh, d_cand, gates[t], hs[t + off],
                   h_rec[t], aux[t], lengths, t, w_hn, p_hn, tmp, reset_after)
        # forward was: rec = (m * h_prev) W_hh^T + b_hh
        product_into(dh_prev, dr, w_hh.T, p_t, tmp)
        for b in range(B):
            for j in range(H):
                dh_prev[b, j] += via_rec[b, j]
        prev_state_grad(dh_prev, m, direct, dh, zone[t], lengths, t)
        dh, dh_prev = dh_prev, dh
    dh0 += dh
    _weight_grads(dx, dw_ih, db_ih, dw_hh, db_hh, d_rz, dn_pre, d_nrec, x, h_rec, aux, w_ih, reset_after, 0)
