"""Diagnostics: per-time-step hidden-state gradients and the ReLU initialisation study."""

from rnncore.diagnostics.gradients import gradient_norms, hidden_state_gradients
from rnncore.diagnostics.init_study import relu_rnn_growth

__all__ = ["gradient_norms", "hidden_state_gradients", "relu_rnn_growth"]
