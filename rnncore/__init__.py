"""rnncore: fast, verified recurrent neural networks on the CPU."""

from rnncore import io  # safetensors files and ONNX export (onnx itself is imported on use)
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
from rnncore.threads import _apply_environment, num_threads, set_num_threads

_apply_environment()

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "Dropout", "Embedding", "Linear", "Module",
           "__version__", "io", "is_grad_enabled", "no_grad",
           "num_threads", "set_num_threads"]
