"""Diagnostics: per-time-step hidden-state gradients and Jacobian norms with a gradient-flow verdict,
W_hh spectra, gate saturation, the diagnosis of a trained run, and the ReLU initialisation study."""

from rnncore.diagnostics.gradients import (
    VERDICT_THRESHOLDS,
    flow_verdict,
    gradient_norms,
    hidden_state_gradients,
    state_jacobian_norms,
)
from rnncore.diagnostics.init_study import relu_rnn_growth
from rnncore.diagnostics.recurrent import gate_saturation, weight_spectra

__all__ = ["VERDICT_THRESHOLDS", "flow_verdict", "gate_saturation", "gradient_norms",
           "hidden_state_gradients", "relu_rnn_growth", "state_jacobian_norms", "weight_spectra"]
