"""Seq2seq: gradients by central differences in float64 (through the encoder's merged final
states), greedy and beam-search decoding against teacher forcing, save / load."""

import numpy as np
import pytest

from rnncore.data.batching import Batch, pad_sequences
from rnncore.data.vocab import Vocab
from rnncore.gradcheck import check_gradients
from rnncore.models._seq_parts import beam_search, decoder_io, greedy_decode
from rnncore.models.base import TaskModel
from rnncore.models.seq2seq import Seq2Seq, collate_pairs
from rnncore.nn import no_grad
from rnncore.train.optim import Adam

SRC = Vocab.build(["0123456789"], order="sorted")
TGT = Vocab.build(["abcdefgh"], order="sorted")


def model(cell="lstm", bidirectional=False, merge="concat", dtype="float64", **kw):
    kw.setdefault("num_layers", 2)
    return Seq2Seq(SRC, TGT, embedding_dim=3, hidden_size=4, cell=cell, bidirectional=bidirectional, merge=merge,
                   dtype=dtype, seed=5, **kw)


def batch(seed=0, src_lengths=(4, 2, 1), tgt_lengths=(3, 0, 5)):
    rng = np.random.default_rng(seed)
    examples = [(rng.integers(4, len(SRC), size=s), rng.integers(4, len(TGT), size=t))
                for s, t in zip(src_lengths, tgt_lengths)]
    return collate_pairs(examples, SRC.pad_id)


def gradients(m, b):
    m.zero_grad()
    m.loss_and_backward(b)
    return {name: g.copy() for name, g in m.grads.items()}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(("bidirectional", "merge"),
                         [(False, "concat"), (True, "concat"), (True, "sum"), (True, "product")])
def test_seq2seq_gradients(cell, bidirectional, merge):
    m = model(cell, bidirectional, merge)
    b = batch()
    grads = gradients(m, b)
    wrt = {name: (p, grads[name]) for name, p in m.named_parameters()}
    assert any(np.abs(grads[n]).max() > 0 for n in grads if n.startswith("encoder."))
    checks = check_gradients(lambda: m.evaluate(b).loss, wrt, tolerance=2e-5)
    failed = [str(c) for c in checks if not c.passed]
    assert not failed, failed


def test_decoder_io():
    targets = np.array([[5, 6], [7, -100]])
    dec_in, dec_out, n = decoder_io(targets, [2, 1], bos_id=2, eos_id=3, pad_id=0)
    np.testing.assert_array_equal(dec_in, [[2, 2], [5, 6], [7, 0]])
    np.testing.assert_array_equal(dec_out, [[5, 6], [7, 3], [3, 0]])
    np.testing.assert_array_equal(n, [3, 2])


def test_padding_counts_for_nothing():
    m = model("gru", True, "product")
    b = batch(1)
    loss, grads = m.evaluate(b).loss, gradients(m, b)
    inputs = b.inputs.copy()
    targets = b.targets.copy()
    src_pad = ~(np.arange(inputs.shape[0])[:, None] < b.lengths[None, :])
    tgt_pad = ~(np.arange(targets.shape[0])[:, None] < b.target_lengths[None, :])
    inputs[src_pad] = 7
    targets[tgt_pad] = 5
    b2 = Batch(inputs=inputs, lengths=b.lengths, targets=targets, target_lengths=b.target_lengths)
    assert m.evaluate(b2).loss == loss
    for name, g in gradients(m, b2).items():
        np.testing.assert_array_equal(g, grads[name], err_msg=name)


def trained(cell="gru", steps=60):
    """A float64 model trained briefly on digit -> letter strings, so decoding has real choices."""
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(24):
        src = rng.integers(4, len(SRC), size=rng.integers(1, 4))
        pairs.append((src, (src % 8) + 4))
    m = Seq2Seq(SRC, TGT, embedding_dim=8, hidden_size=12, cell=cell, bidirectional=True, merge="sum",
                max_len=8, dtype="float64", seed=1)
    b = collate_pairs(pairs, SRC.pad_id)
    opt = Adam(m, lr=0.03)
    for _ in range(steps):
        m.zero_grad()
        m.loss_and_backward(b)
        opt.step()
    return m, b


@pytest.fixture(scope="module")
def trained_model():
    return trained()


def test_beam_one_equals_greedy(trained_model):
    m, b = trained_model
    greedy = m.greedy(b)
    beams = m.beam_search(Batch(inputs=b.inputs, lengths=b.lengths), beam_size=1)
    assert [bs[0] for bs in beams] == greedy
    # the beam-search routine itself with k = 1, not the model's shortcut to greedy
    for row in range(8):
        sub = Batch(inputs=b.inputs[:, row:row + 1], lengths=b.lengths[row:row + 1])
        with no_grad():
            init = m._initial_states(sub)
        [beam] = beam_search(m._decoding_step(), init, TGT.bos_id, TGT.eos_id, 8, 1)
        # one source alone against the same source in a batch of 8: the same tokens, and the score
        # to rounding (B=1 takes OpenBLAS's matrix-vector path; see docs/reliability.md, Determinism)
        assert (beam.tokens, beam.finished) == (greedy[row].tokens, greedy[row].finished)
        assert beam.score == pytest.approx(greedy[row].score, rel=1e-12)


def test_beam_scores_are_teacher_forced_log_probs(trained_model):
    m, b = trained_model
    src = Batch(inputs=b.inputs[:, :6], lengths=b.lengths[:6])
    all_beams = m.beam_search(src, beam_size=4)
    for row, beams in enumerate(all_beams):
        assert 1 <= len(beams) <= 4
        scores = [h.score for h in beams]
        assert scores == sorted(scores, reverse=True)
        assert len({h.tokens for h in beams}) == len(beams)
        finished = [h for h in beams if h.finished]
        assert finished
        tf = collate_pairs([(b.inputs[: b.lengths[row], row], np.array(h.tokens, dtype=np.int64))
                            for h in finished], SRC.pad_id)
        np.testing.assert_allclose(m.sequence_log_probs(tf), [h.score for h in finished], rtol=1e-10,
                                   atol=1e-10)
    # the best beam scores at least as well as greedy on these sources
    for beams, g in zip(all_beams, m.greedy(src)):
        assert beams[0].score >= g.score - 1e-12


def test_learns_and_translates(trained_model):
    m, b = trained_model
    metrics = m.metrics(m.evaluate(b).sums)
    assert metrics["accuracy"] > 0.9
    src = [SRC.decode(b.inputs[: n, i]) for i, n in enumerate(b.lengths)]
    expect = [[TGT.itos[SRC.stoi[c] % 8 + 4] for c in s] for s in src]
    for beam_size in (1, 3):
        right = np.mean([out == e for out, e in zip(m.translate(src, beam_size=beam_size), expect)])
        assert right >= 0.75, (beam_size, right)


def test_greedy_decode_stops_rows_independently():
    # a fixed step function: row r emits <eos> at step r
    eos, V = 3, 6

    def step(tokens, states):
        (h,) = states
        logp = np.full((len(tokens), V), -5.0)
        t = h[0, :, 0]
        logp[np.arange(len(tokens)), np.where(t == h[0, :, 1], eos, 4)] = -0.1
        return logp, [h + np.array([1.0, 0.0])]

    h0 = np.zeros((1, 3, 2))
    h0[0, :, 1] = [0, 2, 1]
    hyps = greedy_decode(step, [h0], 3, 2, eos, 10)
    assert [h.tokens for h in hyps] == [(), (4, 4), (4,)]
    assert [h.score for h in hyps] == pytest.approx([-0.1, -0.3, -0.2])
    assert all(h.finished for h in hyps)


def test_save_load_round_trip(tmp_path):
    m = model("lstm", True, "concat", dtype="float32", num_layers=1)
    m.save(tmp_path / "s2s")
    loaded = TaskModel.load(tmp_path / "s2s")
    assert isinstance(loaded, Seq2Seq) and loaded.get_config() == m.get_config()
    assert loaded.src_vocab == SRC and loaded.tgt_vocab == TGT
    for name, value in m.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)
    b = batch(2)
    assert loaded.evaluate(b).loss == m.evaluate(b).loss
    assert loaded.predict_texts(["12", "7"], beam_size=2) == m.predict_texts(["12", "7"], beam_size=2)


def test_rejects_a_target_vocabulary_without_eos():
    with pytest.raises(ValueError, match="eos"):
        Seq2Seq(SRC, Vocab(["a"], specials=("<pad>", "<bos>")))


def test_batch_of_sources_with_pad_sequences():
    ids, lengths = pad_sequences([SRC.encode("12"), SRC.encode("3")], SRC.pad_id)
    hyps = model(dtype="float32", max_len=5).greedy(Batch(inputs=ids, lengths=lengths))
    assert len(hyps) == 2 and all(len(h.tokens) <= 5 for h in hyps)
