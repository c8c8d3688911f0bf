"""The kernels of the feed-forward layers (``nn.layers``): the products of ``nn.Linear``, in the BLAS the
recurrent kernels use (scipy's, through Numba), and the scatter-add of ``nn.Embedding``'s backward.

numpy's ``@`` runs in numpy's own OpenBLAS, a second thread pool beside scipy's. After a call each
pool's worker threads keep spinning for a while, and on a machine with as many cores as threads the
other pool's next call then waits for a core: an LSTM language model (H 256, 4000 outputs) on two
threads took 28 ms for a B = 1 forward of 100 steps with the head in numpy, 12 ms on one thread.
With every product in one BLAS the two threads no longer compete.

Letters: N = rows (all leading axes of x flattened), I = in_features, O = out_features, V = number of
embeddings, E = embedding_dim.
"""

from rnncore.kernels._common import add_column_sums, matmul_into
from rnncore.kernels._jit import kernel
from rnncore.kernels.blas import add_product


@kernel
def linear_forward(y, x, w, b):
    """y = x W^T + b (the product through ``matmul_into``, which runs it as y^T = W x^T for 2 to FEW_ROWS
    rows). y (N, O); x (N, I); w (O, I); b (O,), or (0,) for no bias."""
    N, O = y.shape  # noqa: E741
    matmul_into(y, x, w.T)
    if b.shape[0]:
        for n in range(N):
            for o in range(O):
                y[n, o] += b[o]


@kernel
def linear_backward(dx, dw, db, g, x, w):
    """dx = g W; dw += g^T x; db += g summed over the rows (in float64, as the recurrent kernels' biases).
    dx (N, I); dw (O, I); db (O,), or (0,) for no bias; g (N, O); x (N, I); w (O, I)."""
    matmul_into(dx, g, w)
    add_product(dw, g.T, x)
    if db.shape[0]:
        add_column_sums(db, g)


@kernel
def embedding_backward(dw, ids, g, padding_idx):
    """dw[ids[r]] += g[r] for every row r in order, skipping ids equal to padding_idx (-1 for none): what
    ``np.add.at(dw, ids, g)`` computes, to the bit, 30-50 times faster here. dw (V, E); ids (N,); g (N, E).
    Returns -1, or the first r whose id lies outside [0, V), having then changed nothing."""
    N, E = g.shape
    for r in range(N):
        if ids[r] < 0 or ids[r] >= dw.shape[0]:
            return r
    for r in range(N):
        i = ids[r]
        if i != padding_idx:
            row = dw[i]
            for j in range(E):
                row[j] += g[r, j]
    return -1
