"""Pieces shared by the Elman, LSTM and GRU kernels.

Letters: T = steps, B = batch, I = input, H = hidden, G = gate rows (Elman 1H, LSTM 4H, GRU 3H).

State storage for training, one layout for both directions: ``hs`` is (T+2, B, H). The state
after step t is ``hs[t+1]``. The initial state sits in ``hs[0]`` for the forward direction
(step t reads ``hs[t]``) and in ``hs[T+1]`` for the reverse direction (step t reads ``hs[t+2]``),
so the previous states of all steps are the contiguous block ``hs[prev_offset(..):][:T]``.

Row windows: the training and inference kernels of the plain cells, of the LSTM variants and of the
layer-normalised cells (``layernorm_lstm``, ``layernorm_gru``) run on rows row .. row+b-1 of the batch
(``rnncore.nn._shards`` runs several windows side by side): x, out, grad_out and dx are the whole batch's
(T, B, .) arrays, every other argument is the window's own (b rows). A call over the whole batch is the
window row = 0, b = B.

Packed-sequence semantics: step t is active for sequence b when t < lengths[b]. An inactive
step carries the state unchanged and writes a zero output; in both directions that makes the
reverse direction start at each sequence's own last step and h_n the state at its last step.
"""

import numpy as np

from rnncore.kernels._jit import inline_kernel, kernel
from rnncore.kernels.blas import add_product
from rnncore.kernels.packed import blas_product_into, packs, product_into, scratch

# Time steps of the input projection computed at once by the inference kernels (bounded memory).
INFER_CHUNK = 64
FEW_ROWS = 32  # the most rows for which ``matmul_into`` computes x M as (M^T x^T)^T


@kernel
def time_index(s, T, reverse):
    """The time index of the s-th step processed."""
    return T - 1 - s if reverse else s


@kernel
def init_slot(T, reverse):
    """Where the initial state sits in the (T+2, B, H) storage."""
    return T + 1 if reverse else 0


@kernel
def prev_offset(reverse):
    """Step t reads its previous state from storage slot t + prev_offset."""
    return 2 if reverse else 0


@kernel
def num_chunks(T):
    """How many INFER_CHUNK-step blocks the inference kernels split T steps into."""
    return (T + INFER_CHUNK - 1) // INFER_CHUNK


@kernel
def chunk_bounds(k, T, reverse):
    """(start, n): the time steps start .. start+n-1 of the k-th block in processing order."""
    lo = k * INFER_CHUNK
    n = min(INFER_CHUNK, T - lo)
    return (T - lo - n if reverse else lo), n


@kernel
def matmul_into(y, x, m):
    """y = x @ m through BLAS. y (R, N); x (R, K); m (K, N), C- or F-contiguous (a transposed weight matrix).
    From 2 to FEW_ROWS rows the product runs as y^T = m^T x^T, then a transposing copy: OpenBLAS packs the
    second operand of a GEMM at every call, and with few rows packing m was most of the work. Measured
    here, two threads, float32, us as written -> as y^T: the input projection of 25 rows (a B = 1 pass of
    25 steps) over W_ih (1024, 256) 239 -> 128, (4096, 1024) 4037 -> 2142, (256, 256) 60 -> 33; of 32 rows
    187 -> 142 and 2936 -> 2324; the backward's 25 rows of dx over the same W_ih 235 -> 152 and
    4019 -> 2388; a Linear head W (4000, 256): 2 rows 552 -> 253, 32 rows 972 -> 870, 64 rows 1354 -> 1569
    (so not there), W (64, 64) at 25 rows 8.2 -> 7.3. One row is a matrix-vector product either way.
    The copy goes 16 columns (a 64-byte line of a float32 row) at a time: one column at a time, its 25
    writes per column lay 4 KB apart at N 1024, in one cache set, and took the gain back (25 x 1024:
    236 us against 132); whole rows at a time gave the same speed and 7% more code in the kernels."""
    R, N = y.shape
    if 2 <= R <= FEW_ROWS:
        yt = np.empty((N, R), dtype=y.dtype)
        np.dot(m.T, x.T, yt)
        for n0 in range(0, N, 16):
            for r in range(R):
                for n in range(n0, min(n0 + 16, N)):
                    y[r, n] = yt[n, r]
    else:
        np.dot(x, m, y)


@inline_kernel
def add_matmul(acc, x, m):
    """acc += x @ m: for 2 to FEW_ROWS rows ``matmul_into`` (its product the other way round) into scratch,
    then an add pass; else one GEMM that adds into acc (``blas.add_product``). acc (R, N); x (R, K); m (K, N)
    as in ``matmul_into``."""
    R = acc.shape[0]
    if 2 <= R <= FEW_ROWS:
        y = np.empty_like(acc)
        matmul_into(y, x, m)
        add_into(acc, y)
    else:
        add_product(acc, x, m)


@kernel
def project_inputs(a, x, w_ih, b_ih):
    """The input projection of all steps as one GEMM (``matmul_into``): a = x W_ih^T + b_ih.
    a (T, B, G): output; x (T, B, I); w_ih (G, I); b_ih (G,)."""
    T, B, I = x.shape  # noqa: E741  (the project's dimension letters)
    G = w_ih.shape[0]
    a2 = a.reshape(T * B, G)
    matmul_into(a2, x.reshape(T * B, I), w_ih.T)
    for r in range(T * B):
        for j in range(G):
            a2[r, j] += b_ih[j]


@kernel
def project_input_rows(a, x, w_ih, b_ih, row):
    """``project_inputs`` of the window: a = x[:, row:row+b] W_ih^T + b_ih, a (T, b, G), x (T, B, I); the
    window's rows are copied INFER_CHUNK steps at a time, so that the GEMM sees contiguous rows."""
    T, b, G = a.shape
    if b == x.shape[1]:
        project_inputs(a, x, w_ih, b_ih)
        return
    I = x.shape[2]  # noqa: E741  (the project's dimension letters)
    rows = np.empty((min(T, INFER_CHUNK), b, I), dtype=x.dtype)
    for start in range(0, T, INFER_CHUNK):
        n = min(INFER_CHUNK, T - start)
        copy_window(rows[:n], x, start, row)
        project_inputs(a[start : start + n], rows[:n], w_ih, b_ih)


@kernel
def copy_window(rows, x, start, row):
    """rows[s] = x[start + s, row:row+b] for every s: rows (n, b, I), x (T, B, I)."""
    n, b, _ = rows.shape
    for s in range(n):
        copy_into(rows[s], x[start + s, row : row + b])


@kernel
def copy_into(dst, src):
    """dst[...] = src for 2-D arrays, as a loop (slice assignment compiles a costly error path)."""
    B, H = dst.shape
    for b in range(B):
        for j in range(H):
            dst[b, j] = src[b, j]


@kernel
def column_sums(d):
    """d.sum(axis=0) in float64 whatever d's dtype, (G,); d (N, G). Over the T x B rows of a pass a
    float32 running sum lost up to 3.7e-6 relative (T 1000, B 16) where the weight gradients' GEMMs lose
    4e-7."""
    N, G = d.shape
    acc = np.zeros(G, dtype=np.float64)
    for r in range(N):
        for j in range(G):
            acc[j] += d[r, j]
    return acc


@kernel
def add_sums(db, sums):
    """db += sums; db (G,) of the layer's dtype, sums (G,) float64 from ``column_sums``."""
    for j in range(db.shape[0]):
        db[j] += sums[j]


@kernel
def add_column_sums(db, d):
    """db += d.sum(axis=0), summed in float64 (``column_sums``); db (G,), d (N, G)."""
    add_sums(db, column_sums(d))


@kernel
def write_output(out, h, lengths, t, col, row):
    """out[t, row+b, col:col+H] = h[b] for active rows, 0 for padding. out (T, B, O), h (b, H)."""
    B, H = h.shape
    for b in range(B):
        if t < lengths[b]:
            for j in range(H):
                out[t, row + b, col + j] = h[b, j]
        else:
            for j in range(H):
                out[t, row + b, col + j] = 0.0


@kernel
def carry_inactive(new, old, lengths, t):
    """new[b] = old[b] for the rows whose step t is padding. new, old (B, H)."""
    B, H = new.shape
    for b in range(B):
        if t >= lengths[b]:
            for j in range(H):
                new[b, j] = old[b, j]


@kernel
def add_output_grad(g, grad_out, lengths, t, col, row):
    """g[b] += grad_out[t, row+b, col:col+H] for active rows; g (b, H), grad_out (T, B, O)."""
    B, H = g.shape
    for b in range(B):
        if t < lengths[b]:
            for j in range(H):
                g[b, j] += grad_out[t, row + b, col + j]


@kernel
def zero_inactive_rows(d, lengths, t):
    """d[b] = 0 for the rows whose step t is padding; d (B, G)."""
    B, G = d.shape
    for b in range(B):
        if t >= lengths[b]:
            for j in range(G):
                d[b, j] = 0.0


@kernel
def side_by_side_rows(x, h):
    """[x | h], (B, I + H): the input of a product over joint weights; x (B, I), h (B, H)."""
    B, I = x.shape  # noqa: E741  (the project's dimension letters)
    H = h.shape[1]
    xh = np.empty((B, I + H), dtype=x.dtype)
    for b in range(B):
        for k in range(I):
            xh[b, k] = x[b, k]
        for k in range(H):
            xh[b, I + k] = h[b, k]
    return xh


@kernel
def joint_product(p, x, h, w_joint, panels):
    """p = [x | h] w_joint^T: a step's input and recurrent products as one product over the weights side by
    side (``rnncore.nn.stepper.side_by_side``). For the rows and weights ``packed.packs`` takes, the packed
    tile over ``panels``, which the stepper packs once (BLAS repacks the weights at every call: LSTM H 512,
    B 8 took 1.1 ms a step that way); else at B = 1 one gemv over every weight of the step, which BLAS
    splits over its threads (two gemvs of half the size each ran on one), and BLAS for other rows.
    p (B, R); x (B, I); h (B, H); w_joint (R, I + H); panels: ``packed.pack(w_joint, MIN_ROWS)``."""
    B = x.shape[0]
    xh = side_by_side_rows(x, h)
    if packs(w_joint, B):
        product_into(p, xh, w_joint, panels, scratch(panels, B))
    elif B == 1:
        np.dot(w_joint, xh[0], p[0])
    else:
        blas_product_into(p, xh, w_joint)


@kernel
def accumulate_weight_grads(dx, dw_ih, db_ih, dw_hh, db_hh, d_in, d_rec, x, h_prev, w_ih, row):
    """The after-loop GEMMs of every backward pass (accumulating, ``+=``), for the window of b rows at row.
    dx (T, B, I); dw_ih (G, I); db_ih (G,); dw_hh (G, H); db_hh (G,)
    d_in (T, b, G): gradient of the input projection's pre-activations
    d_rec (T, b, G): gradient of the recurrent product's pre-activations (equal to d_in except for GRU)
    x (T, B, I); h_prev (T, b, H): state entering each step; w_ih (G, I)."""
    T, b, G = d_in.shape
    I, H = x.shape[2], h_prev.shape[2]  # noqa: E741
    d_rec2 = d_rec.reshape(T * b, G)
    add_product(dw_hh, d_rec2.T, h_prev.reshape(T * b, H))
    sums = column_sums(d_in.reshape(T * b, G))
    add_sums(db_ih, sums)
    # d_rec is d_in for the Elman and LSTM kernels (and GRU's r, z rows): their sums once, for both biases
    add_sums(db_hh, sums if d_rec.ctypes.data == d_in.ctypes.data else column_sums(d_rec2))
    if b == x.shape[1]:
        d_in2 = d_in.reshape(T * b, G)
        add_product(dw_ih, d_in2.T, x.reshape(T * b, I))
        add_matmul(dx.reshape(T * b, I), d_in2, w_ih)
        return
    rows = np.empty((min(T, INFER_CHUNK), b, I), dtype=x.dtype)  # the window's rows of x, then of dx
    for start in range(0, T, INFER_CHUNK):
        n = min(INFER_CHUNK, T - start)
        d_in2 = d_in[start : start + n].reshape(n * b, G)
        block = rows[:n].reshape(n * b, I)
        copy_window(rows[:n], x, start, row)
        add_product(dw_ih, d_in2.T, block)
        matmul_into(block, d_in2, w_ih)
        for s in range(n):
            add_into(dx[start + s, row : row + b], rows[s])


@kernel
def add_into(dst, src):
    """dst += src for 2-D arrays, as a loop; dst, src (b, N)."""
    B, H = dst.shape
    for b in range(B):
        for j in range(H):
            dst[b, j] += src[b, j]
