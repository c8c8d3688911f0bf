from rnncore.nn.cells import GRUCell, LSTMCell, RNNCell
from rnncore.nn.layers import Dropout, Embedding, Linear
from rnncore.nn.module import Module, is_grad_enabled, no_grad
from rnncore.nn.recurrent import GRU, LSTM, RNN

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "Dropout", "Embedding", "Linear", "Module",
           "is_grad_enabled", "no_grad"]
