"""Step-by-step generation over a snapshot of a recurrent layer's weights (``layer.stepper()``).

A layer's ``step`` runs two products per layer, x W_ih^T and h W_hh^T, each on weights it reads from
the parameters at every call. A generation loop does not change the weights, so a ``Stepper`` copies
them once, W_ih and W_hh side by side in one matrix (``side_by_side``), and runs each step as one
product over it (``kernels._common.joint_product``). A step of the rows ``kernels.packed.packs`` takes
(4 to MAX_ROWS; 1 to 3 over weights small enough) runs on the packed tile over panels of the joint
matrix, packed on the first such step and kept (BLAS repacks the weights at every call). A step of one
row over larger weights is one gemv over every weight of the step, which BLAS splits over its threads:
two gemvs of half the size each ran on one thread. A GRU's joint matrix beyond the caches
(``kernels.gru.SPLIT_JOINT_MIN_BYTES``) is read around its zero blocks, as three gemvs.
Measured here (LSTM, H 256, 2 MB of float32 weights, B = 1, two threads, kernel call alone, median of
10 runs): 54.5 us for ``step``'s kernel, 27.0 us over the joint weights.

The snapshot is taken when the stepper is made: it does not see later changes to the weights (an
optimizer step, ``load_state_dict``); make a new stepper after them. It holds a copy of every weight
(a GRU's joint matrix carries zero blocks beside W_in and W_hn: 4H x (I + H) where the weights are
3H x (I + H)). Layers whose steps do not run as one product (the LSTM variants, the layer-normalised
cells, GRU with reset_after=False) step on a plain copy of their weights, through the same kernels as
``step``. The results are ``step``'s up to rounding: the sums are taken in another order.
"""

import numpy as np


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
        """Whether every layer runs its step as one product over joint weights."""
        return all(run != self.layer._run_step for run, _ in self._layers)

    def step(self, x, hx=None):
        """One time step, as ``layer.step(x, hx)``, on the snapshot's weights."""
        return self.layer._step(x, hx, self._layers)

    __call__ = step
