"""Gradient clipping (pre-clip norm reported) and learning-rate schedules."""

import math

import numpy as np
import pytest

from rnncore.train.clip import clip_grad_norm, clip_grad_value, global_norm
from rnncore.train.optim import SGD
from rnncore.train.schedules import Constant, Cosine, StepDecay, Warmup, apply_schedule, make_schedule


def test_clip_by_norm_scales_and_reports_the_pre_clip_norm():
    a, b = np.array([3.0, 0.0]), np.array([[0.0], [4.0]])  # global norm 5
    norm = clip_grad_norm([a, b], 1.0)
    assert norm == 5.0
    assert global_norm([a, b]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(a, [0.6, 0.0], atol=1e-6)
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(1.0, abs=1e-6)  # below: unchanged
    np.testing.assert_allclose(a, [0.6, 0.0], atol=1e-6)


def test_clip_by_value_reports_the_pre_clip_norm():
    g = {"w": np.array([-7.0, 0.5, 12.0], dtype=np.float32)}
    norm = clip_grad_value(g, 5.0)
    assert norm == pytest.approx(math.sqrt(49 + 0.25 + 144))
    assert g["w"].tolist() == [-5.0, 0.5, 5.0] and g["w"].dtype == np.float32


def test_nan_norm_is_reported_not_hidden():
    g = np.array([np.nan, 1.0])
    assert math.isnan(clip_grad_norm([g], 1.0))


def test_clip_accepts_an_optimizer():
    p, g = np.zeros(2), np.array([6.0, 8.0])
    opt = SGD([("w", p, g)], lr=1.0)
    assert clip_grad_norm(opt, 5.0) == 10.0
    np.testing.assert_allclose(g, [3.0, 4.0], rtol=1e-6)


def test_schedules():
    assert Constant()(100) == 1.0
    s = StepDecay(10, 0.5)
    assert [s(i) for i in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    c = Cosine(100, min_factor=0.1)
    assert c(0) == 1.0 and c(50) == pytest.approx(0.55) and c(100) == pytest.approx(0.1) and c(500) == c(100)
    w = Warmup(Constant(), 4)
    assert [w(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    m = make_schedule("cosine", total_steps=14, warmup_steps=4)
    assert m(3) == 1.0 and m(4) == 1.0 and m(14) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="step_size"):
        make_schedule("step")


def test_apply_schedule_sets_the_optimizer_lr():
    opt = SGD([("w", np.zeros(1), np.zeros(1))], lr=0.2)
    assert apply_schedule(opt, StepDecay(1, 0.5), 2) == pytest.approx(0.05)
    assert opt.lr == pytest.approx(0.05) and opt.initial_lr == 0.2
