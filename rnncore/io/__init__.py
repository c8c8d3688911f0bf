"""Interoperability: safetensors files with torch.nn keys.

- ``save(module, path)`` / ``load(path, module=None)``: one safetensors file per layer or task
  model, keys and shapes as torch.nn's, dtype in the metadata (``rnncore.io.weights``).
- ``write_atomic``, ``encode_arrays``, ``read_arrays``: the file helpers the checkpoints use too.
"""

from rnncore.io.files import encode_arrays, read_arrays, write_atomic
from rnncore.io.weights import encode_module, load, module_config, save

__all__ = ["encode_arrays", "encode_module", "load", "module_config", "read_arrays", "save", "write_atomic"]
