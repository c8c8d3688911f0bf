"""Exported ONNX graphs against rnncore's own forward: the largest absolute and relative error per
model type, in onnxruntime (float32, variable lengths) and in onnx's ReferenceEvaluator (float64,
full lengths: it ignores sequence_lens, and its RNN knows only Tanh).

    python benchmarks/onnx_parity.py            # H 32, 2 layers, bidirectional where it applies
    python benchmarks/onnx_parity.py --seeds 5

Relative error = max|ours - theirs| / max|theirs| over every output of a graph, maximised over seeds.
"""

import argparse

import numpy as np
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

import rnncore
from rnncore.data import Vocab
from rnncore.io import to_onnx_model
from rnncore.models.classifier import SequenceClassifier
from rnncore.models.language_model import LanguageModel
from rnncore.models.tagger import SequenceTagger

T, B, I, H, L = 20, 8, 16, 32, 2
VOCAB = Vocab([chr(c) for c in range(ord("a"), ord("z") + 1)])
LABELS = Vocab(["a", "b", "c", "d"], specials=())


def errors(got, expected):
    abs_err = max(float(np.max(np.abs(got[k].astype(np.float64) - v))) for k, v in expected.items())
    rel = max(float(np.max(np.abs(got[k].astype(np.float64) - v)) / np.max(np.abs(v)))
              for k, v in expected.items())
    return abs_err, rel


def run(proto, feeds, runtime):
    if runtime == "ort":
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
    else:
        sess = ReferenceEvaluator(proto)
        names = sess.output_names
    return dict(zip(names, sess.run(None, feeds)))


def layer_case(name, dtype, seed, lengths):
    kind, kw = {"RNN tanh": ("RNN", {"nonlinearity": "tanh"}), "RNN relu": ("RNN", {"nonlinearity": "relu"}),
                "RNN sigmoid": ("RNN", {"nonlinearity": "sigmoid"}), "LSTM": ("LSTM", {}),
                "GRU": ("GRU", {}), "GRU reset_after=False": ("GRU", {"reset_after": False})}[name]
    layer = getattr(rnncore, kind)(I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=seed, **kw)
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((T, B, I)).astype(dtype),
             "h0": 0.5 * rng.standard_normal((2 * L, B, H)).astype(dtype)}
    if kind == "LSTM":
        feeds["c0"] = 0.5 * rng.standard_normal((2 * L, B, H)).astype(dtype)
    lens = None
    if lengths:
        feeds["lengths"] = lens = rng.integers(1, T + 1, size=B)
    with rnncore.no_grad():
        out, state = layer(feeds["x"], (feeds["h0"], feeds["c0"]) if kind == "LSTM" else feeds["h0"], lens)
    states = state if kind == "LSTM" else (state,)
    expected = {"output": out, **dict(zip(("h_n", "c_n"), states))}
    return to_onnx_model(layer, lengths=lengths), feeds, expected


def lm_case(cell, dtype, seed, lengths):
    model = LanguageModel(VOCAB, cell=cell, embedding_dim=16, hidden_size=H, num_layers=L,
                          dtype=dtype.__name__, seed=seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(VOCAB), size=(T, B))
    feeds = {"ids": ids, "h0": np.zeros((L, B, H), dtype)}
    if cell == "lstm":
        feeds["c0"] = np.zeros((L, B, H), dtype)
    lens = None
    if lengths:
        feeds["lengths"] = lens = rng.integers(1, T + 1, size=B)
    with rnncore.no_grad():
        logits, state = model.logits(ids, None, lens)
    states = state if cell == "lstm" else (state,)
    expected = {"logits": logits, **dict(zip(("h_n", "c_n"), states))}
    return to_onnx_model(model, lengths=lengths), feeds, expected


def classifier_case(cell, merge, dtype, seed, lengths):
    model = SequenceClassifier(LABELS, VOCAB, cell=cell, embedding_dim=16, hidden_size=H, num_layers=L,
                               bidirectional=True, merge=merge, dtype=dtype.__name__, seed=seed)
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, T + 1, size=B) if lengths else np.full(B, T)
    ids = rng.integers(4, len(VOCAB), size=(T, B))
    ids[np.arange(T)[:, None] >= lens[None, :]] = VOCAB.pad_id
    feeds = {"ids": ids, "lengths": lens} if lengths else {"ids": ids}
    with rnncore.no_grad():
        logits = model.logits(ids, lens if lengths else None)
    return to_onnx_model(model, lengths=lengths), feeds, {"logits": logits}


def tagger_case(cell, merge, dtype, seed, lengths):
    model = SequenceTagger(VOCAB, LABELS, cell=cell, embedding_dim=16, hidden_size=H, num_layers=L,
                           bidirectional=True, merge=merge, dtype=dtype.__name__, seed=seed)
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, T + 1, size=B) if lengths else None
    ids = rng.integers(4, len(VOCAB), size=(T, B))
    feeds = {"ids": ids, "lengths": lens} if lengths else {"ids": ids}
    with rnncore.no_grad():
        logits = model.forward(ids, lens)
    return to_onnx_model(model, lengths=lengths), feeds, {"logits": logits}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    cases = [(f"layer {n}", lambda d, s, lg, n=n: layer_case(n, d, s, lg)) for n in
             ("RNN tanh", "RNN relu", "RNN sigmoid", "LSTM", "GRU", "GRU reset_after=False")]
    cases += [(f"language model {c}", lambda d, s, lg, c=c: lm_case(c, d, s, lg))
              for c in ("rnn", "lstm", "gru")]
    cases += [(f"classifier {c} {m}", lambda d, s, lg, c=c, m=m: classifier_case(c, m, d, s, lg))
              for c, m in (("rnn", "concat"), ("lstm", "concat"), ("gru", "sum"), ("lstm", "product"))]
    cases += [(f"tagger {c} {m}", lambda d, s, lg, c=c, m=m: tagger_case(c, m, d, s, lg))
              for c, m in (("lstm", "concat"), ("gru", "sum"))]
    print(f"T {T}, B {B}, I {I}, H {H}, {L} layers, bidirectional (layers, classifiers, taggers); {args.seeds} seeds")
    print(f"{'model':<34} {'onnxruntime float32 abs / rel':>32} {'ReferenceEvaluator float64 abs / rel':>38}")
    for name, make in cases:
        ort_err = [errors(run(p, f, "ort"), e) for p, f, e in
                   (make(np.float32, s, True) for s in range(args.seeds))]
        ref = "n/a (RNN Tanh only)"
        if "relu" not in name and "sigmoid" not in name:
            ref_err = [errors(run(p, f, "ref"), e) for p, f, e in
                       (make(np.float64, s, False) for s in range(args.seeds))]
            ref = f"{max(a for a, _ in ref_err):.1e} / {max(r for _, r in ref_err):.1e}"
        print(f"{name:<34} {max(a for a, _ in ort_err):>15.1e} / {max(r for _, r in ort_err):.1e}"
              f"{ref:>38}")


if __name__ == "__main__":
    main()
