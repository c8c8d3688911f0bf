"""Sequence classifier (many-to-one): the state at each sequence's true last step into a linear head.

# T = steps, B = batch, F = input features, E = embedding size, H = hidden size, D = directions,
# K = classes

Input is token ids (T, B) through an embedding (``vocab`` given), or real-valued features
(T, B, F) (``vocab=None``, ``input_size=F``: e.g. an 8x8 digit read row by row). With ``lengths``
each sequence's final state is taken at its own last step; a bidirectional layer contributes the
forward state there and the reverse state at step 0, merged by concatenation, sum or product.

``Batch(inputs, lengths, labels (B,))``, with ``padding_side="left"`` among the fields for batches
whose sequences end at the last position (``pad_sequences(..., padding_side="left")``). Parameter
names: ``embedding.weight`` (ids only), ``rnn.*``, ``head.weight``, ``head.bias``.
"""

import numpy as np

from rnncore.data.tokenize import make_tokenizer
from rnncore.losses import softmax, softmax_cross_entropy
from rnncore.models.base import (
    DirectionMerge,
    StepResult,
    TaskModel,
    make_recurrent,
    top_layer_final,
    top_layer_final_backward,
)
from rnncore.nn._checks import check_finite_inputs
from rnncore.nn.layers import Dropout, Embedding, Linear
from rnncore.nn.module import no_grad

__all__ = ["SequenceClassifier"]


class SequenceClassifier(TaskModel):
    """Classes from ``labels`` (a Vocab without specials) for sequences of ``vocab`` tokens or of
    ``input_size`` features."""

    kind = "classifier"
    vocab_args = ("vocab", "labels")

    def __init__(self, labels, vocab=None, input_size=None, cell="lstm", embedding_dim=32, hidden_size=64,
                 num_layers=1, bidirectional=False, merge="concat", dropout=0.0, tokenizer="char",
                 lower=False, dtype="float32", seed=0):
        config = dict(input_size=input_size, cell=cell, embedding_dim=embedding_dim, hidden_size=hidden_size,
                      num_layers=num_layers, bidirectional=bidirectional, merge=merge, dropout=dropout,
                      tokenizer=tokenizer, lower=lower, seed=seed)
        super().__init__(config, {"vocab": vocab, "labels": labels}, dtype)
        if (vocab is None) == (input_size is None):
            raise ValueError("give either vocab (token ids in) or input_size (real-valued features in)")
        self.vocab, self.labels = vocab, labels
        self.tokenizer = make_tokenizer(tokenizer, lower)
        ss = np.random.SeedSequence(seed).spawn(4)
        seeds = [int(s.generate_state(1)[0]) for s in ss]
        if vocab is not None:
            self.embedding = self.add_module(
                "embedding", Embedding(len(vocab), embedding_dim, padding_idx=vocab.pad_id, dtype=dtype,
                                       seed=seeds[0]))
            rnn_in = embedding_dim
        else:
            self.embedding = None
            rnn_in = int(input_size)
        self.rnn = self.add_module("rnn", make_recurrent(cell, rnn_in, hidden_size, num_layers, bidirectional,
                                                         dropout if num_layers > 1 else 0.0, dtype, seeds[1]))
        self.merge = DirectionMerge(merge, bidirectional)
        head = Linear(self.merge.output_size(hidden_size), len(labels), dtype=dtype, seed=seeds[2])
        self.head = self.add_module("head", head)
        self.drop = self.add_module("drop", Dropout(dropout, seed=seeds[3], dtype=dtype))

    def _inputs(self, inputs, lengths, padding_side="right"):
        if self.embedding is not None:
            return self.embedding(np.asarray(inputs))
        inputs = np.asarray(inputs)
        if inputs.dtype.kind not in "iuf":
            raise TypeError(f"inputs must be real-valued features (T, B, F), got dtype {inputs.dtype}")
        check_finite_inputs("inputs", inputs, lengths, padding_side)
        return inputs.astype(self.dtype, copy=False)

    def logits(self, inputs, lengths=None, padding_side="right"):
        """logits (B, K) for ids (T, B) or features (T, B, F), right- or left-padded (NaN or Inf
        inside the lengths is an error)."""
        x = self._inputs(inputs, lengths, padding_side)
        out, state = self.rnn(x, None, lengths, padding_side=padding_side)
        h_n = state[0] if isinstance(state, tuple) else state
        feat = self.merge.forward(top_layer_final(h_n, self.rnn.num_layers, self.rnn.num_directions))
        return self.head(self.drop(feat))

    def _loss(self, batch):
        labels = np.asarray(batch.labels)
        logits = self.logits(batch.inputs, batch.get("lengths"), batch.get("padding_side", "right"))
        loss, dlogits = softmax_cross_entropy(logits, labels)
        n = len(labels)
        correct = int(np.sum(np.argmax(logits, axis=1) == labels))
        return StepResult(loss, n, None, {"loss": loss * n, "count": n, "correct": correct}), dlogits

    def loss_and_backward(self, batch, state=None):
        """Mean cross-entropy over the batch's sequences; gradients added into ``grads``."""
        result, dlogits = self._loss(batch)
        self.backward(dlogits)
        return result

    def forward(self, inputs, lengths=None, padding_side="right"):
        """``logits(...)``: logits (B, K)."""
        return self.logits(inputs, lengths, padding_side)

    def backward(self, dlogits):
        """Backpropagate dL/dlogits (B, K) of the last forward run outside ``no_grad()``; parameter
        gradients are added into ``grads``. Returns the gradient for real-valued inputs (T, B, F),
        or None for token ids."""
        dfeat = self.merge.backward(self.drop.backward(self.head.backward(dlogits)))
        rnn = self.rnn
        dh = top_layer_final_backward(dfeat, rnn.num_layers, rnn.num_directions, rnn.hidden_size)
        grad_state = (dh, None) if len(rnn.state_names) == 2 else dh
        dx, _ = rnn.backward(None, grad_state)
        if self.embedding is not None:
            self.embedding.backward(dx)
            return None
        return dx

    def evaluate(self, batch, state=None):
        with no_grad():
            return self._loss(batch)[0]

    def metrics(self, sums):
        n = max(sums.get("count", 0), 1)
        return {"loss": sums.get("loss", 0.0) / n, "accuracy": sums.get("correct", 0) / n,
                "examples": int(sums.get("count", 0))}

    # -- prediction ------------------------------------------------------------------------------------
    def predict_proba(self, inputs, lengths=None, padding_side="right"):
        """Class probabilities (B, K)."""
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                return softmax(self.logits(inputs, lengths, padding_side).astype(np.float64), axis=1)
        finally:
            self.train(was_training)

    def predict_texts(self, texts, batch_size=256):
        """(label, probability) for each text (token models only)."""
        from rnncore.data.batching import pad_sequences

        if self.vocab is None:
            raise ValueError("this classifier reads feature vectors, not text")
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            seqs = [self._encode_text(t) for t in chunk]
            ids, lengths = pad_sequences(seqs, self.vocab.pad_id)
            p = self.predict_proba(ids, lengths)
            k = np.argmax(p, axis=1)
            results += [(self.labels.itos[i], float(p[b, i])) for b, i in enumerate(k)]
        return results

    # -- command-line hooks ------------------------------------------------------------------------------
    def read_eval_data(self, path, batch_size=64):
        """A UTF-8 file of ``label<TAB>text`` lines (token models only)."""
        from rnncore.data.sources import SequenceSource, collate_classification

        examples = [(self._encode_text(text), self.labels[label])
                    for label, text in read_labelled_lines(path)]
        return SequenceSource(examples, [len(ids) for ids, _ in examples], batch_size,
                              lambda b: collate_classification(b, self.vocab.pad_id), shuffle=False)

    def _encode_text(self, text):
        ids = self.vocab.encode(self.tokenizer(text))
        return ids if len(ids) else np.array([self.vocab.unk_id], dtype=np.int64)

    def predict_lines(self, lines, **options):
        """``label<TAB>probability`` for each line."""
        return [f"{label}\t{p:.4f}" for label, p in self.predict_texts(list(lines))]


def read_labelled_lines(path):
    """``(label, text)`` pairs from a UTF-8 file of ``label<TAB>text`` lines (blank lines skipped)."""
    from rnncore.data.tokenize import read_text

    pairs = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise ValueError(f"{path}:{number}: expected 'label<TAB>text', got {line[:40]!r}")
        pairs.append((label.strip(), text))
    if not pairs:
        raise ValueError(f"{path}: no labelled lines")
    return pairs
