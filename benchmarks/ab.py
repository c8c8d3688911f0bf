"""rnncore at a git revision against the working tree: training (or inference) passes in one process.

On a machine whose speed drifts between processes, an old and a new tree timed in separate processes hide
changes of 10-30%: on the 2-core machine of ``docs/benchmarks.md`` the same training pass took 28-43 ms in
three fresh processes. Here the revision's ``rnncore`` is exported with ``git archive`` into a temporary
folder as another package (``rnncore_ab_old``, every ``rnncore`` name in its sources renamed), both trees are
imported into this process, and the two are timed alternately, sample by sample, the order flipped every
sample. Each sample is the mean of as many passes as last ``--seconds``; the table gives both sides' min and
the ratios new/old of the min and of the median. Before timing, each row checks that both trees computed the
same outputs (the largest relative difference is printed: a change that alters results shows there).

    python benchmarks/ab.py REV [--cells lstm,gru] [--B 16,64] [--H 64,256] [--T 100] [--mode train]

``--mode decode`` times one step of each layer's ``stepper()`` instead (B rows from the state that T steps
reached; T is not timed), as the decode section of ``rnn_vs_torch.py`` does.

Cells (``--cells``): the keys of ``CELLS``. The revision's kernels compile afresh in every run (their Numba
cache is keyed by their temporary path). Like ``rnn_vs_torch.py``, it unsets OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE for its own process.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_name, None)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OLD_PACKAGE = "rnncore_ab_old"

CELLS = {
    "rnn": ("RNN", {}),
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
    "lstm_layer_norm": ("LSTM", {"layer_norm": True}),
    "gru_layer_norm": ("GRU", {"layer_norm": True}),
    "lstm_peephole": ("LSTM", {"peephole": True}),
    "lstm_clip_coupled": ("LSTM", {"gate_clip": 3.0, "coupled_input_forget": True}),
    "lstm_proj": ("LSTM", {"proj_size": 32}),
    "rnn_zoneout": ("RNN", {"zoneout": 0.2}),
    "lstm_zoneout": ("LSTM", {"zoneout": 0.2, "zoneout_cell": 0.2}),
    "gru_zoneout": ("GRU", {"zoneout": 0.2}),
}


def export_revision(rev, folder):
    """The revision's ``rnncore`` package as ``folder/OLD_PACKAGE``, its own name renamed in every source."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "rnncore"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    package = Path(folder) / OLD_PACKAGE
    (Path(folder) / "rnncore").rename(package)
    for path in package.rglob("*.py"):
        path.write_text(re.sub(r"\brnncore\b", OLD_PACKAGE, path.read_text()))
    return package


def time_pair(run_old, run_new, samples, seconds):
    """Per-side lists of sample times (s): each sample the mean of n calls, n set from one call of new."""
    t0 = time.perf_counter()
    run_new()
    n = max(1, round(seconds / max(time.perf_counter() - t0, 1e-7)))
    times = ([], [])
    for s in range(samples):
        for side in ((0, 1) if s % 2 == 0 else (1, 0)):
            run = (run_old, run_new)[side]
            t0 = time.perf_counter()
            for _ in range(n):
                run()
            times[side].append((time.perf_counter() - t0) / n)
    return times


def run_steps(stepper, x):
    """The state after stepping through x (T, B, H) one step at a time."""
    state = None
    for x_t in x:
        _, state = stepper.step(x_t, state)
    return state


def measure_row(old, new, key, B, H, args):
    """One table row: both trees' layers with the same seed on the same inputs, checked, then timed."""
    cls, options = CELLS[key]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.T, B, H)).astype(np.float32)
    layers = [getattr(lib, cls)(H, H, dtype=np.float32, seed=0, **options) for lib in (old, new)]
    shapes = []
    for layer, lib in zip(layers, (old, new), strict=True):  # both: the masks' random streams stay in step
        with lib.no_grad():
            shapes.append(layer(x)[0].shape)
    grad = rng.standard_normal(shapes[1]).astype(np.float32)

    if args.mode == "decode":
        steppers = [layer.stepper() for layer in layers]
        states = [run_steps(stepper, x) for stepper in steppers]
        x_step = rng.standard_normal((B, H)).astype(np.float32)

    def run(side):
        layer, lib = layers[side], (old, new)[side]
        if args.mode == "decode":
            return steppers[side].step(x_step, states[side])[0]
        if args.mode == "infer":
            with lib.no_grad():
                return layer(x)[0]
        out = layer(x)[0]
        layer.backward(grad)
        return out

    outs = [run(0), run(1)]
    diff = float(np.max(np.abs(outs[1] - outs[0])) / max(np.max(np.abs(outs[0])), 1e-30))
    t_old, t_new = time_pair(lambda: run(0), lambda: run(1), args.samples, args.seconds)
    median_ratio = statistics.median(t_new) / statistics.median(t_old)
    return (f"| {key} | {B} | {H} | {min(t_old) * 1e3:.4g} | {min(t_new) * 1e3:.4g} | "
            f"{min(t_new) / min(t_old):.2f} | {median_ratio:.2f} | {diff:.1e} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare the working tree with, e.g. HEAD~1")
    parser.add_argument("--cells", default="lstm,gru", help="comma-separated keys of: " + ",".join(CELLS))
    parser.add_argument("--B", default="16,64", help="batch sizes")
    parser.add_argument("--H", default="64,256", help="hidden sizes (input size the same)")
    parser.add_argument("--T", type=int, default=100, help="steps")
    parser.add_argument("--mode", choices=("train", "infer", "decode"), default="train")
    parser.add_argument("--samples", type=int, default=15, help="samples per side and row")
    parser.add_argument("--seconds", type=float, default=0.03, help="least time of one sample")
    parser.add_argument("--threads", type=int, default=2, help="rnncore.set_num_threads for both trees")
    args = parser.parse_args()
    unknown = [c for c in args.cells.split(",") if c not in CELLS]
    if unknown:
        parser.error(f"--cells: unknown {unknown}; expected keys of {sorted(CELLS)}")

    with tempfile.TemporaryDirectory() as folder:
        export_revision(args.rev, folder)
        sys.path.insert(0, folder)
        sys.path.insert(0, str(ROOT))
        import rnncore as new
        old = __import__(OLD_PACKAGE)
        for lib in (old, new):
            lib.set_num_threads(args.threads)
        print(f"old: {args.rev} ({old.__file__}); new: the working tree ({new.__file__})")
        what = "decode step (stepper)" if args.mode == "decode" else f"{args.mode} pass"
        print(f"{what}, T {args.T}, float32, {args.threads} threads; {args.samples} samples per "
              f"side, alternated; each the mean of at least {args.seconds * 1e3:.0f} ms of passes\n")
        print("| cell | B | H | old ms | new ms | ratio (min) | ratio (median) | max rel diff |")
        print("|---|---|---|---|---|---|---|---|")
        for key in args.cells.split(","):
            for B in (int(b) for b in args.B.split(",")):
                for H in (int(h) for h in args.H.split(",")):
                    print(measure_row(old, new, key, B, H, args), flush=True)


if __name__ == "__main__":
    main()
