"""Writing files safely and safetensors (de)serialisation: the one place for both.

- ``write_atomic(path, data)``: a temporary file in the same folder, flushed and fsynced, renamed
  over ``path``, then the folder fsynced, so a reader sees the old file or the new one, never half.
- ``encode_arrays(arrays, metadata)`` / ``read_arrays(path)``: safetensors bytes from numpy arrays
  (always copied to C order first: safetensors 0.8 writes non-contiguous arrays with wrong values
  and raises nothing, safetensors#825) and arrays plus string metadata back from a file (a
  truncated or corrupted file is a ValueError naming it; safetensors runs no code on load).
"""

import glob
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as st_save

__all__ = ["contiguous", "encode_arrays", "read_arrays", "write_atomic"]


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data):
    """Write bytes (or str, as UTF-8) to ``path`` atomically: a temporary file in the same folder,
    flushed and fsynced, renamed over ``path``, then the folder fsynced. On any error the
    temporary file is removed and ``path`` is untouched. Temporary files of ``path`` that an earlier,
    killed write left behind are removed first (one writer per file is assumed)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            stale.unlink()
        except FileNotFoundError:
            pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def contiguous(arrays):
    """``{str(key): C-contiguous array}``: what safetensors may be given (safetensors#825)."""
    return {str(k): np.ascontiguousarray(v) for k, v in arrays.items()}


def encode_arrays(arrays, metadata=None):
    """The safetensors bytes of a dict of arrays; ``metadata`` values are converted to strings."""
    meta = None if metadata is None else {str(k): str(v) for k, v in metadata.items()}
    return st_save(contiguous(arrays), metadata=meta)


def read_arrays(path):
    """``(arrays, metadata)`` from the safetensors file ``path``: numpy arrays by key, and the
    header's string metadata ({} when there is none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such safetensors file")
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = dict(f.metadata() or {})
            arrays = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors' own SafetensorError is not a ValueError
        raise ValueError(f"{path} is truncated or corrupted: not a readable safetensors file "
                         f"({type(err).__name__}: {err})") from None
    return arrays, metadata
