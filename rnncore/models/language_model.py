"""Language model (char or word level): Embedding (or one-hot) -> RNN/LSTM/GRU -> Linear -> softmax.

# T = steps, B = batch, V = vocabulary size, E = embedding size, H = hidden size

Teacher-forced training on ``Batch(inputs (T, B), targets (T, B))`` ids: running text cut into
truncated-BPTT chunks (the state carries from chunk to chunk, see ``rnncore.data.sources``), or
separate sequences with ``lengths`` (B,) and targets padded with -100 (ignored), which start
from zeros and carry no state.
Sampling: temperature, top-k, from a prime text, up to a length or the end token.

Parameter names (torch.nn): ``embedding.weight`` (absent with one-hot input), ``rnn.weight_ih_l0``
..., ``head.weight``, ``head.bias``.
"""

import numpy as np

from rnncore.data.tokenize import make_tokenizer
from rnncore.losses import log_softmax, softmax_cross_entropy
from rnncore.models.base import StepResult, TaskModel, copy_state, make_recurrent, perplexity
from rnncore.nn._checks import ids_array
from rnncore.nn.layers import Dropout, Embedding, Linear
from rnncore.nn.module import no_grad

__all__ = ["LanguageModel"]

IGNORE_INDEX = -100


class LanguageModel(TaskModel):
    """A next-token model over ``vocab``.

    cell: ``rnn`` (tanh), ``rnn_relu``, ``lstm`` or ``gru``; embedding_dim None feeds one-hot
    vectors (the min-char-rnn setting); dropout applies to the embedding output, between stacked
    layers and before the head. tokenizer ``char`` or ``word`` (with ``lower``) is how text maps to
    tokens; ``bos_eos`` says the training sequences were wrapped in <bos> ... <eos> (names, lines),
    so generation may start from <bos> and stop at <eos>. ``reduction="sum"`` takes the gradient of
    the loss summed over the batch's tokens (min-char-rnn's choice, which its clipping at 5 assumes)
    instead of the mean; the reported loss is the mean either way. ``lstm_options`` (cell ``lstm``
    only): the LSTM variant options, e.g. ``{"proj_size": 64, "unit_forget_bias": True}``; they are
    part of the config, so checkpoints rebuild the same variant.
    """

    kind = "language_model"
    vocab_args = ("vocab",)

    def __init__(self, vocab, cell="lstm", embedding_dim=64, hidden_size=128, num_layers=1, dropout=0.0,
                 tokenizer="char", lower=False, bos_eos=False, reduction="mean", dtype="float32", seed=0,
                 lstm_options=None):
        config = dict(cell=cell, embedding_dim=embedding_dim, hidden_size=hidden_size, num_layers=num_layers,
                      dropout=dropout, tokenizer=tokenizer, lower=lower, bos_eos=bos_eos, reduction=reduction,
                      seed=seed)
        if lstm_options:  # only when given, so the configs of plain models stay as they were
            config["lstm_options"] = dict(lstm_options)
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        super().__init__(config, {"vocab": vocab}, dtype)
        self.vocab = vocab
        self.tokenizer = make_tokenizer(tokenizer, lower)
        V = len(vocab)
        self.one_hot = embedding_dim is None
        ss = np.random.SeedSequence(seed).spawn(5)
        seeds = [int(s.generate_state(1)[0]) for s in ss]
        if not self.one_hot:
            embedding = Embedding(V, embedding_dim, dtype=dtype, seed=seeds[0])
            self.embedding = self.add_module("embedding", embedding)
        input_size = V if self.one_hot else embedding_dim
        rnn = make_recurrent(cell, input_size, hidden_size, num_layers,
                             dropout=dropout if num_layers > 1 else 0.0, dtype=dtype, seed=seeds[1],
                             lstm_options=lstm_options)
        self.rnn = self.add_module("rnn", rnn)
        self.head = self.add_module("head", Linear(self.rnn.output_size, V, dtype=dtype, seed=seeds[2]))
        self.drop_in = self.add_module("drop_in", Dropout(dropout, seed=seeds[3], dtype=dtype))
        self.drop_out = self.add_module("drop_out", Dropout(dropout, seed=seeds[4], dtype=dtype))
        self._eye = np.eye(V, dtype=self.dtype) if self.one_hot else None

    # -- forward / backward ------------------------------------------------------------------------
    def _embed(self, ids):
        if self.one_hot:
            return self._eye[ids_array("inputs", ids, len(self.vocab))]
        return self.embedding(ids)

    def logits(self, inputs, state=None, lengths=None):
        """logits (T, B, V) and the final state for ids (T, B)."""
        x = self.drop_in(self._embed(inputs))
        out, state = self.rnn(x, state, lengths)
        return self.head(self.drop_out(out)), state

    def _loss(self, batch, state):
        inputs, targets = np.asarray(batch.inputs), np.asarray(batch.targets)
        if inputs.ndim != 2 or targets.shape != inputs.shape:
            raise ValueError(f"inputs and targets must both be (T, B) ids, got {inputs.shape} and "
                             f"{targets.shape}")
        lengths = batch.get("lengths")
        logits, final = self.logits(inputs, state, lengths)
        reduction = self.config.get("reduction", "mean")
        loss, dlogits = softmax_cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction=reduction)
        count = int(np.count_nonzero(targets != IGNORE_INDEX))
        if reduction == "sum":
            loss = loss / max(count, 1)
        carry = final if lengths is None else None  # separate sequences carry nothing to the next batch
        return StepResult(loss, count, carry, {"loss": loss * count, "count": count}), dlogits

    def loss_and_backward(self, batch, state=None):
        """Mean cross-entropy per target token; the gradient is added into ``grads``. ``state`` is the
        carried initial state (no gradient flows into it); the result's state is the final one."""
        result, dlogits = self._loss(batch, copy_state(state))
        self.backward(dlogits)
        return result

    def forward(self, inputs, state=None, lengths=None):
        """``logits(...)``: logits (T, B, V) and the final state."""
        return self.logits(inputs, state, lengths)

    def backward(self, dlogits):
        """Backpropagate dL/dlogits (T, B, V) of the last forward run outside ``no_grad()``: parameter
        gradients are added into ``grads`` (the initial state gets none)."""
        dout = self.drop_out.backward(self.head.backward(dlogits))
        dx, _ = self.rnn.backward(dout, None)
        if not self.one_hot:
            self.embedding.backward(self.drop_in.backward(dx))

    def evaluate(self, batch, state=None):
        with no_grad():
            return self._loss(batch, state)[0]

    def metrics(self, sums):
        loss = sums.get("loss", 0.0) / max(sums.get("count", 0), 1)
        return {"loss": loss, "perplexity": perplexity(loss), "bits_per_token": loss / np.log(2.0),
                "tokens": int(sums.get("count", 0))}

    # -- text ------------------------------------------------------------------------------------------
    def encode(self, text):
        return self.vocab.encode(self.tokenizer(text))

    def decode(self, ids):
        return self.tokenizer.join(self.vocab.decode(ids))

    def generate(self, prime="", length=200, temperature=1.0, top_k=None, seed=None, num_samples=1,
                 stop_at_eos=True):
        """Sample continuations of ``prime``: ``num_samples`` strings of up to ``length`` new tokens
        (fewer when <eos> is drawn and ``stop_at_eos``). temperature 0 is greedy decoding; top_k
        keeps the k most likely tokens at each step. The prime is run through the whole-sequence
        kernels, then one step kernel call per token."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if top_k is not None and int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        rng = np.random.default_rng(seed)
        prime_ids = self.encode(prime) if prime else np.zeros(0, dtype=np.int64)
        if self.config["bos_eos"] and self.vocab.bos_id is not None:
            prime_ids = np.concatenate([[self.vocab.bos_id], prime_ids]).astype(np.int64)
        if len(prime_ids) == 0:
            raise ValueError("this model was trained on running text: give a prime text to start from")
        B = int(num_samples)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                ids = np.repeat(prime_ids[:, None], B, axis=1)
                logits, state = self.logits(ids[:-1], None) if len(prime_ids) > 1 else (None, None)
                token = ids[-1]
                out = np.zeros((length, B), dtype=np.int64)
                done = np.zeros(B, dtype=bool)
                eos = self.vocab.eos_id
                never = [i for i in (self.vocab.pad_id, self.vocab.bos_id) if i is not None]
                n = 0
                rnn = self.rnn.stepper()
                for t in range(length):
                    h, state = rnn.step(self._embed(token), state)
                    z = self.head(h).astype(np.float64)
                    z[:, never] = -np.inf  # <pad> and <bos> are never a next token
                    token = self._sample(z, temperature, top_k, rng)
                    out[t] = token
                    n = t + 1
                    if stop_at_eos and eos is not None:
                        done |= token == eos
                        if done.all():
                            break
        finally:
            self.train(was_training)
        texts = [self.decode(out[:n, b]) if stop_at_eos else
                 self.tokenizer.join(self.vocab.decode(out[:n, b], stop_at_eos=False)) for b in range(B)]
        sep = " " if prime and self.tokenizer.kind == "word" else ""
        return [prime + (sep if s else "") + s for s in texts]

    # -- command-line hooks ------------------------------------------------------------------------------
    def read_eval_data(self, path, batch_size=16, bptt=64):
        """A UTF-8 text file: one running stream, or (``bos_eos`` models) one sequence per line."""
        from rnncore.data.sources import SequenceSource, StreamSource, collate_lm
        from rnncore.data.tokenize import read_text

        text = read_text(path)
        if self.config["bos_eos"]:
            seqs = [self.vocab.encode(self.tokenizer(line), add_bos=True, add_eos=True)
                    for line in text.splitlines() if line.strip()]
            if not seqs:
                raise ValueError(f"{path}: no non-empty lines")
            return SequenceSource(seqs, [len(s) for s in seqs], batch_size,
                                  lambda b: collate_lm(b, self.vocab.pad_id), shuffle=False)
        ids = self.encode(text)
        batch_size = max(1, min(int(batch_size), (len(ids) - 1) // 2))
        return StreamSource(ids, batch_size, bptt, shuffle=False)

    def predict_lines(self, lines, length=50, temperature=0.0, top_k=None, seed=None):
        """Each line continued by up to ``length`` tokens (greedy by default)."""
        return [self.generate(line, length, temperature, top_k, seed)[0] for line in lines]

    @staticmethod
    def _sample(z, temperature, top_k, rng):
        """One token per row of logits z (B, V)."""
        if temperature == 0:
            return np.argmax(z, axis=1)
        z = z / temperature
        if top_k is not None and top_k < z.shape[1]:
            kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
            z = np.where(z >= kth, z, -np.inf)
        p = np.exp(log_softmax(z, axis=1))
        cdf = np.cumsum(p, axis=1)
        u = rng.random((z.shape[0], 1)) * cdf[:, -1:]
        return np.minimum((cdf < u).sum(axis=1), z.shape[1] - 1)
