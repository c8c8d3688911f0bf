"""The activation helpers: float32's vectorisable approximations stay within float32 rounding of
the exact functions, float64 is exact, NaN stays NaN."""

import numpy as np
import pytest

from rnncore.kernels.activations import NONLINEARITIES, SIGMOID, TANH, activate_row, activation_grad_row

EXACT = {TANH: np.tanh, SIGMOID: lambda x: 1.0 / (1.0 + np.exp(-x))}


@pytest.mark.parametrize("act", [TANH, SIGMOID])
def test_float32_approximation_error(act):
    x64 = np.linspace(-30.0, 30.0, 600_001)
    x32 = x64.astype(np.float32)
    out = np.empty_like(x32)
    activate_row(out, x32, act)
    exact = EXACT[act](x32.astype(np.float64))
    assert np.max(np.abs(out - exact)) < 4e-7  # float32 spacing near 1 is 6e-8 to 1.2e-7
    assert np.all(np.abs(out) <= 1.0)


@pytest.mark.parametrize("act", [TANH, SIGMOID])
def test_float64_is_exact(act):
    x = np.linspace(-30.0, 30.0, 10_001)
    out = np.empty_like(x)
    activate_row(out, x, act)
    np.testing.assert_allclose(out, EXACT[act](x), rtol=1e-15, atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", sorted(NONLINEARITIES.values()))
def test_nan_propagates(act, dtype):
    x = np.array([np.nan, 0.5, -np.inf, np.inf], dtype=dtype)
    out = np.empty_like(x)
    activate_row(out, x, act)
    assert np.isnan(out[0]) and np.isfinite(out[1])
    grad = np.empty_like(x)
    activation_grad_row(grad, np.array([1, 1, 1, 1], dtype=dtype), np.array([np.nan, 0.2, 0.3, 0.4], dtype), act)
    if act in (TANH, SIGMOID):
        assert np.isnan(grad[0])
