"""A translation-like seq2seq task on real data: numbers written in digits -> the same numbers in
French (or English) words, as the `num2words` package writes them.

    1997  ->  mille neuf cent quatre-vingt-dix-sept

The source is read character by character, the target is a sequence of words (hyphens are tokens
of their own, so "quatre-vingt-dix-sept" is 7 tokens). An LSTM encoder reads the digits; its
final state starts an LSTM decoder trained with teacher forcing. Held-out numbers (never seen in
training) are decoded greedily and with beam search, and the share decoded exactly right is
printed, beside the baseline of copying the training target of the nearest training number.

    python examples/number_words_seq2seq.py                  # about a minute
    python examples/number_words_seq2seq.py --lang en --max-number 999999 --epochs 12
"""

import argparse
import re
import time

import numpy as np

from rnncore.data.sources import SequenceSource
from rnncore.data.vocab import Vocab
from rnncore.models.seq2seq import Seq2Seq, collate_pairs
from rnncore.train.loop import Progress, Trainer
from rnncore.train.optim import Adam

_TOKENS = re.compile(r"[^\s,-]+|[,-]")


def words(n, lang):
    from num2words import num2words

    return _TOKENS.findall(num2words(int(n), lang=lang))


def join(tokens):
    return re.sub(r" ?([,-]) ?", lambda m: m.group(1) + (" " if m.group(1) == "," else ""), " ".join(tokens))


def number_pairs(max_number, n_train, n_test, lang, seed=0):
    """Disjoint random train and test numbers in [0, max_number], with their words."""
    rng = np.random.default_rng(seed)
    n_all = min(n_train + n_test, max_number + 1)
    numbers = rng.choice(max_number + 1, size=n_all, replace=False)
    pairs = [(str(n), words(n, lang)) for n in numbers]
    return pairs[: n_all - n_test], pairs[n_all - n_test:]


def nearest_copy_baseline(train, test):
    """Predict the words of the closest training number: what memorising without generalising gets."""
    nums = np.array([int(s) for s, _ in train])
    order = np.argsort(nums)
    hits = 0
    for s, target in test:
        i = np.searchsorted(nums[order], int(s))
        cand = [order[j] for j in (i - 1, i) if 0 <= j < len(order)]
        best = min(cand, key=lambda j: abs(nums[j] - int(s)))
        hits += train[best][1] == target
    return hits / len(test)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lang", default="fr", help="a num2words language code: fr, en, de, es, ...")
    ap.add_argument("--max-number", type=int, default=99999)
    ap.add_argument("--train", type=int, default=20000, help="training numbers")
    ap.add_argument("--test", type=int, default=1000, help="held-out numbers")
    ap.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--embedding", type=int, default=32)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--bidirectional", action="store_true", help="bidirectional encoder (directions summed)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    train_pairs, test_pairs = number_pairs(args.max_number, args.train, args.test, args.lang, args.seed)
    n_valid = len(train_pairs) // 20
    valid_pairs, train_pairs = train_pairs[:n_valid], train_pairs[n_valid:]
    src_vocab = Vocab.build([s for s, _ in train_pairs], order="sorted")
    tgt_vocab = Vocab.build([t for _, t in train_pairs], order="sorted")

    def source(pairs, shuffle):
        ex = [(src_vocab.encode(s), tgt_vocab.encode(t)) for s, t in pairs]
        return SequenceSource(ex, [len(t) for _, t in ex], args.batch_size,
                              lambda b: collate_pairs(b, src_vocab.pad_id), shuffle=shuffle, seed=args.seed)

    print(f"{len(train_pairs)} train, {len(valid_pairs)} valid, {len(test_pairs)} test numbers; "
          f"{len(tgt_vocab)} target words; e.g. {train_pairs[0][0]} -> {join(train_pairs[0][1])}")
    model = Seq2Seq(src_vocab, tgt_vocab, embedding_dim=args.embedding, hidden_size=args.hidden, cell=args.cell,
                    num_layers=args.layers, bidirectional=args.bidirectional, merge="sum",
                    max_len=max(len(t) for _, t in train_pairs) + 5, tgt_tokenizer="word", seed=args.seed)
    trainer = Trainer(model, Adam(model, lr=args.lr), clip_norm=5.0, progress=Progress(every=100))
    t1 = time.perf_counter()
    trainer.fit(source(train_pairs, True), source(valid_pairs, False), epochs=args.epochs)
    train_seconds = time.perf_counter() - t1

    sources = [list(s) for s, _ in test_pairs]
    targets = [t for _, t in test_pairs]
    t2 = time.perf_counter()
    greedy = model.translate(sources)
    greedy_seconds = time.perf_counter() - t2
    t2 = time.perf_counter()
    beam = model.translate(sources, beam_size=args.beam)
    beam_seconds = time.perf_counter() - t2
    acc_greedy = float(np.mean([p == t for p, t in zip(greedy, targets)]))
    acc_beam = float(np.mean([p == t for p, t in zip(beam, targets)]))
    acc_copy = nearest_copy_baseline(train_pairs, test_pairs)
    print(f"\ntraining took {train_seconds:.1f} s; {len(test_pairs)} held-out numbers, exact match:")
    print(f"  nearest training number's words  {acc_copy:.4f}")
    print(f"  greedy decoding                  {acc_greedy:.4f}   ({greedy_seconds:.1f} s)")
    print(f"  beam search, beam {args.beam:<2}            {acc_beam:.4f}   ({beam_seconds:.1f} s)")
    for (s, t), p in list(zip(test_pairs, beam))[:5]:
        print(f"  {s:>7} -> {join(p)}" + ("" if p == t else f"   (num2words: {join(t)})"))
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return {"greedy": acc_greedy, "beam": acc_beam, "baseline": acc_copy}


if __name__ == "__main__":
    main()
