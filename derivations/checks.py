"""Check records: what every derivation returns and what ``rnncore verify`` reports.

One ``Check`` compares a reference (derived with SymPy, or a closed form) with a measured value
(the library's kernels and layers) and says whether they agree within a tolerance. Its fields are
the records of ``results.json``; ``CHECK_FIELDS`` documents them and ``validate_results`` checks a
loaded file against that documentation.
"""

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from rnncore.gradcheck import compare

# The fields of one record in results.json, with their JSON types and meaning.
CHECK_FIELDS = {
    "family": ("string", "the derivation the check belongs to (cells, lstm_variants, local, softmax, "
                         "scalar, bptt, autoencoder, init, layer_norm, regularisers)"),
    "name": ("string", "unique identifier, '<family>/<what>'"),
    "compared": ("string", "what is compared, in words"),
    "reference": ("string", "where the reference value comes from"),
    "measured": ("string", "where the measured value comes from"),
    "reference_value": ("number or null", "the reference, when it is a single number"),
    "measured_value": ("number or null", "the measured value, when it is a single number"),
    "max_abs_error": ("number or null", "max |measured - reference| (null if not finite)"),
    "max_rel_error": ("number or null", "max_abs_error / max(|reference|, |measured|), or the per-element "
                                        "relative error where error_kind says so (null if not finite, or "
                                        "not meaningful: a bound on a quantity whose reference is 0)"),
    "error_kind": ("string", "which error the tolerance bounds: 'rel', 'abs' or 'elementwise_rel'"),
    "tolerance": ("number", "the bound on that error"),
    "passed": ("boolean", "error finite and <= tolerance"),
    "latex": ("string or null", "the derived formula in LaTeX, where the check has one"),
}

# The top-level keys of results.json.
RESULTS_FIELDS = {
    "format": ("string", "'rnncore-verify-results'"),
    "format_version": ("integer", "1"),
    "rnncore_version": ("string", "version of the library that was checked"),
    "quick": ("boolean", "whether --quick was given"),
    "passed": ("boolean", "all checks passed"),
    "families": ("object", "per family: title, checks, failed, worst_abs_error, worst_rel_error, tightest "
                           "(the check closest to its tolerance), seconds"),
    "checks": ("array", "one record per check, with the fields of CHECK_FIELDS"),
}


def _finite_or_none(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Check:
    """One comparison of a reference with a measured value. See ``CHECK_FIELDS``."""

    family: str
    name: str
    compared: str
    reference: str
    measured: str
    max_abs_error: float
    max_rel_error: float
    tolerance: float
    error_kind: str = "rel"
    reference_value: float = None
    measured_value: float = None
    latex: str = None

    @property
    def error(self):
        """The error the tolerance applies to."""
        return self.max_abs_error if self.error_kind == "abs" else self.max_rel_error

    @property
    def passed(self):
        err = self.error
        return bool(err is not None and math.isfinite(err) and err <= self.tolerance)

    def record(self):
        """The JSON record (non-finite numbers become null)."""
        out = asdict(self)
        for key in ("max_abs_error", "max_rel_error", "reference_value", "measured_value", "tolerance"):
            out[key] = _finite_or_none(out[key])
        out["passed"] = self.passed
        return {key: out[key] for key in CHECK_FIELDS}

    def __str__(self):
        status = "ok  " if self.passed else "FAIL"
        return (f"{status} {self.name:<58} abs {self.max_abs_error:9.2e}  rel {self.max_rel_error:9.2e}  "
                f"tol {self.tolerance:.0e} ({self.error_kind})")


def array_check(family, name, compared, reference, measured, ref, meas, tolerance, latex=None):
    """Compare two arrays with ``rnncore.gradcheck.compare``: max abs error and the scale-free
    relative error max|a - b| / max(|a|, |b|)."""
    ref, meas = np.asarray(ref, dtype=np.float64), np.asarray(meas, dtype=np.float64)
    if ref.shape != meas.shape:
        raise ValueError(f"{name}: reference has shape {ref.shape}, measured {meas.shape}")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(meas))):
        return Check(family, name, compared, reference, measured, math.nan, math.nan, tolerance, latex=latex)
    g = compare(name, meas, ref, tolerance)
    scalar = ref.size == 1
    return Check(family, name, compared, reference, measured, g.max_abs_error, g.max_rel_error, tolerance,
                 reference_value=float(ref.reshape(-1)[0]) if scalar else None,
                 measured_value=float(meas.reshape(-1)[0]) if scalar else None, latex=latex)


def elementwise_check(family, name, compared, reference, measured, ref, meas, tolerance, latex=None):
    """Per-element relative error max |a - b| / |a|: for values spanning many orders of magnitude
    (e.g. T w^(T-1) for T up to 200), where a scale-free error would hide the small ones."""
    ref, meas = np.asarray(ref, dtype=np.float64), np.asarray(meas, dtype=np.float64)
    abs_err = np.abs(meas - ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(ref != 0, abs_err / np.abs(ref), np.where(abs_err == 0, 0.0, np.inf))
    return Check(family, name, compared, reference, measured, float(np.max(abs_err)), float(np.max(rel)),
                 tolerance, error_kind="elementwise_rel", latex=latex)


def value_check(family, name, compared, reference, measured, ref, meas, tolerance, error_kind="rel",
                latex=None):
    """Compare two numbers; relative error |a - b| / max(|a|, |b|)."""
    ref, meas = float(ref), float(meas)
    abs_err = abs(meas - ref)
    scale = max(abs(ref), abs(meas))
    rel = abs_err / scale if abs_err else 0.0
    return Check(family, name, compared, reference, measured, abs_err, rel, tolerance, error_kind=error_kind,
                 reference_value=ref, measured_value=meas, latex=latex)


def bound_check(family, name, compared, reference, measured, value, bound, latex=None):
    """A measured quantity that must not exceed ``bound`` (e.g. a principal angle, a residual):
    the quantity itself is the absolute error against the reference value 0."""
    value = float(value)
    return Check(family, name, compared, reference, measured, abs(value), math.nan if value else 0.0, bound,
                 error_kind="abs", reference_value=0.0, measured_value=value, latex=latex)


def identity_check(family, name, compared, residual, latex=None, reference="SymPy"):
    """A symbolic identity: ``residual`` is what SymPy reduced (lhs - rhs) to; it passes when that is 0."""
    import sympy as sp

    zero = sp.simplify(residual) == 0
    return Check(family, name, compared, reference, "symbolic residual lhs - rhs after simplify",
                 0.0 if zero else math.inf, 0.0 if zero else math.inf, 0.0, error_kind="abs",
                 reference_value=0.0, measured_value=0.0 if zero else None, latex=latex)


@dataclass
class Figure:
    """A PNG written into the report directory."""

    filename: str
    caption: str


@dataclass
class DerivationResult:
    """What one derivation module returns."""

    name: str
    title: str
    description: str
    checks: list = field(default_factory=list)
    formulas: list = field(default_factory=list)  # (caption, LaTeX)
    data: dict = field(default_factory=dict)  # arrays for the module's plots
    figures: list = field(default_factory=list)  # Figure, filled in by the runner
    seconds: float = 0.0

    @property
    def passed(self):
        return all(c.passed for c in self.checks)


def _type_ok(value, kind):
    kinds = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "object": dict,
             "array": list}
    ok = False
    for part in kind.split(" or "):
        if part == "null":
            ok |= value is None
        else:
            expected = kinds[part]
            ok |= isinstance(value, expected) and not (part in ("number", "integer") and isinstance(value,
                                                                                                    bool))
    return ok


def validate_results(data):
    """Problems of a loaded results.json against RESULTS_FIELDS and CHECK_FIELDS (empty if none)."""
    problems = []
    if set(data) != set(RESULTS_FIELDS):
        problems.append(f"top-level keys {sorted(data)} != {sorted(RESULTS_FIELDS)}")
    for key, (kind, _) in RESULTS_FIELDS.items():
        if key in data and not _type_ok(data[key], kind):
            problems.append(f"{key}: expected {kind}, got {type(data[key]).__name__}")
    names = set()
    for i, rec in enumerate(data.get("checks", [])):
        if set(rec) != set(CHECK_FIELDS):
            problems.append(f"checks[{i}]: keys {sorted(rec)} != {sorted(CHECK_FIELDS)}")
            continue
        for key, (kind, _) in CHECK_FIELDS.items():
            if not _type_ok(rec[key], kind):
                problems.append(f"checks[{i}] ({rec.get('name')}): {key} expected {kind}, got {rec[key]!r}")
        if rec["name"] in names:
            problems.append(f"checks[{i}]: duplicate name {rec['name']}")
        names.add(rec["name"])
        if rec["error_kind"] not in ("rel", "abs", "elementwise_rel"):
            problems.append(f"checks[{i}]: error_kind {rec['error_kind']!r}")
        if not rec["name"].startswith(rec["family"] + "/"):
            problems.append(f"checks[{i}]: name {rec['name']!r} does not start with its family")
    if "checks" in data and data.get("passed") != all(r.get("passed") for r in data["checks"]):
        problems.append("passed does not equal all(check.passed)")
    return problems
