"""What keeps rnncore's results bit-identical between runs, and what changes them.

Every probe runs in a fresh Python process and saves its arrays; this script compares them.
A probe runs each cell (LSTM, GRU, Elman tanh; 2 layers, bidirectional, variable lengths,
T=30, B=16, I=32, H=128, large enough for OpenBLAS to split the GEMMs between threads) forward
with the training kernels, backward with a random output gradient and forward with the
inference kernels; then trains a character LSTM language model for 30 Adam steps (losses,
final weights) and samples 60 characters from it with a fixed seed.

Variants, each against the baseline process (one BLAS thread, warm Numba cache):
- the same again in a second process, and with another PYTHONHASHSEED (dict/set order);
- two BLAS threads (against one, and against two in another process); other OpenBLAS kernels
  (OPENBLAS_CORETYPE);
- a cold Numba cache (an empty NUMBA_CACHE_DIR), and the cache turned off (RNNCORE_NUMBA_CACHE=0);
- float64 against float32 (a different computation, shown for scale).

    python examples/determinism_study.py [--coretypes Sandybridge,Prescott]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def probe(path, dtype, threads):
    """Run the computations and save every result array to ``path`` (.npz)."""
    import rnncore
    from rnncore.data import Vocab, python_docs_text
    from rnncore.data.sources import StreamSource
    from rnncore.models.language_model import LanguageModel
    from rnncore.train import Adam, Trainer

    rnncore.set_num_threads(threads)
    dtype = np.dtype(dtype)
    results = {"blas": np.array(sorted(f"{k}={v}" for k, v in rnncore.num_threads().items()))}
    T, B, I, H = 30, 16, 32, 128
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    cells = {"lstm": rnncore.LSTM, "gru": rnncore.GRU, "rnn": rnncore.RNN}
    for k, (name, cls) in enumerate(cells.items()):
        m = cls(I, H, num_layers=2, bidirectional=True, dtype=dtype, seed=k)
        out, _ = m(x, lengths=lengths)
        g = np.random.default_rng(10 + k).standard_normal(out.shape).astype(dtype)
        dx, _ = m.backward(g, None)
        results[f"{name}/out"], results[f"{name}/dx"] = out, dx
        for pname, grad in m.grads.items():
            results[f"{name}/grad/{pname}"] = grad
        with rnncore.no_grad():
            results[f"{name}/out_infer"] = m(x, lengths=lengths)[0]

    text = python_docs_text()[:40_000]
    vocab = Vocab.build([text], order="sorted")
    source = StreamSource(vocab.encode(text), 16, 32, seed=0)
    model = LanguageModel(vocab, cell="lstm", embedding_dim=16, hidden_size=128, dropout=0.1,
                          dtype=str(dtype), seed=0)
    losses = []
    trainer = Trainer(model, Adam(model, lr=3e-3), clip_norm=5.0)
    trainer.fit(source, epochs=1, max_steps=30, on_step=lambda tr, loss, norm: losses.append(loss))
    results["train/losses"] = np.array(losses)
    for pname, value in model.named_parameters():
        results[f"train/weight/{pname}"] = value
    sample = model.generate("The ", 60, temperature=1.0, seed=3)[0]
    results["train/sample"] = np.array([ord(c) for c in sample])
    np.savez(path, **results)


def run_probe(path, dtype="float32", threads=1, env=None):
    full_env = dict(os.environ, **(env or {}))
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import determinism_study as d; "
            f"d.probe({str(path)!r}, {dtype!r}, {threads})")
    subprocess.run([sys.executable, "-c", code], env=full_env, check=True)
    with np.load(path) as f:
        return dict(f)


def compare(a, b):
    """(bit-identical, max abs difference, max abs difference / max |value|) per group of results."""
    groups = {}
    for key in a:
        if key == "blas":
            continue
        group = "train: " + key.split("/")[1] if key.startswith("train/") else key.split("/")[0]
        if key.startswith("train/weight"):
            group = "train: weights"
        va, vb = a[key].astype(np.float64), b[key].astype(np.float64)
        diff = float(np.max(np.abs(va - vb))) if va.size else 0.0
        scale = float(np.max(np.abs(va))) if va.size else 1.0
        same = a[key].tobytes() == b[key].tobytes()
        s, d, r = groups.get(group, (True, 0.0, 0.0))
        groups[group] = (s and same, max(d, diff), max(r, diff / max(scale, 1e-300)))
    return groups


def report(title, a, b):
    print(f"\n{title}  [{', '.join(a['blas'])} | {', '.join(b['blas'])}]")
    for group, (same, diff, rel) in compare(a, b).items():
        if group == "train: sample":
            print(f"  {group:<16} {'identical' if same else 'DIFFERENT'}")
        else:
            print(f"  {group:<16} {'bit-identical' if same else f'max abs {diff:.2e}  max rel {rel:.2e}'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coretypes", default="Sandybridge,Prescott",
                        help="OPENBLAS_CORETYPE values to compare with the detected kernel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = {"NUMBA_CACHE_DIR": str(tmp / "cache")}
        print("cold cache run (compiles every kernel) ...")
        cold = run_probe(tmp / "cold.npz", env=warm)
        base = run_probe(tmp / "base.npz", env=warm)
        report("second process, warm cache (baseline) vs first process, cold cache", base, cold)
        report("same again in another process", base, run_probe(tmp / "again.npz", env=warm))
        report("PYTHONHASHSEED=1 vs 2", run_probe(tmp / "h1.npz", env=dict(warm, PYTHONHASHSEED="1")),
               run_probe(tmp / "h2.npz", env=dict(warm, PYTHONHASHSEED="2")))
        report("Numba cache off (RNNCORE_NUMBA_CACHE=0)", base,
               run_probe(tmp / "nocache.npz", env=dict(warm, RNNCORE_NUMBA_CACHE="0")))
        two = run_probe(tmp / "threads2.npz", threads=2, env=warm)
        report("2 BLAS threads vs 1", base, two)
        two_again = run_probe(tmp / "threads2b.npz", threads=2, env=warm)
        report("2 BLAS threads, in another process", two, two_again)
        for core in filter(None, args.coretypes.split(",")):
            report(f"OPENBLAS_CORETYPE={core} vs detected", base,
                   run_probe(tmp / f"{core}.npz", env=dict(warm, OPENBLAS_CORETYPE=core)))
        report("float64 vs float32", base, run_probe(tmp / "f64.npz", dtype="float64", env=warm))


if __name__ == "__main__":
    main()
