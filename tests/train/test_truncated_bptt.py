"""Truncated BPTT: one chunk of length T is exactly full BPTT; a carried state passes values forward
and no gradient back."""

import numpy as np
import pytest

from rnncore.data import Batch, Vocab
from rnncore.data.sources import StreamSource
from rnncore.gradcheck import check_gradients
from rnncore.losses import softmax_cross_entropy
from rnncore.models.base import copy_state
from rnncore.models.language_model import LanguageModel
from rnncore.nn.module import no_grad
from rnncore.train.loop import Trainer
from rnncore.train.optim import SGD

VOCAB = Vocab(list("abcdef"))
T, B = 8, 2


def stream(seed=0):
    return np.random.default_rng(seed).integers(4, len(VOCAB), size=T * B + 1)


def model(cell):
    return LanguageModel(VOCAB, cell=cell, embedding_dim=3, hidden_size=4, num_layers=2, dtype="float64",
                         seed=7)


def full_bptt_grads(m, ids):
    """Full BPTT over the whole (T, B) sequence, chained by hand through the layers."""
    inputs = ids[: T * B].reshape(B, T).T
    targets = ids[1 : T * B + 1].reshape(B, T).T
    m.zero_grad()
    out, _ = m.rnn(m.embedding(inputs))
    loss, dlogits = softmax_cross_entropy(m.head(out), targets)
    dx, _ = m.rnn.backward(m.head.backward(dlogits), None)
    m.embedding.backward(dx)
    return loss, {k: v.copy() for k, v in m.grads.items()}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_one_chunk_of_length_T_is_full_bptt(cell):
    ids = stream()
    m = model(cell)
    loss_full, full = full_bptt_grads(m, ids)
    chunks = list(StreamSource(ids, B, T, shuffle=False).batches(0))
    assert len(chunks) == 1 and chunks[0].inputs.shape == (T, B)
    m.zero_grad()
    result = m.loss_and_backward(chunks[0], None)
    assert result.loss == loss_full
    for name, g in m.grads.items():
        np.testing.assert_array_equal(g, full[name], err_msg=name)


def test_full_bptt_reference_matches_finite_differences():
    ids = stream(1)
    m = model("lstm")
    _, full = full_bptt_grads(m, ids)
    inputs, targets = ids[: T * B].reshape(B, T).T, ids[1 : T * B + 1].reshape(B, T).T

    def loss():
        with no_grad():
            return softmax_cross_entropy(m.logits(inputs)[0], targets)[0]

    wrt = {name: (value, full[name]) for name, value in m.named_parameters()}
    assert all(r.passed for r in check_gradients(loss, wrt))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_carried_state_has_values_but_no_gradient(cell):
    ids = stream(2)
    m = model(cell)
    k = 3
    chunks = list(StreamSource(ids, B, k, shuffle=False).batches(0))
    assert [c.inputs.shape[0] for c in chunks] == [3, 3, 2]

    # forward: chunk losses with the carried state add up to the full-sequence loss
    state, total, count = None, 0.0, 0
    for c in chunks:
        r = m.evaluate(c, state)
        total, count, state = total + r.loss * r.count, count + r.count, r.state
    with no_grad():
        inputs = ids[: T * B].reshape(B, T).T
        full_loss = softmax_cross_entropy(m.logits(inputs)[0], ids[1 : T * B + 1].reshape(B, T).T)[0]
    assert total / count == pytest.approx(full_loss, rel=1e-13)

    # backward: the second chunk's gradient is that of its loss with the carried state held fixed
    first = m.loss_and_backward(chunks[0], None)
    carried = copy_state(first.state)
    before = copy_state(carried)
    m.zero_grad()
    m.loss_and_backward(chunks[1], carried)
    grads = {name: g.copy() for name, g in m.grads.items()}
    for a, b in zip(np.atleast_1d(carried) if not isinstance(carried, tuple) else carried,
                    np.atleast_1d(before) if not isinstance(before, tuple) else before):
        np.testing.assert_array_equal(a, b)  # the carried state is not modified

    def truncated_loss():  # h0 is a constant
        return m.evaluate(chunks[1], carried).loss

    wrt = {name: (value, grads[name]) for name, value in m.named_parameters()}
    results = check_gradients(truncated_loss, wrt)
    assert all(r.passed for r in results), [str(r) for r in results]

    def untruncated_loss():  # h0 recomputed from the parameters: gradient would flow back
        return m.evaluate(chunks[1], m.evaluate(chunks[0]).state).loss

    w = dict(m.named_parameters())["rnn.weight_hh_l0"]
    from rnncore.gradcheck import numerical_gradient
    through = numerical_gradient(untruncated_loss, w)
    assert np.max(np.abs(through - grads["rnn.weight_hh_l0"])) > 1e-4  # truncation does cut something


def test_trainer_carries_state_and_resets_each_epoch():
    ids = stream(3)
    m = model("gru")
    seen = []
    original = m.loss_and_backward

    def spy(batch, state=None):
        seen.append(None if state is None else state.copy())
        return original(batch, state)

    m.loss_and_backward = spy
    trainer = Trainer(m, SGD(m, lr=0.1))
    trainer.fit(StreamSource(ids, B, 4, shuffle=False), epochs=2)
    assert len(seen) == 4
    assert seen[0] is None and seen[2] is None  # a new epoch starts from zeros
    assert seen[1] is not None and seen[3] is not None


def test_trainer_state_is_a_copy():
    ids = stream(4)
    m = model("rnn")
    trainer = Trainer(m, SGD(m, lr=0.1))
    batch = next(iter(StreamSource(ids, B, 4, shuffle=False).batches(0)))
    trainer.train_step(batch)
    kept = trainer.state
    m.rnn.zero_grad()
    trainer.train_step(Batch(inputs=batch.inputs, targets=batch.targets))
    assert kept is not trainer.state
