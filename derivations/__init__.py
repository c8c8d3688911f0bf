"""SymPy reference derivations, checked against rnncore's kernels; ``rnncore verify`` runs them.

One module per derivation; each has ``run(quick=False) -> DerivationResult`` (checks, formulas,
data) and, where it has figures, ``plot(result, out_dir) -> [Figure]``. The modules are imported
only when run (SymPy, scikit-learn and matplotlib load lazily).
"""

# name -> (module, title), in report order
DERIVATIONS = {
    "cells": ("derivations.cells", "Cells: SymPy reference gradients of unrolled networks"),
    "lstm_variants": ("derivations.lstm_variants",
                      "LSTM variants: projection, peepholes, gate clipping, coupled gates"),
    "local": ("derivations.local", "Local derivatives: activations and gate Jacobians"),
    "softmax": ("derivations.softmax", "Softmax cross-entropy: dL/dz = softmax(z) - y"),
    "scalar": ("derivations.scalar", "Scalar recurrence: vanishing and exploding gradients"),
    "bptt": ("derivations.bptt", "BPTT recurrence and its closed form"),
    "autoencoder": ("derivations.autoencoder", "Linear autoencoder and PCA"),
    "init": ("derivations.init_study", "Initialisation study: ReLU RNN, recurrent variance g/n"),
    "layer_norm": ("derivations.layer_norm",
                   "LayerNorm LSTM and GRU: SymPy reference gradients and d LN / d v"),
    "regularisers": ("derivations.regularisers", "Regularisers: variational and recurrent dropout, zoneout, "
                                                 "weight-drop"),
}
NAMES = tuple(DERIVATIONS)
