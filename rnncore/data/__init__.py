"""Data: vocabularies, tokenisers, padding and batching, and the built-in corpora."""

from rnncore.data.batching import (
    Batch,
    bucket_batches,
    length_mask,
    pad_sequences,
    split_indices,
    stream_batches,
)
from rnncore.data.corpora import python_docs_text
from rnncore.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "Batch", "Vocab", "bucket_batches", "length_mask",
           "pad_sequences", "python_docs_text", "split_indices", "stream_batches"]
