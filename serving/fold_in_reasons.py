"""The reasons of a folded-in answer (:mod:`serving.fold_in`), the codes
:func:`models.recsys.reasons.reason_codes` gives, from what the fold-in has computed already.

``reason_codes`` finds each top item's closest own item from a dense (own items x top items) block of the
item-to-item similarities, gathered from the sparse matrix, times the customer's weights. Those products,
``weight * similarity``, are exactly the terms the fold-in's item-to-item score added up (the same floats:
the product of the same two numbers), so here the block is never built: among the terms that land on a top
item (not the item itself) with a positive value, the largest wins, the first of the customer's items on a
tie, as ``argmax`` picks. The rest (which component leads, bought before, popular) is the same comparisons
on the ten or so top items, in Python.
"""

from __future__ import annotations

import numpy as np

from models.recsys.reasons import _POPULAR, _SIMILAR, AGAIN, GENERIC, LEADS, POPULAR, REGULAR

_SIMILAR_SET = frozenset(_SIMILAR)
_POPULAR_SET = frozenset(_POPULAR)


class KnnTerms:
    """The terms of one customer's item-to-item score: for every similarity entry of the customer's items
    (row after row, in the customer's order), the scored column, ``weight * similarity``, and the own item
    it came from."""

    __slots__ = ("cols", "prod", "own")

    def __init__(self, cols: np.ndarray, prod: np.ndarray, own: np.ndarray) -> None:
        self.cols, self.prod, self.own = cols, prod, own


def closest_own_items(terms: KnnTerms, top: np.ndarray, m: int) -> list[int]:
    """For each top item, the customer's own item most similar to it (weighted; -1 if none), never the item
    itself: ``models.recsys.reasons._closest_own_item``'s answer."""
    src = [-1] * len(top)
    if not len(terms.cols) or not len(top):
        return src
    pos = np.full(m, -1)
    pos[top] = np.arange(len(top))
    tp = pos[terms.cols]
    hit = np.flatnonzero((tp >= 0) & (terms.prod > 0) & (terms.own != terms.cols))
    if not len(hit):
        return src
    # by top item, then the largest term, then the first own item (terms are in the customer's row order)
    order = hit[np.lexsort((hit, -terms.prod[hit], tp[hit]))]
    t_sorted = tp[order]
    first = np.flatnonzero(np.concatenate(([True], t_sorted[1:] != t_sorted[:-1])))
    for t, j in zip(t_sorted[first].tolist(), terms.own[order[first]].tolist(), strict=True):
        src[t] = j
    return src


def reason_codes(weights: dict[str, float], comps: dict[str, np.ndarray], top: np.ndarray, terms: KnnTerms,
                 bought: dict[int, float], replenishable: np.ndarray, m: int) -> list[int]:
    """:func:`models.recsys.reasons.reason_codes` for one folded-in customer: ``comps`` their normalised
    component rows (1 x items), ``terms`` their item-to-item terms, ``bought`` their purchases by column."""
    contrib = np.array([weights.get(n, 0.0) * comps[n][0, top] if n in comps else np.zeros(len(top))
                        for n in LEADS])
    lead = contrib.argmax(axis=0).tolist()  # the component that contributes most to each item's score
    src = closest_own_items(terms, top, m)
    out = []
    for j, c, s, rep in zip(top.tolist(), lead, src, replenishable[top].tolist(), strict=True):
        had = bought.get(j, 0.0)
        if had > 0:
            out.append(REGULAR if had >= 2 or rep else AGAIN)
        elif c in _SIMILAR_SET and s >= 0:
            out.append(4 + 2 * s + (bought.get(s, 0.0) <= 0))
        else:
            out.append(POPULAR if c in _POPULAR_SET else GENERIC)
    return out
