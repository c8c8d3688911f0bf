"""What ``rnncore info`` reports, as a plain JSON-serialisable dict (the CLI only formats it).

Nothing here compiles a kernel: the Numba cache state is read from the on-disk index files.
Numba's cache has no public query API, so ``_kernel_cache`` uses the private attributes of
numba 0.68 (``dispatcher._cache._cache_file``) and degrades to "unknown" if they move.
"""

import importlib
import importlib.metadata
import os
import platform

import numba
import numpy as np

import rnncore

KERNEL_MODULES = ("rnncore.kernels.elman", "rnncore.kernels.lstm", "rnncore.kernels.gru")
KERNEL_FUNCTIONS = ("forward_train", "forward_infer", "backward", "step")
ENV_VARS = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "NUMBA_CACHE_DIR", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "RNNCORE_NUMBA_CACHE",
)


def gather_info():
    """Versions, BLAS libraries, Numba threads, relevant environment variables, kernel cache state."""
    threads = numba_threads()  # before threadpool_info: launching the pool may load an OpenMP runtime
    return {
        "versions": versions(),
        "blas": blas_libraries(),
        "numba": threads,
        "env": {name: os.environ[name] for name in ENV_VARS if name in os.environ},
        "numba_cache": numba_cache(),
    }


def _dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions():
    # scipy and sympy by metadata: importing them costs time that `info` does not need
    # (click too: click.__version__ is deprecated and warns)
    return {
        "rnncore": rnncore.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": _dist_version("scipy"),
        "sympy": _dist_version("sympy"),
        "click": _dist_version("click"),
    }


def _owner(filepath):
    """The wheel a vendored library came with (``.../scipy.libs/libx.so`` -> ``scipy``), else None."""
    parent = os.path.basename(os.path.dirname(filepath or ""))
    return parent[: -len(".libs")] if parent.endswith(".libs") else None


def blas_libraries():
    """The BLAS and OpenMP libraries loaded in this process, as threadpoolctl sees them.

    scipy.linalg.cython_blas is imported first: Numba's ``np.dot`` in the kernels calls BLAS through
    it, and that may be a different library (and build) from the one NumPy uses.
    """
    from threadpoolctl import threadpool_info

    try:
        importlib.import_module("scipy.linalg.cython_blas")
    except ImportError:
        pass
    libraries = []
    for lib in threadpool_info():
        libraries.append({
            "user_api": lib.get("user_api"),
            "internal_api": lib.get("internal_api"),
            "version": lib.get("version"),
            "num_threads": lib.get("num_threads"),
            "architecture": lib.get("architecture"),
            "threading_layer": lib.get("threading_layer"),
            "prefix": lib.get("prefix"),
            "filepath": lib.get("filepath"),
            "shipped_with": _owner(lib.get("filepath")),
        })
    return libraries


def numba_threads():
    """Numba's thread count and threading layer (launching the thread pool, compiling nothing)."""
    result = {"num_threads": None, "threading_layer": None,
              "threading_layer_requested": numba.config.THREADING_LAYER, "error": None}
    try:
        result["num_threads"] = numba.get_num_threads()
        result["threading_layer"] = numba.threading_layer()
    except (ValueError, RuntimeError, ImportError) as exc:  # no usable threading layer
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def _kernel_cache(dispatcher, codegen):
    """State of one kernel's cache: warm, stale, other-cpu, missing, disabled or unknown.

    warm: the index exists, matches this numba version and the source file's stamp, and holds a
    compiled entry for this CPU (``entries`` counts them, one per dtype). stale: an index exists
    but numba would ignore it (another numba version, or the source file changed since).
    """
    cache = getattr(dispatcher, "_cache", None)
    index_file = getattr(cache, "_cache_file", None)
    if index_file is None:
        # cache=False gives a NullCache
        return {"status": "disabled" if cache is not None else "unknown", "index": None, "entries": 0}
    try:
        path = index_file._index_path
        if not os.path.exists(path):
            return {"status": "missing", "index": path, "entries": 0}
        overloads = index_file._load_index()  # {} when the numba version or the source stamp differ
        if not overloads:
            return {"status": "stale", "index": path, "entries": 0}
        here = sum(1 for key in overloads if cache._index_key(key[0], codegen) == key)
    except Exception as exc:  # a private API changed, or an unreadable index
        return {"status": "unknown", "index": None, "entries": 0, "error": f"{type(exc).__name__}: {exc}"}
    return {"status": "warm" if here else "other-cpu", "index": path, "entries": here}


def numba_cache():
    """Whether the public kernels of every cell would load from Numba's on-disk cache."""
    from rnncore.kernels._jit import CACHE

    kernels = {}
    cache_dirs = []
    codegen = None
    for module_name in KERNEL_MODULES:
        module = importlib.import_module(module_name)
        short = module_name.rsplit(".", 1)[-1]
        for fn_name in KERNEL_FUNCTIONS:
            dispatcher = getattr(module, fn_name, None)
            if dispatcher is None or not hasattr(dispatcher, "py_func"):
                kernels[f"{short}.{fn_name}"] = {"status": "absent", "index": None, "entries": 0}
                continue
            if codegen is None:
                codegen = dispatcher.targetctx.codegen()
            state = _kernel_cache(dispatcher, codegen)
            kernels[f"{short}.{fn_name}"] = state
            cache_path = getattr(getattr(dispatcher, "_cache", None), "cache_path", None)
            if cache_path and cache_path not in cache_dirs:
                cache_dirs.append(cache_path)
    warm = sum(1 for state in kernels.values() if state["status"] == "warm")
    if not CACHE:
        summary = "disabled"
    elif warm == len(kernels):
        summary = "warm"
    else:
        summary = "cold" if warm == 0 else "partial"
    return {"state": summary, "enabled": CACHE, "warm": warm, "total": len(kernels),
            "cache_dirs": cache_dirs, "kernels": kernels}
