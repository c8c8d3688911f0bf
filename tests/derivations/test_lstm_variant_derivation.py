"""The LSTM-variant derivation: its symbolic network is the plain LSTM's when no option is set, its
checks fail for a layer whose variant gradients are wrong, and clipping is exercised on both sides."""

import numpy as np

import rnncore
from derivations import cells, lstm_variants
from derivations.lstm_variants import VariantNet, VariantSpec


class PeepholeGradientDropped(rnncore.LSTM):
    """A plausible bug: the peephole weights' gradient never accumulated."""

    def backward(self, grad_out=None, grad_state=None):
        out = super().backward(grad_out, grad_state)
        self._grads["weight_peephole_l0"][...] = 0.0
        return out


class ClipIgnoredInBackward(rnncore.LSTM):
    """Clipping in the forward pass only: backward as if nothing were clipped."""

    def backward(self, grad_out=None, grad_state=None):
        clip, self._clip = self._clip, self.dtype.type(0)
        try:
            return super().backward(grad_out, grad_state)
        finally:
            self._clip = clip


def _by_name(checks):
    return {c.name.rsplit("/", 1)[1]: c for c in checks}


def test_no_options_gives_the_plain_lstm_loss():
    spec = VariantSpec("plain", T=2, B=2, I=2, H=2, lengths=(2, 1))
    plain = cells.SymbolicNet(cells.NetSpec("plain", "lstm", T=2, B=2, I=2, H=2, lengths=(2, 1)))
    ours = VariantNet(spec)
    values = cells.random_point(plain, np.random.default_rng(0))
    a = cells.CompiledNet(plain)(values)
    b = cells.CompiledNet(ours)(values)
    assert abs(a[0] - b[0]) <= 1e-13 * abs(a[0])
    for name in a[1]:
        np.testing.assert_allclose(b[1][name], a[1][name], rtol=1e-12, atol=1e-14)


def test_dropped_peephole_gradient_is_reported():
    spec = VariantSpec("broken_peephole", T=3, B=2, I=2, H=2, peephole=True)
    checks = _by_name(cells.check_network(spec, layer_class=PeepholeGradientDropped,
                                          compiled=cells.CompiledNet(VariantNet(spec)), family="t"))
    assert not checks["weight_peephole_l0"].passed
    assert all(c.passed for name, c in checks.items() if name != "weight_peephole_l0")


def test_clip_ignored_in_backward_is_reported():
    spec = VariantSpec("broken_clip", T=3, B=2, I=2, H=2, gate_clip=0.5)
    checks = _by_name(cells.check_network(spec, layer_class=ClipIgnoredInBackward,
                                          compiled=cells.CompiledNet(VariantNet(spec)), family="t"))
    assert checks["loss"].passed  # the forward is right
    assert not checks["weight_ih_l0"].passed and not checks["x"].passed


def test_random_points_straddle_the_clip_bound():
    """At the derivation's points, a good share of gate pre-activations lies on each side of the bound."""
    for spec in lstm_variants.specs(quick=True):
        if not spec.gate_clip:
            continue
        net = VariantNet(spec)
        rng = np.random.default_rng(0)
        values = cells.random_point(net, rng)
        layer = spec.layer()
        layer.load_state_dict({k: v for k, v in values.items() if k in layer.state_dict()})
        layer(values["x"], (values["h0"], values["c0"]), None if spec.lengths is None else list(spec.lengths))
        pre = np.concatenate([s[4].ravel() for e in layer._cache["layers"] for s in e["saved"]])
        beyond = float(np.mean(np.abs(pre) > spec.gate_clip))
        assert 0.2 < beyond < 0.8, (spec.label, beyond)
