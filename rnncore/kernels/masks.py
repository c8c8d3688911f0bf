"""Pieces shared by the masked (regularised) kernels of every cell: recurrent dropout and zoneout.

Letters: T = steps, B = batch, H = hidden. Definitions, for the active rows of step t:

    recurrent dropout:  h_rec = m * h_{t-1}, m (B, H) fixed for the whole sequence; every product
                        with W_hh reads h_rec instead of h_{t-1} (the direct paths, e.g. the GRU's
                        z * h_{t-1}, read h_{t-1})
    zoneout:            h_t = z_t * h_{t-1} + (1 - z_t) * h~_t, z_t (B, H) the mask of step t
                        (0/1 in training, the rate itself in eval mode), h~_t the cell's candidate

Padding steps carry the state unchanged (``_common``). Backward reverses exactly these lines with
the masks the forward used; the default kernels never call anything here.
"""

from rnncore.kernels._jit import kernel
from rnncore.kernels.activations import one


@kernel
def mask_state(h_rec, h, m):
    """h_rec = m * h; h_rec, h, m (B, H)."""
    B, H = h.shape
    for b in range(B):
        for j in range(H):
            h_rec[b, j] = m[b, j] * h[b, j]


@kernel
def mask_states(h_rec, hs, m):
    """h_rec[t] = m * hs[t] for every step: the states the recurrent products read, for the dW_hh
    GEMM. h_rec, hs (T, B, H); m (B, H)."""
    for t in range(hs.shape[0]):
        mask_state(h_rec[t], hs[t], m)


@kernel
def zoneout_update(h_new, h_prev, cand, z, lengths, t):
    """h_new = z * h_prev + (1 - z) * cand for active rows, h_prev for padding.
    h_new, h_prev, cand, z (B, H). A mask of exactly 1 or 0 selects (fastmath may reassociate the
    sum into cand + z * (h_prev - cand), which would not keep h_prev exactly)."""
    B, H = h_new.shape
    unit = one(h_new)
    for b in range(B):
        if t < lengths[b]:
            for j in range(H):
                zj = z[b, j]
                mixed = zj * h_prev[b, j] + (unit - zj) * cand[b, j]
                h_new[b, j] = h_prev[b, j] if zj == unit else (cand[b, j] if zj == 0 else mixed)
        else:
            for j in range(H):
                h_new[b, j] = h_prev[b, j]


@kernel
def zoneout_grad(d_cand, dh, z):
    """forward was: h = z * h_prev + (1 - z) * cand; d_cand = (1 - z) * dh. d_cand, dh, z (B, H)."""
    B, H = dh.shape
    unit = one(dh)
    for b in range(B):
        for j in range(H):
            d_cand[b, j] = (unit - z[b, j]) * dh[b, j]


@kernel
def prev_state_grad(dh_prev, m, direct, dh, z, lengths, t):
    """The gradient for h_{t-1}. On entry dh_prev holds the gradient for h_rec = m * h_{t-1}; on exit,
    for active rows, m * dh_prev + direct + z * dh (direct: the cell's own paths from h_{t-1} that
    bypass W_hh; z * dh: zoneout's), and dh for padding rows. dh_prev, m, direct, dh, z (B, H)."""
    B, H = dh.shape
    for b in range(B):
        if t < lengths[b]:
            for j in range(H):
                dh_prev[b, j] = m[b, j] * dh_prev[b, j] + direct[b, j] + z[b, j] * dh[b, j]
        else:
            for j in range(H):
                dh_prev[b, j] = dh[b, j]
