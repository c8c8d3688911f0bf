"""Batch sources for the training loop: a deterministic ``batches(epoch)`` and ``len()``.

The batches of an epoch are a pure function of the source's seed and the epoch number, so a run
resumed from a checkpoint in the middle of an epoch sees the same batches as an uninterrupted one.

- ``StreamSource``: one token stream cut for truncated BPTT (language models on running text);
  each batch's state carries into the next, and the first batch of an epoch says ``reset_state``.
- ``SequenceSource``: separate examples, bucketed by length, padded by a ``collate`` function.
"""

import numpy as np

from rnncore.data.batching import Batch, bucket_batches, pad_sequences, stream_batches

__all__ = ["IGNORE_INDEX", "SequenceSource", "StreamSource", "collate_classification", "collate_lm"]

IGNORE_INDEX = -100


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class StreamSource:
    """Truncated-BPTT chunks of a token stream: ``Batch(inputs (t, B), targets (t, B), reset_state)``.

    With ``shuffle`` the stream starts at a random offset in [0, bptt) each epoch (drawn from the
    seed and the epoch), so chunk boundaries move between epochs; the rows stay contiguous, which
    the carried state needs."""

    def __init__(self, ids, batch_size, bptt, shuffle=True, seed=0):
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise TypeError(f"ids must be a 1-D stream of integer token ids, got {ids.dtype} shape "
                            f"{ids.shape}")
        self.ids = ids.astype(np.int64)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.bptt = _positive_int("bptt", bptt)
        self.shuffle, self.seed = bool(shuffle), int(seed)
        if (len(self.ids) - self.bptt) // self.batch_size < 1:
            raise ValueError(f"{len(self.ids)} tokens are too few for batch size {self.batch_size} and bptt "
                             f"{self.bptt}")

    def _offset(self, epoch):
        if not self.shuffle:
            return 0
        return int(np.random.default_rng([self.seed, epoch]).integers(0, self.bptt))

    def __len__(self):
        steps = (len(self.ids) - 1) // self.batch_size
        return -(-steps // self.bptt)

    def batches(self, epoch=0):
        for k, (inputs, targets) in enumerate(stream_batches(self.ids, self.batch_size, self.bptt,
                                                             self._offset(epoch))):
            yield Batch(inputs=inputs, targets=targets, reset_state=k == 0)


class SequenceSource:
    """Separate examples in length-bucketed batches: ``collate([examples...]) -> Batch``.

    ``lengths[i]`` is example i's length (for bucketing). With ``shuffle`` each epoch has a new
    order drawn from (seed, epoch); without, batches go in order of length (evaluation)."""

    def __init__(self, examples, lengths, batch_size, collate, shuffle=True, seed=0, bucket_factor=50):
        self.examples = list(examples)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) != len(self.examples):
            raise ValueError("lengths must have one entry per example")
        if not self.examples:
            raise ValueError("SequenceSource needs at least one example")
        self.batch_size, self.collate = _positive_int("batch_size", batch_size), collate
        self.shuffle, self.seed, self.bucket_factor = bool(shuffle), int(seed), int(bucket_factor)

    def __len__(self):
        return -(-len(self.examples) // self.batch_size)

    def batches(self, epoch=0):
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        for idx in bucket_batches(self.lengths, self.batch_size, rng, self.bucket_factor):
            yield self.collate([self.examples[i] for i in idx])


def collate_lm(sequences, pad_id):
    """Whole sequences for a language model (each already holding <bos> ... <eos>): inputs are all
    but the last id, targets all but the first, padded (targets with IGNORE_INDEX); lengths true."""
    inputs, lengths = pad_sequences([s[:-1] for s in sequences], pad_id)
    targets, _ = pad_sequences([s[1:] for s in sequences], IGNORE_INDEX)
    return Batch(inputs=inputs, targets=targets, lengths=lengths)


def collate_classification(examples, pad_id):
    """(ids, label) pairs -> Batch(inputs (T, B), lengths (B,), labels (B,))."""
    inputs, lengths = pad_sequences([ids for ids, _ in examples], pad_id)
    labels = np.array([label for _, label in examples], dtype=np.int64)
    return Batch(inputs=inputs, lengths=lengths, labels=labels)
