"""Why a product is shown: one short text per recommended item, stored as a code into a reason table.

Codes 0-3 are the fixed reasons; then for each product ``j``: ``4 + 2 * j`` is "because you bought
<name of j>" and ``4 + 2 * j + 1`` "because you viewed <name of j>". The serving candidates keep codes
(4 bytes per candidate), the texts are built once per model.

Example
-------
>>> table = reason_table(["P1", "P2"], {"P1": "Tea"})
>>> table[4], table[7]
('because you bought Tea', 'because you viewed P2')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from models.recsys.base import row_entries
from models.recsys.blend import COMPONENTS, BlendRecommender, Weights
from models.recsys.neighbours import ItemKNNRecommender

FIXED_REASONS = ("you buy this regularly", "buy it again", "popular right now", "recommended for you")
REGULAR, AGAIN, POPULAR, GENERIC = range(len(FIXED_REASONS))
LEADS = COMPONENTS
"""The components that can lead an item's score, in the order of the blend."""
_SIMILAR = [LEADS.index(n) for n in ("item_knn", "als", "ease")]
_POPULAR = [LEADS.index(n) for n in ("popularity", "rising")]
"""Components whose lead reads "popular right now"."""


def reason_table(product_ids: Sequence[str], names: Mapping[str, str]) -> list[str]:
    """Every reason text, indexed by the codes of :func:`reason_codes`; ``names``: product names by id
    (products without one are called by their id)."""
    out = list(FIXED_REASONS)
    for pid in product_ids:
        name = names.get(pid, pid)
        out += [f"because you bought {name}", f"because you viewed {name}"]
    return out


def reason_codes(model: BlendRecommender, P: sp.csr_matrix, W: sp.csr_matrix, i: int,
                 comps: dict[str, np.ndarray], top: np.ndarray, weights: Weights | None = None) -> np.ndarray:
    """Why each top item of customer ``i`` is shown, as codes into :func:`reason_table`.

    ``P``: purchases, ``W``: interactions (CSR, one row per customer); ``comps``: that customer's component
    scores; ``weights``: the blend's weights for the request (default: the main ones). In order: bought
    before ("you buy this regularly" when bought twice or replenishable, else "buy it again"); led by a
    similarity component and close to one of the customer's items ("because you bought/viewed X"); led by
    popularity or rising; else "recommended for you"."""
    weights = model.weights_ if weights is None else weights
    w = np.array([weights.get(n, 0.0) for n in LEADS])
    contrib = np.vstack([w[c] * np.ravel(comps[n])[top] if n in comps else np.zeros(len(top))
                         for c, n in enumerate(LEADS)])
    lead = contrib.argmax(axis=0)  # the component that contributes most to each item's score
    knn = model.components_["item_knn"]
    assert isinstance(knn, ItemKNNRecommender)
    src = _closest_own_item(knn.sim_, W, i, top)
    bought = _bought(P, i)
    similar = (lead == _SIMILAR[0]) | (lead == _SIMILAR[1]) | (lead == _SIMILAR[2])  # (np.isin is slower)
    code = np.where((lead == _POPULAR[0]) | (lead == _POPULAR[1]), POPULAR, GENERIC)
    s0 = np.maximum(src, 0)
    code = np.where(similar & (src >= 0), 4 + 2 * s0 + (bought(s0) <= 0), code)  # because you bought/viewed
    had = bought(top)
    replenishable = model._require().item_replenishable[top]
    code = np.where(had > 0, np.where((had >= 2) | replenishable, REGULAR, AGAIN), code)
    return code.astype(np.int32)


def batch_reason_codes(model: BlendRecommender, P: sp.csr_matrix, W: sp.csr_matrix,
                       comps: dict[str, np.ndarray], top: np.ndarray, weights: Weights | None = None,
                       dense_sim: np.ndarray | None = None) -> np.ndarray:
    """:func:`reason_codes` for a batch of customers at once (rows of ``P``, ``W`` and ``comps``; ``top``:
    customers x n item columns), the same codes without a Python step per customer. ``dense_sim``: the
    item-to-item similarities as a dense array (:func:`dense_similarity`), for many batches."""
    weights = model.weights_ if weights is None else weights
    B, n = top.shape
    contrib = np.stack([weights.get(c, 0.0) * np.take_along_axis(comps[c], top, 1) if c in comps
                        else np.zeros((B, n)) for c in LEADS])
    lead = contrib.argmax(axis=0)
    knn = model.components_["item_knn"]
    assert isinstance(knn, ItemKNNRecommender)
    src = _batch_closest_own_item(knn.sim_ if dense_sim is None else dense_sim, W, top)
    rows = np.repeat(np.arange(B), n)
    s0 = np.maximum(src, 0)
    similar = np.isin(lead, _SIMILAR)
    code = np.where(np.isin(lead, _POPULAR), POPULAR, GENERIC)
    bought_src = np.asarray(P[rows, s0.ravel()]).reshape(B, n)
    code = np.where(similar & (src >= 0), 4 + 2 * s0 + (bought_src <= 0), code)
    had = np.asarray(P[rows, top.ravel()]).reshape(B, n)
    replenishable = model._require().item_replenishable[top]
    code = np.where(had > 0, np.where((had >= 2) | replenishable, REGULAR, AGAIN), code)
    return code.astype(np.int32)


DENSE_SIMILARITY_ITEMS = 4_000
"""Catalogues up to this many products get their item-to-item similarities as a dense array for the
precompute's reasons (128 MB at most): reading it is a few times faster than scipy's sparse indexing."""


def dense_similarity(model: BlendRecommender) -> np.ndarray | None:
    """The item-to-item similarities of ``model`` as a dense array (duplicate entries summed, as indexing
    the sparse one does), or None for a catalogue larger than :data:`DENSE_SIMILARITY_ITEMS`."""
    knn = model.components_["item_knn"]
    assert isinstance(knn, ItemKNNRecommender)
    return knn.sim_.toarray() if knn.sim_.shape[0] <= DENSE_SIMILARITY_ITEMS else None


def _batch_closest_own_item(sim: sp.csr_matrix | np.ndarray, W: sp.csr_matrix, top: np.ndarray
                            ) -> np.ndarray:
    """:func:`_closest_own_item` for every row of ``W`` at once: over the (customer, own item) pairs, the
    similarity of each own item to each of its customer's top items, then the first best pair per customer."""
    B, n = top.shape
    src = np.full((B, n), -1)
    W = W.tocsr()
    counts = np.diff(W.indptr)
    pw, pv = W.indices, W.data
    if not len(pw):
        return src
    pu = np.repeat(np.arange(B), counts)
    cols = top[pu]
    S = np.asarray(sim[np.repeat(pw, n), cols.ravel()]).reshape(-1, n) * pv[:, None]
    S[pw[:, None] == cols] = 0.0  # never "because you bought X" for X itself
    users = np.flatnonzero(counts)
    starts = W.indptr[:-1][users]
    best = np.maximum.reduceat(S, starts, axis=0)
    seg = np.repeat(np.arange(len(users)), counts[users])
    pair = np.where(S == best[seg], np.arange(len(pw))[:, None], len(pw))
    first = np.minimum.reduceat(pair, starts, axis=0)
    src[users] = np.where(best > 0, pw[np.minimum(first, len(pw) - 1)], -1)
    return src


def _closest_own_item(sim: sp.csr_matrix, W: sp.csr_matrix, i: int, top: np.ndarray) -> np.ndarray:
    """For each top item, the customer's own item most similar to it (-1 if none), never the item itself."""
    src = np.full(len(top), -1)
    w_idx, w_val = W.indices[W.indptr[i]:W.indptr[i + 1]], W.data[W.indptr[i]:W.indptr[i + 1]]
    if len(w_idx) and len(top):
        S = _similarities(sim, w_idx, top) * w_val[:, None]
        S[w_idx[:, None] == top[None, :]] = 0.0  # never "because you bought X" for X itself
        best = S.argmax(axis=0)
        src = np.where(S.max(axis=0) > 0, w_idx[best], -1)
    return src


def _similarities(sim: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``sim[rows][:, cols].toarray()`` for distinct ``cols``, read from the CSR arrays directly: scipy's two
    fancy indexings cost a quarter of a live-session recommendation."""
    if not sim.has_canonical_format:  # duplicate entries would have to be summed: scipy does that
        return np.asarray(sim[rows][:, cols].toarray())
    at, lengths = row_entries(sim, rows)
    pos = np.full(sim.shape[1], -1)
    pos[cols] = np.arange(len(cols))
    where = pos[sim.indices[at]]
    hit = where >= 0
    out = np.zeros((len(rows), len(cols)), dtype=sim.dtype)
    out[np.repeat(np.arange(len(rows)), lengths)[hit], where[hit]] = sim.data[at][hit]
    return out


def _bought(P: sp.csr_matrix, i: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function: how much of products ``j`` customer ``i`` bought (0 for products not bought)."""
    b_idx, b_val = P.indices[P.indptr[i]:P.indptr[i + 1]], P.data[P.indptr[i]:P.indptr[i + 1]]
    if not P.has_sorted_indices:
        order = np.argsort(b_idx, kind="stable")
        b_idx, b_val = b_idx[order], b_val[order]

    def bought(j: np.ndarray) -> np.ndarray:
        if not len(b_idx):
            return np.zeros(len(j))
        at = np.minimum(np.searchsorted(b_idx, j), len(b_idx) - 1)
        return np.where(b_idx[at] == j, b_val[at], 0.0)
    return bought
