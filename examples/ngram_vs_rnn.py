"""A character n-gram (Markov) baseline beside the RNN language model, on the same text.

Both models read CPython's pydoc topics (built in): the first 95 % to train, the last 5 % to score,
in perplexity per character (and bits per character). The n-gram models use interpolated
Kneser-Ney smoothing (discount 0.75, continuation counts for the lower orders, a uniform floor),
orders 1 to 7; the RNN is the LSTM that ``rnncore train lm`` trains by default (256 units,
truncated BPTT over 64 characters, 32 streams, Adam), for three epochs. Characters the training part
never shows count as one unknown symbol in both models.

    python examples/ngram_vs_rnn.py [--orders 7] [--epochs 1]
"""

import argparse
import math
import time
from collections import Counter, defaultdict

from rnncore.data import Vocab, python_docs_text
from rnncore.data.sources import StreamSource
from rnncore.models.language_model import LanguageModel
from rnncore.train import Adam
from rnncore.train.loop import Trainer, blas_threads, evaluate_source

UNK = "\x00"


class KneserNey:
    """Interpolated Kneser-Ney character model of order n."""

    def __init__(self, text, n, discount=0.75):
        self.n, self.d = n, discount
        self.vocab = sorted(set(text) | {UNK})
        # counts[k][context] = Counter(next char): raw counts for order n, continuation counts below
        self.counts = [None] + [defaultdict(Counter) for _ in range(n)]
        grams = Counter(text[i - n + 1 : i + 1] for i in range(n - 1, len(text)))
        for g, c in grams.items():
            self.counts[n][g[:-1]][g[-1]] += c
        for k in range(n - 1, 0, -1):  # N1+(. h w): the number of distinct left extensions of h w
            grams = Counter(g[1:] for g in grams)
            for g, c in grams.items():
                self.counts[k][g[:-1]][g[-1]] += c
        self.totals = [None] + [{h: sum(c.values()) for h, c in level.items()} for level in self.counts[1:]]

    def prob(self, history, ch):
        p = 1.0 / len(self.vocab)
        for k in range(1, self.n + 1):
            h = history[len(history) - k + 1 :] if k > 1 else ""
            counter = self.counts[k].get(h)
            if counter is None:
                continue  # unseen context: keep the lower-order estimate
            total = self.totals[k][h]
            p = max(counter.get(ch, 0) - self.d, 0.0) / total + self.d * len(counter) / total * p
        return p

    def perplexity(self, text, history):
        nll = 0.0
        context = history[-(self.n - 1):] if self.n > 1 else ""
        for ch in text:
            nll -= math.log(self.prob(context, ch))
            if self.n > 1:
                context = (context + ch)[-(self.n - 1):]
        return math.exp(nll / len(text))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=7, help="n-gram orders 1..N")
    parser.add_argument("--epochs", type=int, default=3, help="RNN epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    text = python_docs_text()
    split = int(len(text) * 0.95)
    train_text, valid_text = text[:split], text[split:]
    seen = set(train_text)
    valid_text = "".join(ch if ch in seen else UNK for ch in valid_text)
    print(f"train {len(train_text):,} characters, validation {len(valid_text):,} "
          f"({valid_text.count(UNK)} unknown)\n")
    print(f"{'model':<36} {'perplexity':>10} {'bits/char':>10} {'time':>8}")
    best = (math.inf, None)
    for n in range(1, args.orders + 1):
        t0 = time.perf_counter()
        model = KneserNey(train_text, n)
        ppl = model.perplexity(valid_text, train_text)
        print(f"{f'{n}-gram, interpolated Kneser-Ney':<36} {ppl:>10.3f} {math.log2(ppl):>10.3f} "
              f"{time.perf_counter() - t0:>6.1f} s")
        best = min(best, (ppl, n))

    vocab = Vocab.build([train_text], order="sorted")
    train_ids = vocab.encode(train_text)
    valid_ids = vocab.encode(valid_text)  # UNK is not in the vocabulary: it encodes as <unk>
    t0 = time.perf_counter()
    with blas_threads(1):
        lm = LanguageModel(vocab, cell="lstm", embedding_dim=32, hidden_size=256, seed=args.seed)
        trainer = Trainer(lm, Adam(lm, lr=3e-3), clip_norm=5.0)
        trainer.fit(StreamSource(train_ids, 32, 64, seed=args.seed), epochs=args.epochs)
        metrics = evaluate_source(lm, StreamSource(valid_ids, 16, 100, shuffle=False))
    label = f"LSTM 256, {args.epochs} epoch{'s' if args.epochs > 1 else ''} ({trainer.step} steps)"
    print(f"{label:<36} {metrics['perplexity']:>10.3f} {metrics['bits_per_token']:>10.3f} "
          f"{time.perf_counter() - t0:>6.1f} s")
    print(f"\nbest n-gram: order {best[1]}, perplexity {best[0]:.3f}; LSTM: {metrics['perplexity']:.3f} "
          f"({'LSTM' if metrics['perplexity'] < best[0] else 'n-gram'} better)")
    # the RNN scores every validation character after the first of each of its 16 rows: 16 fewer
    print(f"(the LSTM's validation covers {metrics['tokens']:,} predictions of the same text)")


if __name__ == "__main__":
    main()
