"""The recurrent product of every step over weights packed once per call.

A BLAS GEMM with few rows (the batch) repacks the whole weight matrix on every call, which is every
time step; a (16, 256) x (256, 1024) float32 product ran at 36 GFLOP/s that way on one core here. The
weights are packed instead once per forward or backward call into panels of L columns (one 64-byte
vector: L = 16 float32 or 8 float64), and a register tile of ``TILE_ROWS`` rows times ``TILE_PANELS``
panels accumulates with fused multiply-adds over the shared dimension. Each accumulator is one chain of
FMAs, each waiting on the one before, so a tile needs enough of them in flight to keep a core's FMA units
busy, and no more than the registers hold. On an AVX-512 core here (Zen 5: 32 registers of 64 bytes) a
tile of 4 rows x 1 panel (4 chains) ran at half the rate of 8 x 2. One thread, us (GFLOP/s), tiles of
rows x panels 4 x 1 / 4 x 2 / 4 x 3 / 4 x 4 / 8 x 2, float32: B 16, K 256, N 1024 67.0 (125) / 42.8 /
39.3 / 37.7 / 35.3 (238); B 40, the same K and N, 164.7 / 103.0 / 90.2 / 87.8 / 88.0; B 16, K 1024,
N 4096 1265 / 709 / 660 / 667 / 600; float64, B 16, K 256, N 1024 138.3 (61) / 89.1 / 80.2 / 75.7 / 78.9
(106). Compiled for AVX2 on the same core (NUMBA_CPU_NAME=znver3 and its features: 16 registers of 32
bytes, a 64-byte vector two of them), 4 x 1 (8 registers of accumulators) was the fastest and 8 x 2
spilled: float32, B 16, K 256, N 1024 79.1 (106) / 137.3 / 128.3 / 96.2 / 115.8. So the tile is 8 x 2
where Numba compiles for AVX-512 and 4 x 1 elsewhere (``TILE_ROWS``, ``TILE_PANELS``). The
tile is written in LLVM IR (``_tile``): Numba's own loops leave a tile of scalar accumulators scalar.

The product runs on the calling thread. Split over two Numba threads (``prange`` over the panels) it
reached 154-165 GFLOP/s on these shapes alone, but inside a forward pass the BLAS threads of the input
projection were still spinning and the step got slower (LSTM, T 25, B 16, H 256: 8.0 ms against 6.9 ms
with OpenBLAS alone); one threading domain for every GEMM of a step would be needed first.

One row is a matrix-vector product, memory-bound over large weights, where BLAS's gemv over the unpacked
weights is as fast without the cost of packing and splits over both cores. Over small weights the call
into BLAS costs more than the product: one row on a tile of four panels (four chains of FMAs side by
side; one panel's chain waits on its own latency) took, float32, us, tile / gemv: K 64, N 256 0.85 /
1.47; K 128, N 512 3.29 / 5.60; K 256, N 256 3.33 / 4.10; float64 K 64, N 256 1.32 / 1.91; K 256, N 256
6.28 / 8.04; and over larger weights it was level or lost (float32 K 256, N 1024 23.1 / 26.9; K 512,
N 1024 43.2 / 27.6; float64 K 256, N 768 29.4 / 28.9). So one row goes on panels up to
``ONE_ROW_MAX_BYTES`` of w. A GEMM of 2 or 3 rows repacks all of w at every call, which was 3-5 times
slower here than one gemv per row (two threads, (B, K) times (K, N) per step, us: K 256, N 1024, B 2
134.7 as a GEMM, 46.2 as two gemvs; B 3 163.7, 56.1; K 1024, N 4096, B 2 2412, 466). A tile of 2 or 3
rows reads each panel once for all of them, where the gemvs read w once per row. Over weights that stay
in the caches it took about half the gemvs' time (us, tile / gemvs, float32: K 256, N 1024, B 2 23.3 /
49.1, B 3 24.4 / 66.7; K 64, N 256, B 3 1.6 / 3.8; float64: K 256, N 1024, B 3 50.1 / 107.3). Over
larger weights the gemvs stream w on both cores and the tile on one. At 2 rows the two were level from
2 MB of w (K 512, N 1024: 44.5 / 47.6 float32, 91.3 / 76.8 float64). At 3 rows the tile still gained at
4 MB (K 512, N 2048, float32: 99.5 / 138.0) and lost at 16 MB (K 1024, N 4096: 1058.8 / 707.6). So
``pack`` makes panels for 2 rows of w up to ``TWO_ROWS_MAX_BYTES`` and for 3 rows up to
``THREE_ROWS_MAX_BYTES``; over larger weights the product is one gemv per row (``blas_product_into``).
Above ``MAX_ROWS`` rows BLAS with two threads overtakes the one-thread tile here (packed / BLAS time at K
256, N 1024: B 16 0.58, B 32 0.78, B 48 1.04, B 64 1.15; with one BLAS thread the tile stays ahead, 346
against 493 us at B 64). Those were AVX2 figures with the 4 x 1 tile; on the AVX-512 core with 8 x 2
against OpenBLAS's AVX-512 kernel: B 16 0.44, B 32 0.73, B 48 0.93, B 64 1.10 (at K 64, N 256: 0.27,
0.51, 0.65, 0.72, and 1.00 at B 96), and whole passes over 48 and 64 rows gained and lost as much with
the bound at 64 (``docs/benchmarks.md``), so it stays at 40. Outside these bounds ``pack`` returns no
panels and the product goes to BLAS.

Over panels larger than the caches of one core (512 KB of L2 on the AVX2 machine here), each tile streams
its panel from the shared L3, and with few rows, two row tiles per panel in the windows of 8 rows that a
batch of 16 is split into (``rnncore.nn._shards``), the stream is not hidden. So over panels of at least
``PREFETCH_MIN_BYTES`` the first row tile over a panel prefetches the next panel, a line at each k (the
next tiles over the same panel find it in L1 or L2). One thread, AVX2 (Zen 3), float32, GFLOP/s without
/ with, each the median of 7 alternations in one process: B 8, K 1024, N 1024 (4 MB) 79.5 / 69.5, N 2048
(8 MB) 77.3 / 83.9, N 3072 (12 MB) 50.4 / 67.7, N 4096 (16 MB) 44.8 / 57.4; B 16, K 1024, N 3072 59.1 /
64.2; B 32, K 1024, N 4096 76.8 / 71.1; B 8, K 256, N 768 68.3 / 61.8. A prefetch in every tile lost
more where the panels fit the caches (B 8, K 1024, N 1024 81.2 / 68.6). The panels on 2 MB pages
(``madvise``) changed nothing (41.5 / 42.1 at B 8, N 4096): the loss is the stream, not the TLB.

Letters: B = rows (batch), K = shared dimension, N = output columns, L = lanes, NP = panels (ceil(N / L)
rounded up to a multiple of TILE_PANELS).
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, codegen, config
from numba.extending import intrinsic

from rnncore.kernels._jit import inline_kernel, kernel


def compiles_for_avx512():
    """Whether Numba's machine code uses AVX-512: the CPU features it compiles for (NUMBA_CPU_FEATURES, else
    the host's) include avx512f."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    return "+avx512f" in features.split(",")


VECTOR_BYTES = 64  # one AVX-512 register, two AVX2 registers: LLVM splits wider vectors itself
# The main tile, TILE_ROWS x TILE_PANELS vectors of accumulators (module docstring): 16 of AVX-512's 32
# registers, or 8 of AVX2's 16 (a 64-byte vector takes two); 8 x 2 on AVX2 spills.
TILE_ROWS, TILE_PANELS = (8, 2) if compiles_for_avx512() else (4, 1)
PACK_COLUMNS = 8  # ``pack`` of a view with contiguous columns: lines k0..k0+7 of every panel, then the next
BLOCK_BYTES = 32  # one AVX2 register: ``pack`` transposes blocks of S x S elements, S lanes of this width
# The first row tile over each panel also prefetches the next panel's line at each k, over panels of at
# least PREFETCH_MIN_BYTES (module docstring); measured with the 4 x 1 tile only, so not with AVX-512's.
PREFETCH_AHEAD = not compiles_for_avx512()
PREFETCH_MIN_BYTES = 8 << 20
MIN_ROWS = 4  # rows from which ``pack`` makes panels of w of any size
MAX_ROWS = 40
ONE_ROW_MAX_BYTES = 512 << 10  # 1 row: panels only of w up to this size (module docstring)
TWO_ROWS_MAX_BYTES = 2 << 20  # 2 rows: the same
THREE_ROWS_MAX_BYTES = 8 << 20  # 3 rows: the same


def _make_tile(rows, panels=1, prefetch=False):
    """An intrinsic c[b0 : b0+rows, jp*L : (jp+panels)*L] = a[b0 : b0+rows] @ panels jp .. jp+panels-1 of
    p. c (B, NP*L), a (B, K), p (NP, K, L), all C-contiguous and of one float dtype. Each element is one
    chain of fused multiply-adds over k = 0 .. K-1, whatever rows and panels are. ``prefetch``: at each k
    the tile also asks for line k of panels jp+panels .. jp+2*panels-1 (a hint, past the end included),
    which changes no result."""

    @intrinsic
    def tile(typingctx, c, a, p, b0, jp):
        arrays = (c, a, p)
        if not all(isinstance(t, types.Array) and t.layout == "C" for t in arrays):
            return None
        if len({t.dtype for t in arrays}) != 1 or a.dtype not in (types.float32, types.float64):
            return None

        def codegen(context, builder, sig, args):
            c_arr, a_arr, p_arr = (context.make_array(t)(context, builder, v)
                                    for t, v in zip(sig.args[:3], args[:3], strict=True))
            intp = context.get_value_type(types.intp)
            b0v = context.cast(builder, args[3], sig.args[3], types.intp)
            jpv = context.cast(builder, args[4], sig.args[4], types.intp)
            elt = context.get_value_type(sig.args[1].dtype)
            size = context.get_abi_sizeof(elt)
            lanes = VECTOR_BYTES // size
            vec = ir.VectorType(elt, lanes)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                                 f"llvm.fma.v{lanes}f{8 * size}")
            K = cgutils.unpack_tuple(builder, a_arr.shape)[1]
            ldc = cgutils.unpack_tuple(builder, c_arr.shape)[1]
            L = ir.Constant(intp, lanes)
            panel_size = builder.mul(K, L)
            panel_ptrs = [builder.gep(p_arr.data, [builder.mul(builder.add(jpv, ir.Constant(intp, q)),
                                                               panel_size)]) for q in range(panels)]
            row_index = [builder.add(b0v, ir.Constant(intp, r)) for r in range(rows)]
            a_rows = [builder.gep(a_arr.data, [builder.mul(i, K)]) for i in row_index]
            zero = ir.Constant(vec, [ir.Constant(elt, 0.0)] * lanes)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(panels)]  # promoted to registers
                    for _ in range(rows)]
            undef = ir.Constant(vec, ir.Undefined)
            i32 = ir.IntType(32)
            splat = ir.Constant(ir.VectorType(i32, lanes), [ir.Constant(i32, 0)] * lanes)
            if prefetch:  # llvm.prefetch(address, read, locality, data cache)
                i8p = ir.IntType(8).as_pointer()
                prefetch_type = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
                prefetch_fn = cgutils.get_or_insert_function(builder.module, prefetch_type,
                                                             "llvm.prefetch.p0i8")
                hint = [ir.Constant(i32, v) for v in (0, 3, 1)]
                ahead = builder.mul(panel_size, ir.Constant(intp, panels))  # elements to the next panels
            with cgutils.for_range(builder, K) as loop:
                k = loop.index
                ws = [builder.load(builder.bitcast(builder.gep(ptr, [builder.mul(k, L)]), vec.as_pointer()),
                                   align=size) for ptr in panel_ptrs]
                if prefetch:
                    for ptr in panel_ptrs:
                        ahead_k = builder.gep(ptr, [builder.add(builder.mul(k, L), ahead)])
                        builder.call(prefetch_fn, [builder.bitcast(ahead_k, i8p)] + hint)
                for a_row, row_accs in zip(a_rows, accs, strict=True):
                    a_k = builder.load(builder.gep(a_row, [k]))
                    s = builder.insert_element(undef, a_k, ir.Constant(i32, 0))
                    v = builder.shuffle_vector(s, undef, splat)
                    for w, acc in zip(ws, row_accs, strict=True):
                        builder.store(builder.call(fma, [v, w, builder.load(acc)]), acc)
            col = builder.mul(jpv, L)
            for i, row_accs in zip(row_index, accs, strict=True):
                for q, acc in enumerate(row_accs):
                    col_q = builder.add(col, ir.Constant(intp, q * lanes))
                    out = builder.gep(c_arr.data, [builder.add(builder.mul(i, ldc), col_q)])
                    builder.store(builder.load(acc), builder.bitcast(out, vec.as_pointer()), align=size)
            return context.get_dummy_value()

        return types.void(c, a, p, b0, jp), codegen

    return tile


_tile = _make_tile(TILE_ROWS, TILE_PANELS)
_tile_ahead = _make_tile(TILE_ROWS, TILE_PANELS, prefetch=True)
_tile_4 = _make_tile(4, TILE_PANELS)
_tile_3 = _make_tile(3, TILE_PANELS)
_tile_2 = _make_tile(2, TILE_PANELS)
_tile_row = _make_tile(1, TILE_PANELS)
ROW_PANELS = 4  # panels of one row's tile: one panel's chain of FMAs waits on itself, four run side by side
_tile_row_panels = _make_tile(1, ROW_PANELS)


@intrinsic
def _transpose_block(typingctx, p, w, jp, k0, h):
    """p[jp, k0 + k, h*S + l] = w[jp*L + h*S + l, k0 + k] for k, l < S = BLOCK_BYTES / itemsize: one S x S
    block of ``pack`` as S vector loads, log2(S) rounds of interleaving shuffles and S vector stores (the
    element-wise loop took 2.3 times as long here, float32 (1024, 256)). p (NP, K, L) C-contiguous; w (N, K)
    with contiguous rows; the block must lie inside both."""
    if not (isinstance(p, types.Array) and isinstance(w, types.Array) and p.layout == "C"
            and p.dtype == w.dtype and w.dtype in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        p_arr = context.make_array(sig.args[0])(context, builder, args[0])
        w_arr = context.make_array(sig.args[1])(context, builder, args[1])
        intp = context.get_value_type(types.intp)
        jpv, k0v, hv = (context.cast(builder, a, t, types.intp) for a, t in zip(args[2:], sig.args[2:],
                                                                                  strict=True))
        elt = context.get_value_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(elt)
        lanes, S = VECTOR_BYTES // size, BLOCK_BYTES // size
        vec = ir.VectorType(elt, S)
        K = cgutils.unpack_tuple(builder, p_arr.shape)[1]
        row_stride = cgutils.unpack_tuple(builder, w_arr.strides)[0]  # bytes
        w_bytes = builder.bitcast(w_arr.data, ir.IntType(8).as_pointer())
        first_row = builder.add(builder.mul(jpv, ir.Constant(intp, lanes)),
                                builder.mul(hv, ir.Constant(intp, S)))
        col_bytes = builder.mul(k0v, ir.Constant(intp, size))
        v = []  # v[l] = w[first_row + l, k0 : k0+S]
        for lane in range(S):
            row = builder.add(first_row, ir.Constant(intp, lane))
            ptr = builder.gep(w_bytes, [builder.add(builder.mul(row, row_stride), col_bytes)])
            v.append(builder.load(builder.bitcast(ptr, vec.as_pointer()), align=size))
        i32 = ir.IntType(32)
        half = S // 2

        def interleave(offset):  # (a[offset], b[offset], a[offset+1], b[offset+1], ...) of shuffle(a, b)
            return ir.Constant(ir.VectorType(i32, S),
                               [ir.Constant(i32, offset + j // 2 + (S if j % 2 else 0)) for j in range(S)])

        low, high = interleave(0), interleave(half)
        for _ in range(S.bit_length() - 1):  # log2(S) rounds of pairing v[i] with v[i + S/2]: v[k] = column k
            paired = []
            for i in range(half):
                paired += [builder.shuffle_vector(v[i], v[i + half], low),
                           builder.shuffle_vector(v[i], v[i + half], high)]
            v = paired
        base = builder.add(builder.mul(builder.add(builder.mul(jpv, K), k0v), ir.Constant(intp, lanes)),
                           builder.mul(hv, ir.Constant(intp, S)))
        for k in range(S):
            out = builder.gep(p_arr.data, [builder.add(base, ir.Constant(intp, k * lanes))])
            builder.store(v[k], builder.bitcast(out, vec.as_pointer()), align=size)
        return context.get_dummy_value()

    return types.void(p, w, jp, k0, h), codegen


@kernel
def lanes(x):
    """L: the elements of x's dtype in one vector."""
    return VECTOR_BYTES // x.itemsize


@inline_kernel
def packs(w, rows):
    """Whether a product of ``rows`` rows over w (N, K) runs on panels: MIN_ROWS..MAX_ROWS rows, or 1, 2 or
    3 rows over at most ONE_ROW_MAX_BYTES, TWO_ROWS_MAX_BYTES or THREE_ROWS_MAX_BYTES of w (module
    docstring)."""
    if rows == 1:
        return w.size * w.itemsize <= ONE_ROW_MAX_BYTES
    if rows == 2:
        return w.size * w.itemsize <= TWO_ROWS_MAX_BYTES
    if rows == 3:
        return w.size * w.itemsize <= THREE_ROWS_MAX_BYTES
    return MIN_ROWS <= rows <= MAX_ROWS


@kernel
def pack(w, rows):
    """Panels of w for ``product``: p[jp, k, l] = w[jp*L + l, k], zero past N, a whole number of pairs of
    panels (TILE_PANELS); w (N, K), any layout.
    No panels, shape (0, K, L), when ``packs(w, rows)`` is false (the product then goes to BLAS).
    The loops follow w's memory. Contiguous rows (the forward's w_hh): S x S blocks through
    ``_transpose_block``, the rest element by element. Otherwise (the backward's w_hh.T, columns
    contiguous) L consecutive elements at a time, one line of a panel: read a row of the view at a time,
    as for a C array, it touched one cache line per element (float32 (1024, 4096) view: 34 ms against 4.4
    ms). The lines go PACK_COLUMNS values of k at a time over all panels: one panel at a time over all of
    k took each line from another page of w (a row of w_hh, 12-16 KB apart at H 1024). float32, ms, one
    panel at a time / 8 / 16 / 32 lines at a time, minimum of 7 calls, median of 5 alternations: (1024,
    4096) view 12.2 / 3.9 / 4.4 / 6.9; (1024, 3072) 9.7 / 2.7 / 2.8 / 4.1; (1024, 1024) 0.56 / 0.48 / 0.46
    / 0.46; up to 1 MB within 10% either way."""
    N, K = w.shape
    L = lanes(w)
    group = TILE_PANELS * L
    n_panels = TILE_PANELS * ((N + group - 1) // group) if packs(w, rows) else 0
    p = np.zeros((n_panels, K, L), dtype=w.dtype)
    rows_contiguous = w.strides[1] == w.itemsize
    S = BLOCK_BYTES // w.itemsize
    if not rows_contiguous:
        for k0 in range(0, K, PACK_COLUMNS):  # every panel's lines k0..k0+PACK_COLUMNS-1, then the next ones
            k1 = min(k0 + PACK_COLUMNS, K)
            for jp in range(n_panels):
                n, pj = min(L, N - jp * L), p[jp]
                for k in range(k0, k1):
                    for lane in range(n):
                        pj[k, lane] = w[jp * L + lane, k]
        return p
    blocked = K - K % S  # columns 0..blocked-1 of full panels go by blocks
    for jp in range(n_panels):
        n, pj = min(L, N - jp * L), p[jp]
        first = blocked if n == L else 0
        for k0 in range(0, first, S):
            for h in range(L // S):
                _transpose_block(p, w, jp, k0, h)
        for k in range(first, K):
            for lane in range(n):
                pj[k, lane] = w[jp * L + lane, k]
    return p


@kernel
def product(c, a, p):
    """c[:, :NP*L] = a @ (the columns packed in p); c (B, NP*L), a (B, K), p (NP, K, L), NP a multiple of
    TILE_PANELS. Tiles of TILE_ROWS rows, then one or two of the rows left (4 when TILE_ROWS is 8, then 3,
    2 or 1): each panel is read once per tile, not once per row. Over large panels the first tile over
    each panel prefetches the next one (``PREFETCH_MIN_BYTES``)."""
    B, NP = a.shape[0], p.shape[0]
    if B == 1:
        jp = 0
        while jp + ROW_PANELS <= NP:
            _tile_row_panels(c, a, p, 0, jp)
            jp += ROW_PANELS
        while jp < NP:
            _tile_row(c, a, p, 0, jp)
            jp += TILE_PANELS
        return
    ahead = PREFETCH_AHEAD and B >= TILE_ROWS and p.size * p.itemsize >= PREFETCH_MIN_BYTES
    for jp in range(0, NP, TILE_PANELS):
        b = 0
        if ahead:
            _tile_ahead(c, a, p, b, jp)
            b += TILE_ROWS
        while b + TILE_ROWS <= B:
            _tile(c, a, p, b, jp)
            b += TILE_ROWS
        if B - b >= 4:  # only when TILE_ROWS is 8
            _tile_4(c, a, p, b, jp)
            b += 4
        if B - b == 3:
            _tile_3(c, a, p, b, jp)
        elif B - b == 2:
            _tile_2(c, a, p, b, jp)
        elif B - b == 1:
            _tile_row(c, a, p, b, jp)


@kernel
def scratch(p, rows):
    """The scratch ``product_into`` needs: (rows, NP*L), (rows, 0) without panels."""
    return np.empty((rows, p.shape[0] * p.shape[2]), dtype=p.dtype)


@inline_kernel
def pack_with_scratch(w, rows):
    """(p, tmp): ``pack(w, rows)`` and the ``scratch`` that ``product_into`` needs with it."""
    p = pack(w, rows)
    return p, scratch(p, rows)


@inline_kernel
def given_or_pack(given, w, rows):
    """(p, tmp): the panels of w ``given`` by the caller when it packed them (the row windows of a pass
    share one copy, ``rnncore.nn._shards``), else ``pack(w, rows)``; with ``scratch(p, rows)``.
    given: ``pack(w, r)`` for some r with ``packs(w, r)``, or ``no_panels`` (none given)."""
    p = given if given.shape[0] else pack(w, rows)
    return p, scratch(p, rows)


_NO_PANELS = {}


def no_panels(dtype):
    """The empty panels of ``dtype`` that tell a kernel to pack its weights itself (``given_or_pack``)."""
    dtype = np.dtype(dtype)
    if dtype not in _NO_PANELS:
        _NO_PANELS[dtype] = np.empty((0, 1, VECTOR_BYTES // dtype.itemsize), dtype=dtype)
    return _NO_PANELS[dtype]


@inline_kernel
def product_into(c, a, w, p, tmp):
    """c = a @ w.T: over the panels p = pack(w, B) when there are any, else through BLAS
    (``blas_product_into``). c (B, N); a (B, K); w (N, K); p from ``pack``; tmp from ``scratch``."""
    if p.shape[0]:
        product(tmp, a, p)
        B, N = c.shape
        for b in range(B):
            cb, tb = c[b], tmp[b]
            for j in range(N):
                cb[j] = tb[j]
    else:
        blas_product_into(c, a, w)


@inline_kernel
def blas_product_into(c, a, w):
    """c = a @ w.T through BLAS: one gemv per row for 2 to MIN_ROWS - 1 rows (a GEMM of so few rows repacks
    all of w at every call, module docstring), else one GEMM. c (B, N); a (B, K); w (N, K)."""
    B = c.shape[0]
    if 2 <= B < MIN_ROWS:
        for b in range(B):
            np.dot(w, a[b], c[b])
    else:
        np.dot(a, w.T, c)
