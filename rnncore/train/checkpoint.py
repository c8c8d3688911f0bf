"""Checkpoints: safetensors weights under torch.nn names, JSON config and vocabularies, optimizer
and training state, written so that a failed or interrupted save never damages the previous one.

A checkpoint is a directory::

    checkpoint.json                  the pointer: model kind, config and vocabularies, the names of
                                     the two files below, the training state (step, epoch, random
                                     generator states, ...) as JSON
    model-<tag>.safetensors          the weights, keys = model.state_dict() (torch.nn names), in the
                                     model's dtype (the metadata says which)
    train-<tag>.safetensors          optimizer buffers ("optimizer/<buffer>/<param>") and any other
                                     arrays of the training state ("state/<name>"), when saved

A save writes new, uniquely named safetensors files (each to a temporary file, flushed, fsynced,
renamed), then replaces ``checkpoint.json`` the same way and fsyncs the directory; only then are
the files of the previous checkpoint deleted, with any temporary files a killed save left behind.
Until ``checkpoint.json`` is replaced, a reader sees the previous checkpoint complete; afterwards,
the new one. A model with NaN or Inf weights is never saved (ValueError, nothing written).

Loading runs no code: JSON and safetensors only (no pickle). A corrupted ``checkpoint.json``, a
missing, truncated or corrupted safetensors file, or weights that do not fit the model the config
describes are each a ValueError (FileNotFoundError for a missing file) naming the file.

Loading the weights into PyTorch::

    import json, safetensors.torch
    names = json.load(open(f"{dir}/checkpoint.json"))
    torch_model.load_state_dict(safetensors.torch.load_file(f"{dir}/{names['weights']}"))
"""

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnncore._version import __version__
from rnncore.io.files import encode_arrays, read_arrays, write_atomic
from rnncore.io.weights import encode_module
from rnncore.nn._checks import check_finite

__all__ = ["Checkpoint", "FORMAT", "POINTER", "load_checkpoint", "load_model", "save_checkpoint",
           "save_model", "weights_path", "write_atomic"]

FORMAT = "rnncore-checkpoint"
FORMAT_VERSION = 1
POINTER = "checkpoint.json"


def _read_pointer(path):
    """The checkpoint.json of the checkpoint directory ``path``, checked: an rnncore checkpoint of a
    version this code reads, whose file names stay inside the directory."""
    pointer = Path(path) / POINTER
    if not pointer.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint ({POINTER} not found)")
    try:
        spec = json.loads(pointer.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{pointer} is corrupted: not valid JSON ({err})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ValueError(f"{pointer} is not an rnncore checkpoint (no \"format\": \"{FORMAT}\")")
    version = spec.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{pointer} has format version {version!r}; this rnncore reads up to "
                         f"{FORMAT_VERSION}")
    model = spec.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("config"), dict) \
            or not isinstance(model.get("vocabs", {}), dict):
        raise ValueError(f"{pointer} is corrupted: it needs a \"model\" entry with a \"config\" dict")
    for key in ("weights", "train"):
        name = spec.get(key)
        if key == "train" and name is None:
            continue
        if not isinstance(name, str) or not name.endswith(".safetensors") or Path(name).name != name \
                or name.startswith("."):
            raise ValueError(f"{pointer}: {key!r} must name a .safetensors file in the checkpoint directory, "
                             f"got {name!r}")
    return spec


def save_checkpoint(path, model, optimizer=None, train_state=None, arrays=None):
    """Save ``model`` (and optionally the optimizer, a JSON-ready ``train_state`` dict and extra
    ``arrays``) to the checkpoint directory ``path`` (created if needed). Returns the path."""
    path = Path(path)
    if not all(hasattr(model, a) for a in ("get_config", "state_dict", "vocabs", "dtype")):
        raise TypeError(f"model must be a task model (rnncore.models), got {type(model).__name__}")
    weights = encode_module(model)  # a checkpoint is never written with weights it could not load
    path.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    dtype = model.dtype.name
    config = model.get_config()
    weights_name = f"model-{tag}.safetensors"
    written = []
    try:
        write_atomic(path / weights_name, weights)
        written.append(weights_name)
        train_name = None
        opt_spec = None
        train_arrays = {}
        if optimizer is not None:
            opt_state = optimizer.state_dict()
            train_arrays.update({f"optimizer/{k}": v for k, v in opt_state["buffers"].items()})
            opt_spec = {"name": opt_state["name"], "hyper": opt_state["hyper"], "step": opt_state["step"]}
        train_arrays.update({f"state/{k}": v for k, v in (arrays or {}).items()})
        for name, value in train_arrays.items():
            check_finite(f"save_checkpoint: {name!r}", np.asarray(value))
        if train_arrays:
            train_name = f"train-{tag}.safetensors"
            data = encode_arrays(train_arrays, {"rnncore": __version__})
            write_atomic(path / train_name, data)
            written.append(train_name)
        spec = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "rnncore": __version__,
            "dtype": dtype,
            "model": {"config": config,
                      "vocabs": {name: v.to_dict() for name, v in model.vocabs.items()}},
            "weights": weights_name,
            "train": train_name,
            "optimizer": opt_spec,
            "train_state": train_state,
            "array_names": sorted((arrays or {}).keys()),
        }
        text = json.dumps(spec, indent=1, sort_keys=False, allow_nan=True)
        write_atomic(path / POINTER, text + "\n")
    except BaseException:
        for name in written:  # the new files are unreferenced: remove them, keep the previous checkpoint
            try:
                (path / name).unlink()
            except FileNotFoundError:
                pass
        raise
    keep = set(written) | {POINTER}
    for old in path.iterdir():
        ours = old.name.startswith(("model-", "train-")) and old.suffix == ".safetensors"
        # temporary files of a save that was killed before its rename (write_atomic's names)
        stale = old.name.startswith((".model-", ".train-", f".{POINTER}.")) and old.suffix == ".tmp"
        if (ours and old.name not in keep) or stale:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
    return path


def save_model(model, path):
    """Save a model alone (weights, config, vocabularies) to the checkpoint directory ``path``."""
    return save_checkpoint(path, model)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, the optimizer state (for ``Optimizer.load_state_dict``) or
    None, the training state dict or None, extra arrays by name, and the raw pointer JSON."""

    model: object
    optimizer_state: dict
    train_state: dict
    arrays: dict
    spec: dict


def weights_path(path):
    """The safetensors weights file of the checkpoint in directory ``path``."""
    return Path(path) / _read_pointer(path)["weights"]


def _read_safetensors(file):
    """The arrays of a safetensors file (no code runs: safetensors holds only a JSON header and raw
    tensor bytes). A missing, truncated or corrupted file is a clear error naming it."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file.parent}: {POINTER} names {file.name}, which does not exist "
                                "(the checkpoint directory is incomplete)")
    return read_arrays(file)[0]


def load_checkpoint(path):
    """Everything saved in the checkpoint directory ``path`` (see ``Checkpoint``)."""
    from rnncore.models.base import TaskModel

    path = Path(path)
    spec = _read_pointer(path)
    try:
        model = TaskModel.from_config(spec["model"]["config"], spec["model"].get("vocabs", {}))
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{path / POINTER}: its model config does not build a model: {err}") from None
    weights = _read_safetensors(path / spec["weights"])
    if spec.get("dtype") and spec["dtype"] != model.dtype.name:
        raise ValueError(f"{path}: weights are {spec['dtype']} but the config builds {model.dtype.name}")
    try:
        model.load_state_dict(weights)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path / spec['weights']} does not hold the weights of the model {POINTER} "
                         f"describes: {err}") from None
    opt_state, arrays = None, {}
    if spec.get("train"):
        stored = _read_safetensors(path / spec["train"])
        buffers = {k[len("optimizer/"):]: v for k, v in stored.items() if k.startswith("optimizer/")}
        arrays = {k[len("state/"):]: v for k, v in stored.items() if k.startswith("state/")}
        if spec.get("optimizer") is not None:
            opt_state = {**spec["optimizer"], "buffers": buffers}
    elif spec.get("optimizer") is not None:
        opt_state = {**spec["optimizer"], "buffers": {}}
    return Checkpoint(model, opt_state, spec.get("train_state"), arrays, spec)


def load_model(path):
    """The model saved in the checkpoint directory ``path``."""
    return load_checkpoint(path).model
