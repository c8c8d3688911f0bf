"""Batches: padding with true lengths, length-bucketed batches, language-model streams for
truncated BPTT, and deterministic splits.

A ``Batch`` is a bag of named arrays; each task model documents the fields it reads. Token arrays
are time-major (T, B) like the layers' input, with ``lengths`` (B,) giving each sequence's true
length (positions past it hold the pad id and count for nothing).
"""

import numpy as np

from rnncore.nn._padding import check_padding_side

__all__ = ["Batch", "bucket_batches", "length_mask", "pad_sequences", "split_indices", "stream_batches"]


class Batch:
    """Named arrays of one batch: ``Batch(inputs=..., targets=..., lengths=...)``; ``batch.inputs``."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    @property
    def fields(self):
        return dict(self.__dict__)

    def get(self, name, default=None):
        return self.__dict__.get(name, default)

    def __repr__(self):
        parts = [f"{k}={getattr(v, 'shape', v)!r}" for k, v in self.__dict__.items()]
        return f"Batch({', '.join(parts)})"


def pad_sequences(seqs, pad_id=0, max_len=None, dtype=np.int64, time_major=True, padding_side="right"):
    """Sequences of ids (or of feature vectors) -> a padded array and the true lengths (B,) int64.

    Id sequences give (T, B) (``time_major``) or (B, T); sequences of vectors (n, F) give (T, B, F)
    or (B, T, F). T is the longest length, or ``max_len`` (longer sequences are cut; lengths report
    the cut length). ``padding_side="right"`` puts sequence b at positions 0 .. n_b-1, "left" at the
    last n_b positions (pass the same ``padding_side`` to the recurrent layer). Sequences longer than
    T keep their first T elements either way. Every sequence must have at least one element."""
    check_padding_side(padding_side)
    seqs = [np.asarray(s) for s in seqs]
    if not seqs:
        raise ValueError("pad_sequences needs at least one sequence")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    if lengths.min() < 1:
        empty = int(np.argmin(lengths))
        raise ValueError(f"every sequence needs at least one element; sequence {empty} is empty")
    T = int(lengths.max()) if max_len is None else int(max_len)
    lengths = np.minimum(lengths, T)
    tail = seqs[0].shape[1:]
    for b, s in enumerate(seqs):
        if s.shape[1:] != tail:
            raise ValueError(f"every sequence must have elements of shape {tail} (as sequence 0), "
                             f"got {s.shape[1:]} in sequence {b}")
    out = np.full((len(seqs), T) + tail, pad_id, dtype=dtype)
    for b, s in enumerate(seqs):
        start = 0 if padding_side == "right" else T - lengths[b]
        out[b, start : start + lengths[b]] = s[: lengths[b]]
    if time_major:
        out = np.ascontiguousarray(np.swapaxes(out, 0, 1))
    return out, lengths


def length_mask(lengths, T, padding_side="right", time_major=True):
    """(T, B) bool (or (B, T) without ``time_major``): True at the positions inside each sequence,
    the first lengths[b] (right padding) or the last lengths[b] (left padding)."""
    check_padding_side(padding_side)
    lengths = np.asarray(lengths)
    t = np.arange(T)[:, None]
    mask = t < lengths[None, :] if padding_side == "right" else t >= T - lengths[None, :]
    return mask if time_major else np.ascontiguousarray(mask.T)


def bucket_batches(lengths, batch_size, rng=None, bucket_factor=50, drop_last=False):
    """Index arrays of batches whose members have similar lengths (little padding).

    Without ``rng``: sorted by length (stable), cut into batches, in order: deterministic, for
    evaluation. With a NumPy Generator: shuffle, sort within buckets of ``bucket_factor * batch_size``
    examples, cut into batches and shuffle the batches: a new order each epoch that is a pure
    function of the generator's state."""
    lengths = np.asarray(lengths)
    n = len(lengths)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    else:
        perm = rng.permutation(n)
        size = max(batch_size * int(bucket_factor), batch_size)
        batches = []
        for start in range(0, n, size):
            chunk = perm[start : start + size]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    return batches


def stream_batches(ids, batch_size, bptt, offset=0):
    """A token stream cut for truncated BPTT: the stream is split into ``batch_size`` contiguous
    rows, and chunk k holds steps [k*bptt, (k+1)*bptt) of every row, so the final state of chunk k
    is the right initial state of chunk k+1. Yields (inputs (t, B), targets (t, B)) with t <= bptt
    (the last chunk may be shorter); targets are the inputs shifted by one token. ``offset`` drops
    that many leading tokens first (a different cut each epoch)."""
    ids = np.asarray(ids, dtype=np.int64)[int(offset):]
    B, bptt = int(batch_size), int(bptt)
    if B < 1 or bptt < 1:
        raise ValueError(f"batch_size and bptt must be >= 1, got {batch_size!r}, {bptt!r}")
    steps = (len(ids) - 1) // B
    if steps < 1:
        raise ValueError(f"a stream of {len(ids)} tokens is too short for batch size {B}")
    inputs = ids[: steps * B].reshape(B, steps).T
    targets = ids[1 : steps * B + 1].reshape(B, steps).T
    for start in range(0, steps, bptt):
        yield (np.ascontiguousarray(inputs[start : start + bptt]),
               np.ascontiguousarray(targets[start : start + bptt]))


def split_indices(n, fractions=(0.8, 0.1, 0.1), seed=0):
    """Deterministic random split of range(n) into parts with the given fractions (the last part
    takes the remainder). The same n, fractions and seed always give the same split."""
    fractions = [float(f) for f in fractions]
    if any(f < 0 for f in fractions) or not 0.999999 <= sum(fractions) <= 1.000001:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    perm = np.random.default_rng(seed).permutation(int(n))
    cuts = np.floor(np.cumsum(fractions[:-1]) * n).astype(int)
    return [np.sort(part) for part in np.split(perm, cuts)]
