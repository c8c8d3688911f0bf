"""Sequence classification (many-to-one) on two real data sets.

1. First-name gender: the 5,163 distinct first names of the 1990 US census (``names`` package, MIT),
   each labelled with the gender it is more frequent for (78 % F; 331 names appear on both lists,
   so the task has real ambiguity). A bidirectional GRU reads the characters; the states at each
   name's own last step (forward) and first step (reverse) go into a linear head.
2. Handwritten digits read row by row: scikit-learn's 1,797 8x8 images (CC BY 4.0) as sequences of
   8 rows of 8 pixels; an LSTM's final state classifies the digit.

Both: 80 / 10 / 10 split by seed, Adam, clipping at norm 5, accuracy on the test part against the
majority-class baseline.

    pip install names scikit-learn      # or: pip install 'rnncore[examples]'
    python examples/sequence_classifier.py [--epochs 10]
"""

import argparse
import time
from collections import Counter

import numpy as np

from rnncore.data import Batch, Vocab, pad_sequences, split_indices
from rnncore.data.corpora import digits_rows, first_name_genders
from rnncore.data.sources import SequenceSource, collate_classification
from rnncore.models.classifier import SequenceClassifier
from rnncore.train import Adam
from rnncore.train.loop import Trainer, blas_threads, evaluate_source


def run(name, model, examples, parts, collate, epochs, lr, seed):
    def source(idx, shuffle):
        return SequenceSource([examples[i] for i in idx], [len(examples[i][0]) for i in idx], 32, collate,
                              shuffle=shuffle, seed=seed)

    train, valid, test = (source(p, s) for p, s in zip(parts, (True, False, False)))
    t0 = time.perf_counter()
    trainer = Trainer(model, Adam(model, lr=lr), clip_norm=5.0)
    history = trainer.fit(train, valid, epochs=epochs)
    metrics = evaluate_source(model, test)
    seconds = time.perf_counter() - t0
    labels = [examples[i][1] for i in parts[2]]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    print(f"{name}: test accuracy {metrics['accuracy']:.3f} (majority class {majority:.3f}), "
          f"best validation {max(h['valid_accuracy'] for h in history):.3f}, {seconds:.1f} s, "
          f"{model.num_parameters():,} parameters")
    return metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with blas_threads(1):
        pairs = first_name_genders()
        parts = split_indices(len(pairs), (0.8, 0.1, 0.1), seed=args.seed)
        vocab = Vocab.build([pairs[i][0].lower() for i in parts[0]], order="sorted")
        labels = Vocab(["F", "M"], specials=())
        examples = [(vocab.encode(n.lower()), labels[g]) for n, g in pairs]
        model = SequenceClassifier(labels, vocab, cell="gru", embedding_dim=16, hidden_size=64,
                                   bidirectional=True, seed=args.seed)
        run("first-name gender, bidirectional GRU 64", model, examples, parts,
            lambda b: collate_classification(b, vocab.pad_id), args.epochs, 5e-3, args.seed)
        for name in ["Emma", "Liam", "Jordan", "Ashley", "Kai", "Guadalupe"]:
            label, p = model.predict_texts([name.lower()])[0]
            print(f"  {name:<10} {label} {p:.2f}")

        X, y = digits_rows()
        X = X.astype(np.float32)
        parts = split_indices(len(y), (0.8, 0.1, 0.1), seed=args.seed)
        digit_labels = Vocab([str(d) for d in range(10)], specials=())
        examples = list(zip(X, y.tolist()))

        def collate(batch):
            x, lengths = pad_sequences([e[0] for e in batch], 0.0, dtype=np.float32)
            return Batch(inputs=x, lengths=lengths, labels=np.array([e[1] for e in batch]))

        model = SequenceClassifier(digit_labels, input_size=8, cell="lstm", hidden_size=64, seed=args.seed)
        run("digits row by row, LSTM 64", model, examples, parts, collate, 2 * args.epochs, 1e-2, args.seed)


if __name__ == "__main__":
    main()
