"""Name generation: a character language model over US census first names (the ``names`` package).

Each of the 5,163 distinct first names of the 1990 US census (MIT-licensed lists in the ``names``
package, lower-cased) is one sequence ``<bos> n a m e <eos>``; 10 % are held out. A GRU learns to
continue names, and sampling from ``<bos>`` until ``<eos>`` invents new ones. Printed: the held-out
perplexity per character (against a unigram and a bigram baseline from the same training names),
and samples, marked with * when they are not in the census list.

    pip install names        # or: pip install 'rnncore[examples]'
    python examples/name_generation.py [--epochs 15]
"""

import argparse
import math
import time
from collections import Counter

import numpy as np

from rnncore.data import Vocab, split_indices
from rnncore.data.corpora import first_name_genders
from rnncore.data.sources import SequenceSource, collate_lm
from rnncore.models.language_model import LanguageModel
from rnncore.train import Adam, make_schedule
from rnncore.train.loop import Trainer, blas_threads, evaluate_source


def bigram_perplexity(train, valid, add=0.1):
    """Add-k bigram over characters with <bos>/<eos> marks ('^', '$'), scored like the GRU."""
    pairs, firsts = Counter(), Counter()
    chars = sorted({c for name in train for c in name} | {"$"})
    for name in train:
        s = "^" + name + "$"
        for a, b in zip(s, s[1:]):
            pairs[a, b] += 1
            firsts[a] += 1
    nll = n = 0
    for name in valid:
        s = "^" + name + "$"
        for a, b in zip(s, s[1:]):
            nll -= math.log((pairs[a, b] + add) / (firsts[a] + add * len(chars)))
            n += 1
    return math.exp(nll / n)


def unigram_perplexity(train, valid):
    counts = Counter(c for name in train for c in name + "$")
    total = sum(counts.values())
    nll = -sum(math.log(counts[c] / total) for name in valid for c in name + "$")
    return math.exp(nll / sum(len(name) + 1 for name in valid))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    names = [name.lower() for name, _ in first_name_genders()]
    train_idx, valid_idx = split_indices(len(names), (0.9, 0.1), seed=args.seed)
    train_names, valid_names = [names[i] for i in train_idx], [names[i] for i in valid_idx]
    vocab = Vocab.build(train_names, order="sorted")
    print(f"{len(names):,} census first names: {len(train_names):,} to train, {len(valid_names):,} held out; "
          f"{len(vocab) - 4} letters")

    def source(group, shuffle):
        seqs = [vocab.encode(name, add_bos=True, add_eos=True) for name in group]
        return SequenceSource(seqs, [len(s) for s in seqs], 64, lambda b: collate_lm(b, vocab.pad_id),
                              shuffle=shuffle, seed=args.seed)

    train, valid = source(train_names, True), source(valid_names, False)
    model = LanguageModel(vocab, cell="gru", embedding_dim=32, hidden_size=args.hidden, bos_eos=True,
                          seed=args.seed)
    total = args.epochs * len(train)
    t0 = time.perf_counter()
    with blas_threads(1):
        trainer = Trainer(model, Adam(model, lr=5e-3), schedule=make_schedule("cosine", total_steps=total,
                                                                              warmup_steps=20), clip_norm=5.0)
        trainer.fit(train, valid, epochs=args.epochs)
        metrics = evaluate_source(model, valid)
    seconds = time.perf_counter() - t0

    print("\nheld-out perplexity per character (with <eos>):")
    print(f"  unigram                  {unigram_perplexity(train_names, valid_names):.3f}")
    print(f"  bigram (add-0.1)         {bigram_perplexity(train_names, valid_names):.3f}")
    print(f"  GRU {args.hidden}, {args.epochs} epochs      {metrics['perplexity']:.3f}   ({seconds:.1f} s, "
          f"{trainer.step} steps)")

    known = set(names)
    samples = model.generate("", length=20, temperature=0.8, seed=args.seed, num_samples=args.samples)
    novel = sum(s not in known for s in samples)
    print(f"\n{args.samples} samples at temperature 0.8 (* = not a census name; {novel} novel):")
    print("  " + ", ".join(s.capitalize() + ("*" if s not in known else "") for s in samples))
    starts = model.generate("ma", length=20, temperature=0.8, seed=args.seed + 1, num_samples=5)
    print("starting with 'ma': " + ", ".join(s.capitalize() for s in starts))
    return 0 if np.isfinite(metrics["perplexity"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
