import os
import tempfile

# A fresh Numba cache for every test session: Numba's cache checks only the timestamp of the file
# that defines a kernel, so a changed helper in another module could otherwise load stale code.
os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix="rnncore-numba-cache-"))
