"""Built-in corpora that need no network.

``python_docs_text``: the Python language reference topics that CPython itself ships as
``pydoc_data.topics`` (about 465,000 characters of English prose and code; PSF licence). Every
Python installation has it, so examples and tests can train on real text offline.

Optional packages that ship real data in their wheels (``pip install 'rnncore[examples]'``):
``census_first_names`` / ``first_name_genders`` / ``census_last_names`` read the 1990 US census
name lists in ``names`` (MIT); ``digits_rows`` reads scikit-learn's 8x8 digits (CC BY 4.0).
"""


def python_docs_text(max_chars=None):
    """The pydoc topics joined in sorted topic order (a stable text across runs)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    if max_chars is not None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        text = text[:max_chars]
    return text


def _require(module, package):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this corpus needs the {package!r} package: pip install {package} "
                          f"(or pip install 'rnncore[examples]')") from None


def _names_file(name):
    from pathlib import Path

    names = _require("names", "names")
    return Path(names.__file__).parent / name


def census_first_names():
    """US census (1990) first names from the ``names`` package (MIT): a list of
    ``(name, gender, frequency)`` with name in capitals, gender "F" or "M" and frequency in percent
    of people of that gender. A name on both lists appears twice."""
    rows = []
    for gender, fname in (("F", "dist.female.first"), ("M", "dist.male.first")):
        for line in _names_file(fname).read_text(encoding="ascii").splitlines():
            parts = line.split()
            if parts:
                rows.append((parts[0], gender, float(parts[1])))
    return rows


def first_name_genders():
    """Each distinct first name once with the gender it is more frequent for (ties: F), sorted by
    name: 5,163 ``(name, gender)`` pairs, 78 % F. A real many-to-one task with ambiguity."""
    best = {}
    for name, gender, freq in census_first_names():
        if name not in best or freq > best[name][1]:
            best[name] = (gender, freq)
    return [(name, best[name][0]) for name in sorted(best)]


def census_last_names(max_names=None):
    """US census (1990) surnames from the ``names`` package, most frequent first (88,799)."""
    out = [line.split()[0] for line in _names_file("dist.all.last").read_text(encoding="ascii").splitlines()
           if line.strip()]
    return out if max_names is None else out[: int(max_names)]


def digits_rows():
    """scikit-learn's 8x8 handwritten digits (1,797 images, UCI, CC BY 4.0) as sequences of 8 rows
    of 8 pixels scaled to [0, 1]: ``(X (N, 8, 8) float64, y (N,) int64)``."""
    datasets = _require("sklearn.datasets", "scikit-learn")
    d = datasets.load_digits()
    return d.images / 16.0, d.target.astype("int64")
