"""Parts shared by the tagger, the seq2seq model and the conditioned decoder.

# T = steps, B = batch, H = hidden, L = layers, D = directions (1 or 2), V = vocabulary, S = states
# per cell (LSTM 2: h and c; Elman and GRU 1)

- ``merge_states`` / ``unmerge_states``: the two directions of a bidirectional layer's final states
  (2L, B, H) merged per layer by concatenation, sum or product (as ``base.DirectionMerge`` does for
  outputs), and the backward of that.
- ``greedy_decode`` and ``beam_search``: step-by-step decoding around a ``step(tokens, states)``
  function that returns log-probabilities; shared by seq2seq and the conditioned decoder.
"""

import functools
from dataclasses import dataclass

import numpy as np

from rnncore.data.batching import length_mask


def child_seeds(seed, n):
    """n independent integer seeds from one model seed (None stays random)."""
    if seed is None:
        return [None] * n
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(int(seed)).spawn(n)]


def states_list(state):
    """A layer's state (h, or (h, c)) as a list of arrays."""
    return [state] if isinstance(state, np.ndarray) else list(state)


def pack_states(states):
    """The inverse of ``states_list``: h for one state, (h, c) for two."""
    return states[0] if len(states) == 1 else tuple(states)


def merge_states(states, num_layers, bidirectional, merge):
    """Final states (D*L, B, H) -> (L, B, H') with each layer's two directions merged
    (H' = 2H for concat). Returns the merged list and what ``unmerge_states`` needs."""
    if not bidirectional:
        return list(states), None
    out = []
    for s in states:
        f, r = s[0::2], s[1::2]  # layer l forward is row 2l, reverse row 2l + 1
        if merge == "concat":
            out.append(np.concatenate([f, r], axis=-1))
        elif merge == "sum":
            out.append(f + r)
        else:
            out.append(f * r)
    return out, [(s[0::2], s[1::2]) for s in states]


def unmerge_states(grads, saved, bidirectional, merge):
    """Backward of ``merge_states``: gradients (L, B, H') -> (D*L, B, H)."""
    if not bidirectional:
        return grads
    out = []
    for g, (f, r) in zip(grads, saved):
        L, B, H = f.shape
        d = np.empty((2 * L, B, H), dtype=g.dtype)
        if merge == "concat":
            d[0::2], d[1::2] = g[..., :H], g[..., H:]
        elif merge == "sum":
            d[0::2], d[1::2] = g, g
        else:
            d[0::2], d[1::2] = g * r, g * f
        out.append(d)
    return out


# -- decoding ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hypothesis:
    """A decoded sequence (without <bos> and <eos>), its summed log-probability (including the
    <eos> step when ``finished``) and whether it ended with <eos>."""

    tokens: tuple
    score: float
    finished: bool


def greedy_decode(step, states, batch, bos_id, eos_id, max_len):
    """Argmax decoding of a batch. ``step(tokens (B,), states) -> (log_probs (B, V), states)`` with
    states a list of (L, B, H) arrays. Rows that emit <eos> leave the batch. Returns one
    ``Hypothesis`` per batch row."""
    tokens = np.full(batch, bos_id, dtype=np.int64)
    out = np.zeros((batch, max_len), dtype=np.int64)
    scores = np.zeros(batch)
    done = np.zeros(batch, dtype=bool)
    lengths = np.full(batch, max_len, dtype=np.int64)
    live = np.arange(batch)  # original rows still decoding; states hold exactly these rows
    for t in range(max_len):
        logp, states = step(tokens, states)
        best = np.argmax(logp, axis=1)
        scores[live] += logp[np.arange(len(live)), best]
        out[live, t] = best
        ended = best == eos_id
        lengths[live[ended]] = t
        done[live[ended]] = True
        if ended.any():
            keep = ~ended
            live, best = live[keep], best[keep]
            states = [np.ascontiguousarray(s[:, keep]) for s in states]
            if not len(live):
                break
        tokens = best
    return [Hypothesis(tuple(int(v) for v in out[b, : lengths[b]]), float(scores[b]), bool(done[b]))
            for b in range(batch)]


def beam_search(step, states, bos_id, eos_id, max_len, beam_size):
    """Beam search for one sequence; states are (L, 1, H) arrays. Scores are summed
    log-probabilities (no length normalisation). Each step expands every live hypothesis by every
    token, and keeps the best ``beam_size`` continuations; one that ends in <eos> is finished and
    leaves the beam. The search stops when ``beam_size`` hypotheses are finished and no live one
    scores higher than the worst of them (scores only fall, so none can overtake), or at
    ``max_len`` tokens, where live hypotheses are returned unfinished. Returns up to ``beam_size``
    ``Hypothesis`` in descending score."""
    if int(beam_size) < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size!r}")
    k = int(beam_size)
    seqs = [()]
    scores = np.zeros(1)
    tokens = np.array([bos_id], dtype=np.int64)
    finished = []
    for _ in range(max_len):
        logp, states = step(tokens, states)
        V = logp.shape[1]
        total = (scores[:, None] + logp).reshape(-1)
        # the best 2k candidates always hold k that do not end in <eos> (at most one <eos> per row)
        n_cand = min(total.size, 2 * k)
        cand = np.argpartition(-total, n_cand - 1)[:n_cand]
        cand = cand[np.lexsort((cand, -total[cand]))]  # descending score, ties by index: deterministic
        keep_rows, keep_tokens, keep_scores = [], [], []
        for rank, c in enumerate(cand):
            row, tok = divmod(int(c), V)
            if tok == eos_id:
                if rank < k:  # only an <eos> among the best k counts, as a beam of k sees it
                    finished.append(Hypothesis(seqs[row], float(total[c]), True))
                continue
            keep_rows.append(row)
            keep_tokens.append(tok)
            keep_scores.append(float(total[c]))
            if len(keep_rows) == k:
                break
        finished.sort(key=lambda h: -h.score)
        if not keep_rows or (len(finished) >= k and keep_scores[0] <= finished[k - 1].score):
            seqs = []
            break
        rows = np.array(keep_rows)
        seqs = [seqs[r] + (t,) for r, t in zip(keep_rows, keep_tokens)]
        scores = np.array(keep_scores)
        tokens = np.array(keep_tokens, dtype=np.int64)
        states = [np.ascontiguousarray(s[:, rows]) for s in states]
    unfinished = [Hypothesis(s, float(sc), False) for s, sc in zip(seqs, scores)]
    hyps = sorted(finished + unfinished, key=lambda h: -h.score)
    return hyps[:k]


# -- the teacher-forced decoder shared by seq2seq and the conditioned decoder -------------------
def decoder_io(targets, target_lengths, bos_id, eos_id, pad_id):
    """Decoder inputs and outputs from target ids (T, B) (without <bos> / <eos>) and their lengths:
    inputs [<bos>, y_1 .. y_n] and outputs [y_1 .. y_n, <eos>], both (T+1, B), lengths n+1.
    Positions past a target's length may hold any integer; they become <pad>."""
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.dtype.kind not in "iu":
        raise ValueError(f"targets must be integer ids (T, B), got {targets.dtype} shape {targets.shape}")
    T, B = targets.shape
    n = np.asarray(target_lengths, dtype=np.int64)
    if n.shape != (B,) or (B and (n.min() < 0 or n.max() > T)):
        raise ValueError(f"target_lengths must be (B,) = ({B},) in 0..T={T}, got {n.tolist()}")
    inside = length_mask(n, T)
    dec_in = np.full((T + 1, B), pad_id, dtype=np.int64)
    dec_in[0] = bos_id
    dec_in[1:][inside] = targets[inside]
    dec_out = np.full((T + 1, B), pad_id, dtype=np.int64)
    dec_out[:T][inside] = targets[inside]
    dec_out[n, np.arange(B)] = eos_id
    return dec_in, dec_out, n + 1


class DecoderMixin:
    """Teacher-forced decoding and step-by-step generation for a model that has ``tgt_embedding``,
    ``drop_tgt``, ``decoder`` (unidirectional), ``drop_out``, ``head`` and ``tgt_vocab``, and
    implements ``_initial_states(batch, keep)`` -> list of (L, B, H) arrays and
    ``_initial_states_backward(grads)``."""

    def _decode_forward(self, batch):
        """Logits (T+1, B, V) for the decoder outputs, and the outputs and mask they are scored on."""
        v = self.tgt_vocab
        dec_in, dec_out, dec_len = decoder_io(batch.targets, batch.target_lengths, v.bos_id, v.eos_id,
                                              v.pad_id)
        states = self._initial_states(batch)
        x = self.drop_tgt(self.tgt_embedding(dec_in))
        out, _ = self.decoder(x, pack_states(states), dec_len)
        logits = self.head(self.drop_out(out))
        return logits, dec_out, length_mask(dec_len, dec_in.shape[0])

    def _decode_backward(self, dlogits):
        g = self.drop_out.backward(self.head.backward(dlogits))
        dx, d_states = self.decoder.backward(g, None)
        self.tgt_embedding.backward(self.drop_tgt.backward(dx))
        return self._initial_states_backward(states_list(d_states))

    def _scored(self, logits, dec_out, mask):
        from rnncore.losses import softmax_cross_entropy

        loss, dlogits = softmax_cross_entropy(logits, dec_out, mask=mask)
        pred = np.argmax(logits, axis=-1)
        right = (pred == dec_out) | ~mask
        n = int(mask.sum())
        sums = {"loss": loss * n, "count": n, "correct": int((right & mask).sum()),
                "exact": int(right.all(axis=0).sum()), "sequences": int(mask.shape[1])}
        return sums, loss, dlogits

    def loss_and_backward(self, batch, state=None):
        from rnncore.models.base import StepResult

        logits, dec_out, mask = self._decode_forward(batch)
        sums, loss, dlogits = self._scored(logits, dec_out, mask)
        self._decode_backward(dlogits)
        return StepResult(loss, sums["count"], None, sums)

    def evaluate(self, batch, state=None):
        from rnncore.models.base import StepResult
        from rnncore.nn import no_grad

        with no_grad():
            logits, dec_out, mask = self._decode_forward(batch)
        sums, loss, _ = self._scored(logits, dec_out, mask)
        return StepResult(loss, sums["count"], None, sums)

    def metrics(self, sums):
        """Per-token loss and perplexity, teacher-forced token accuracy and exact match."""
        import math

        count = max(sums.get("count", 0), 1)
        loss = sums.get("loss", 0.0) / count
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                "accuracy": sums.get("correct", 0) / count,
                "exact_match": sums.get("exact", 0) / max(sums.get("sequences", 0), 1)}

    def sequence_log_probs(self, batch):
        """Summed log-probability of each target sequence followed by <eos> (B,), teacher-forced."""
        from rnncore.losses import log_softmax
        from rnncore.nn import no_grad

        with _eval_mode(self), no_grad():
            logits, dec_out, mask = self._decode_forward(batch)
        logp = log_softmax(logits.astype(np.float64))
        picked = np.take_along_axis(logp, np.where(mask, dec_out, 0)[..., None], axis=-1)[..., 0]
        return np.where(mask, picked, 0.0).sum(axis=0)

    # -- generation ----------------------------------------------------------------------------
    def _decoding_step(self):
        """``step(tokens, states)`` for ``greedy_decode`` and ``beam_search``: ``_step`` on one snapshot of
        the decoder's weights (``stepper()``), for one decoding."""
        return functools.partial(self._step, self.decoder.stepper())

    def _step(self, decoder, tokens, states):
        """One decoder step for a batch of previous tokens: (log-probs (B, V) float64, states).
        decoder: the decoder's ``stepper()``."""
        from rnncore.losses import log_softmax

        out, new = decoder.step(self.tgt_embedding(tokens), pack_states(states))
        logp = log_softmax(self.head(out).astype(np.float64))
        # <pad> and <bos> are never a next token: excluded from the choice only, so the score of a
        # decoded sequence stays its teacher-forced log-probability
        logp[:, [self.tgt_vocab.pad_id, self.tgt_vocab.bos_id]] = -np.inf
        return logp, states_list(new)

    def _generate(self, batch, beam_size, max_len):
        from rnncore.nn import no_grad

        v = self.tgt_vocab
        with _eval_mode(self), no_grad():
            states = self._initial_states(batch)
            B = states[0].shape[1]
            step = self._decoding_step()
            if beam_size == 1:
                return greedy_decode(step, states, B, v.bos_id, v.eos_id, max_len)
            return [beam_search(step, [s[:, b:b + 1] for s in states], v.bos_id, v.eos_id, max_len, beam_size)
                    for b in range(B)]

    def _sample(self, batch, max_len, temperature, rng):
        """Ancestral sampling with a temperature; returns one token list per batch row."""
        from rnncore.losses import softmax
        from rnncore.nn import no_grad

        v = self.tgt_vocab
        with _eval_mode(self), no_grad():
            states = self._initial_states(batch)
            B = states[0].shape[1]
            step = self._decoding_step()
            tokens = np.full(B, v.bos_id, dtype=np.int64)
            seqs = [[] for _ in range(B)]
            done = np.zeros(B, dtype=bool)
            for _ in range(max_len):
                logp, states = step(tokens, states)
                p = softmax(logp / float(temperature))
                tokens = (p.cumsum(axis=1) > rng.random((B, 1))).argmax(axis=1)
                for b in np.flatnonzero(~done):
                    if tokens[b] == v.eos_id:
                        done[b] = True
                    else:
                        seqs[b].append(int(tokens[b]))
                if done.all():
                    break
        return seqs


class _eval_mode:
    """Context: the model in eval mode (no dropout), its previous mode restored after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)
