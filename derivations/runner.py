"""Run the derivations, print progress and a summary, write results.json, report.md and report.html.

Progress is one plain line per derivation when it starts and one when it ends (readable in a
terminal and in a CI log alike). BLAS is limited to one thread while the derivations run: every
matrix here is tiny, and extra BLAS threads only add overhead, badly so on a shared machine.
"""

import importlib
import importlib.util
import json
import math
import platform
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from derivations import DERIVATIONS, NAMES
from derivations.checks import CHECK_FIELDS, RESULTS_FIELDS, Check, DerivationResult
from rnncore.threads import blas_threads


def _tolerance(check):
    return f"{check.tolerance:g} ({check.error_kind})"


def _fmt(x):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.2e}"


@dataclass
class FamilySummary:
    name: str
    title: str
    checks: int
    failed: int
    worst_abs_error: float
    worst_rel_error: float
    tightest: str  # the check whose error is closest to (or furthest beyond) its tolerance
    seconds: float

    @classmethod
    def of(cls, result):
        errs = [c.max_abs_error for c in result.checks
                if c.max_abs_error is not None and math.isfinite(c.max_abs_error)]
        rels = [c.max_rel_error for c in result.checks
                if c.error_kind != "abs" and c.max_rel_error is not None and math.isfinite(c.max_rel_error)]

        def ratio(c):
            e = c.error
            if e is None or not math.isfinite(e):
                return math.inf
            return e / c.tolerance if c.tolerance > 0 else (0.0 if e == 0 else math.inf)

        tight = max(result.checks, key=ratio, default=None)
        tightest = "-" if tight is None else (f"{tight.name} ({_fmt(tight.error)} of "
                                              f"{_fmt(tight.tolerance)}, {tight.error_kind})")
        failed = sum(not c.passed for c in result.checks)
        return cls(result.name, result.title, len(result.checks), failed,
                   max(errs) if errs else math.nan, max(rels) if rels else math.nan, tightest, result.seconds)

    def record(self):
        def num(x):
            return x if math.isfinite(x) else None

        return {"title": self.title, "checks": self.checks, "failed": self.failed,
                "worst_abs_error": num(self.worst_abs_error), "worst_rel_error": num(self.worst_rel_error),
                "tightest": self.tightest, "seconds": round(self.seconds, 3)}


@dataclass
class Verification:
    results: list
    quick: bool
    seconds: float
    out_dir: Path

    @property
    def checks(self):
        return [c for r in self.results for c in r.checks]

    @property
    def passed(self):
        return all(c.passed for c in self.checks)

    def summaries(self):
        return [FamilySummary.of(r) for r in self.results]

    def results_json(self):
        from rnncore import __version__

        data = {"format": "rnncore-verify-results", "format_version": 1, "rnncore_version": __version__,
                "quick": self.quick, "passed": self.passed,
                "families": {s.name: s.record() for s in self.summaries()},
                "checks": [c.record() for c in self.checks]}
        assert set(data) == set(RESULTS_FIELDS)
        return data

    def summary_table(self):
        """The plain-text summary printed at the end of a run."""
        w = max([12] + [len(s.name) for s in self.summaries()])
        head = f"{'family':<{w}} {'checks':>6} {'failed':>6} {'worst abs':>10} {'worst rel':>10} {'time':>8}"
        lines = [head, "-" * len(head)]
        for s in self.summaries():
            lines.append(f"{s.name:<{w}} {s.checks:>6} {s.failed:>6} {_fmt(s.worst_abs_error):>10} "
                         f"{_fmt(s.worst_rel_error):>10} {s.seconds:>7.1f}s")
        total, failed = len(self.checks), sum(not c.passed for c in self.checks)
        lines.append("-" * len(head))
        if failed:
            lines.append(f"{failed} of {total} checks FAILED ({self.seconds:.1f} s):")
            lines += [f"  {c}" for c in self.checks if not c.passed]
        else:
            lines.append(f"all {total} checks passed ({self.seconds:.1f} s)")
        lines.append(f"report: {self.out_dir / 'report.html'}  (also report.md, results.json)")
        return "\n".join(lines)


def _crashed(name, title, exc):
    """A derivation that raised: one failed check carrying the error, so the run exits non-zero."""
    check = Check(name, f"{name}/error", "the derivation ran to completion; it raised "
                                         f"{type(exc).__name__}: {exc}",
                  "-", "-", math.inf, math.inf, 0.0, error_kind="abs")
    return DerivationResult(name, title, "The derivation raised an exception:\n\n`" +
                            "".join(traceback.format_exception_only(type(exc), exc)).strip() + "`", [check])


def run_verification(out_dir, quick=False, only=(), echo=print):
    """Run the selected derivations (all if ``only`` is empty), write the report into out_dir.
    Raises ValueError for an unknown name, ImportError without matplotlib or scikit-learn."""
    names = list(only) if only else list(NAMES)
    unknown = [n for n in names if n not in DERIVATIONS]
    if unknown:
        raise ValueError(f"unknown derivation(s) {unknown}; choose from {list(NAMES)}")
    names = [n for n in NAMES if n in names]  # report order, no duplicates
    missing = [pkg for module, pkg in (("matplotlib", "matplotlib"), ("sklearn", "scikit-learn"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"rnncore verify needs {' and '.join(missing)} (the verify extra): "
                          "pip install 'rnncore[verify]'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    start = time.perf_counter()
    with blas_threads(1):
        for k, name in enumerate(names, 1):
            module_name, title = DERIVATIONS[name]
            echo(f"[{k}/{len(names)}] {name}: {title} ...")
            t0 = time.perf_counter()
            try:
                module = importlib.import_module(module_name)
                result = module.run(quick=quick)
                if hasattr(module, "plot"):
                    result.figures = module.plot(result, out_dir)
            except Exception as exc:  # reported as a failed check; the traceback goes to the log
                echo(traceback.format_exc().rstrip())
                result = _crashed(name, title, exc)
            result.seconds = time.perf_counter() - t0
            s = FamilySummary.of(result)
            status = "all passed" if not s.failed else f"{s.failed} FAILED"
            echo(f"      {s.checks} checks, {status}; worst abs error {_fmt(s.worst_abs_error)}, "
                 f"worst rel error {_fmt(s.worst_rel_error)}; {result.seconds:.1f} s")
            results.append(result)
    verification = Verification(results, quick, time.perf_counter() - start, out_dir)
    write_report(verification)
    return verification


def write_report(v):
    """results.json, report.md and report.html (figures are already in out_dir)."""
    import numba
    import numpy
    import sympy

    from rnncore import __version__
    from rnncore.report import Report, slug

    out = v.out_dir
    data = v.results_json()
    (out / "results.json").write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")

    total, failed = len(v.checks), sum(not c.passed for c in v.checks)
    rep = Report("rnncore verification report")
    verdict = f"**all {total} checks passed**" if not failed else f"**{failed} of {total} checks FAILED**"
    rep.paragraph(
        f"rnncore {__version__}, {'quick' if v.quick else 'full'} run: {verdict} in {v.seconds:.1f} s. "
        f"Python {platform.python_version()}, NumPy {numpy.__version__}, SymPy {sympy.__version__}, Numba "
        f"{numba.__version__}. Every check compares a reference (SymPy, or a closed form derived with SymPy) "
        "with what the library measures, and records the largest absolute and relative error and the "
        "tolerance; `results.json` holds one record per check (fields at the end).")
    rep.heading("Summary")
    rep.table(["family", "what", "checks", "failed", "worst abs error", "worst rel error",
               "closest to its tolerance", "time"],
              [[f"[{s.name}](#{slug(s.title)})", s.title, s.checks, s.failed, _fmt(s.worst_abs_error),
                _fmt(s.worst_rel_error), s.tightest, f"{s.seconds:.1f} s"] for s in v.summaries()],
              ["fail" if s.failed else "ok" for s in v.summaries()])
    if failed:
        rep.heading("Failed checks")
        rep.table(["name", "compared", "abs error", "rel error", "tolerance"],
                  [[c.name, c.compared, _fmt(c.max_abs_error), _fmt(c.max_rel_error), _tolerance(c)]
                   for c in v.checks if not c.passed], ["fail"] * failed)
    for r in v.results:
        n_failed = sum(not c.passed for c in r.checks)
        rep.heading(r.title)
        rep.paragraph(r.description)
        for caption, latex in r.formulas:
            rep.formula(caption, latex)
        for fig in r.figures:
            rep.figure(out / fig.filename, fig.caption)
        rows = [["ok" if c.passed else "FAIL", c.name.split("/", 1)[1], c.compared, c.reference, c.measured,
                 _fmt(c.max_abs_error), _fmt(c.max_rel_error), _tolerance(c)] for c in r.checks]
        status = f"**{n_failed} failed**" if n_failed else "all passed"
        rep.table(["", "check", "compared", "reference", "measured", "abs error", "rel error", "tolerance"],
                  rows, ["ok" if c.passed else "fail" for c in r.checks],
                  collapsed=f"{len(r.checks)} checks, {status}", open_=n_failed > 0 or len(r.checks) <= 20)
    rep.heading("results.json")
    rep.paragraph("Top level: " + "; ".join(f"`{k}` ({t}): {d}" for k, (t, d) in RESULTS_FIELDS.items())
                  + ".")
    rep.table(["field", "type", "meaning"], [[f"`{k}`", t, d] for k, (t, d) in CHECK_FIELDS.items()])
    rep.write(out)
