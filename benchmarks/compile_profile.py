"""Where the cold compile of a first training step goes.

``python benchmarks/compile_profile.py [--cells RNN,LSTM,GRU] [--top 15]``.

Runs in this process with an empty Numba cache of its own (a temporary ``NUMBA_CACHE_DIR``), imports
rnncore, and times the first float32 training step (forward and backward, T 5, B 2, I 8, H 16, the
benchmark's compile section) of each cell in turn. It prints two tables, both in CPU seconds of this
process (compiling runs on one thread):

- per Numba compiler pass (``numba:run_pass`` events), each pass's own time, without the compiles of
  the functions it reaches on the way; ``native_lowering`` holds LLVM: building the IR, the per-function
  and final-module optimisation and the machine code;
- per compiled library (one per function and signature), the two LLVM stages of its final module, the
  module of the function with every separately compiled function it calls linked in: its optimisation
  and its machine code, with the module's instruction count before and after the optimisation. These
  two stages are timed by wrapping two methods of Numba's ``CPUCodeLibrary`` and ``JITCodeLibrary``
  (numba.core.codegen), internals of the Numba this runs on.

Counting the instructions walks every module through llvmlite (about 3.6 s for the three cells here):
that time is left out of every figure printed, the steps' and the passes' alike, and printed on its own.
The counts of instructions and libraries are deterministic; the seconds vary by 30% or more between
runs on a shared machine, so compare changes by alternating runs.
"""

import argparse
import atexit
import collections
import os
import shutil
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="RNN,LSTM,GRU", help="comma-separated, in order: RNN, LSTM, GRU")
    parser.add_argument("--top", type=int, default=15, help="rows of the per-library table")
    args = parser.parse_args()
    cells = args.cells.split(",")
    unknown = sorted(set(cells) - {"RNN", "LSTM", "GRU"})
    if unknown:
        parser.error(f"--cells: unknown {unknown}; expected a subset of ['RNN', 'LSTM', 'GRU']")
    cache = tempfile.mkdtemp(prefix="rnncore_compile_profile_")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["NUMBA_CACHE_DIR"] = cache

    import numba.core.codegen as codegen
    from numba.core import event

    pass_time = collections.Counter()
    stack = []  # [name, start, time of nested events]

    class OwnTime(event.Listener):
        def __init__(self, named):
            self.named = named

        def on_start(self, ev):
            name = ev.data["name"].split(" [")[0] if self.named else "(compile, outside passes)"
            stack.append([name, time.process_time(), 0.0])

        def on_end(self, ev):
            name, start, nested = stack.pop()
            spent = time.process_time() - start
            pass_time[name] += spent - nested
            if stack:
                stack[-1][2] += spent

    event.register("numba:run_pass", OwnTime(True))
    event.register("numba:compile", OwnTime(False))

    libraries = []  # [name, optimise s, machine code s, instructions before, after, functions]
    counting = [0.0]  # CPU s spent counting instructions, left out of every other figure

    def instructions(module):
        """The instructions of ``module``, the time taken to count them left out of the enclosing pass."""
        start = time.process_time()
        n = sum(len(list(block.instructions)) for fn in module.functions for block in fn.blocks)
        spent = time.process_time() - start
        counting[0] += spent
        if stack:
            stack[-1][2] += spent
        return n

    optimise, emit = codegen.CPUCodeLibrary._optimize_final_module, codegen.JITCodeLibrary._finalize_specific

    def timed_optimise(self):
        before = instructions(self._final_module)
        start = time.process_time()
        optimise(self)
        spent = time.process_time() - start
        defined = sum(1 for fn in self._final_module.functions if not fn.is_declaration)
        libraries.append([self.name, spent, 0.0, before, instructions(self._final_module), defined])

    def timed_emit(self):
        start = time.process_time()
        emit(self)
        libraries[-1][2] = time.process_time() - start

    codegen.CPUCodeLibrary._optimize_final_module = timed_optimise
    codegen.JITCodeLibrary._finalize_specific = timed_emit

    start = time.process_time()
    import numpy as np

    import rnncore
    print(f"import: {time.process_time() - start:.2f} s")
    for cell in cells:
        start, counted = time.process_time(), counting[0]
        layer = getattr(rnncore, cell)(8, 16)
        out, _ = layer(np.ones((5, 2, 8), np.float32))
        layer.backward(np.ones_like(out))
        print(f"{cell} first training step: {time.process_time() - start - (counting[0] - counted):.2f} s")
    print(f"(counting instructions, left out of every figure: {counting[0]:.2f} s)")

    total = sum(pass_time.values())
    print("\n| pass | own CPU s | share |\n|---|---|---|")
    for name, spent in pass_time.most_common():
        if spent >= 0.01:
            print(f"| {name} | {spent:.2f} | {spent / total:.0%} |")
    print(f"| all | {total:.2f} | |")

    print(f"\nfinal modules: {len(libraries)} libraries, {sum(lib[4] for lib in libraries)} instructions "
          f"after optimisation; optimisation {sum(lib[1] for lib in libraries):.2f} s, machine code "
          f"{sum(lib[2] for lib in libraries):.2f} s\n")
    print("| library | optimise s | machine code s | instructions before -> after | functions |")
    print("|---|---|---|---|---|")
    slowest = sorted(libraries, key=lambda lib: -(lib[1] + lib[2]))[:args.top]
    for name, opt, code, before, after, defined in slowest:
        print(f"| {name[:60]} | {opt:.2f} | {code:.2f} | {before} -> {after} | {defined} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
