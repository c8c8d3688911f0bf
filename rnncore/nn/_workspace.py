"""The arrays of a layer's training passes, kept from one training step to the next.

A training forward stores what its backward needs (states, activated gates: (T, B, G) arrays) and the
kernels work in arrays of the same size (pre-activations, their gradients). Allocated afresh at every
step, arrays of megabytes come from pages the C allocator has just taken from the system or given back
to it (glibc trims the top of its heap and maps large blocks on their own), and every first touch of a
page is a fault: here 0.9 ms per MB filled, against 0.07 ms for memory already mapped. A training step
of LSTM T 25, B 64, H 256 took 3,560 such faults (14 MB, about 13 ms of its 49 ms) in one process and
none in another, depending on the allocator's history. Taking the arrays of the previous step instead
makes the cost the same every step.

The rules that keep reuse safe:
- ``take`` hands out an array that no live pass holds: either new, or one handed back by ``release``
  (or by ``give_back``, for an array its pass no longer reads).
- ``release`` (at the end of a backward, after the layer dropped the forward's cache) hands back what
  the pass took; nothing of that pass is read again. What the previous spare arrays were and the pass
  did not take (other shapes) is dropped, so at most one pass's arrays are kept between steps.
- ``begin`` (a training forward starts) forgets what an earlier forward took that no backward
  released: those arrays stay with that forward's cache (which a forward that fails leaves in place)
  and are never handed out again.
- Inference (``no_grad``) takes nothing, so it can run from several threads beside training; the row
  windows of one pass (``_shards``) take from their own threads, under a lock.

Copies of a layer (``copy.deepcopy``, pickling) start with an empty workspace.
"""

import threading

import numpy as np

_LOCK = threading.Lock()


class Workspace:
    """Spare arrays by (shape, dtype), and the arrays the pass in progress has taken."""

    def __init__(self):
        self._spare, self._taken = {}, []

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()

    def begin(self):
        """A training forward starts: what an unreleased earlier pass took is not this pass's to hand back."""
        with _LOCK:
            self._taken = []

    def take(self, shape, dtype, zero=False):
        """An array of shape and dtype for the pass in progress: a spare one, or new; zeros if ``zero``,
        otherwise any contents."""
        key = (tuple(int(n) for n in shape), np.dtype(dtype))
        with _LOCK:
            spare = self._spare.get(key)
            a = spare.pop() if spare else None
            if a is None:
                a = np.empty(key[0], dtype=key[1])
            self._taken.append(a)
        if zero:
            a.fill(0)
        return a

    def give_back(self, a):
        """An array the pass in progress took and no longer reads: spare again at once, so that a later
        ``take`` of the same pass reuses it and the pass's peak memory stays that of fresh allocations."""
        with _LOCK:
            self._taken = [t for t in self._taken if t is not a]
            self._spare.setdefault((a.shape, a.dtype), []).append(a)

    def release(self):
        """The pass's backward has finished: its arrays become the spare ones of the next pass."""
        with _LOCK:
            spare = {}
            for a in self._taken:
                spare.setdefault((a.shape, a.dtype), []).append(a)
            self._spare, self._taken = spare, []

    def nbytes(self):
        """Bytes held: spare arrays and those of the pass in progress."""
        with _LOCK:
            return sum(a.nbytes for arrays in self._spare.values() for a in arrays) + \
                sum(a.nbytes for a in self._taken)
