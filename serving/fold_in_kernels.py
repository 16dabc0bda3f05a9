"""The session fold-in's arithmetic (:mod:`serving.fold_in`) compiled with numba: the same floating-point
operations in the same order as its numpy code, without a numpy call (about a microsecond each) per step.

A folded-in answer made a hundred small numpy calls (0.45 ms in all on the 20k shop, most of it the calls
themselves); here each component's normalised row, the blend, the rules, the top k and the reasons' inputs
are one compiled loop each, and an answer is three calls (:func:`fold_prepare`, :func:`fold_scores`,
:func:`fold_pick`): the customer's rows are read from the matrices inside them, and ALS's product with the
item factors and any re-ranking happen between them.

Every function mirrors a numpy expression of :mod:`serving.fold_in` operation for operation (additions in
the same order, products of the same two numbers, no fused multiply-add where numpy has none: numba compiles
without fast-math), so the scores are the same floats;
``tests/serving/test_fold_in.py`` compares both paths, and both with the engine's full computation.

The one exception is ALS's least-squares step, implicit's Cython loop (:func:`als_solve`): its updates go
through OpenBLAS's ``saxpy`` (a fused multiply-add on CPUs that have one) and its solve through LAPACK's
``sposv``. The solve calls the very ``sposv`` implicit calls (scipy's, by address) and the updates use
explicit fused multiply-adds; :class:`serving.fold_in.FoldIn` uses it only after it gave implicit's factors
bit for bit on real rows of the model, else implicit's own step.

Without numba (``AVAILABLE`` false) the numpy code answers, as before.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

try:
    import numba
    from llvmlite import binding as llvm_binding
    from llvmlite import ir
    from numba.core import types
    from numba.core.extending import get_cython_function_address, intrinsic
except ImportError:  # pragma: no cover - numba is a dependency; without it the numpy path answers
    numba = None  # type: ignore[assignment]

AVAILABLE = numba is not None
_CACHE = True
"""Compiled code is cached beside this file (or numba's user cache), so a server compiles once."""


def _jit(fn: Any) -> Any:
    return numba.njit(cache=_CACHE, nogil=True)(fn) if AVAILABLE else fn


if AVAILABLE:
    # LAPACK's sposv as implicit calls it (scipy's), under a symbol name of our own: compiled code refers to
    # it by name, so numba can cache the functions that call it (a ctypes pointer would forbid that)
    llvm_binding.add_symbol("personalise_scipy_sposv",
                            get_cython_function_address("scipy.linalg.cython_lapack", "sposv"))
    _vp = types.voidptr
    _sposv = types.ExternalFunction("personalise_scipy_sposv", types.void(*[_vp] * 8))

    @intrinsic
    def _ptr(typingctx: Any, arr: Any) -> Any:
        """The address of an array's first element (for LAPACK's pointer arguments)."""
        sig = types.voidptr(arr)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            return builder.bitcast(ary.data, context.get_value_type(types.voidptr))

        return sig, codegen

    @intrinsic
    def _fma32(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
        """``a * b + c`` rounded once (float32), as OpenBLAS's ``saxpy`` computes it on CPUs with FMA."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            f32 = ir.FloatType()
            fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
            return builder.call(fn, args)

        return sig, codegen


# -- ALS ---------------------------------------------------------------------------------------------
@_jit
def als_solve(A0: np.ndarray, Y: np.ndarray, indices: np.ndarray, data: np.ndarray, n_fma: int) -> np.ndarray:
    """implicit's ``_least_squares`` for one row (float32): ``A0`` is ``YtY + regularization * I`` as implicit
    builds it, ``Y`` the item factors; the factors, or an empty array if ``sposv`` failed. The update
    ``(confidence - 1) * Y[i, j]`` is computed in double and rounded to float, as Cython's C does; each
    ``saxpy`` as OpenBLAS's kernel does it: a fused multiply-add on the first ``n_fma`` elements (its
    vectorised blocks), a product and a sum on the rest."""
    f = A0.shape[0]
    A = A0.copy()
    b = np.zeros(f, np.float32)
    for t in range(len(indices)):
        yi = Y[indices[t]]  # row views: loops over them are vectorised
        c = data[t]
        if c > 0:
            for k in range(n_fma):
                b[k] = _fma32(c, yi[k], b[k])  # type: ignore[call-arg]
            for k in range(n_fma, f):
                b[k] = b[k] + c * yi[k]
        else:
            c = -c
        c1 = np.float64(c) - 1.0
        for j in range(f):
            tmp = np.float32(c1 * np.float64(yi[j]))
            aj = A[j]
            for k in range(n_fma):
                aj[k] = _fma32(tmp, yi[k], aj[k])  # type: ignore[call-arg]
            for k in range(n_fma, f):
                aj[k] = aj[k] + tmp * yi[k]
    ints = np.array([f, 1, 0], np.int32)  # n (= lda = ldb), nrhs, info
    uplo = np.array([85], np.uint8)  # "U"
    n, nrhs, info = ints[0:1], ints[1:2], ints[2:3]
    _sposv(_ptr(uplo), _ptr(n), _ptr(nrhs), _ptr(A), _ptr(n), _ptr(b), _ptr(n), _ptr(info))  # type: ignore
    if ints[2] != 0:
        return np.zeros(0, np.float32)
    return b


def fma_splits(factors: int) -> list[int]:
    """The ways OpenBLAS's ``saxpy`` may split ``factors`` elements between its vectorised (fused) blocks and
    its scalar tail, most likely first: blocks of 32, 16 or 8, all fused, none."""
    return list(dict.fromkeys([factors & -32, factors & -16, factors & -8, factors, 0]))


# -- normalised component rows -------------------------------------------------------------------------
@_jit
def _scale(lo: float, hi: float) -> float:
    span = hi - lo
    return span if (math.isfinite(span) and span > 0) else 1.0


@_jit
def _min_span(v: np.ndarray) -> tuple[float, float, bool]:
    """``normalise``'s shift and divisor of the scores ``v`` (the smallest, and the span or 1.0), and whether
    all are finite (selects, no branch per score)."""
    lo = np.inf
    hi = -np.inf
    bad = False
    for q in range(len(v)):
        x = v[q]
        bad |= (x - x) != 0.0  # inf - inf and NaN - NaN are NaN
        lo = min(lo, x)
        hi = max(hi, x)
    return lo, _scale(lo, hi), not bad


@_jit
def normalise_row(v: np.ndarray, out: np.ndarray) -> bool:
    """``out = normalise(v)`` of a whole row of finite scores (``fold_in._normalised(None, v)``); False,
    nothing written, when a score is not finite (the model's own handling applies then)."""
    lo, d, finite = _min_span(v)
    if finite:
        for j in range(len(v)):
            out[j] = (v[j] - lo) / d
    return finite


@_jit
def normalise_at(cols: np.ndarray, v: np.ndarray, out: np.ndarray) -> bool:
    """``out[cols] = normalised v`` (``fold_in._normalised(cols, v)``; ``out`` is zero elsewhere); False
    when a score is not finite."""
    lo, d, finite = _min_span(v)
    if finite:
        for q in range(len(v)):
            out[cols[q]] = (v[q] - lo) / d
    return finite


@_jit
def knn_row(w_idx: np.ndarray, w_data: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
            sim: np.ndarray, out: np.ndarray) -> bool:
    """The item-to-item component: the terms of ``W @ sim`` for one customer (``w * sim`` for every
    similarity entry of the customer's items, row after row in the customer's order, as
    ``FoldIn._knn_terms``) summed per column in that order (``np.bincount``), normalised over the columns
    with a positive sum into ``out``; False when a sum is infinite."""
    m = len(out)
    acc = np.zeros(m, np.float64)
    for t in range(len(w_idx)):
        r = w_idx[t]
        w = w_data[t]
        for e in range(indptr[r], indptr[r + 1]):
            acc[indices[e]] += w * sim[e]
    lo = np.inf
    hi = -np.inf
    for j in range(m):  # selects, not branches: which sums are positive is different for every customer
        x = acc[j]
        pos = x > 0
        lo = min(lo, x if pos else np.inf)
        hi = max(hi, x if pos else -np.inf)
    if hi == np.inf:  # an infinite sum (a NaN is never positive): the model's own handling decides
        return False
    if hi > 0:
        d = _scale(lo, hi)
        for j in range(m):
            x = acc[j]
            out[j] = (x - lo) / d if x > 0 else out[j]
    return True


@_jit
def ease_row(w_idx: np.ndarray, w_data: np.ndarray, pos: np.ndarray, B: np.ndarray, keep: np.ndarray,
             out: np.ndarray) -> bool:
    """EASE: the rows of ``B`` of the customer's kept items with a positive weight added one after the other
    in float32 (``B[p].sum(axis=0, dtype=float32)``: the first row, then each next one added), as float64,
    normalised over all kept items into ``out[keep]``."""
    K = B.shape[1]
    acc = np.zeros(K, np.float32)
    first = True
    for t in range(len(w_idx)):
        p = pos[w_idx[t]]
        if p < 0 or not (w_data[t] > 0):
            continue
        row = B[p]  # a row view: the loop over it is vectorised (B[p, j] inside it was not)
        if first:
            for j in range(K):
                acc[j] = row[j]
            first = False
        else:
            for j in range(K):
                acc[j] += row[j]
    v = acc.astype(np.float64)
    return normalise_at(keep, v, out)


@_jit
def gather_at(cols: np.ndarray, idx: np.ndarray, data: np.ndarray) -> np.ndarray:
    """The values of a one-row sparse matrix (sorted columns ``idx``, values ``data``) at the sorted columns
    ``cols`` (0.0 where it has none), as float64: ``dense[cols]`` of its dense row."""
    out = np.zeros(len(cols), np.float64)
    i = 0
    for q in range(len(cols)):
        c = cols[q]
        while i < len(idx) and idx[i] < c:
            i += 1
        if i < len(idx) and idx[i] == c:
            out[q] = data[i]
    return out


@_jit
def buy_again_row(cols: np.ndarray, cnt: np.ndarray, last: np.ndarray, log2: np.ndarray,
                  boost: np.ndarray, out: np.ndarray) -> bool:
    """Buy-again's scores at the bought columns, ``(count + 0.5 * recency) * boost`` with recency
    ``1 / log2(1 + days)`` where ``days`` > 0 (``log2``: numpy's, computed by the caller), normalised into
    ``out`` (``FoldIn._buy_again_part`` and ``_normalised``)."""
    v = np.empty(len(cols), np.float64)
    for q in range(len(cols)):
        rec = 1.0 / log2[q] if last[q] > 0 else 0.0
        v[q] = (cnt[q] + 0.5 * rec) * boost[cols[q]]
    return normalise_at(cols, v, out)


# -- the blend, the rules, the top k, the reasons -------------------------------------------------------
@_jit
def blend(D: np.ndarray, rows: np.ndarray, w: np.ndarray, banned: np.ndarray, r_idx: np.ndarray,
          r_data: np.ndarray, p_idx: np.ndarray, p_data: np.ndarray, exclude_returned: bool,
          exclude_bought: bool, keep_replenishable: np.ndarray, neg: float) -> np.ndarray:
    """``blended``: for each weighted component in the weights' order, ``out += w * row`` (one product and one
    sum per item, as numpy's); then ``neg`` where the rules forbid (``FoldIn._banned``): the columns banned
    for everyone, returned products (``exclude_returned``), bought ones (``exclude_bought``) unless
    ``keep_replenishable`` says they may be bought again (an empty array: none may)."""
    m = D.shape[1]
    out = np.zeros(m, np.float64)
    for i in range(len(rows)):
        row = D[rows[i]]  # a row view: vectorised
        wi = w[i]
        for j in range(m):
            out[j] += wi * row[j]
    for q in range(len(banned)):
        out[banned[q]] = neg
    if exclude_returned:
        for q in range(len(r_idx)):
            if r_data[q] > 0:
                out[r_idx[q]] = neg
    if exclude_bought:
        for q in range(len(p_idx)):
            c = p_idx[q]
            if p_data[q] > 0 and not (len(keep_replenishable) and keep_replenishable[c]):
                out[c] = neg
    return out


@_jit
def top_k(s: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
    """The ``k`` best finite scores' columns, best first, ties by column, and whether that is
    ``fold_in._top_k``'s answer (with its finite filter): it is unless the k-th score is tied with one left
    out, where ``np.argpartition`` picks among the tied columns in its own way (the caller asks it then)."""
    if k <= 0:
        return np.zeros(0, np.int64), True
    best = np.empty(k, np.int64)
    val = np.empty(k, np.float64)
    n = 0
    for j in range(len(s)):
        x = s[j]
        if not math.isfinite(x):
            continue
        if n == k and not (x > val[n - 1]):
            continue  # not better than the k-th (a tie loses: its column is larger)
        i = n if n < k else k - 1
        while i > 0 and x > val[i - 1]:
            if i < k:
                val[i] = val[i - 1]
                best[i] = best[i - 1]
            i -= 1
        val[i] = x
        best[i] = j
        if n < k:
            n += 1
    if n == k:
        last = val[k - 1]
        tied = 0
        for j in range(len(s)):
            tied += s[j] == last
        for i in range(k):
            tied -= val[i] == last
        if tied > 0:
            return best[:n], False
    return best[:n], True


@_jit
def _find(idx: np.ndarray, c: int) -> int:
    """Where column ``c`` is among the sorted columns ``idx``; -1 if it is not."""
    lo, hi = 0, len(idx)
    while lo < hi:
        mid = (lo + hi) // 2
        if idx[mid] < c:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < len(idx) and idx[lo] == c else -1


@_jit
def _value_at(idx: np.ndarray, data: np.ndarray, c: int) -> float:
    """A one-row sparse matrix's value at column ``c`` (sorted columns ``idx``; 0.0 if it has none)."""
    at = _find(idx, c)
    return data[at] if at >= 0 else 0.0


@_jit
def reason_codes(D: np.ndarray, lead_rows: np.ndarray, lead_w: np.ndarray, top: np.ndarray,
                 w_idx: np.ndarray, w_data: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                 sim: np.ndarray, p_idx: np.ndarray, p_data: np.ndarray, replenishable: np.ndarray,
                 similar: np.ndarray, popular: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """``fold_in_reasons.reason_codes`` of the top items: for each, the leading component (``argmax`` over
    ``reasons.LEADS`` of ``w * score``, the first on a tie; ``lead_rows[l]`` < 0: not fitted, 0.0), the
    closest own item (the largest positive item-to-item term landing on it from another item, the first on
    a tie: ``closest_own_items``, the terms recomputed in the same order), then ``codes``: bought before
    (``fixed`` = REGULAR, AGAIN, POPULAR, GENERIC), similar to an own item (4 + 2 * item + not bought), or
    popular / generic by the leading component (``similar`` / ``popular``: masks over ``LEADS``)."""
    n = len(top)
    m = D.shape[1]
    pos = np.full(m, -1, np.int64)
    for t in range(n):
        pos[top[t]] = t
    src = np.full(n, -1, np.int64)
    bp = np.full(n, -np.inf)
    for q in range(len(w_idx)):
        r = w_idx[q]
        w = w_data[q]
        for e in range(indptr[r], indptr[r + 1]):
            c = indices[e]
            t = pos[c]
            if t >= 0:
                p = w * sim[e]
                if p > 0 and r != c and p > bp[t]:
                    bp[t] = p
                    src[t] = r
    out = np.empty(n, np.int64)
    for t in range(n):
        j = top[t]
        b = 0
        bv = 0.0
        for li in range(len(lead_rows)):
            r = lead_rows[li]
            v = lead_w[li] * D[r, j] if r >= 0 else 0.0
            if math.isnan(v):
                b = li
                break
            if li == 0 or v > bv:
                b = li
                bv = v
        had = _value_at(p_idx, p_data, j)
        if had > 0:
            out[t] = fixed[0] if (had >= 2 or replenishable[j]) else fixed[1]
        elif similar[b] and src[t] >= 0:
            out[t] = 4 + 2 * src[t] + (1 if _value_at(p_idx, p_data, src[t]) <= 0 else 0)
        else:
            out[t] = fixed[2] if popular[b] else fixed[3]
    return out


# -- the customer's row plus the session ----------------------------------------------------------------
@_jit
def plus_row(idx: np.ndarray, data: np.ndarray, add_cols: np.ndarray, add_vals: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """``fold_in._plus``: a one-row sparse ``M`` (sorted columns) plus the row holding ``add_vals`` at the
    distinct ``add_cols``, canonical (sorted, zero results dropped), float64."""
    n = len(idx)
    extra = 0
    hit = np.full(len(add_cols), -1, np.int64)
    for a in range(len(add_cols)):
        hit[a] = _find(idx, add_cols[a])
        extra += hit[a] < 0
    order = np.argsort(add_cols)
    out_i = np.empty(n + extra, np.int32)
    out_d = np.empty(n + extra, np.float64)
    vals = data.astype(np.float64)
    for a in range(len(add_cols)):
        if hit[a] >= 0:
            vals[hit[a]] = vals[hit[a]] + add_vals[a]
    q = 0
    i = 0
    for oa in range(len(order)):
        a = order[oa]
        if hit[a] >= 0:
            continue
        c = add_cols[a]
        while i < n and idx[i] < c:
            if vals[i] != 0:
                out_i[q] = idx[i]
                out_d[q] = vals[i]
                q += 1
            i += 1
        v = 0.0 + add_vals[a]
        if v != 0:
            out_i[q] = c
            out_d[q] = v
            q += 1
    while i < n:
        if vals[i] != 0:
            out_i[q] = idx[i]
            out_d[q] = vals[i]
            q += 1
        i += 1
    return out_i[:q], out_d[:q]


# -- one answer in three calls ---------------------------------------------------------------------------
SAME, KNN, EASE, ALS, BUY, TIFU, OTHER = range(7)
"""How a component is scored (``FoldIn.kinds``): a row the caller fills (the same for everyone, or TIFU-KNN's
own score), item-to-item, EASE, ALS, buy-again; anything else is not folded in here."""


@_jit
def _row_of(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, r: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Row ``r`` of a CSR matrix: its columns and values (views)."""
    return indices[indptr[r]:indptr[r + 1]], data[indptr[r]:indptr[r + 1]]


@_jit
def fold_prepare(row: int, w_ptr: np.ndarray, w_ind: np.ndarray, w_val: np.ndarray, add_cols: np.ndarray,
                 add_vals: np.ndarray, p_ptr: np.ndarray, p_ind: np.ndarray, l_ptr: np.ndarray,
                 l_ind: np.ndarray, l_val: np.ndarray, als_step: bool, scale: float, A0: np.ndarray,
                 Y: np.ndarray, n_fma: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first of an answer's three calls: the customer's weights row plus the session (:func:`plus_row`;
    the stored row as it is without one), buy-again's days since each bought item (:func:`gather_at`), and
    with ``als_step`` ALS's factors of the row (:func:`als_solve` of the row scaled by ``scale`` in float32;
    empty when not asked or when ``sposv`` failed)."""
    stored_idx, stored_data = _row_of(w_ptr, w_ind, w_val, row)
    if len(add_cols):
        idx, data = plus_row(stored_idx, stored_data, add_cols, add_vals)
        w_idx, w_data = idx.astype(np.int32), data.astype(np.float64)
    else:
        w_idx, w_data = stored_idx.astype(np.int32), stored_data.astype(np.float64)
    p_idx = p_ind[p_ptr[row]:p_ptr[row + 1]]
    l_idx, l_data = _row_of(l_ptr, l_ind, l_val, row)
    last = gather_at(p_idx, l_idx, l_data)
    vec = np.zeros(0, np.float32)
    if als_step:
        d32 = np.empty(len(w_data), np.float32)
        for t in range(len(w_data)):
            d32[t] = np.float32(w_data[t] * scale)
        vec = als_solve(A0, Y, w_idx, d32, n_fma)
    return w_idx, w_data, last, vec


@_jit
def fold_scores(kinds: np.ndarray, D: np.ndarray, w_idx: np.ndarray, w_data: np.ndarray, k_ptr: np.ndarray,
                k_ind: np.ndarray, k_sim: np.ndarray, e_pos: np.ndarray, B: np.ndarray, keep: np.ndarray,
                als: np.ndarray, row: int, p_ptr: np.ndarray, p_ind: np.ndarray, p_val: np.ndarray,
                last: np.ndarray, log2: np.ndarray, boost: np.ndarray, rows: np.ndarray, w: np.ndarray,
                banned: np.ndarray, r_ptr: np.ndarray, r_ind: np.ndarray, r_val: np.ndarray,
                exclude_returned: bool, exclude_bought: bool, keep_replenishable: np.ndarray, neg: float
                ) -> tuple[np.ndarray, bool]:
    """The second call: each component's normalised row into ``D`` (row ``i``: ``kinds[i]``; ``SAME`` and
    ``TIFU`` rows filled by the caller; ``als`` ALS's scores of every item), then :func:`blend` with the
    rules; the blended row and True, or an empty row and False when a component's score is not finite."""
    p_idx, p_data = _row_of(p_ptr, p_ind, p_val, row)
    for i in range(len(kinds)):
        kind = kinds[i]
        out = D[i]
        ok = True
        if kind == KNN:
            ok = knn_row(w_idx, w_data, k_ptr, k_ind, k_sim, out)
        elif kind == EASE:
            ok = ease_row(w_idx, w_data, e_pos, B, keep, out)
        elif kind == ALS:
            ok = normalise_row(als, out)
        elif kind == BUY and len(p_idx):  # else no score: a row of zeros
            ok = buy_again_row(p_idx, p_data, last, log2, boost, out)
        if not ok:
            return np.zeros(0, np.float64), False
    r_idx, r_data = _row_of(r_ptr, r_ind, r_val, row)
    return blend(D, rows, w, banned, r_idx, r_data, p_idx, p_data, exclude_returned, exclude_bought,
                 keep_replenishable, neg), True


@_jit
def fold_pick(s: np.ndarray, k: int, reasons: bool, D: np.ndarray, lead_rows: np.ndarray, lead_w: np.ndarray,
              w_idx: np.ndarray, w_data: np.ndarray, k_ptr: np.ndarray, k_ind: np.ndarray, k_sim: np.ndarray,
              row: int, p_ptr: np.ndarray, p_ind: np.ndarray, p_val: np.ndarray, replenishable: np.ndarray,
              similar: np.ndarray, popular: np.ndarray, fixed: np.ndarray
              ) -> tuple[np.ndarray, bool, np.ndarray]:
    """The third call: :func:`top_k` of ``s`` and, when it is exact and ``reasons`` asked, their
    :func:`reason_codes` (else no codes)."""
    top, exact = top_k(s, k)
    codes = np.zeros(0, np.int64)
    if exact and reasons:
        p_idx, p_data = _row_of(p_ptr, p_ind, p_val, row)
        codes = reason_codes(D, lead_rows, lead_w, top, w_idx, w_data, k_ptr, k_ind, k_sim, p_idx, p_data,
                             replenishable, similar, popular, fixed)
    return top, exact, codes
