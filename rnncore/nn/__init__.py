from rnncore.nn.module import Module, is_grad_enabled, no_grad
from rnncore.nn.recurrent import GRU, LSTM, RNN

__all__ = ["GRU", "LSTM", "RNN", "Module", "is_grad_enabled", "no_grad"]
