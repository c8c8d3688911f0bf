"""derivations.regularisers: the SymPy references use the layer's masks, and a wrong mask or a
backward that forgets a mask is reported as failed."""

import numpy as np

import rnncore
from derivations import cells
from derivations import regularisers as R


def _failed(checks):
    return {c.name.rsplit("/", 1)[1] for c in checks if not c.passed}


def _reg(name, cell="gru", option="reset_before", rate=R.RATE, **net):
    base = cells.NetSpec(f"{cell}_{name}", cell, option, **{"T": 3, "B": 2, "I": 2, "H": 2, **net})
    return R.RegSpec(f"{cell}_{name}", base, ((name, rate),))


def test_every_regulariser_of_the_gru_reset_before_passes():
    for name in ("input_dropout", "recurrent_dropout", "zoneout", "weight_drop"):
        checks = R.check_regularised(_reg(name))
        assert not _failed(checks), name
        assert max(c.max_rel_error for c in checks) < 1e-12


def test_the_masks_are_not_trivial():
    reg = _reg("recurrent_dropout")
    masks = reg.mask_values()
    assert set(masks) == {"recurrent_l0"}
    assert set(np.unique(masks["recurrent_l0"])) == {0.0, 2.0}


class OtherMasks(R.RegSpec):
    """The symbolic network gets the masks of another seed than the layer."""

    def mask_values(self):
        return self._draw(self.mask_seed + 1)


def test_masks_of_another_draw_are_reported():
    reg = _reg("zoneout")
    wrong = OtherMasks(reg.label, reg.net, reg.rates)
    assert any(np.any(wrong.mask_values()[k] != v) for k, v in reg.mask_values().items())
    assert "loss" in _failed(R.check_regularised(wrong))


class ForgetsTheRecurrentMask(rnncore.GRU):
    """A backward that uses no recurrent-dropout mask although the forward did."""

    def _run_backward_masked(self, dx, d_s0, dw, g, g_finals, x, lengths, saved, w, masks, reverse, col):
        masks = type(masks)(np.ones_like(masks.recurrent), masks.zone)
        super()._run_backward_masked(dx, d_s0, dw, g, g_finals, x, lengths, saved, w, masks, reverse, col)


class BrokenSpec(R.RegSpec):
    def layer(self, *args, **kwargs):
        layer = ForgetsTheRecurrentMask(*args, **kwargs, **dict(self.rates))
        layer.reseed(self.mask_seed)
        return layer


def test_a_backward_without_the_forward_mask_is_reported():
    reg = _reg("recurrent_dropout")
    broken = BrokenSpec(reg.label, reg.net, reg.rates)
    failed = _failed(R.check_regularised(broken))
    assert "loss" not in failed  # the forward is right
    assert {"weight_hh_l0", "h0"} <= failed
