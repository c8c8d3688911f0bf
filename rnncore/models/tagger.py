"""Many-to-many models: a sequence tagger (a class per position) and a sequence regressor (a vector
per position, e.g. next-step forecasting).

# T = steps, B = batch, E = embedding, H = hidden, D = directions, C = tags, F = input features,
# O = outputs per step

Tagger: ids (T, B) -> Embedding (E) -> dropout -> RNN / LSTM / GRU (stacked, optionally
bidirectional) -> directions merged (concat 2H, sum H, product H) -> dropout -> Linear -> logits
(T, B, C). The loss is the mean cross-entropy over the positions inside each sequence's length:
positions past it count for nothing, whatever their inputs or labels hold (the recurrent layer
gives them zero output and passes no gradient back through them).

Regressor: real inputs (T, B, F) -> the same recurrent body -> Linear -> (T, B, O), with the mean
squared error over positions inside the lengths. Unidirectional, it forecasts: ``forecast`` feeds
its own predictions back for as many steps as asked.

Batches (``rnncore.data.Batch``), time-major: ``inputs`` (T, B) ids (tagger) or (T, B, F) floats
(regressor), ``targets`` (T, B) tag ids or (T, B, O) floats, ``lengths`` (B,), and optionally
``padding_side="left"`` when the sequences (inputs and targets alike) end at the last position.
"""

import sys

import numpy as np

from rnncore.data.batching import Batch, length_mask, pad_sequences
from rnncore.data.tokenize import make_tokenizer
from rnncore.losses import mse, softmax_cross_entropy
from rnncore.models._seq_parts import child_seeds
from rnncore.models.base import DirectionMerge, StepResult, TaskModel, make_recurrent
from rnncore.nn import Dropout, Embedding, Linear, no_grad
from rnncore.nn._checks import check_finite_inputs

__all__ = ["SequenceRegressor", "SequenceTagger", "collate_tagging", "read_tagged_lines"]


class _ManyToMany(TaskModel):
    """The recurrent body and head shared by the tagger and the regressor; ``_embed`` and
    ``_embed_backward`` turn the inputs into (T, B, I) vectors and back."""

    def _build_body(self, input_size, out_features, hidden_size, cell, num_layers, bidirectional, merge,
                    dropout, seeds):
        dtype = self.dtype
        self.rnn = self.add_module("rnn", make_recurrent(cell, input_size, hidden_size, num_layers,
                                                         bidirectional, dropout, dtype, seeds[0]))
        self.merge = DirectionMerge(merge, bidirectional)
        self.drop_out = self.add_module("drop_out", Dropout(dropout, seed=seeds[1], dtype=dtype))
        self.head = self.add_module("head", Linear(self.merge.output_size(hidden_size), out_features,
                                                   dtype=dtype, seed=seeds[2]))

    def _check_batch(self, inputs, lengths):
        inputs = np.asarray(inputs)
        if inputs.ndim < 2:
            raise ValueError(f"inputs must be time-major (T, B, ...), got shape {inputs.shape}")
        T, B = inputs.shape[:2]
        if lengths is None:
            lengths = np.full(B, T, dtype=np.int64)
        return inputs, np.asarray(lengths, dtype=np.int64)

    def forward(self, inputs, lengths=None, padding_side="right"):
        """Per-position outputs (T, B, C or O); outside ``no_grad()`` keeps what ``backward`` needs.
        ``padding_side="left"``: each sequence fills the last lengths[b] positions."""
        inputs, lengths = self._check_batch(inputs, lengths)
        x = self._embed(inputs, lengths, padding_side)
        out, _ = self.rnn(x, None, lengths, padding_side=padding_side)
        y = self.drop_out(self.merge.forward(out))
        return self.head(y)

    def backward(self, grad):
        """Backward of the last ``forward`` from the gradient of its output; adds into ``grads``."""
        g = self.merge.backward(self.drop_out.backward(self.head.backward(grad)))
        dx, _ = self.rnn.backward(g, None)
        self._embed_backward(dx)

    def _mask(self, targets_shape, lengths, padding_side="right"):
        return length_mask(lengths, targets_shape[0], padding_side)

    def _forward_batch(self, batch):
        return self.forward(batch.inputs, batch.lengths, batch.get("padding_side", "right"))


class SequenceTagger(_ManyToMany):
    """A tag per position: ``logits = tagger(ids (T, B), lengths)``; ``tagger.tag(sequences)``.

    ``vocab`` maps input tokens to ids (its <pad> id is the embedding's padding row), ``tag_vocab``
    maps tags to classes (build it with ``specials=()`` so that no special token is a class).
    """

    kind = "tagger"
    vocab_args = ("vocab", "tag_vocab")

    def __init__(self, vocab, tag_vocab, embedding_dim=32, hidden_size=64, cell="lstm", num_layers=1,
                 bidirectional=True, merge="concat", dropout=0.0, tokenizer="char", lower=False, seed=0,
                 dtype="float32"):
        config = dict(embedding_dim=int(embedding_dim), hidden_size=int(hidden_size), cell=cell,
                      num_layers=int(num_layers), bidirectional=bool(bidirectional), merge=merge,
                      dropout=float(dropout), tokenizer=tokenizer, lower=bool(lower), seed=seed)
        super().__init__(config, {"vocab": vocab, "tag_vocab": tag_vocab}, dtype)
        self.vocab, self.tag_vocab = vocab, tag_vocab
        self.tokenizer = make_tokenizer(tokenizer, lower)
        if len(tag_vocab) < 1:
            raise ValueError("tag_vocab must hold at least one tag")
        seeds = child_seeds(seed, 5)
        self.embedding = self.add_module("embedding", Embedding(len(vocab), int(embedding_dim),
                                                                padding_idx=vocab.pad_id, dtype=self.dtype,
                                                                seed=seeds[3]))
        self.drop_in = self.add_module("drop_in", Dropout(dropout, seed=seeds[4], dtype=self.dtype))
        self._build_body(int(embedding_dim), len(tag_vocab), int(hidden_size), cell, int(num_layers),
                         bidirectional, merge, dropout, seeds)

    def _embed(self, ids, lengths=None, padding_side="right"):
        return self.drop_in(self.embedding(ids))

    def _embed_backward(self, dx):
        self.embedding.backward(self.drop_in.backward(dx))

    def _loss(self, logits, batch):
        mask = self._mask(batch.targets.shape, batch.lengths, batch.get("padding_side", "right"))
        loss, dlogits = softmax_cross_entropy(logits, np.asarray(batch.targets), mask=mask)
        pred = np.argmax(logits, axis=-1)
        right = (pred == batch.targets) | ~mask
        n = int(mask.sum())
        sums = {"loss": loss * n, "count": n, "correct": int((right & mask).sum()),
                "exact": int(right.all(axis=0).sum()), "sequences": int(mask.shape[1])}
        return StepResult(loss, n, None, sums), dlogits

    def loss_and_backward(self, batch, state=None):
        logits = self._forward_batch(batch)
        result, dlogits = self._loss(logits, batch)
        self.backward(dlogits)
        return result

    def evaluate(self, batch, state=None):
        with no_grad():
            logits = self._forward_batch(batch)
        return self._loss(logits, batch)[0]

    def metrics(self, sums):
        count = max(sums.get("count", 0), 1)
        return {"loss": sums.get("loss", 0.0) / count, "accuracy": sums.get("correct", 0) / count,
                "exact_match": sums.get("exact", 0) / max(sums.get("sequences", 0), 1)}

    def predict_ids(self, ids, lengths=None, padding_side="right"):
        """Tag ids (T, B) by argmax, under ``no_grad``; padding positions hold -1."""
        ids, lengths = self._check_batch(ids, lengths)
        with no_grad():
            logits = self.forward(ids, lengths, padding_side)
        pred = np.argmax(logits, axis=-1)
        pred[~length_mask(lengths, pred.shape[0], padding_side)] = -1
        return pred

    def tag(self, sequences, batch_size=256):
        """Tags for token sequences (each a list of tokens, or a string of characters)."""
        out = []
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start:start + batch_size]
            ids, lengths = pad_sequences([self.vocab.encode(list(s)) for s in chunk], self.vocab.pad_id or 0)
            pred = self.predict_ids(ids, lengths)
            out += [[self.tag_vocab.itos[i] for i in pred[: lengths[b], b]] for b in range(len(chunk))]
        return out

    def predict_texts(self, texts):
        """Each text tokenised with the model's tokenizer and tagged: a list of (token, tag) lists."""
        tokens = [self.tokenizer(t) or [" "] for t in texts]
        return [list(zip(toks, tags)) for toks, tags in zip(tokens, self.tag(tokens))]

    def predict_lines(self, lines, **options):
        """``text<TAB>tags`` per line: the tags space-separated, or run together when the model reads
        characters and every tag is one character (``hyphenation<TAB>..-...-.-...``)."""
        out = []
        for line, pairs in zip(lines, self.predict_texts(list(lines))):
            tags = [t for _, t in pairs]
            joined = "".join(tags) if self.tokenizer.kind == "char" and all(len(t) == 1 for t in tags) \
                else " ".join(tags)
            out.append(f"{line}\t{joined}")
        return out

    def encode_example(self, tokens, tags):
        """(token ids, tag ids) for a tokenised example; an unknown tag is a ValueError."""
        unknown = [t for t in tags if t not in self.tag_vocab]
        if unknown:
            raise ValueError(f"tag {unknown[0]!r} is not one of the model's tags {self.tag_vocab.itos}")
        return self.vocab.encode(tokens), self.tag_vocab.encode(tags)

    def read_eval_data(self, path, batch_size=64):
        """A source over a file in ``read_tagged_lines``'s format, encoded with this model's vocabularies."""
        from rnncore.data.sources import SequenceSource

        examples = [self.encode_example(toks, tags) for toks, tags in read_tagged_lines(path, self.tokenizer)]
        return SequenceSource(examples, [len(ids) for ids, _ in examples], batch_size,
                              lambda b: collate_tagging(b, self.vocab.pad_id), shuffle=False)


def read_tagged_lines(path, tokenizer):
    """(tokens, tags) pairs from a UTF-8 file of ``text<TAB>tags`` lines (blank lines skipped): the
    text is tokenised by ``tokenizer``; the tags are whitespace-separated, or, with no whitespace,
    one character per tag. There must be one tag per token."""
    from rnncore.data.tokenize import read_text

    pairs = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        text, tab, tags = line.partition("\t")
        if not tab:
            raise ValueError(f"{path}:{number}: expected 'text<TAB>tags', got {line[:40]!r}")
        tokens = tokenizer(text)
        tags = tags.split() if any(c.isspace() for c in tags.strip()) else list(tags.strip())
        if len(tags) != len(tokens) or not tokens:
            raise ValueError(f"{path}:{number}: {len(tokens)} tokens but {len(tags)} tags")
        pairs.append((tokens, tags))
    if not pairs:
        raise ValueError(f"{path}: no tagged lines")
    return pairs


def collate_tagging(examples, pad_id=0):
    """(token ids, tag ids) pairs -> ``Batch(inputs (T, B), targets (T, B), lengths (B,))``; padded
    targets hold -100 (the model ignores them anyway, by length)."""
    inputs, lengths = pad_sequences([ids for ids, _ in examples], pad_id)
    targets, _ = pad_sequences([tags for _, tags in examples], -100)
    return Batch(inputs=inputs, targets=targets, lengths=lengths)


class SequenceRegressor(_ManyToMany):
    """A real vector per position: ``pred = model(x (T, B, F), lengths)`` -> (T, B, O).
    Trained with the mean squared error over the positions inside each sequence's length."""

    kind = "regressor"

    def __init__(self, input_size, output_size=1, hidden_size=64, cell="lstm", num_layers=1,
                 bidirectional=False, merge="concat", dropout=0.0, seed=0, dtype="float32"):
        config = dict(input_size=int(input_size), output_size=int(output_size), hidden_size=int(hidden_size),
                      cell=cell, num_layers=int(num_layers), bidirectional=bool(bidirectional), merge=merge,
                      dropout=float(dropout), seed=seed)
        super().__init__(config, None, dtype)
        self.input_size, self.output_size = int(input_size), int(output_size)
        seeds = child_seeds(seed, 5)
        self.drop_in = self.add_module("drop_in", Dropout(dropout, seed=seeds[4], dtype=self.dtype))
        self._build_body(self.input_size, self.output_size, int(hidden_size), cell, int(num_layers),
                         bidirectional, merge, dropout, seeds)

    def _embed(self, x, lengths=None, padding_side="right"):
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"inputs must be (T, B, F={self.input_size}), got shape {x.shape}")
        if x.dtype.kind not in "iuf":
            raise TypeError(f"inputs must be real-valued (T, B, F), got dtype {x.dtype}")
        check_finite_inputs("inputs", x, lengths, padding_side)
        return self.drop_in(np.ascontiguousarray(x, dtype=self.dtype))

    def _embed_backward(self, dx):
        self._dx = self.drop_in.backward(dx)

    def _loss(self, pred, batch):
        mask = self._mask(pred.shape, batch.lengths, batch.get("padding_side", "right"))
        target = np.asarray(batch.targets, dtype=self.dtype)
        loss, dpred = mse(pred, target, mask=mask)
        n = int(mask.sum()) * pred.shape[-1]
        return StepResult(loss, n, None, {"loss": loss * n, "count": n}), dpred

    def loss_and_backward(self, batch, state=None):
        pred = self._forward_batch(batch)
        result, dpred = self._loss(pred, batch)
        self.backward(dpred)
        return result

    def evaluate(self, batch, state=None):
        with no_grad():
            pred = self._forward_batch(batch)
        return self._loss(pred, batch)[0]

    def metrics(self, sums):
        mse_value = sums.get("loss", 0.0) / max(sums.get("count", 0), 1)
        return {"loss": mse_value, "rmse": float(np.sqrt(mse_value))}

    def input_grad(self):
        """The gradient for the inputs from the last ``backward``."""
        return self._dx

    def forecast(self, history, steps):
        """Read ``history`` (T, F) and predict the next ``steps`` vectors (steps, O), feeding each
        prediction back as the next input (needs a unidirectional model with O == F)."""
        if self.rnn.bidirectional:
            raise ValueError("forecast needs a unidirectional model")
        if self.output_size != self.input_size:
            raise ValueError("forecast feeds predictions back as inputs: output_size must equal input_size")
        history = np.ascontiguousarray(history, dtype=self.dtype).reshape(-1, self.input_size)
        out = np.empty((int(steps), self.output_size), dtype=self.dtype)
        with no_grad():
            y, state = self.rnn(history[:, None, :])
            pred = self.head(y[-1])
            rnn = self.rnn.stepper()
            for t in range(int(steps)):
                out[t] = pred[0]
                if t + 1 < steps:
                    y_t, state = rnn.step(pred, state)
                    pred = self.head(y_t)
        return out


# `rnncore evaluate RUN` finds a run's task in rnncore.train.runs: when the training runs are in use,
# register this model's task with them (the model itself does not depend on the training code)
if "rnncore.train.runs" in sys.modules:
    import rnncore.models.sequence_tasks  # noqa: E402, F401
