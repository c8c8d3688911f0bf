"""rnncore: fast, verified recurrent neural networks on the CPU."""

from rnncore._version import __version__
from rnncore.nn import (
    GRU,
    LSTM,
    RNN,
    Dropout,
    Embedding,
    GRUCell,
    Linear,
    LSTMCell,
    Module,
    RNNCell,
    is_grad_enabled,
    no_grad,
)

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "Dropout", "Embedding", "Linear", "Module",
           "__version__", "is_grad_enabled", "no_grad"]
