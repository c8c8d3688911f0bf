"""The conditioned decoder (features -> sequence): gradients by central differences in float64
(features included), decoding against teacher forcing, sampling, save / load."""

import numpy as np
import pytest

from rnncore.data.vocab import Vocab
from rnncore.gradcheck import check_gradients
from rnncore.models.base import TaskModel
from rnncore.models.conditioned import ConditionedDecoder, collate_captions
from rnncore.train.optim import Adam

VOCAB = Vocab.build(["abcdef"], order="sorted")


def batch(F=5, seed=0, lengths=(3, 0, 4)):
    rng = np.random.default_rng(seed)
    return collate_captions([(rng.standard_normal(F), rng.integers(4, len(VOCAB), size=n)) for n in lengths])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_conditioned_gradients(cell, num_layers):
    m = ConditionedDecoder(VOCAB, 5, embedding_dim=3, hidden_size=4, cell=cell, num_layers=num_layers,
                           dtype="float64", seed=2)
    b = batch()
    m.zero_grad()
    m.loss_and_backward(b)
    grads = m.grads
    wrt = {name: (p, grads[name].copy()) for name, p in m.named_parameters()}
    wrt["features"] = (b.features, m.feature_grad().copy())
    checks = check_gradients(lambda: m.evaluate(b).loss, wrt, tolerance=2e-5)
    failed = [str(c) for c in checks if not c.passed]
    assert not failed, failed


@pytest.fixture(scope="module")
def trained():
    """Four feature vectors, each with its own word: learned in a few dozen Adam steps."""
    words = ["cab", "bead", "fade", "ace"]
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((4, 6))
    m = ConditionedDecoder(VOCAB, 6, embedding_dim=8, hidden_size=16, cell="lstm", max_len=8, dtype="float64",
                           seed=0)
    b = collate_captions([(f, VOCAB.encode(w)) for f, w in zip(feats, words)])
    opt = Adam(m, lr=0.05)
    for _ in range(60):
        m.zero_grad()
        m.loss_and_backward(b)
        opt.step()
    return m, feats, words


def test_learns_captions(trained):
    m, feats, words = trained
    assert m.generate_texts(feats) == words
    assert m.generate_texts(feats, beam_size=3) == words


def test_beam_one_equals_greedy_and_scores_match_teacher_forcing(trained):
    m, feats, _ = trained
    noisy = feats + np.random.default_rng(1).standard_normal(feats.shape)  # less certain inputs
    greedy = m.greedy(noisy)
    assert [bs[0] for bs in m.beam_search(noisy, beam_size=1)] == greedy
    for row, beams in enumerate(m.beam_search(noisy, beam_size=5)):
        scores = [h.score for h in beams]
        assert scores == sorted(scores, reverse=True)
        assert beams[0].score >= greedy[row].score - 1e-12
        done = [h for h in beams if h.finished]
        tf = collate_captions([(noisy[row], np.array(h.tokens, dtype=np.int64)) for h in done])
        np.testing.assert_allclose(m.sequence_log_probs(tf), [h.score for h in done], rtol=1e-10, atol=1e-10)


def test_sampling_is_seeded(trained):
    m, feats, words = trained
    a = m.sample(feats, temperature=1.0, seed=3)
    assert a == m.sample(feats, temperature=1.0, seed=3)
    assert ["".join(t) for t in m.sample(feats, temperature=0.05, seed=0)] == words
    with pytest.raises(ValueError, match="temperature"):
        m.sample(feats, temperature=0)


def test_save_load_round_trip(tmp_path, trained):
    m, feats, _ = trained
    m.save(tmp_path / "c")
    loaded = TaskModel.load(tmp_path / "c")
    assert isinstance(loaded, ConditionedDecoder) and loaded.get_config() == m.get_config()
    for name, value in m.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)
    assert loaded.greedy(feats) == m.greedy(feats)


def test_feature_shape_is_checked():
    m = ConditionedDecoder(VOCAB, 5, hidden_size=4)
    with pytest.raises(ValueError, match="features must be"):
        m.greedy(np.zeros((2, 4), dtype=np.float32))
