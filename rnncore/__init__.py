"""rnncore: fast, verified recurrent neural networks on the CPU."""

from rnncore._version import __version__
from rnncore.nn import GRU, LSTM, RNN, Module, no_grad

__all__ = ["GRU", "LSTM", "RNN", "Module", "__version__", "no_grad"]
