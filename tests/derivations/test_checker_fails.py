"""The checker can fail: deliberately wrong gradients, vacuous comparisons and crashing derivations
are reported as failed, and `rnncore verify` exits non-zero."""

import math

import numpy as np
import pytest
from click.testing import CliRunner

import rnncore
from cli import main
from derivations import cells
from derivations.checks import Check, DerivationResult, array_check, bound_check, value_check


class TransposedRecurrentGradient(rnncore.RNN):
    """A classic BPTT bug: dW_hh accumulated as its transpose."""

    def backward(self, grad_out=None, grad_state=None):
        out = super().backward(grad_out, grad_state)
        g = self._grads["weight_hh_l0"]
        g[...] = g.T.copy()
        return out


class SlightlyWrongBias(rnncore.GRU):
    """One gradient entry off by 1e-7: far below what a loss curve would show."""

    def backward(self, grad_out=None, grad_state=None):
        out = super().backward(grad_out, grad_state)
        self._grads["bias_hh_l0"][0] += 1e-7
        return out


def _by_name(checks):
    return {c.name.rsplit("/", 1)[1]: c for c in checks}


def test_transposed_recurrent_gradient_is_reported():
    spec = cells.NetSpec("broken_rnn", "rnn", "tanh", T=3, B=2, I=2, H=2)
    checks = _by_name(cells.check_network(spec, layer_class=TransposedRecurrentGradient))
    assert not checks["weight_hh_l0"].passed
    assert checks["weight_hh_l0"].max_rel_error > 1e-3
    assert all(c.passed for name, c in checks.items() if name != "weight_hh_l0")


def test_a_1e7_error_in_one_entry_is_reported():
    spec = cells.NetSpec("broken_gru", "gru", "reset_after", T=2, B=1, I=1, H=1)
    checks = _by_name(cells.check_network(spec, layer_class=SlightlyWrongBias))
    assert not checks["bias_hh_l0"].passed
    assert all(c.passed for name, c in checks.items() if name != "bias_hh_l0")


def test_comparing_zeros_is_not_a_pass(monkeypatch):
    """A ReLU network whose units are all off has zero gradients on both sides: reported as failed."""
    spec = cells.NetSpec("dead_relu", "rnn", "relu", T=2, B=1, I=1, H=1)
    original = cells.random_point

    def dead(net, rng):
        values = original(net, rng)
        values["bias_ih_l0"][:] = -50.0
        values["h0"][:] = 0.0
        return values

    monkeypatch.setattr(cells, "random_point", dead)
    checks = _by_name(cells.check_network(spec))
    assert not checks["weight_hh_l0"].passed
    assert "vacuous" in checks["weight_hh_l0"].compared


def test_check_records():
    ok = value_check("f", "f/a", "what", "ref", "meas", 1.0, 1.0 + 1e-12, 1e-10)
    assert ok.passed
    assert ok.record()["passed"] is True
    bad = array_check("f", "f/b", "what", "ref", "meas", np.ones(3), np.array([1, 1, 1.1]), 1e-10)
    assert not bad.passed
    assert math.isclose(bad.max_abs_error, 0.1)
    nan = array_check("f", "f/c", "what", "ref", "meas", np.ones(2), np.array([1.0, np.nan]), 1e-10)
    assert not nan.passed
    assert nan.record()["max_abs_error"] is None
    assert bound_check("f", "f/d", "angle", "0", "meas", 2e-3, 1e-3).passed is False
    assert bound_check("f", "f/e", "angle", "0", "meas", 5e-4, 1e-3).passed is True


def _failing_run(quick=False):
    check = Check("softmax", "softmax/deliberately_wrong", "a gradient that is off", "ref", "meas", 1.0, 0.5,
                  1e-10)
    return DerivationResult("softmax", "Softmax (broken for the test)", "A failing check.", [check])


def test_verify_exits_nonzero_when_a_check_fails(tmp_path, monkeypatch):
    import derivations.softmax

    monkeypatch.setattr(derivations.softmax, "run", _failing_run)
    result = CliRunner().invoke(main, ["verify", "--only", "softmax", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "1 of 1 checks FAILED" in result.output
    assert "softmax/deliberately_wrong" in result.output
    assert (tmp_path / "results.json").exists()
    assert (tmp_path / "report.html").exists()


def test_a_derivation_that_raises_is_a_failed_check(tmp_path, monkeypatch):
    import derivations.softmax

    def boom(quick=False):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(derivations.softmax, "run", boom)
    result = CliRunner().invoke(main, ["verify", "--only", "softmax", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "softmax/error" in result.output
    assert "broken on purpose" in result.output


@pytest.mark.parametrize("args", [["--only", "nope"], ["--only", "cells", "--only", "nope"]])
def test_unknown_derivation_is_a_usage_error(tmp_path, args):
    result = CliRunner().invoke(main, ["verify", "--out", str(tmp_path), *args])
    assert result.exit_code != 0
    assert "unknown derivation" in result.output


def test_missing_verify_extra_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    import derivations.runner

    real = importlib.util.find_spec
    monkeypatch.setattr(derivations.runner.importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    result = CliRunner().invoke(main, ["verify", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "pip install 'rnncore[verify]'" in result.output
    assert "scikit-learn" in result.output
