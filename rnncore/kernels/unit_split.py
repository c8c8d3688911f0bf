"""A small batch's inference forward with the hidden units split between threads.

At B = 1..3 rows a step's recurrent product is a matrix-vector product that streams the whole of W_hh
from cache (256 KB at H 256 for the Elman cell, 1 MB for the LSTM), so one thread is bound by its own
cache's bandwidth and capacity. Here ``parts`` threads each own a contiguous range of hidden units,
u0 .. u1-1, with every gate row of those units: their rows of W_ih and W_hh stay in that core's cache,
and each part computes its units' input projection, recurrent product and gate math on its own. Only
the new state is shared: each part writes its units of h_t into one of two (B, H) buffers (step s
writes buffer (s+1) % 2 and reads buffer s % 2), then announces the step and waits until every part
has (``finish_step``), one wait per step. Cell states (LSTM c) never leave their part.

A unit's arithmetic does not depend on how the units are split, so every split gives the same bits.

The parts start together or not at all (``start_part``): a part that finds itself alone after
``START_WAIT`` cycles (its helper thread asleep, or the parts run one after another on one thread)
takes every unit itself and the parts that come later do nothing. No split can therefore wait forever.

Letters: T = steps, B = batch, I = input, H = hidden, NG = gates per unit (Elman 1, GRU 3, LSTM 4),
n = u1 - u0 units of a part; a part's gate rows are ordered gate by gate, (NG * n) in all.
"""

import platform

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from rnncore.kernels._jit import kernel

FLAG_STRIDE = 16  # int64 slots between two parts' counters: one 128-byte line pair each, no false sharing
START_WAIT = 1_000_000  # cycles (about 0.3 ms) a part waits for the others before it runs alone
SPINS_BEFORE_YIELD = 2_000  # wait-loop rounds before each sched_yield (another thread may need the core)
SPLIT, ALONE = 1, 2  # what the parts of a call agreed (slot 1 of the flags; 0 while undecided)
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def _int64_slot(context, builder, sig, args):
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    index = context.cast(builder, args[1], sig.args[1], types.intp)
    return builder.gep(arr.data, [index])


def _is_int64_array(arr):
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.layout == "C"


@intrinsic
def load_acquire(typingctx, flags, i):
    """flags[i], read with acquire order (writes made before the matching release are visible)."""
    if not _is_int64_array(flags):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_int64_slot(context, builder, sig, args), "acquire", 8)

    return types.int64(flags, i), codegen


@intrinsic
def store_release(typingctx, flags, i, value):
    """flags[i] = value with release order (every earlier write is visible to an acquiring reader)."""
    if not _is_int64_array(flags):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, _int64_slot(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()

    return types.void(flags, i, value), codegen


@intrinsic
def add_fetch(typingctx, flags, i, value):
    """flags[i] += value atomically; returns the new value."""
    if not _is_int64_array(flags):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        old = builder.atomic_rmw("add", _int64_slot(context, builder, sig, args), value, "acq_rel")
        return builder.add(old, value)

    return types.int64(flags, i, value), codegen


@intrinsic
def compare_swap(typingctx, flags, i, expected, new):
    """flags[i] = new if it equals expected, atomically; returns whether it did."""
    if not _is_int64_array(flags):
        return None

    def codegen(context, builder, sig, args):
        expected = context.cast(builder, args[2], sig.args[2], types.int64)
        new = context.cast(builder, args[3], sig.args[3], types.int64)
        pair = builder.cmpxchg(_int64_slot(context, builder, sig, args), expected, new, "acq_rel", "acquire")
        return builder.extract_value(pair, 1)

    return types.boolean(flags, i, expected, new), codegen


@intrinsic
def cycles(typingctx):
    """The processor's cycle counter (``llvm.readcyclecounter``)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def relax(typingctx, rounds):
    """One round of a wait loop: the ``pause`` hint on x86, and every SPINS_BEFORE_YIELD rounds
    ``sched_yield()``, so that a thread this one waits for gets the core if it needs it."""

    def codegen(context, builder, sig, args):
        if _X86:
            pause = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                   "llvm.x86.sse2.pause")
            builder.call(pause, [])
        n = context.cast(builder, args[0], sig.args[0], types.int64)
        every = ir.Constant(ir.IntType(64), SPINS_BEFORE_YIELD)
        last = ir.Constant(ir.IntType(64), SPINS_BEFORE_YIELD - 1)
        due = builder.icmp_signed("==", builder.srem(n, every), last)
        with builder.if_then(due, likely=False):
            sched_yield = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                         "sched_yield")
            builder.call(sched_yield, [])
        return context.get_dummy_value()

    return types.void(rounds), codegen


@kernel
def new_flags(parts):
    """The counters of one call: slot 0 counts arrivals, slot 1 holds SPLIT or ALONE once decided, slot
    (p + 1) * FLAG_STRIDE the steps part p has finished."""
    return np.zeros((parts + 1) * FLAG_STRIDE, dtype=np.int64)


@kernel
def start_part(flags, p, parts, H):
    """(u0, u1, live): the units part p computes and how many parts take part (``unit_bound``), or
    u0 == u1 when the parts run without it. The last part to arrive decides SPLIT; a part that has waited
    START_WAIT cycles without all arriving tries to decide ALONE, and the one that succeeds takes all H
    units."""
    if add_fetch(flags, 0, 1) == parts:
        compare_swap(flags, 1, 0, SPLIT)
    start = cycles()
    rounds = 0
    while load_acquire(flags, 1) == 0:
        if cycles() - start > START_WAIT and compare_swap(flags, 1, 0, ALONE):
            return 0, H, 1
        relax(rounds)
        rounds += 1
    live = min(parts, max(1, H // 4))  # parts with units: at least one group of 4 each
    if load_acquire(flags, 1) == ALONE or p >= live:
        return 0, 0, 0
    return unit_bound(H, live, p), unit_bound(H, live, p + 1), live


@kernel
def unit_bound(H, parts, p):
    """Where part p's units start: at a multiple of 4 (H for p = parts), so that every unit falls in the
    same group of four rows of ``recurrent_units`` whatever the split, and gets the same bits."""
    return H if p == parts else 4 * ((H // 4) * p // parts)


@kernel
def finish_step(flags, p, live, s):
    """Announce that part p has written its units of step s (counted from 1), then wait for the other
    live parts to have written theirs."""
    if live == 1:
        return
    store_release(flags, (p + 1) * FLAG_STRIDE, s)
    rounds = 0
    for q in range(live):
        while load_acquire(flags, (q + 1) * FLAG_STRIDE) < s:
            relax(rounds)
            rounds += 1


@kernel
def shared_states(h0):
    """The two (B, H) buffers the parts exchange the state through, (2, B, H), the first holding h0."""
    states = np.empty((2,) + h0.shape, dtype=h0.dtype)
    B, H = h0.shape
    for b in range(B):
        for j in range(H):
            states[0, b, j] = h0[b, j]
    return states


@kernel
def copy_final_units(h_n, states, T, u0, u1):
    """h_n[:, u0:u1] = the state after the last of T steps; h_n (B, H), states (2, B, H)."""
    last = states[T % 2]
    for b in range(h_n.shape[0]):
        for j in range(u0, u1):
            h_n[b, j] = last[b, j]


@kernel
def unit_rows(v, NG, H, u0, n):
    """v's entries of the part's gate rows in part order: (NG * n,) of v (NG * H,)."""
    r = np.empty(NG * n, dtype=v.dtype)
    for g in range(NG):
        for j in range(n):
            r[g * n + j] = v[g * H + u0 + j]
    return r


@kernel
def project_units(a, x, w_ih, b_ih, H, u0):
    """a[s, b, g*n + j] = x[s, b] . w_ih[g*H + u0 + j] + b_ih[g*H + u0 + j]: the part's input projection.
    a (S, B, NG*n); x (S, B, I); w_ih (NG*H, I); b_ih (NG*H,). Four steps share each load of a weight row."""
    S, B, R = a.shape
    I = x.shape[2]  # noqa: E741  (the project's dimension letters)
    n = R // (w_ih.shape[0] // H)
    zero = x.dtype.type(0)
    for b in range(B):
        s = 0
        while s + 4 <= S:
            x0, x1, x2, x3 = x[s, b], x[s + 1, b], x[s + 2, b], x[s + 3, b]
            for r in range(R):
                w = w_ih[(r // n) * H + u0 + r % n]
                a0, a1, a2, a3 = zero, zero, zero, zero
                for k in range(I):
                    a0 += w[k] * x0[k]
                    a1 += w[k] * x1[k]
                    a2 += w[k] * x2[k]
                    a3 += w[k] * x3[k]
                bias = b_ih[(r // n) * H + u0 + r % n]
                a[s, b, r], a[s + 1, b, r] = a0 + bias, a1 + bias
                a[s + 2, b, r], a[s + 3, b, r] = a2 + bias, a3 + bias
            s += 4
        while s < S:
            xs = x[s, b]
            for r in range(R):
                w = w_ih[(r // n) * H + u0 + r % n]
                acc = zero
                for k in range(I):
                    acc += w[k] * xs[k]
                a[s, b, r] = acc + b_ih[(r // n) * H + u0 + r % n]
            s += 1


@kernel
def recurrent_units(rec, h, w_hh, H, u0):
    """rec[b, g*n + j] = h[b] . w_hh[g*H + u0 + j]: the part's recurrent product. rec (B, NG*n);
    h (B, H); w_hh (NG*H, H). Four weight rows share each load of h. The groups of four are units
    u0 + 4m .. u0 + 4m + 3 of one gate, with u0 a multiple of 4 (``unit_bound``), and the units left
    over go one at a time: which rows a unit is computed with never depends on the split."""
    B, R = rec.shape
    NG = w_hh.shape[0] // H
    n = R // NG
    zero = h.dtype.type(0)
    for b in range(B):
        hb = h[b]
        for g in range(NG):
            j = 0
            while j + 4 <= n:
                r = g * H + u0 + j
                w0, w1, w2, w3 = w_hh[r], w_hh[r + 1], w_hh[r + 2], w_hh[r + 3]
                a0, a1, a2, a3 = zero, zero, zero, zero
                for k in range(H):
                    v = hb[k]
                    a0 += w0[k] * v
                    a1 += w1[k] * v
                    a2 += w2[k] * v
                    a3 += w3[k] * v
                o = g * n + j
                rec[b, o], rec[b, o + 1], rec[b, o + 2], rec[b, o + 3] = a0, a1, a2, a3
                j += 4
            while j < n:
                w = w_hh[g * H + u0 + j]
                acc = zero
                for k in range(H):
                    acc += w[k] * hb[k]
                rec[b, g * n + j] = acc
                j += 1


@kernel
def store_units(h_next, out, h_new, h_prev, lengths, t, u0, col):
    """The part's units of step t: h_next[b, u0:u0+n] = h_new[b] for active rows, h_prev's for padding
    (carried), and out[t, b, col+u0 ..] the same or 0. h_next, h_prev (B, H); out (T, B, O); h_new (B, n)."""
    B, n = h_new.shape
    for b in range(B):
        if t < lengths[b]:
            for j in range(n):
                v = h_new[b, j]
                h_next[b, u0 + j] = v
                out[t, b, col + u0 + j] = v
        else:
            for j in range(n):
                h_next[b, u0 + j] = h_prev[b, u0 + j]
                out[t, b, col + u0 + j] = 0.0
