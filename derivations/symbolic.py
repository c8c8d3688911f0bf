"""The SymPy machinery shared by the derivations: symbols, activations, gradients, lambdify.

Why not ``sympy.diff`` and ``lambdify(..., cse=True)`` on an unrolled network directly: the
unrolled loss is a DAG in which every hidden state is shared by all later steps. SymPy's ``diff``
walks it as a tree (and recomputes ``free_symbols`` at every node), so its cost grows
exponentially with T; automatic evaluation asks assumption queries (is_real, is_finite, ...) of
ever larger arguments; the default ``cse`` orders the arguments of every Add by node count,
again a tree walk; and ``lambdify`` scans the tree for implemented functions. Measured here on an
LSTM with T=3, B=2, I=2, H=2: ``diff`` 270 s, ``lambdify(cse=True)`` 73 s more; with T=4, H=3
neither finishes in 10 minutes.

So, without changing what is computed:

- networks are built with ``sympy.evaluate(False)``: each node is the plain operation written in
  the forward equations, with no rewriting;
- ``gradient`` differentiates by reverse accumulation over the DAG. Every node's derivative with
  respect to each of its arguments is SymPy's own ``diff`` of that node with the arguments replaced
  by dummy symbols (so tanh' = 1 - tanh^2, d/dx exp = exp, d/dx Max(x, 0) = Heaviside(x) come from
  SymPy, not from this file); the chain rule sums, over all paths, products of these local
  derivatives, visiting each shared node once. ``tests/derivations`` and the ``cells`` derivation
  check it against plain ``sympy.diff`` on small networks;
- ``lambdify`` gets SymPy's ``cse`` with ``order="none"`` (inside ``evaluate(False)``), and
  ``use_imps=False``; everything else as ECOSYSTEM.md recommends: numpy module, fixed sorted
  argument order, ``docstring_limit=0``.

With that, an LSTM with T=4, B=2, I=3, H=3 (132 gradients) is built, differentiated and
lambdified in about 2 s.
"""

import functools

import numpy as np
import sympy as sp


def real_symbol(name):
    return sp.Symbol(name, real=True)


def symbol_array(name, shape):
    """An object array of real symbols named ``name_i_j...`` (valid Python identifiers)."""
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        out[index] = real_symbol("_".join([name, *map(str, index)]) if index else name)
    return out


# -- activations, written as their definitions -----------------------------------------------------
def sigmoid(x):
    return 1 / (1 + sp.exp(-x))


def relu(x):
    return sp.Max(x, 0)


def identity(x):
    return x


ACTIVATIONS = {"tanh": sp.tanh, "relu": relu, "sigmoid": sigmoid, "identity": identity}


def unevaluated():
    """Context in which expressions are built exactly as written (no automatic rewriting)."""
    return sp.evaluate(False)


# -- reverse accumulation of SymPy's local derivatives ------------------------------------------------
@functools.cache
def _generic_partials(func, numeric_args):
    """SymPy's derivative of ``func(a_1, ..., a_n)`` with respect to each symbolic argument, with the
    symbolic arguments replaced by dummies. numeric_args: the numeric arguments in place, None for
    the symbolic ones."""
    dummies = tuple(sp.Dummy(f"a{k}", real=True) if a is None else None for k, a in enumerate(numeric_args))
    args = [d if d is not None else a for d, a in zip(dummies, numeric_args, strict=True)]
    with sp.evaluate(True):
        node = func(*args)
        return dummies, tuple(None if d is None else node.diff(d) for d in dummies)


def local_partials(node):
    """d node / d arg for each argument (None for numeric arguments), from SymPy's ``diff``."""
    numeric = tuple(a if a.is_Number else None for a in node.args)
    dummies, partials = _generic_partials(node.func, numeric)
    back = {d: a for d, a in zip(dummies, node.args, strict=True) if d is not None}
    with unevaluated():
        return [None if p is None else p.xreplace(back) for p in partials]


def _topological(expr):
    """The distinct non-atomic nodes of ``expr``, every node after all the nodes that contain it."""
    postorder, seen = [], set()
    stack = [(expr, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            postorder.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((a, False) for a in node.args if not a.is_Atom and a not in seen)
    return postorder[::-1]


def gradient(expr, wrt):
    """[d expr / d s for s in wrt]: reverse accumulation over the expression DAG (module docstring).
    Symbols that do not occur get 0."""
    wrt = list(wrt)
    leaves = {s: [] for s in wrt}
    adjoint = {expr: [sp.S.One]}
    with unevaluated():
        for node in _topological(expr):
            terms = adjoint.pop(node, None)
            if not terms:
                continue
            bar = terms[0] if len(terms) == 1 else sp.Add(*terms)
            for arg, partial in zip(node.args, local_partials(node), strict=True):
                if partial is None or partial == 0:
                    continue
                contribution = bar if partial == 1 else (partial if bar == 1 else sp.Mul(bar, partial))
                if arg.is_Atom:
                    if arg in leaves:
                        leaves[arg].append(contribution)
                else:
                    adjoint.setdefault(arg, []).append(contribution)
        return [sp.Add(*leaves[s]) if leaves[s] else sp.S.Zero for s in wrt]


# -- lambdify -----------------------------------------------------------------------------------------
def _cse(exprs):
    """SymPy's common-subexpression elimination, without rewriting and without canonical ordering."""
    with unevaluated():
        return sp.cse(exprs, order="none", list=False)


def lambdify(args, exprs):
    """A numpy function of ``args`` (a flat list of symbols) returning ``exprs``."""
    return sp.lambdify(list(args), exprs, modules="numpy", cse=_cse, docstring_limit=0, use_imps=False)


def flat_symbols(arrays):
    """The symbols of several object arrays, in order: the argument list of a lambdified function."""
    return [s for a in arrays for s in np.asarray(a, dtype=object).reshape(-1)]


def flat_values(arrays):
    return [float(v) for a in arrays for v in np.asarray(a, dtype=np.float64).reshape(-1)]
