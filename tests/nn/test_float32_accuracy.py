"""float32 layers against float64 layers with the same weights and inputs, over a long pass: what the
float32 accumulation loses. The float64 results are the reference the torch-fixture, finite-difference
and SymPy suites check; here float32 must stay within a few roundings of them after T x B = 16,000 rows.

Measured (T 1000, B 16, H 64): outputs and dx 3-8e-7 relative, weight gradients (GEMMs) 3-4e-7, bias
gradients (column sums accumulated in float64) 0.7-1.4e-7; summed in float32 they lost 1.2-3.7e-6."""

import numpy as np
import pytest

import rnncore


def rel(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_a_long_float32_pass_stays_within_roundings_of_float64(cell):
    T, B, I, H = 1000, 16, 64, 64  # noqa: E741  (the project's dimension letters)
    m64 = getattr(rnncore, cell)(I, H, dtype=np.float64, seed=1)
    m32 = getattr(rnncore, cell)(I, H, dtype=np.float32, seed=1)
    m32.load_state_dict({k: v.astype(np.float32) for k, v in m64.state_dict().items()})
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    g = rng.standard_normal((T, B, H)).astype(np.float32)
    out64, _ = m64(x.astype(np.float64))
    dx64, _ = m64.backward(g.astype(np.float64))
    out32, _ = m32(x)
    dx32, _ = m32.backward(g)
    assert rel(out32, out64) < 2e-6
    assert rel(dx32, dx64) < 2e-6
    for name, grad in m64.grads.items():
        tol = 5e-7 if name.startswith("bias") else 2e-6
        assert rel(m32.grads[name], grad) < tol, name
