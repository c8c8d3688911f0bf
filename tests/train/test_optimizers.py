"""Each optimizer against steps computed by hand (literal numbers, or scalar arithmetic written out
per element), and against torch.optim over several steps when torch is installed."""

import math

import numpy as np
import pytest

from rnncore.train.optim import SGD, Adagrad, Adam, AdamW, RMSprop, make_optimizer

P0 = [1.0, -2.0]
G1 = [0.5, 0.25]
G2 = [1.0, -1.0]


def run(cls, grads, dtype=np.float64, **kwargs):
    p = np.array(P0, dtype=dtype)
    g = np.zeros_like(p)
    opt = cls([("w", p, g)], **kwargs)
    for grad in grads:
        g[...] = grad
        opt.step()
    return p


def test_sgd_plain_and_weight_decay():
    # p - lr * g = [1 - 0.05, -2 - 0.025]
    np.testing.assert_allclose(run(SGD, [G1], lr=0.1), [0.95, -2.025], rtol=0, atol=1e-15)
    # coupled decay: g + 0.1 p = [0.6, 0.05]
    np.testing.assert_allclose(run(SGD, [G1], lr=0.1, weight_decay=0.1), [0.94, -2.005], rtol=0, atol=1e-15)


def test_sgd_momentum_two_steps():
    # step 1: b = g1 -> p = [0.95, -2.025]; step 2: b = 0.9 b + g2 = [1.45, -0.775]
    np.testing.assert_allclose(run(SGD, [G1, G2], lr=0.1, momentum=0.9), [0.805, -1.9475], rtol=0, atol=1e-14)


def test_sgd_nesterov_two_steps():
    # step 1: b = g1, d = g1 + 0.9 b = [0.95, 0.475] -> p = [0.905, -2.0475]
    # step 2: b = [1.45, -0.775], d = g2 + 0.9 b = [2.305, -1.6975] -> p = [0.6745, -1.87775]
    np.testing.assert_allclose(run(SGD, [G1], lr=0.1, momentum=0.9, nesterov=True), [0.905, -2.0475],
                               rtol=0, atol=1e-14)
    np.testing.assert_allclose(run(SGD, [G1, G2], lr=0.1, momentum=0.9, nesterov=True), [0.6745, -1.87775],
                               rtol=0, atol=1e-14)


def test_adam_first_step_is_lr_times_sign():
    # bias-corrected m / sqrt(v) = g / |g| at step 1
    np.testing.assert_allclose(run(Adam, [G1], lr=0.1), [0.9, -2.1], rtol=0, atol=1e-8)


def test_adam_two_steps_scalar_arithmetic():
    out = run(Adam, [G1, G2], lr=0.1)
    for i in range(2):
        m1 = 0.1 * G1[i]
        v1 = 0.001 * G1[i] ** 2
        m2 = 0.9 * m1 + 0.1 * G2[i]
        v2 = 0.999 * v1 + 0.001 * G2[i] ** 2
        p = P0[i] - 0.1 * (m1 / 0.1) / (math.sqrt(v1 / 0.001) + 1e-8)
        p = p - 0.1 * (m2 / (1 - 0.9**2)) / (math.sqrt(v2 / (1 - 0.999**2)) + 1e-8)
        assert out[i] == pytest.approx(p, rel=1e-13)
    # element 0 by hand: m2 = 0.145, v2 = 0.00124975; 0.1 * (0.145/0.19) / sqrt(0.00124975/0.001999)
    assert out[0] == pytest.approx(0.9 - 0.0965183, abs=1e-6)


def test_adam_coupled_weight_decay_changes_the_gradient():
    # g' = g + 0.5 p = [1.0, -0.75]: the first step is still lr * sign(g')
    np.testing.assert_allclose(run(Adam, [G1], lr=0.1, weight_decay=0.5), [0.9, -1.9], rtol=0, atol=1e-8)


def test_adamw_decoupled_weight_decay():
    # p *= 1 - 0.1 * 0.1 -> [0.99, -1.98]; then - 0.1 * sign(g)
    np.testing.assert_allclose(run(AdamW, [G1], lr=0.1, weight_decay=0.1), [0.89, -2.08], rtol=0, atol=1e-8)


def test_adagrad_two_steps():
    # step 1: s = g^2, p -= 0.1 g / |g|; step 2: s = [1.25, 1.0625]
    expected = [0.9 - 0.1 / math.sqrt(1.25), -2.1 + 0.1 / math.sqrt(1.0625)]
    np.testing.assert_allclose(run(Adagrad, [G1, G2], lr=0.1), expected, rtol=1e-9)  # eps = 1e-10
    np.testing.assert_allclose(expected, [0.8105572809, -2.0029857499], atol=1e-10)


def test_rmsprop_first_step_and_momentum():
    # v = 0.01 g^2 -> d = g / (0.1 |g|) = 10 sign(g); p -= 0.01 d
    np.testing.assert_allclose(run(RMSprop, [G1], lr=0.01), [0.9, -2.1], rtol=0, atol=1e-7)
    # momentum 0.5, step 2: v = 0.99 * 0.01 g1^2 + 0.01 g2^2; b = 0.5 b1 + g2 / sqrt(v)
    out = run(RMSprop, [G1, G2], lr=0.01, momentum=0.5)
    for i in range(2):
        v1 = 0.01 * G1[i] ** 2
        b1 = G1[i] / (math.sqrt(v1) + 1e-8)
        v2 = 0.99 * v1 + 0.01 * G2[i] ** 2
        b2 = 0.5 * b1 + G2[i] / (math.sqrt(v2) + 1e-8)
        assert out[i] == pytest.approx(P0[i] - 0.01 * b1 - 0.01 * b2, rel=1e-12)


def test_rmsprop_centered():
    out = run(RMSprop, [G1, G2], lr=0.01, centered=True)
    for i in range(2):
        v1, a1 = 0.01 * G1[i] ** 2, 0.01 * G1[i]
        v2, a2 = 0.99 * v1 + 0.01 * G2[i] ** 2, 0.99 * a1 + 0.01 * G2[i]
        p = P0[i] - 0.01 * G1[i] / (math.sqrt(v1 - a1 * a1) + 1e-8)
        p -= 0.01 * G2[i] / (math.sqrt(v2 - a2 * a2) + 1e-8)
        assert out[i] == pytest.approx(p, rel=1e-10)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, Adagrad, RMSprop])
def test_float32_stays_float32(cls):
    out = run(cls, [G1, G2], dtype=np.float32, lr=0.1)
    assert out.dtype == np.float32
    ref = run(cls, [G1, G2], dtype=np.float64, lr=0.1)
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(2) for _ in range(6)]
    full = run(Adam, grads, lr=0.05, weight_decay=0.01)
    p = np.array(P0)
    g = np.zeros(2)
    opt = Adam([("w", p, g)], lr=0.05, weight_decay=0.01)
    for grad in grads[:3]:
        g[...] = grad
        opt.step()
    state = opt.state_dict()
    p2, g2 = p.copy(), np.zeros(2)
    opt2 = Adam([("w", p2, g2)], lr=0.05, weight_decay=0.01).load_state_dict(state)
    for grad in grads[3:]:
        g2[...] = grad
        opt2.step()
    np.testing.assert_array_equal(p2, full)


def test_bad_arguments():
    p = np.zeros(2)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([("w", p, np.zeros(2))], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        Adam([("w", p, np.zeros(2))], lr=-1)
    with pytest.raises(ValueError, match="does not match"):
        Adam([("w", p, np.zeros(3))])
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lbfgs", [("w", p, np.zeros(2))], 0.1)


TORCH_CASES = [
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.1, "momentum": 0.8, "dampening": 0.3}),
    ("adam", {"lr": 0.01, "weight_decay": 0.05}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}),
    ("adagrad", {"lr": 0.1, "weight_decay": 0.01}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.01}),
]


@pytest.mark.parametrize(("name", "kwargs"), TORCH_CASES)
def test_matches_torch_optim(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    p, g = p0.copy(), np.zeros_like(p0)
    opt = make_optimizer(name, [("w", p, g)], **kwargs)
    tp = torch.nn.Parameter(torch.tensor(p0))
    tcls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
            "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop}[name]
    topt = tcls([tp], **kwargs)
    for grad in grads:
        g[...] = grad
        opt.step()
        tp.grad = torch.tensor(grad)
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
