"""Conditioned decoder (one-to-many): a feature vector sets the initial state, and the model
generates a sequence (the image-captioning shape).

# B = batch, F = features, T = target steps, E = embedding, H = hidden, L = layers,
# S = states per cell (LSTM 2: h and c; Elman and GRU 1), V = vocabulary

Initial states: features (B, F) -> Linear (F -> S*L*H) -> tanh -> (S, L, B, H): every layer's h
(and an LSTM's c) starts from the features. Decoder: [<bos>, y_1 .. y_n] -> Embedding -> dropout
-> RNN / LSTM / GRU (L layers) -> dropout -> Linear -> logits (n+1, B, V) for [y_1 .. y_n, <eos>].
Teacher-forced training runs whole sequences through the layers; the gradient of the initial
states flows back through the tanh and the Linear into the features. Generation: greedy, beam
search or sampling with a temperature, one step at a time.

Batches (``rnncore.data.Batch``): ``features`` (B, F), ``targets`` (T, B) ids without <bos> /
<eos>, ``target_lengths`` (B,).
"""

import numpy as np

from rnncore.data.batching import Batch
from rnncore.data.tokenize import make_tokenizer
from rnncore.models._seq_parts import DecoderMixin, child_seeds
from rnncore.models.base import TaskModel, make_recurrent
from rnncore.nn import Dropout, Embedding, Linear
from rnncore.nn._checks import check_finite

__all__ = ["ConditionedDecoder", "collate_captions"]


class ConditionedDecoder(DecoderMixin, TaskModel):
    """``model.generate(features, beam_size=1)`` -> token lists; ``vocab`` needs <pad>, <bos>, <eos>."""

    kind = "conditioned"
    vocab_args = ("vocab",)

    def __init__(self, vocab, feature_size, embedding_dim=32, hidden_size=64, cell="lstm", num_layers=1,
                 dropout=0.0, max_len=100, tokenizer="char", seed=0, dtype="float32"):
        config = dict(feature_size=int(feature_size), embedding_dim=int(embedding_dim),
                      hidden_size=int(hidden_size), cell=cell, num_layers=int(num_layers),
                      dropout=float(dropout), max_len=int(max_len), tokenizer=tokenizer, seed=seed)
        super().__init__(config, {"vocab": vocab}, dtype)
        for name in ("pad_id", "bos_id", "eos_id"):
            if getattr(vocab, name) is None:
                raise ValueError(f"vocab needs <pad>, <bos> and <eos>; it has no {name[:-3]}")
        self.vocab = self.tgt_vocab = vocab
        self.tokenizer = make_tokenizer(tokenizer)
        self.feature_size, self.num_layers, self.hidden_size = int(feature_size), int(num_layers), int(hidden_size)
        self.max_len = int(max_len)
        E, H, L, dt = int(embedding_dim), self.hidden_size, self.num_layers, self.dtype
        s = child_seeds(seed, 6)
        self.decoder = make_recurrent(cell, E, H, L, False, dropout, dt, s[0])
        self.num_states = len(self.decoder.state_names)
        self.init = self.add_module("init", Linear(self.feature_size, self.num_states * L * H, dtype=dt, seed=s[1]))
        self.tgt_embedding = self.add_module("embedding", Embedding(len(vocab), E, padding_idx=vocab.pad_id,
                                                                    dtype=dt, seed=s[2]))
        self.drop_tgt = self.add_module("drop_in", Dropout(dropout, seed=s[3], dtype=dt))
        self.add_module("decoder", self.decoder)
        self.drop_out = self.add_module("drop_out", Dropout(dropout, seed=s[4], dtype=dt))
        self.head = self.add_module("head", Linear(H, len(vocab), dtype=dt, seed=s[5]))
        self._init_out = None
        self._dfeatures = None

    def _features(self, batch):
        f = np.asarray(batch.features)
        if f.ndim != 2 or f.shape[1] != self.feature_size:
            raise ValueError(f"features must be (B, F={self.feature_size}), got shape {f.shape}")
        if f.dtype.kind not in "iuf":
            raise TypeError(f"features must be real-valued, got dtype {f.dtype}")
        check_finite("features", f)
        return np.ascontiguousarray(f, dtype=self.dtype)

    def _initial_states(self, batch):
        a = np.tanh(self.init(self._features(batch)))  # (B, S*L*H)
        self._init_out = a
        B = a.shape[0]
        s = a.reshape(B, self.num_states, self.num_layers, self.hidden_size).transpose(1, 2, 0, 3)
        return [np.ascontiguousarray(x) for x in s]

    def _initial_states_backward(self, grads):
        a = self._init_out
        g = np.stack(grads).transpose(2, 0, 1, 3).reshape(a.shape)  # (S, L, B, H) -> (B, S*L*H)
        g = g * (1 - a * a)  # backward of a = tanh(z)
        self._dfeatures = self.init.backward(g)
        self._init_out = None

    def forward(self, batch):
        """Teacher-forced logits (T+1, B, V) for [y_1 .. y_n, <eos>]."""
        return self._decode_forward(batch)[0]

    def backward(self, dlogits):
        """Backward of the last ``forward``; adds into ``grads`` and returns d loss / d features."""
        self._decode_backward(dlogits)
        return self._dfeatures

    def feature_grad(self):
        """d loss / d features (B, F) from the last backward."""
        return self._dfeatures

    # -- generation ----------------------------------------------------------------------------
    def greedy(self, features, max_len=None):
        """Argmax decoding from features (B, F): one ``Hypothesis`` per row."""
        return self._generate(Batch(features=features), 1, max_len or self.max_len)

    def beam_search(self, features, beam_size=4, max_len=None):
        """Per row, up to ``beam_size`` ``Hypothesis`` in descending summed log-probability."""
        if int(beam_size) < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size!r}")
        if beam_size == 1:
            return [[h] for h in self.greedy(features, max_len)]
        return self._generate(Batch(features=features), int(beam_size), max_len or self.max_len)

    def sample(self, features, temperature=1.0, seed=None, max_len=None):
        """Token lists sampled with a temperature (> 0) from features (B, F)."""
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        seqs = self._sample(Batch(features=features), max_len or self.max_len, temperature,
                            np.random.default_rng(seed))
        return [self.vocab.decode(s) for s in seqs]

    def generate(self, features, beam_size=1, max_len=None):
        """The best token list for each row of features (greedy for beam_size 1)."""
        if beam_size == 1:
            hyps = self.greedy(features, max_len)
        else:
            hyps = [beams[0] for beams in self.beam_search(features, beam_size, max_len)]
        return [self.vocab.decode(h.tokens) for h in hyps]

    def generate_texts(self, features, beam_size=1, max_len=None):
        """``generate`` joined into strings with the model's tokenizer."""
        return [self.tokenizer.join(t) for t in self.generate(features, beam_size, max_len)]


def collate_captions(examples):
    """(feature vector, target ids) pairs -> ``Batch(features (B, F), targets (T, B),
    target_lengths (B,))``; targets hold no <bos> / <eos>."""
    features = np.stack([np.asarray(f) for f, _ in examples])
    target_lengths = np.array([len(t) for _, t in examples], dtype=np.int64)
    targets = np.full((max(int(target_lengths.max()), 1), len(examples)), -100, dtype=np.int64)
    for b, (_, t) in enumerate(examples):
        targets[: len(t), b] = t
    return Batch(features=features, targets=targets, target_lengths=target_lengths)
