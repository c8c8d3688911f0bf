"""Interoperability: safetensors files with torch.nn keys, ONNX export and the ONNX weight layout.

- ``save(module, path)`` / ``load(path, module=None)``: one safetensors file per layer or task
  model, keys and shapes as torch.nn's, dtype in the metadata (``rnncore.io.weights``).
- ``to_onnx(model, path)``: recurrent layers, language models and classifiers as ONNX graphs of
  the RNN / LSTM / GRU operators (``rnncore.io.onnx_export``; needs ``rnncore[onnx]``).
- ``to_onnx_weights`` / ``from_onnx_weights``: torch.nn-named weights <-> ONNX W, R, B (and the LSTM peepholes P)
  (``rnncore.io.onnx_layout``).
- ``rnncore.io.keras``: Keras 3 LSTM / GRU / SimpleRNN weights to and from rnncore layers.
- ``write_atomic``, ``encode_arrays``, ``read_arrays``: the file helpers the checkpoints use too.
"""

from rnncore.io.files import encode_arrays, read_arrays, write_atomic
from rnncore.io.onnx_export import to_onnx, to_onnx_model
from rnncore.io.onnx_layout import from_onnx_weights, linear_before_reset, to_onnx_weights
from rnncore.io.weights import encode_module, load, module_config, save

__all__ = ["encode_arrays", "encode_module", "from_onnx_weights", "linear_before_reset", "load",
           "module_config", "read_arrays", "save", "to_onnx", "to_onnx_model", "to_onnx_weights",
           "write_atomic"]
