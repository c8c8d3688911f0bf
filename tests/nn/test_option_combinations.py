"""Options of the recurrent layers that come from different parts of the library, taken together:
the combinations without a kernel are refused by name, and the ones that compose are exact."""

import numpy as np
import pytest

import rnncore
from rnncore.gradcheck import check_recurrent


@pytest.mark.parametrize("option", ["recurrent_dropout", "zoneout"])
@pytest.mark.parametrize("cls", [rnncore.LSTM, rnncore.GRU])
def test_layer_norm_refuses_the_masked_regularisers(cls, option):
    with pytest.raises(ValueError, match=rf"{option} is not available with layer_norm=True"):
        cls(3, 4, layer_norm=True, **{option: 0.2})


@pytest.mark.parametrize("variant", [{"proj_size": 2}, {"peephole": True}, {"gate_clip": 1.0},
                                     {"coupled_input_forget": True}])
def test_layer_norm_refuses_the_lstm_variants(variant):
    (name,) = variant
    with pytest.raises(ValueError, match=rf"the LSTM variants \['{name}'\] are not available with "
                                         r"layer_norm"):
        rnncore.LSTM(3, 4, layer_norm=True, **variant)


@pytest.mark.parametrize("option", ["recurrent_dropout", "zoneout", "zoneout_cell"])
def test_lstm_variants_refuse_the_masked_regularisers(option):
    with pytest.raises(ValueError, match=r"recurrent_dropout and zoneout are not available with the LSTM "
                                         r"variants \['peephole'\]"):
        rnncore.LSTM(3, 4, peephole=True, **{option: 0.2})


@pytest.mark.parametrize(("cls", "options"), [
    (rnncore.LSTM, {"layer_norm": True, "input_dropout": 0.3, "weight_drop": 0.4}),
    (rnncore.GRU, {"layer_norm": True, "input_dropout": 0.3, "weight_drop": 0.4}),
    (rnncore.LSTM, {"peephole": True, "gate_clip": 50.0, "proj_size": 2, "input_dropout": 0.3,
                    "weight_drop": 0.4}),
    (rnncore.LSTM, {"unit_forget_bias": True, "zoneout": 0.3, "recurrent_dropout": 0.2}),
])
def test_composed_options_have_exact_gradients(cls, options):
    layer = cls(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, **options)
    x = np.random.default_rng(1).standard_normal((5, 3, 3))
    results = check_recurrent(layer, x, lengths=[5, 2, 4], mask_seed=7)
    failures = [str(r) for r in results if not r.passed]
    assert results and not failures, failures
    names = {r.name for r in results}
    assert set(layer.state_dict()) <= names  # every parameter was compared
