"""Every task model's gradient (all parameters) against central finite differences in float64."""

import numpy as np
import pytest

from rnncore.data import Batch, Vocab, pad_sequences
from rnncore.data.sources import collate_lm
from rnncore.gradcheck import check_gradients
from rnncore.models.base import DirectionMerge, TaskModel
from rnncore.models.classifier import SequenceClassifier
from rnncore.models.language_model import LanguageModel
from rnncore.nn.module import no_grad

VOCAB = Vocab(list("abcdefg"))
LABELS = Vocab(["x", "y", "z"], specials=())


def check_model(model, batch, state=None, tolerance=1e-6):
    model.zero_grad()
    model.loss_and_backward(batch, state)
    grads = model.grads
    wrt = {name: (value, grads[name].copy()) for name, value in model.named_parameters()}

    def loss():
        return model.evaluate(batch, state).loss

    results = check_gradients(loss, wrt, eps=1e-5, tolerance=tolerance)
    bad = [str(r) for r in results if not r.passed]
    assert not bad, "\n".join(bad)
    # every parameter received some gradient (nothing is silently disconnected)
    for name, (_, g) in wrt.items():
        if name != "embedding.weight":
            assert np.any(g != 0), name


def random_ids(rng, shape):
    return rng.integers(len(VOCAB.specials), len(VOCAB), size=shape)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("one_hot", [False, True])
def test_language_model_stream_with_carried_state(cell, one_hot):
    rng = np.random.default_rng(0)
    model = LanguageModel(VOCAB, cell=cell, embedding_dim=None if one_hot else 3, hidden_size=4, num_layers=2,
                          dtype="float64", seed=1)
    ids = random_ids(rng, (6, 3))
    batch = Batch(inputs=ids[:-1], targets=ids[1:])
    shape = (2, 3, 4)
    state = rng.standard_normal(shape)
    if cell == "lstm":
        state = (state, rng.standard_normal(shape))
    check_model(model, batch, state)


def test_language_model_padded_sequences():
    rng = np.random.default_rng(1)
    model = LanguageModel(VOCAB, cell="gru", embedding_dim=3, hidden_size=5, bos_eos=True, dtype="float64",
                          seed=2)
    seqs = [VOCAB.encode(list(w), add_bos=True, add_eos=True) for w in ["abc", "g", "fedcba"]]
    batch = collate_lm(seqs, VOCAB.pad_id)
    assert batch.targets[-1, 1] == -100
    check_model(model, batch)
    del rng


@pytest.mark.parametrize(("cell", "bidirectional", "merge"), [
    ("lstm", False, "concat"), ("gru", True, "concat"), ("rnn", True, "sum"), ("lstm", True, "product")])
def test_classifier_on_ids_with_lengths(cell, bidirectional, merge):
    rng = np.random.default_rng(2)
    model = SequenceClassifier(LABELS, VOCAB, cell=cell, embedding_dim=3, hidden_size=4, num_layers=2,
                               bidirectional=bidirectional, merge=merge, dtype="float64", seed=3)
    ids, lengths = pad_sequences([random_ids(rng, n) for n in (5, 2, 4, 1)], VOCAB.pad_id)
    batch = Batch(inputs=ids, lengths=lengths, labels=np.array([0, 2, 1, 1]))
    check_model(model, batch)


def test_classifier_on_features():
    rng = np.random.default_rng(3)
    model = SequenceClassifier(LABELS, input_size=3, cell="gru", hidden_size=4, bidirectional=True,
                               dtype="float64", seed=4)
    batch = Batch(inputs=rng.standard_normal((4, 2, 3)), lengths=np.array([4, 3]), labels=np.array([2, 0]))
    check_model(model, batch)


def test_classifier_uses_the_state_at_each_true_last_step():
    """Padding values past a sequence's length change nothing."""
    rng = np.random.default_rng(4)
    model = SequenceClassifier(LABELS, VOCAB, cell="lstm", embedding_dim=3, hidden_size=4, bidirectional=True,
                               dtype="float64", seed=5)
    ids, lengths = pad_sequences([random_ids(rng, 5), random_ids(rng, 2)], VOCAB.pad_id)
    other = ids.copy()
    other[2:, 1] = random_ids(rng, 3)
    np.testing.assert_array_equal(model.predict_proba(ids, lengths), model.predict_proba(other, lengths))
    alone = model.predict_proba(ids[:2, 1:2], np.array([2]))
    np.testing.assert_allclose(model.predict_proba(ids, lengths)[1:], alone, rtol=1e-12)


@pytest.mark.parametrize("mode", ["concat", "sum", "product"])
def test_direction_merge_gradient(mode):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 8))
    merge = DirectionMerge(mode, bidirectional=True)
    g = rng.standard_normal(merge.forward(x).shape)
    analytic = merge.backward(g)
    results = check_gradients(lambda: float(np.sum(merge.forward(x, keep=False) * g)), {"x": (x, analytic)})
    assert all(r.passed for r in results), results


def test_from_config_rebuilds_every_kind():
    lm = LanguageModel(VOCAB, cell="gru", embedding_dim=3, hidden_size=4, seed=0)
    clf = SequenceClassifier(LABELS, VOCAB, hidden_size=4, bidirectional=True, merge="sum", seed=0)
    for model in (lm, clf):
        vocabs = {k: v.to_dict() for k, v in model.vocabs.items()}
        again = TaskModel.from_config(model.get_config(), vocabs)
        assert type(again) is type(model)
        assert again.get_config() == model.get_config()
        for (n1, a), (n2, b) in zip(model.named_parameters(), again.named_parameters()):
            assert n1 == n2
            np.testing.assert_array_equal(a, b)  # same seed, same weights


def test_classifier_input_gradient_for_features():
    """forward / backward as a layer: the gradient for real-valued inputs, by finite differences."""
    rng = np.random.default_rng(6)
    model = SequenceClassifier(LABELS, input_size=2, cell="lstm", hidden_size=3, bidirectional=True,
                               merge="product", dtype="float64", seed=7)
    x = rng.standard_normal((4, 3, 2))
    lengths = np.array([4, 2, 3])
    g = rng.standard_normal((3, 3))
    model(x, lengths)
    dx = model.backward(g)

    def loss():
        with no_grad():
            return float(np.sum(model(x, lengths) * g))

    results = check_gradients(loss, {"x": (x, dx)}, eps=1e-5)
    assert all(r.passed for r in results), [str(r) for r in results]
