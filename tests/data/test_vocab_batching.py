"""Vocabularies, tokenisers, padding, bucketing, streams, splits and the built-in corpora."""

import numpy as np
import pytest

from rnncore.data import Vocab, bucket_batches, pad_sequences, split_indices, stream_batches
from rnncore.data.corpora import python_docs_text
from rnncore.data.sources import SequenceSource, StreamSource, collate_classification, collate_lm
from rnncore.data.tokenize import CharTokenizer, WordTokenizer, tokenizer_from_dict


def test_vocab_specials_order_and_frequency():
    v = Vocab.build(["abracadabra"])
    assert v.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert (v.pad_id, v.unk_id, v.bos_id, v.eos_id) == (0, 1, 2, 3)
    assert v.itos[4:] == ["a", "b", "r", "c", "d"]  # a 5, b 2, r 2 (tie: by token), c 1, d 1
    assert v["z"] == v.unk_id
    ids = v.encode("bad", add_bos=True, add_eos=True)
    assert ids.dtype == np.int64 and ids.tolist() == [2, 5, 4, 8, 3]
    assert v.decode(ids) == list("bad")


def test_vocab_is_the_same_whatever_the_input_order():
    words = ["the", "cat", "the", "dog", "a", "cat", "the", "emu"]
    v1 = Vocab.build([words])
    v2 = Vocab.build([list(reversed(words))])
    assert v1 == v2
    assert Vocab.build([words], order="sorted").itos[4:] == ["a", "cat", "dog", "emu", "the"]


def test_min_freq_max_size_and_round_trip():
    v = Vocab.build([["x"] * 5 + ["y"] * 3 + ["z"]], min_freq=2)
    assert v.itos[4:] == ["x", "y"]
    v = Vocab.build([["x"] * 5 + ["y"] * 3 + ["z"]], max_size=1)
    assert v.itos[4:] == ["x"]
    assert Vocab.from_dict(v.to_dict()) == v
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build(["a"], min_freq=0)


def test_label_vocab_without_specials():
    labels = Vocab(["neg", "pos"], specials=())
    assert labels["pos"] == 1 and labels.unk_id is None
    with pytest.raises(KeyError, match="not in the vocabulary"):
        labels["meh"]


def test_decode_stops_at_eos():
    v = Vocab(list("ab"))
    assert v.decode([2, 4, 5, 3, 4]) == ["a", "b"]
    assert v.decode([4, 3, 5], stop_at_eos=False) == ["a", "b"]


def test_tokenizers():
    assert CharTokenizer()("héllo") == list("héllo")
    w = WordTokenizer(lower=True)
    tokens = w("Hello, World! (It's) fine.")
    assert tokens == ["hello", ",", "world", "!", "(", "it", "'", "s", ")", "fine", "."]
    assert WordTokenizer().join(["Hello", ",", "world", "."]) == "Hello, world."
    assert tokenizer_from_dict(w.to_dict()).lower is True


def test_pad_sequences_time_major_with_lengths():
    x, lengths = pad_sequences([[1, 2, 3], [4], [5, 6]], pad_id=0)
    assert x.shape == (3, 3) and x.flags.c_contiguous
    assert x[:, 1].tolist() == [4, 0, 0] and lengths.tolist() == [3, 1, 2]
    x, lengths = pad_sequences([np.ones((2, 4)), np.ones((3, 4))], 0.0, dtype=np.float32, time_major=False)
    assert x.shape == (2, 3, 4) and x.dtype == np.float32 and x[0, 2].sum() == 0
    x, lengths = pad_sequences([[1, 2, 3], [4]], max_len=2)
    assert x.shape == (2, 2) and lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="empty"):
        pad_sequences([[1], []])


def test_bucket_batches_cover_everything_once_and_group_lengths():
    rng_lengths = np.random.default_rng(0).integers(1, 50, size=103)
    for rng in (None, np.random.default_rng(1)):
        batches = bucket_batches(rng_lengths, 10, rng, bucket_factor=3)
        assert sorted(np.concatenate(batches).tolist()) == list(range(103))
        spread = np.mean([np.ptp(rng_lengths[b]) for b in batches])
        assert spread < np.ptp(rng_lengths) / 2
    a = bucket_batches(rng_lengths, 10, np.random.default_rng(5))
    b = bucket_batches(rng_lengths, 10, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_stream_batches_rows_are_contiguous():
    ids = np.arange(41)
    chunks = list(stream_batches(ids, batch_size=4, bptt=3))
    inputs = np.concatenate([c[0] for c in chunks])
    targets = np.concatenate([c[1] for c in chunks])
    assert inputs.shape == (10, 4)
    assert inputs[:, 1].tolist() == list(range(10, 20))  # row b is one contiguous stretch
    np.testing.assert_array_equal(targets, inputs + 1)
    assert [c[0].shape[0] for c in chunks] == [3, 3, 3, 1]


def test_stream_source_is_deterministic_per_epoch():
    src = StreamSource(np.arange(500), 4, 8, seed=3)
    first = [b.inputs for b in src.batches(0)]
    again = [b.inputs for b in src.batches(0)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert next(iter(src.batches(0))).reset_state


def test_sequence_source_and_collates():
    seqs = [np.array([2, 5, 6, 3]), np.array([2, 7, 3])]
    b = collate_lm(seqs, pad_id=0)
    assert b.inputs[:, 1].tolist() == [2, 7, 0] and b.targets[:, 1].tolist() == [7, 3, -100]
    assert b.lengths.tolist() == [3, 2]
    examples = [(np.array([4, 5]), 1), (np.array([6]), 0), (np.array([4, 4, 4]), 1)]
    src = SequenceSource(examples, [2, 1, 3], 2, lambda e: collate_classification(e, 0), seed=1)
    batches = list(src.batches(0))
    assert len(src) == 2 and sum(len(x.labels) for x in batches) == 3


def test_split_indices_deterministic_and_disjoint():
    parts = split_indices(100, (0.8, 0.1, 0.1), seed=7)
    assert [len(p) for p in parts] == [80, 10, 10]
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert all(np.array_equal(a, b) for a, b in zip(parts, split_indices(100, (0.8, 0.1, 0.1), seed=7)))


def test_builtin_corpora():
    assert len(python_docs_text()) > 400_000
    names = pytest.importorskip("names")
    del names
    from rnncore.data.corpora import census_last_names, first_name_genders

    pairs = first_name_genders()
    assert len(pairs) == 5163 and dict(pairs)["MARY"] == "F" and dict(pairs)["JOHN"] == "M"
    assert census_last_names(3) == ["SMITH", "JOHNSON", "WILLIAMS"]
