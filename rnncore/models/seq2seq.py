"""Encoder-decoder (seq2seq): a source sequence in, a target sequence out.

# S = source steps, T = target steps, B = batch, E = embedding, H = hidden, L = layers,
# D = encoder directions, H' = decoder hidden (2H when a bidirectional encoder's directions are
# concatenated, else H), V = target vocabulary

Encoder: source ids (S, B) -> Embedding -> dropout -> RNN / LSTM / GRU (L layers, optionally
bidirectional), run with each source's true length. Its final states (h, and c for an LSTM),
(D*L, B, H), with each layer's two directions merged (concat, sum or product), are the decoder's
initial states (L, B, H'). Decoder: [<bos>, y_1 .. y_n] -> Embedding -> dropout -> the same cell,
L layers -> dropout -> Linear -> logits (n+1, B, V) for [y_1 .. y_n, <eos>].

Training is teacher-forced: whole sequences go through the layers at once, and the gradient
flows from the decoder's initial states back into the encoder. Decoding runs the decoder one step
at a time (``greedy`` or ``beam_search``).

Batches (``rnncore.data.Batch``), time-major: ``inputs`` (S, B) source ids, ``lengths`` (B,),
``targets`` (T, B) target ids without <bos> / <eos>, ``target_lengths`` (B,); the sources may be
left-padded (``padding_side="left"`` among the fields).
"""

import sys

import numpy as np

from rnncore.data.batching import Batch, pad_sequences
from rnncore.data.tokenize import make_tokenizer
from rnncore.models._seq_parts import (
    DecoderMixin,
    child_seeds,
    merge_states,
    pack_states,
    states_list,
    unmerge_states,
)
from rnncore.models.base import MERGE_MODES, TaskModel, make_recurrent
from rnncore.nn import Dropout, Embedding, Linear

__all__ = ["Seq2Seq", "collate_pairs", "read_pairs"]


class Seq2Seq(DecoderMixin, TaskModel):
    """``model.translate(["12", "7"], beam_size=4)``; ``greedy(batch)``, ``beam_search(batch, k)``.

    ``src_vocab`` and ``tgt_vocab`` map source and target tokens to ids; the target vocabulary
    needs <pad>, <bos> and <eos>.
    """

    kind = "seq2seq"
    vocab_args = ("src_vocab", "tgt_vocab")

    def __init__(self, src_vocab, tgt_vocab, embedding_dim=32, hidden_size=64, cell="lstm", num_layers=1,
                 bidirectional=False, merge="concat", dropout=0.0, max_len=100, src_tokenizer="char",
                 tgt_tokenizer="char", lower=False, seed=0, dtype="float32"):
        config = dict(embedding_dim=int(embedding_dim), hidden_size=int(hidden_size), cell=cell,
                      num_layers=int(num_layers), bidirectional=bool(bidirectional), merge=merge,
                      dropout=float(dropout), max_len=int(max_len), src_tokenizer=src_tokenizer,
                      tgt_tokenizer=tgt_tokenizer, lower=bool(lower), seed=seed)
        super().__init__(config, {"src_vocab": src_vocab, "tgt_vocab": tgt_vocab}, dtype)
        if merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            if getattr(tgt_vocab, name) is None:
                raise ValueError(f"tgt_vocab needs <pad>, <bos> and <eos>; it has no {name[:-3]}")
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.src_tokenizer = make_tokenizer(src_tokenizer, lower)
        self.tgt_tokenizer = make_tokenizer(tgt_tokenizer, lower)
        self.num_layers, self.bidirectional, self.merge_mode = int(num_layers), bool(bidirectional), merge
        self.max_len = int(max_len)
        E, H = int(embedding_dim), int(hidden_size)
        H_dec = 2 * H if bidirectional and merge == "concat" else H
        s = child_seeds(seed, 8)
        dt = self.dtype
        self.src_embedding = self.add_module("src_embedding", Embedding(len(src_vocab), E,
                                                                        padding_idx=src_vocab.pad_id, dtype=dt,
                                                                        seed=s[0]))
        self.drop_src = self.add_module("drop_src", Dropout(dropout, seed=s[1], dtype=dt))
        self.encoder = self.add_module("encoder", make_recurrent(cell, E, H, self.num_layers, self.bidirectional,
                                                                 dropout, dt, s[2]))
        self.tgt_embedding = self.add_module("tgt_embedding", Embedding(len(tgt_vocab), E,
                                                                        padding_idx=tgt_vocab.pad_id, dtype=dt,
                                                                        seed=s[3]))
        self.drop_tgt = self.add_module("drop_tgt", Dropout(dropout, seed=s[4], dtype=dt))
        self.decoder = self.add_module("decoder", make_recurrent(cell, E, H_dec, self.num_layers, False,
                                                                 dropout, dt, s[5]))
        self.drop_out = self.add_module("drop_out", Dropout(dropout, seed=s[6], dtype=dt))
        self.head = self.add_module("head", Linear(H_dec, len(tgt_vocab), dtype=dt, seed=s[7]))
        self._merge_saved = None

    # -- the encoder's final states as the decoder's initial states ----------------------------
    def _initial_states(self, batch):
        lengths = getattr(batch, "lengths", None)
        x = self.drop_src(self.src_embedding(batch.inputs))
        _, finals = self.encoder(x, None, lengths, padding_side=getattr(batch, "padding_side", "right"))
        merged, self._merge_saved = merge_states(states_list(finals), self.num_layers, self.bidirectional,
                                                 self.merge_mode)
        return [np.ascontiguousarray(m) for m in merged]

    def _initial_states_backward(self, grads):
        d_finals = unmerge_states(grads, self._merge_saved, self.bidirectional, self.merge_mode)
        self._merge_saved = None
        dx, _ = self.encoder.backward(None, pack_states(d_finals))
        self.src_embedding.backward(self.drop_src.backward(dx))

    def forward(self, batch):
        """Teacher-forced logits (T+1, B, V) for [y_1 .. y_n, <eos>]."""
        return self._decode_forward(batch)[0]

    def backward(self, dlogits):
        """Backward of the last ``forward``: adds every parameter gradient into ``grads``."""
        self._decode_backward(dlogits)

    # -- decoding ------------------------------------------------------------------------------
    def greedy(self, batch, max_len=None):
        """Argmax decoding of every source in ``batch`` (``inputs``, ``lengths``): a list of
        ``Hypothesis`` (tokens without <eos>, summed log-probability, finished)."""
        return self._generate(batch, 1, max_len or self.max_len)

    def beam_search(self, batch, beam_size=4, max_len=None):
        """Beam search for every source in ``batch``: per source, up to ``beam_size``
        ``Hypothesis`` in descending score (summed log-probabilities, <eos> included)."""
        if int(beam_size) < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size!r}")
        if beam_size == 1:
            return [[h] for h in self.greedy(batch, max_len)]
        return self._generate(batch, int(beam_size), max_len or self.max_len)

    def encode_sources(self, sources):
        """A batch (``inputs``, ``lengths``) from token sequences (lists of tokens, or strings)."""
        ids, lengths = pad_sequences([self.src_vocab.encode(list(s)) for s in sources], self.src_vocab.pad_id or 0)
        return Batch(inputs=ids, lengths=lengths)

    def translate(self, sources, beam_size=1, max_len=None, batch_size=256):
        """Target token lists for source token sequences (the best hypothesis of each)."""
        out = []
        for start in range(0, len(sources), batch_size):
            batch = self.encode_sources(sources[start:start + batch_size])
            if beam_size == 1:
                hyps = self.greedy(batch, max_len)
            else:
                hyps = [beams[0] for beams in self.beam_search(batch, beam_size, max_len)]
            out += [self.tgt_vocab.decode(h.tokens) for h in hyps]
        return out

    def predict_texts(self, texts, beam_size=1):
        """Each source text tokenised, translated and joined back into a string."""
        sources = [self.src_tokenizer(t) or [" "] for t in texts]
        return [self.tgt_tokenizer.join(t) for t in self.translate(sources, beam_size)]

    def predict_lines(self, lines, beam_size=1, **options):
        """``source<TAB>translation`` per line."""
        lines = list(lines)
        return [f"{src}\t{out}" for src, out in zip(lines, self.predict_texts(lines, beam_size))]

    def encode_example(self, source_tokens, target_tokens):
        return self.src_vocab.encode(source_tokens), self.tgt_vocab.encode(target_tokens)

    def read_eval_data(self, path, batch_size=64):
        """A source over a file of ``source<TAB>target`` lines, encoded with this model's vocabularies."""
        from rnncore.data.sources import SequenceSource

        examples = [self.encode_example(s, t) for s, t in read_pairs(path, self.src_tokenizer, self.tgt_tokenizer)]
        return SequenceSource(examples, [len(t) for _, t in examples], batch_size,
                              lambda b: collate_pairs(b, self.src_vocab.pad_id), shuffle=False)


def read_pairs(path, src_tokenizer, tgt_tokenizer):
    """(source tokens, target tokens) from a UTF-8 file of ``source<TAB>target`` lines (blank lines
    skipped); the source must not be empty."""
    from rnncore.data.tokenize import read_text

    pairs = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        src, tab, tgt = line.partition("\t")
        if not tab or not src:
            raise ValueError(f"{path}:{number}: expected 'source<TAB>target', got {line[:40]!r}")
        pairs.append((src_tokenizer(src), tgt_tokenizer(tgt)))
    if not pairs:
        raise ValueError(f"{path}: no source<TAB>target lines")
    return pairs


def collate_pairs(examples, src_pad_id=0):
    """(source ids, target ids) pairs -> ``Batch(inputs (S, B), lengths, targets (T, B),
    target_lengths)``; targets hold no <bos> / <eos> (the model adds them) and may be empty."""
    inputs, lengths = pad_sequences([src for src, _ in examples], src_pad_id)
    target_lengths = np.array([len(t) for _, t in examples], dtype=np.int64)
    targets = np.full((max(int(target_lengths.max()), 1), len(examples)), -100, dtype=np.int64)
    for b, (_, t) in enumerate(examples):
        targets[: len(t), b] = t
    return Batch(inputs=inputs, lengths=lengths, targets=targets, target_lengths=target_lengths)


# `rnncore evaluate RUN` finds a run's task in rnncore.train.runs: when the training runs are in use,
# register this model's task with them (the model itself does not depend on the training code)
if "rnncore.train.runs" in sys.modules:
    import rnncore.models.sequence_tasks  # noqa: E402, F401
