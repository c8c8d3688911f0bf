"""derivations.symbolic: reverse accumulation of SymPy's local derivatives equals sympy.diff."""

import numpy as np
import pytest
import sympy as sp

from derivations import symbolic as S

x, y, z = (S.real_symbol(n) for n in "xyz")


def _built(fn):
    with S.unevaluated():
        return fn()


EXPRESSIONS = {
    "polynomial": lambda: x * y + 3 * x ** 2 - z / y,
    "shared subexpression": lambda: (lambda a: sp.tanh(a) * a + S.sigmoid(a) ** 2)(x * y + z),
    "repeated argument": lambda: sp.Mul(sp.tanh(x), sp.tanh(x)) + sp.Add(y, y),
    "relu": lambda: S.relu(x - y) * z + S.relu(2 * z),
    "nested": lambda: sp.tanh(S.sigmoid(sp.tanh(x * z) + y) * sp.exp(-z)),
    "constant": lambda: sp.Integer(3) + 0 * x,
}


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_reverse_accumulation_equals_sympy_diff(name):
    expr = _built(EXPRESSIONS[name])
    wrt = [x, y, z]
    ours = S.lambdify(wrt, S.gradient(expr, wrt))
    plain = S.lambdify(wrt, [sp.diff(expr, s) for s in wrt])
    rng = np.random.default_rng(0)
    for _ in range(5):
        point = rng.uniform(0.2, 1.5, 3) * rng.choice([-1, 1], 3)
        a = np.array([float(v) for v in ours(*point)])
        b = np.array([float(v) for v in plain(*point)])
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def test_symbols_absent_from_the_expression_get_zero():
    assert S.gradient(_built(lambda: x * y), [z]) == [0]


def test_unrolled_network_is_linear_not_exponential():
    """T = 8 tanh steps with the state shared by every later step: the DAG has O(T) nodes and the
    gradient is built and lambdified quickly (sympy.diff would walk 2^T paths)."""
    import time

    w, u = S.real_symbol("w"), S.real_symbol("u")
    xs = [S.real_symbol(f"x{t}") for t in range(8)]
    with S.unevaluated():
        h = S.real_symbol("h0")
        loss = sp.S.Zero
        for t in range(8):
            h = sp.tanh(sp.Add(sp.Mul(w, h), sp.Mul(u, xs[t]), sp.Mul(h, h)))
            loss = sp.Add(loss, h)
    start = time.perf_counter()
    fn = S.lambdify([w, u, *xs, S.real_symbol("h0")], S.gradient(loss, [w, u]))
    assert time.perf_counter() - start < 10
    # against central differences of the same expression
    f = S.lambdify([w, u, *xs, S.real_symbol("h0")], loss)
    point = np.random.default_rng(1).uniform(-0.5, 0.5, 11)
    grad = [float(v) for v in fn(*point)]
    for k in range(2):
        e = np.zeros(11)
        e[k] = 1e-6
        numeric = (float(f(*(point + e))) - float(f(*(point - e)))) / 2e-6
        assert abs(grad[k] - numeric) < 1e-7


def test_lambdify_returns_a_scalar_for_a_scalar_expression():
    fn = S.lambdify([x], _built(lambda: sp.tanh(x) * 2))
    assert np.isclose(fn(0.3), 2 * np.tanh(0.3))
    assert np.shape(fn(np.array([0.1, 0.2]))) == (2,)
