"""One safetensors file per module, with torch.nn's keys and shapes, that PyTorch loads as it is.

A file holds ``module.state_dict()`` (``weight_ih_l0``, ``bias_hh_l1_reverse``, ``embedding.weight``,
``head.bias``, ...) in the module's dtype, and string metadata:

    format   "pt" (what safetensors.torch expects)
    dtype    "float32" or "float64", the dtype the arrays were written in
    rnncore  the version that wrote the file
    module   the class name (RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell, Linear, Embedding, or a task
             model's class)
    config   JSON: the constructor arguments (layers) or ``get_config()`` (task models)
    vocabs   JSON, task models only: their vocabularies
    kind     task models only: the model kind

``load(path)`` rebuilds the module from that metadata; ``load(path, module)`` loads into a given
module, which is how a file written by PyTorch (``safetensors.torch.save_file(m.state_dict(),
path)``) comes in. Into PyTorch: ``m.load_state_dict(safetensors.torch.load_file(path))``.
"""

import inspect
import json
from pathlib import Path

import numpy as np

from rnncore._version import __version__
from rnncore.io.files import encode_arrays, read_arrays, write_atomic
from rnncore.nn import GRU, LSTM, RNN, Embedding, GRUCell, Linear, LSTMCell, Module, RNNCell
from rnncore.nn._checks import check_finite

__all__ = ["encode_module", "load", "module_config", "save"]

LAYERS = {cls.__name__: cls for cls in (RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell, Linear, Embedding)}
_NOT_CONFIG = ("self", "seed", "dtype")


def _json_ready(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def module_config(module):
    """The constructor arguments of a layer, read from the attributes of the same names (a cell's
    from its cell, else from the layer it wraps), JSON-ready, without ``seed`` and ``dtype``."""
    cls = type(module)
    if cls.__name__ not in LAYERS:
        raise TypeError(f"module must be one of {sorted(LAYERS)} or a task model, got {cls.__name__}")
    config = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in _NOT_CONFIG or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        for source in (module, getattr(module, "_layer", None)):
            if source is not None and hasattr(source, name):
                config[name] = _json_ready(getattr(source, name))
                break
        else:
            if param.default is param.empty:
                raise ValueError(f"{cls.__name__}: cannot read the constructor argument {name!r} back")
    return config


def _metadata(module):
    from rnncore.models.base import TaskModel

    meta = {"format": "pt", "dtype": module.dtype.name, "rnncore": __version__,
            "module": type(module).__name__}
    if isinstance(module, TaskModel):
        config = module.get_config()
        vocabs = {name: v.to_dict() for name, v in module.vocabs.items()}
        meta.update(kind=str(config.get("kind")), config=json.dumps(config, sort_keys=True),
                    vocabs=json.dumps(vocabs, sort_keys=True))
    else:
        meta["config"] = json.dumps(module_config(module), sort_keys=True)
    return meta


def encode_module(module, metadata=None):
    """The safetensors bytes of ``module``: its state_dict in its dtype, with the metadata above
    (and ``metadata``, string values, added). NaN or Inf in a parameter is a ValueError."""
    if not isinstance(module, Module):
        raise TypeError(f"module must be an rnncore Module, got {type(module).__name__}")
    state = module.state_dict()
    for name, value in state.items():  # never write weights that could not be used
        check_finite(f"{type(module).__name__} parameter {name!r}", value)
    meta = _metadata(module)
    meta.update(metadata or {})
    return encode_arrays(state, meta)


def save(module, path, metadata=None):
    """Write ``module`` to the safetensors file ``path`` (atomically: the old file survives a
    failed write). Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path must be a file name, got the directory {path}")
    write_atomic(path, encode_module(module, metadata))
    return path


def _build(meta, path):
    module_name = meta.get("module")
    if "config" not in meta or module_name is None:
        raise ValueError(f"{path} carries no rnncore metadata (module, config): pass the module to load "
                         "into, e.g. load(path, rnncore.LSTM(...))")
    config = json.loads(meta["config"])
    dtype = meta.get("dtype", "float32")
    if "kind" in meta:
        from rnncore.models.base import TaskModel

        return TaskModel.from_config(config, json.loads(meta.get("vocabs", "{}")))
    if module_name not in LAYERS:
        raise ValueError(f"{path}: unknown module {module_name!r}; known: {sorted(LAYERS)}")
    return LAYERS[module_name](**config, dtype=dtype)


def load(path, module=None, cast=False, strict=True):
    """The module in the safetensors file ``path``: rebuilt from the file's metadata when ``module``
    is None, else ``module`` with the file's arrays loaded into it (every key and shape checked
    before anything is written). Arrays of another dtype than the module's are a TypeError unless
    ``cast`` (a float32 file from PyTorch into a float64 module, say)."""
    arrays, meta = read_arrays(path)
    if module is None:
        module = _build(meta, path)
    elif not isinstance(module, Module):
        raise TypeError(f"module must be an rnncore Module or None, got {type(module).__name__}")
    if not cast:
        for key, value in arrays.items():
            if value.dtype != module.dtype:
                raise TypeError(f"{path}: {key!r} is {value.dtype} but the module is {module.dtype.name}; "
                                "pass cast=True to convert")
    module.load_state_dict(arrays, strict=strict)
    return module
