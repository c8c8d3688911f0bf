"""Left-padded batches: pad_sequences / length_mask, and the models that read ``padding_side``
(classifier, seq2seq encoder, tagger, regressor) give the right-padded results and gradients."""

import numpy as np
import pytest

from rnncore.data import Batch, Vocab, length_mask, pad_sequences
from rnncore.models.classifier import SequenceClassifier
from rnncore.models.seq2seq import Seq2Seq, collate_pairs

VOCAB = Vocab(list("abcdefg"))
LABELS = Vocab(["x", "y", "z"], specials=())


def test_pad_sequences_and_length_mask_left():
    seqs = [[5, 6, 7], [8], [9, 10]]
    ids, lengths = pad_sequences(seqs, pad_id=0, padding_side="left")
    assert ids.T.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]] and lengths.tolist() == [3, 1, 2]
    ids, _ = pad_sequences(seqs, pad_id=0, padding_side="left", time_major=False, max_len=2)
    assert ids.tolist() == [[5, 6], [0, 8], [9, 10]]  # cut to the first max_len elements
    vec, _ = pad_sequences([np.ones((2, 3)), np.full((1, 3), 2.0)], pad_id=0, dtype=np.float64,
                           padding_side="left")
    assert vec.shape == (2, 2, 3) and vec[0, 1].tolist() == [0, 0, 0] and vec[1, 1].tolist() == [2, 2, 2]
    left = [[True] * 3, [False, False, True], [False, True, True]]
    assert length_mask([3, 1, 2], 3, "left").T.tolist() == left
    assert length_mask([3, 1, 2], 3).T.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    assert length_mask([1, 2], 3, "left", time_major=False).tolist() == left[1:]
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'middle'"):
        pad_sequences(seqs, padding_side="middle")


def _grads(model, batch):
    model.zero_grad()
    result = model.loss_and_backward(batch)
    return result.loss, {k: v.copy() for k, v in model.grads.items()}


def _assert_same(a, b):
    assert a[0] == pytest.approx(b[0], rel=1e-13)
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_allclose(a[1][k], b[1][k], rtol=0, atol=1e-13, err_msg=k)


@pytest.mark.parametrize(("cell", "bidirectional"), [("lstm", True), ("gru", False)])
def test_classifier_left_padding(cell, bidirectional):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(4, len(VOCAB), size=n) for n in (5, 2, 4, 1)]
    labels = np.array([0, 2, 1, 1])
    model = SequenceClassifier(LABELS, VOCAB, cell=cell, embedding_dim=3, hidden_size=4, num_layers=2,
                               bidirectional=bidirectional, dtype="float64", seed=3)
    ids_r, lengths = pad_sequences(seqs, VOCAB.pad_id)
    ids_l, _ = pad_sequences(seqs, VOCAB.pad_id, padding_side="left")
    right = _grads(model, Batch(inputs=ids_r, lengths=lengths, labels=labels))
    left = _grads(model, Batch(inputs=ids_l, lengths=lengths, labels=labels, padding_side="left"))
    _assert_same(left, right)
    np.testing.assert_allclose(model.predict_proba(ids_l, lengths, padding_side="left"),
                               model.predict_proba(ids_r, lengths), rtol=1e-13)
    # and left padding read as right padding is a different (wrong) model input
    assert not np.allclose(model.predict_proba(ids_l, lengths), model.predict_proba(ids_r, lengths))


def test_seq2seq_left_padded_sources():
    src = Vocab.build(["0123456789"], order="sorted")
    tgt = Vocab.build(["abcdefgh"], order="sorted")
    rng = np.random.default_rng(1)
    examples = [(rng.integers(4, len(src), size=s), rng.integers(4, len(tgt), size=t))
                for s, t in ((4, 3), (2, 1), (1, 5))]
    model = Seq2Seq(src, tgt, embedding_dim=3, hidden_size=4, cell="gru", bidirectional=True, num_layers=2,
                    dtype="float64", seed=5)
    right_batch = collate_pairs(examples, src.pad_id)
    ids_l, _ = pad_sequences([s for s, _ in examples], src.pad_id, padding_side="left")
    left_batch = Batch(**{**right_batch.fields, "inputs": ids_l, "padding_side": "left"})
    _assert_same(_grads(model, left_batch), _grads(model, right_batch))


def test_tagger_and_regressor_left_padding():
    from rnncore.models.tagger import SequenceRegressor, SequenceTagger

    rng = np.random.default_rng(2)
    lengths_in = (4, 1, 3)
    seqs = [rng.integers(4, len(VOCAB), size=n) for n in lengths_in]
    tags = [rng.integers(0, len(LABELS), size=n) for n in lengths_in]
    tagger = SequenceTagger(VOCAB, LABELS, embedding_dim=3, hidden_size=4, num_layers=2, bidirectional=True,
                            dtype="float64", seed=1)
    batches = {}
    for side in ("right", "left"):
        ids, lengths = pad_sequences(seqs, VOCAB.pad_id, padding_side=side)
        targets, _ = pad_sequences(tags, -100, padding_side=side)
        batches[side] = Batch(inputs=ids, targets=targets, lengths=lengths, padding_side=side)
    _assert_same(_grads(tagger, batches["left"]), _grads(tagger, batches["right"]))
    pred_r = tagger.predict_ids(batches["right"].inputs, batches["right"].lengths)
    pred_l = tagger.predict_ids(batches["left"].inputs, batches["left"].lengths, padding_side="left")
    for b, n in enumerate(lengths_in):
        assert pred_l[-n:, b].tolist() == pred_r[:n, b].tolist() and (pred_l[:-n, b] == -1).all()
    regressor = SequenceRegressor(3, 2, hidden_size=4, cell="gru", bidirectional=True, dtype="float64",
                                  seed=2)
    xs = [rng.standard_normal((n, 3)) for n in lengths_in]
    ys = [rng.standard_normal((n, 2)) for n in lengths_in]
    for side in ("right", "left"):
        x, lengths = pad_sequences(xs, 0, dtype=np.float64, padding_side=side)
        y, _ = pad_sequences(ys, 0, dtype=np.float64, padding_side=side)
        batches[side] = Batch(inputs=x, targets=y, lengths=lengths, padding_side=side)
    _assert_same(_grads(regressor, batches["left"]), _grads(regressor, batches["right"]))
