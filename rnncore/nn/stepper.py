"""Step-by-step generation over a snapshot of a recurrent layer's weights (``layer.stepper()``).

A layer's ``step`` runs two products per layer, x W_ih^T and h W_hh^T, each on weights it reads from
the parameters at every call. A generation loop does not change the weights, so a ``Stepper`` copies
them once, W_ih and W_hh side by side in one matrix (``side_by_side``), and runs each step as one
product over it (``kernels._common.joint_product``). A step of the rows ``kernels.packed.packs`` takes
(4 to MAX_ROWS; 1 to 3 over weights small enough) runs on the packed tile over panels of the joint
matrix, packed on the first such step and kept (BLAS repacks the weights at every call). A step of one
row over larger weights is one gemv over every weight of the step, which BLAS splits over its threads:
two gemvs of half the size each ran on one thread. A GRU's joint matrix carries zero blocks, so over
weights of GRU_ROW_ON_WEIGHTS_MIN_BYTES or more its steps of one row run on copies of W_ih and W_hh
(``step``'s kernel, two gemvs that read only the weights), and the joint matrix is made on its first step
of more rows.
Measured here (LSTM, H 256, 2 MB of float32 weights, B = 1, two threads, kernel call alone, median of
10 runs): 54.5 us for ``step``'s kernel, 27.0 us over the joint weights.

The snapshot is taken when the stepper is made: it does not see later changes to the weights (an
optimizer step, ``load_state_dict``); make a new stepper after them. It holds a copy of every weight
(a GRU's joint matrix carries zero blocks beside W_in and W_hn: 4H x (I + H) where the weights are
3H x (I + H); over GRU_ROW_ON_WEIGHTS_MIN_BYTES, the copies of W_ih and W_hh, and the joint matrix too
once a step of more than one row has run). Layers whose steps do not run as one product (the LSTM
variants, the layer-normalised cells, GRU with reset_after=False) step on a plain copy of their weights,
through the same kernels as ``step``. The results are ``step``'s up to rounding: the sums are taken in
another order.
"""

import numpy as np

# W_ih and W_hh of a GRU layer of at least this many bytes: its stepper's steps of one row run on copies of
# them, two gemvs over 3H x (I + H) weights, where one gemv over the joint matrix reads 4H x (I + H).
# Measured (AVX2, 32 MB of L3, two threads, float32, I = H; the kernels' step of one row, median us of 12
# alternated blocks in one process, joint -> copies): H 256 (1.5 MB of weights) 35.9 -> 40.4, H 320 49.5
# -> 56.1, H 384 (3.4 MB) 63.2 -> 81.5 and 71.8 -> 89.5, H 416 (4.0 MB) 76.1 -> 67.8, H 448 83.3 -> 69.7
# and 88.1 -> 73.5, H 512 (6 MB) 109.4 -> 94.9 and 112.5 -> 92.4, H 640 160.8 -> 136.3 and 176.0 -> 145.3;
# H 768 and 1024, whose joint matrices (18 and 32 MB) ran as three gemvs around their zero blocks before
# this bound replaced them: 197.7 -> 196.5 and 205.8 -> 213.1, 439.1 -> 442.8 and 417.8 -> 379.6.
GRU_ROW_ON_WEIGHTS_MIN_BYTES = 3840 << 10  # 3.75 MB: between H 384 and H 416 at I = H in float32


def side_by_side(w_ih, w_hh, shared):
    """The matrix of a step's two products as one, (2G - shared, I + H): rows [:shared] are
    [W_ih | W_hh], rows [shared:G] W_ih's beside zeros and rows [G:] W_hh's rows shared: beside zeros,
    so that [x | h] times it gives the sums of the shared rows, then x W_ih^T and h W_hh^T of the others
    apart (a GRU's n rows). w_ih (G, I); w_hh (G, H)."""
    G, I = w_ih.shape  # noqa: E741  (the project's dimension letters)
    H = w_hh.shape[1]
    joint = np.zeros((2 * G - shared, I + H), dtype=w_ih.dtype)
    joint[:G, :I] = w_ih
    joint[:shared, I:] = w_hh[:shared]
    joint[G:, I:] = w_hh[shared:]
    return joint


class Stepper:
    """``layer.step`` over a snapshot of the layer's weights (module docstring):
    ``out, state = stepper.step(x, state)`` (or ``stepper(x, state)``), with ``step``'s shapes and states."""

    def __init__(self, layer):
        if layer.bidirectional:
            raise ValueError("a stepper runs one time step forward; a bidirectional layer needs the whole "
                             "sequence")
        self.layer = layer
        self._layers = [layer._step_snapshot(k) for k in range(layer.num_layers)]

    @property
    def joint(self):
        """Whether every layer runs its steps over joint weights (a GRU's over GRU_ROW_ON_WEIGHTS_MIN_BYTES:
        its steps of more than one row; of one row, on the copies of its weights)."""
        return all(run != self.layer._run_step for run, _ in self._layers)

    def step(self, x, hx=None):
        """One time step, as ``layer.step(x, hx)``, on the snapshot's weights."""
        return self.layer._step(x, hx, self._layers)

    __call__ = step
