"""Character-level text generation in the min-char-rnn setting, reproduced, then beaten by an LSTM.

Karpathy's min-char-rnn trains an Elman RNN (tanh, 100 hidden units) on one-hot characters, 25
steps per truncated-BPTT chunk, batch 1, Adagrad with learning rate 0.1 on the loss summed over
the chunk, every gradient element clipped to [-5, 5], and the hidden state carried from chunk to
chunk. Here the same recipe runs on rnncore's kernels on real text (CPython's pydoc topics, built
in), then an LSTM takes the Elman cell's place under the identical recipe and budget, and then a
batched LSTM (32 streams, Adam) shows what the same minute buys with a modern setting. Each model
is scored on the held-out last 5 % of the text in bits per character.

Differences from min-char-rnn, on purpose: the vocabulary is sorted (its ``list(set(data))``
order changes between runs), weights start from torch.nn's uniform init instead of randn * 0.01,
and Adagrad's epsilon sits outside the square root (torch's form).

    python examples/char_rnn.py [--steps 20000] [--batched-steps 250]
"""

import argparse
import time

import numpy as np

from rnncore.data import Vocab, python_docs_text
from rnncore.data.sources import StreamSource
from rnncore.models.language_model import LanguageModel
from rnncore.train import Adagrad, Adam
from rnncore.train.loop import Trainer, blas_threads, evaluate_source


def train(name, model, optimizer, source, valid, steps, clip_value=None, clip_norm=None):
    trainer = Trainer(model, optimizer, clip_value=clip_value, clip_norm=clip_norm)
    t0 = time.perf_counter()
    epochs = -(-steps // len(source))
    trainer.fit(source, epochs=epochs, max_steps=steps)
    seconds = time.perf_counter() - t0
    metrics = evaluate_source(model, valid)
    chars = steps * source.batch_size * source.bptt
    print(f"{name:<44} {steps:>7,} {chars:>11,} {seconds:>7.1f} s  {metrics['loss']:.3f}  "
          f"{metrics['bits_per_token']:.3f}")
    return metrics, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000,
                        help="updates for each model in the min-char-rnn setting")
    parser.add_argument("--batched-steps", type=int, default=250, help="updates for the batched LSTM")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    text = python_docs_text()
    split = int(len(text) * 0.95)
    vocab = Vocab.build([text[:split]], order="sorted")
    train_ids, valid_ids = vocab.encode(text[:split]), vocab.encode(text[split:])
    valid = StreamSource(valid_ids, 16, 100, shuffle=False)
    print(f"corpus: CPython's pydoc topics, {len(text):,} characters ({len(vocab) - 4} distinct); "
          f"validation: the last {len(valid_ids):,}")
    print(f"uniform guess: {np.log2(len(vocab) - 4):.3f} bits/char\n")
    print(f"{'model':<44} {'steps':>7} {'chars seen':>11} {'time':>9}  nats  bits/char")

    results = {}
    with blas_threads(1):
        recipe = dict(embedding_dim=None, hidden_size=100, reduction="sum", seed=args.seed)
        stream = StreamSource(train_ids, 1, 25, seed=args.seed)
        for cell, label in (("rnn", "Elman tanh 100, min-char-rnn recipe"),
                            ("lstm", "LSTM 100, the same recipe")):
            model = LanguageModel(vocab, cell=cell, **recipe)
            results[cell] = train(label, model, Adagrad(model, lr=0.1), stream, valid, args.steps,
                                  clip_value=5.0)
            results[cell + "_model"] = model

        model = LanguageModel(vocab, cell="lstm", embedding_dim=32, hidden_size=256, seed=args.seed)
        batched = StreamSource(train_ids, 32, 64, seed=args.seed)
        results["batched"] = train("LSTM 256, 32 streams x 64 steps, Adam 3e-3", model, Adam(model, lr=3e-3),
                                   batched, valid, args.batched_steps, clip_norm=5.0)
        results["batched_model"] = model

    elman, lstm = results["rnn"][0]["bits_per_token"], results["lstm"][0]["bits_per_token"]
    best = results["batched"][0]["bits_per_token"]
    print(f"\nLSTM vs Elman under the min-char-rnn recipe: {elman - lstm:+.3f} bits/char "
          f"({'LSTM better' if lstm < elman else 'Elman better'}); batched LSTM: {best:.3f} bits/char")
    for key, label in (("rnn_model", "Elman"), ("lstm_model", "LSTM (same recipe)"),
                       ("batched_model", "batched LSTM")):
        sample = results[key].generate("The ", 160, temperature=0.7, seed=args.seed)[0]
        print(f"\n--- {label}, temperature 0.7 ---\n{sample}")


if __name__ == "__main__":
    main()
