"""Initialisation study: a ReLU RNN with recurrent weight variance g/n, predicted against measured.

Prediction (see ``rnncore.diagnostics.init_study``): with zero bias and zero input, each step
multiplies the expected squared norm of the hidden state by g/2, E||h_t||^2 = (g/2) E||h_(t-1)||^2,
and the squared norm of the gradient dL/dh_t by about g/2 per step backwards. So g = 3 explodes
(1.5^t), g = 1.5 vanishes (0.75^t), g = 2 holds.

What is measured, precisely: rnncore's float64 RNN (relu, bias=False, hidden size n, input 0,
h0 ~ N(0, I)) with weight_hh drawn N(0, g/n), one W per seed, several sequences per W.
- the squared Euclidean norm ||h_t||^2 of every state from the layer's forward, and the per-step
  ratio ||h_t||^2 / ||h_(t-1)||^2;
- the first-step ratio, averaged (arithmetic mean) over seeds and sequences: its expectation over W
  is exactly g/2;
- the typical per-step factor over the whole sequence: the geometric mean of the per-step ratios over
  seeds, steps and sequences (W is reused at every step, so later steps are not fresh draws; the
  factor is g/2 up to O(1/n) fluctuations);
- the same geometric mean for ||dL/dh_(t-1)||^2 / ||dL/dh_t||^2 with L = <h_T, G>, G ~ N(0, I), the
  gradients read from the layer's backward (``hidden_state_gradients``).
Each is compared with g/2 within 5 % relative.
"""

import numpy as np

from derivations.checks import DerivationResult, value_check
from rnncore.diagnostics import relu_rnn_growth

FAMILY = "init"
GAINS = (1.5, 2.0, 3.0)
TOLERANCE = 0.05


def run(quick=False):
    n = 256
    steps = 25 if quick else 40
    seeds_h = range(128) if quick else range(256)
    seeds_g = range(6) if quick else range(24)
    checks = []
    data = {"steps": steps, "n": n, "gains": {}}
    for g in GAINS:
        h = relu_rnn_growth(g, n, steps, seeds_h, batch=4, gradients=False)["h"]
        grad = relu_rnn_growth(g, n, steps, seeds_g, batch=4, gradients=True)["grad"]
        ratio = h[:, 1:] / h[:, :-1]
        first = float(np.mean(ratio[:, 0]))
        first_se = float(np.std(ratio[:, 0]) / np.sqrt(ratio[:, 0].size))
        typical = float(np.exp(np.mean(np.log(ratio))))
        per_seed = np.exp(np.mean(np.log(ratio), axis=(1, 2)))  # one factor per weight matrix
        grad_ratio = grad[:, :-1] / grad[:, 1:]  # ||dL/dh_(t-1)||^2 / ||dL/dh_t||^2
        grad_typical = float(np.exp(np.mean(np.log(grad_ratio))))
        pred = g / 2
        where = f"g = {g}, n = {n}"
        checks += [
            value_check(FAMILY, f"{FAMILY}/g{g}/first_step",
                        f"mean of ||h_1||^2 / ||h_0||^2 over {len(seeds_h)} seeds x 4 sequences "
                        f"(standard error {first_se:.3f}); {where}",
                        "g/2 (exact expectation over W)", "rnncore.RNN forward", pred, first, TOLERANCE),
            value_check(FAMILY, f"{FAMILY}/g{g}/per_step",
                        f"geometric mean of ||h_t||^2 / ||h_(t-1)||^2 over {steps} steps, {len(seeds_h)} "
                        f"seeds x 4 sequences; {where}", "g/2",
                        "rnncore.RNN forward", pred, typical, TOLERANCE),
            value_check(FAMILY, f"{FAMILY}/g{g}/gradient_per_step",
                        f"geometric mean of ||dL/dh_(t-1)||^2 / ||dL/dh_t||^2 over {steps} steps, "
                        f"{len(seeds_g)} seeds x 4 sequences, L = <h_T, G>; {where}",
                        "g/2", "rnncore.RNN backward via hidden_state_gradients", pred,
                        grad_typical, TOLERANCE),
        ]
        data["gains"][g] = {"h": h / h[:, :1], "grad": grad / grad[:, -1:], "typical": typical,
                            "grad_typical": grad_typical, "per_seed": np.percentile(per_seed, [10, 90])}
    rows = "; ".join(f"g = {g}: measured {d['typical']:.3f} per step (states), {d['grad_typical']:.3f} "
                     f"(gradients), predicted {g / 2}, one network's own factor between "
                     f"{d['per_seed'][0]:.2f} and {d['per_seed'][1]:.2f} (10th-90th percentile over "
                     "weight matrices)"
                     for g, d in data["gains"].items())
    description = (
        "A ReLU RNN with zero bias and zero input whose recurrent weights are drawn N(0, g/n): the expected "
        "squared norm of the hidden state is multiplied by g/2 per step (each pre-activation is "
        "N(0, g ||h||^2 / n) and relu keeps half its second moment), and so, backwards, is the squared norm "
        "of dL/dh_t. g = 2 (He) holds the scale, 3 explodes as 1.5^t, 1.5 vanishes as 0.75^t.\n\n"
        "Measured on rnncore's float64 RNN (relu, bias=False), n = 256, one weight matrix per seed and 4 "
        "sequences per matrix, h0 ~ N(0, I): the squared Euclidean norm ||h_t||^2 of each state; the "
        "arithmetic mean of the first-step ratio ||h_1||^2/||h_0||^2, whose expectation over W is exactly "
        "g/2; the geometric mean of the per-step ratios over the whole sequence (the same W is reused at "
        "every step, so later steps are not fresh draws; this typical factor is g/2 up to O(1/n)); and the "
        "same for the gradient norms ||dL/dh_t||^2, L = <h_T, G>. The norm itself, not squared, changes by "
        f"sqrt(g/2) per step. Results: {rows}. The prediction holds for the average over weight matrices; "
        "a single network reuses one W, and its own growth factor differs (for g = 2, between "
        f"{data['gains'][2.0]['per_seed'][0]:.2f} and {data['gains'][2.0]['per_seed'][1]:.2f} for 80 % of "
        f"the matrices), so after {steps} steps individual networks with g = 2 end orders of magnitude above "
        "or below their start (the band in the figure). With zero bias, relu(c W h) = c relu(W h), so "
        "scaling W by sqrt(g) scales h_t by g^(t/2) exactly: the three gains share the seed-to-seed "
        "fluctuation of the same random matrices, and their measured factors deviate from g/2 by the same "
        "relative amount."
    )
    return DerivationResult(FAMILY, "Initialisation study: ReLU RNN, recurrent variance g/n", description,
                            checks,
                            [("Prediction", r"h_t = \mathrm{relu}(W h_{t-1}),\ W_{ij} \sim N(0, g/n):\quad "
                              r"E\|h_t\|^2 = \frac{g}{2}\,E\|h_{t-1}\|^2,\quad E\left\|\frac{\partial L}"
                              r"{\partial h_{t-1}}\right\|^2 \approx \frac{g}{2}\,E\left\|\frac{\partial L}"
                              r"{\partial h_t}\right\|^2")],
                            data=data)


def plot(result, out_dir):
    from derivations.plots import init_figure

    return [init_figure(result.data, out_dir)]
