"""The sequence tagger and the sequence regressor: gradients by central differences in float64,
padding that counts for nothing, save / load, and a short training run that learns."""

import numpy as np
import pytest

from rnncore.data.batching import Batch, pad_sequences
from rnncore.data.vocab import Vocab
from rnncore.gradcheck import check_gradients
from rnncore.models.base import TaskModel
from rnncore.models.tagger import SequenceRegressor, SequenceTagger, collate_tagging
from rnncore.train.optim import Adam

VOCAB = Vocab.build(["abcdefg"])
TAGS = Vocab(["x", "y", "z"], specials=())


def tagger(cell="lstm", bidirectional=True, merge="concat", num_layers=2, dtype="float64", **kw):
    return SequenceTagger(VOCAB, TAGS, embedding_dim=3, hidden_size=4, cell=cell, num_layers=num_layers,
                          bidirectional=bidirectional, merge=merge, dtype=dtype, seed=3, **kw)


def tag_batch(seed=0, lengths=(5, 3, 1, 4)):
    rng = np.random.default_rng(seed)
    ids, lengths = pad_sequences([rng.integers(4, len(VOCAB), size=n) for n in lengths], VOCAB.pad_id)
    targets = rng.integers(0, len(TAGS), size=ids.shape)
    return Batch(inputs=ids, targets=targets, lengths=lengths)


def model_gradients(model, batch):
    model.zero_grad()
    model.loss_and_backward(batch)
    return {name: g.copy() for name, g in model.grads.items()}


def assert_gradients(model, batch, extra=None):
    grads = model_gradients(model, batch)
    wrt = {name: (p, grads[name]) for name, p in model.named_parameters()}
    wrt.update(extra or {})
    # relative to each array's largest entry; the smallest arrays reach ~1e-6 from rounding alone
    checks = check_gradients(lambda: model.evaluate(batch).loss, wrt, tolerance=2e-5)
    failed = [str(c) for c in checks if not c.passed]
    assert not failed, failed


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(("bidirectional", "merge"),
                         [(False, "concat"), (True, "concat"), (True, "sum"), (True, "product")])
def test_tagger_gradients(cell, bidirectional, merge):
    assert_gradients(tagger(cell, bidirectional, merge), tag_batch())


def test_tagger_gradients_with_dropout_in_eval_mode():
    model = tagger("gru", dropout=0.3).eval()
    assert_gradients(model, tag_batch(1))


@pytest.mark.parametrize("merge", ["concat", "product"])
def test_padding_counts_for_nothing(merge):
    model = tagger("lstm", True, merge)
    batch = tag_batch(2)
    loss = model.evaluate(batch).loss
    grads = model_gradients(model, batch)
    pad = ~(np.arange(batch.inputs.shape[0])[:, None] < batch.lengths[None, :])
    assert pad.any()
    rng = np.random.default_rng(9)
    changed = Batch(inputs=np.where(pad, rng.integers(0, len(VOCAB), size=pad.shape), batch.inputs),
                    targets=np.where(pad, rng.integers(-5, 50, size=pad.shape), batch.targets),
                    lengths=batch.lengths)
    assert model.evaluate(changed).loss == loss
    grads2 = model_gradients(model, changed)
    for name in grads:
        np.testing.assert_array_equal(grads2[name], grads[name], err_msg=name)
    # and the padded positions are not predicted
    assert (model.predict_ids(batch.inputs, batch.lengths)[pad] == -1).all()


def test_tagger_metrics_count_only_real_positions():
    model = tagger()
    batch = tag_batch(3)
    result = model.evaluate(batch)
    assert result.count == int(batch.lengths.sum())
    metrics = model.metrics(result.sums)
    assert metrics["loss"] == pytest.approx(result.loss)
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["exact_match"] <= 1


def test_tagger_save_load_round_trip(tmp_path):
    model = tagger("gru", True, "sum", dtype="float32", tokenizer="char")
    model.save(tmp_path / "m")
    loaded = TaskModel.load(tmp_path / "m")
    assert isinstance(loaded, SequenceTagger)
    assert loaded.get_config() == model.get_config()
    assert loaded.vocab == VOCAB and loaded.tag_vocab == TAGS
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)
    batch = tag_batch(4)
    np.testing.assert_array_equal(loaded.predict_ids(batch.inputs, batch.lengths),
                                  model.predict_ids(batch.inputs, batch.lengths))
    assert loaded.predict_texts(["abc", "g"]) == model.predict_texts(["abc", "g"])
    assert [t for t, _ in loaded.predict_texts(["abc"])[0]] == ["a", "b", "c"]


def test_tagger_learns_vowels():
    """Tag = is the character a vowel, a task the model should learn in a few dozen Adam steps."""
    words = ["banana", "apple", "cabbage", "egg", "face", "bead", "dice", "gaffe", "deed", "faced"]
    vocab = Vocab.build(words, order="sorted")
    tags = Vocab(["c", "v"], specials=())
    model = SequenceTagger(vocab, tags, embedding_dim=8, hidden_size=16, cell="gru", seed=0)
    examples = [(vocab.encode(w), np.array([int(ch in "aeiou") for ch in w])) for w in words]
    batch = collate_tagging(examples, vocab.pad_id)
    opt = Adam(model, lr=0.05)
    first = model.evaluate(batch).loss
    for _ in range(40):
        model.zero_grad()
        model.loss_and_backward(batch)
        opt.step()
    metrics = model.metrics(model.evaluate(batch).sums)
    assert metrics["loss"] < first / 5
    assert metrics["accuracy"] == 1.0
    assert model.tag(["bad"]) == [["c", "v", "c"]]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_regressor_gradients(cell, bidirectional):
    model = SequenceRegressor(2, 3, hidden_size=4, cell=cell, num_layers=2, bidirectional=bidirectional,
                              merge="product", dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 2))
    batch = Batch(inputs=x, targets=rng.standard_normal((5, 3, 3)), lengths=np.array([5, 2, 4]))
    assert_gradients(model, batch)


def test_regressor_padding_and_forecast():
    model = SequenceRegressor(1, 1, hidden_size=5, cell="lstm", dtype="float64", seed=2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 1))
    y = rng.standard_normal((6, 2, 1))
    lengths = np.array([6, 3])
    loss = model.evaluate(Batch(inputs=x, targets=y, lengths=lengths)).loss
    x2, y2 = x.copy(), y.copy()
    x2[3:, 1], y2[3:, 1] = 100.0, np.nan
    assert model.evaluate(Batch(inputs=x2, targets=y2, lengths=lengths)).loss == loss
    # forecasting one step equals the model's output at the last step of the history
    history = x[:, 0]
    from rnncore.nn import no_grad

    with no_grad():
        full = model(history[:, None, :])
    out = model.forecast(history, 3)
    assert out.shape == (3, 1)
    assert out[0, 0] == pytest.approx(full[-1, 0, 0])
    with no_grad():
        two = model(np.concatenate([history, out[:1]])[:, None, :])
    assert out[1, 0] == pytest.approx(two[-1, 0, 0])
