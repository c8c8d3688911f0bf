"""Build a character model on real text, run forward and backward, check every gradient.

A character-level language model (Embedding -> 2-layer LSTM -> Linear -> softmax cross-entropy)
on the Python documentation that ships with CPython. In float64 every analytic gradient from the
hand-written BPTT kernels is compared with central finite differences; then a few plain SGD steps
in float32 show the same gradients lowering the loss.

    python examples/gradient_check.py [--steps 40]
"""

import argparse
import time

import numpy as np

import rnncore
from rnncore.data import python_docs_text
from rnncore.gradcheck import check_gradients
from rnncore.losses import softmax_cross_entropy


class CharModel:
    """Embedding -> LSTM -> Linear, with the backward chained through each layer's explicit backward."""

    def __init__(self, vocab_size, embed, hidden, layers, dtype, seed):
        self.embedding = rnncore.Embedding(vocab_size, embed, dtype=dtype, seed=seed)
        self.lstm = rnncore.LSTM(embed, hidden, num_layers=layers, dtype=dtype, seed=seed + 1)
        self.head = rnncore.Linear(hidden, vocab_size, dtype=dtype, seed=seed + 2)
        self.modules = {"embedding": self.embedding, "lstm": self.lstm, "head": self.head}

    def loss(self, inputs, targets, reduction="mean"):
        """Cross-entropy of predicting targets (T, B) from inputs (T, B), and dL/dlogits."""
        out, _ = self.lstm(self.embedding(inputs))
        return softmax_cross_entropy(self.head(out), targets, reduction=reduction)

    def backward(self, dlogits):
        dx, _ = self.lstm.backward(self.head.backward(dlogits))
        self.embedding.backward(dx)

    def named_parameters(self):
        for prefix, module in self.modules.items():
            for name, value in module.named_parameters():
                yield f"{prefix}.{name}", value, module.grads[name]

    def zero_grad(self):
        for module in self.modules.values():
            module.zero_grad()


def batch(ids, T, B, rng):
    """B random windows of T+1 characters, as time-major inputs and next-character targets."""
    starts = rng.integers(0, len(ids) - T - 1, size=B)
    windows = np.stack([ids[s : s + T + 1] for s in starts], axis=1)
    return windows[:-1], windows[1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="SGD steps in float32 after the check")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    text = python_docs_text()
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = np.array([index[ch] for ch in text])
    rng = np.random.default_rng(args.seed)
    print(f"corpus: CPython's pydoc topics, {len(text):,} characters, {len(vocab)} distinct")

    # 1. float64: every gradient against central finite differences.
    model = CharModel(len(vocab), 8, 12, 2, np.float64, args.seed)
    inputs, targets = batch(ids, 16, 3, rng)
    t0 = time.perf_counter()
    model.zero_grad()
    loss, dlogits = model.loss(inputs, targets, reduction="sum")
    model.backward(dlogits)
    print(f"forward + backward (including Numba compilation): {time.perf_counter() - t0:.2f} s, "
          f"summed loss {loss:.4f}")

    def loss_only():
        with rnncore.no_grad():
            return model.loss(inputs, targets, reduction="sum")[0]

    wrt = {name: (value, grad.copy()) for name, value, grad in model.named_parameters()}
    t0 = time.perf_counter()
    results = check_gradients(loss_only, wrt, eps=1e-5, tolerance=1e-6)
    print(f"\ngradient check, float64, central differences ({time.perf_counter() - t0:.1f} s):")
    for r in results:
        print("  " + str(r))
    n_checked = sum(value.size for value, _ in wrt.values())
    worst = max(r.max_rel_error for r in results)
    passed = all(r.passed for r in results)
    print(f"{n_checked:,} partial derivatives, worst relative error {worst:.1e}: {'PASS' if passed else 'FAIL'}")

    # 2. float32: the same kernels lower the loss.
    model = CharModel(len(vocab), 32, 64, 2, np.float32, args.seed)
    print(f"\nSGD in float32, {sum(m.num_parameters() for m in model.modules.values()):,} parameters:")
    for step in range(args.steps + 1):
        inputs, targets = batch(ids, 32, 16, rng)
        model.zero_grad()
        loss, dlogits = model.loss(inputs, targets)
        model.backward(dlogits)
        for _, value, grad in model.named_parameters():
            value -= np.float32(1.0) * grad
        if step % 10 == 0:
            print(f"  step {step:3d}  loss {loss:.3f}  (uniform guess: {np.log(len(vocab)):.3f})")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
