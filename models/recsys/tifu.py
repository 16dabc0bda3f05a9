"""TIFU-KNN: time-decayed personal item frequencies blended with those of the nearest customers.

Hu, He, Gao and Zhang, "Modeling Personalized Item Frequency Information for Next-basket
Recommendation", SIGIR 2020. A customer's purchase baskets, oldest first, are split into ``groups``
consecutive groups; basket ``i`` of ``n`` counts ``within_decay ** (n - 1 - i)``, each group is the mean
of its baskets and counts ``group_decay ** (groups - 1 - g)``, and the customer vector is the mean over
groups (as in the authors' reference code, where ``groups`` is called ``group_size``: it is the number of
groups, not their size). The score of an item is ``alpha * own + (1 - alpha) * mean of the k nearest
customers' vectors`` (cosine similarity).

Everything is sparse: customer vectors are a CSR matrix built by one sparse product (customers x baskets
weights @ baskets x items), neighbours are found in batches of sparse products (``exact``) or, for large
shops, among the members of nearby clusters of a low-rank embedding (``approximate``), and only the
neighbour indices are kept (customers x k int32).

:class:`features.interactions.InteractionData` holds no baskets, so :func:`build_baskets` makes them from
the shop's orders; pass them to :meth:`TIFUKNNRecommender.fit`.

Example
-------
>>> data = build_interactions(shop, cutoff, non_product=is_non_product)     # doctest: +SKIP
>>> rec = TIFUKNNRecommender().fit(data, baskets=build_baskets(shop, data))  # doctest: +SKIP
>>> rec.recommend(["12347"], k=10)                                           # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.exceptions import ModelFitError
from features.interactions import InteractionData
from features.io import Shop
from models.recsys.base import NEG, Recommender
from models.recsys.context import RecommenderConfig, UserContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TifuConfig:
    """TIFU-KNN settings; the defaults are the paper's Dunnhumby ones."""

    groups: int = 7
    """Number of groups the baskets are split into (``m``)."""
    within_decay: float = 0.9
    """``r_b``: each older basket counts this much less."""
    group_decay: float = 0.7
    """``r_g``: each older group counts this much less."""
    neighbours: int = 300
    """``k``: nearest customers averaged."""
    alpha: float = 0.7
    """Weight of the customer's own vector (the rest goes to the neighbours' mean)."""
    search: Literal["auto", "exact", "approximate"] = "auto"
    """Neighbour search; ``auto`` is exact up to ``exact_max_customers`` customers."""
    exact_max_customers: int = 50_000
    embedding_dim: int = 64
    """Approximate search: dimensions of the embedding customers are compared in."""
    cluster_size: int = 1_000
    """Approximate search: mean customers per cluster."""
    probe: int = 6
    """Approximate search: a customer's neighbours are sought in this many nearest clusters."""

    def to_params(self) -> dict[str, Any]:
        return {f"tifu.{k}": v for k, v in asdict(self).items()}


@dataclass
class Baskets:
    """Purchase baskets aligned on one :class:`InteractionData`: one row per basket, ordered by customer
    and then time. ``user``: the customer's row; ``items``: baskets x items, 1 where bought; ``n_users`` and
    ``cutoff``: those of the data they were built for."""

    user: np.ndarray
    items: sp.csr_matrix
    n_users: int
    cutoff: pd.Timestamp | None = None


def build_baskets(shop: Shop, data: InteractionData, by: Literal["order", "day"] = "order") -> Baskets:
    """The purchase baskets before ``data.cutoff`` of ``data``'s customers and items.

    ``by="order"``: one basket per order id (the paper's); ``"day"``: one per customer and day."""
    o = shop.customer_orders()
    o = o[(o["quantity"] > 0) & ((o["ts"] < data.cutoff) if data.cutoff is not None else True)]
    u, j = data.users.rows(o["customer_id"]), data.items.rows(o["product_id"])
    ok = (u >= 0) & (j >= 0)
    key = o["order_id"] if by == "order" else o["ts"].dt.floor("D")
    df = pd.DataFrame({"u": u[ok], "key": pd.factorize(key.to_numpy()[ok])[0], "ts": o["ts"].to_numpy()[ok],
                       "j": j[ok]})
    if df.empty:
        return Baskets(np.zeros(0, np.int64), sp.csr_matrix((0, len(data.items))),
                       len(data.users), data.cutoff)
    b = df.groupby(["u", "key"], sort=False).ngroup().to_numpy()
    first = df.groupby(b).agg(u=("u", "first"), ts=("ts", "min"), key=("key", "first"))
    order = np.lexsort((first["key"].to_numpy(), first["ts"].to_numpy(), first["u"].to_numpy()))
    pos = np.empty(len(order), np.int64)
    pos[order] = np.arange(len(order))
    items = sp.csr_matrix((np.ones(len(df)), (pos[b], df["j"].to_numpy())),
                          shape=(len(order), len(data.items)))
    items.sum_duplicates()
    items.data[:] = 1.0
    return Baskets(first["u"].to_numpy(np.int64)[order], items, len(data.users), data.cutoff)


def customer_vectors(baskets: Baskets, n_users: int, cfg: TifuConfig) -> sp.csr_matrix:
    """Customers x items: the time-decayed, group-averaged item frequencies (zero rows: no basket)."""
    user = baskets.user
    nb = len(user)
    start = np.searchsorted(user, np.arange(n_users))
    n = np.bincount(user, minlength=n_users)[user]
    i = np.arange(nb) - start[user]  # position in the customer's sequence, oldest first
    G = cfg.groups
    base = np.maximum(n // G, 1)
    extra = np.where(n >= G, n - base * G, 0)
    b0 = (G - extra) * base  # the later groups hold one basket more
    late = (n >= G) & (i >= b0)
    g = np.where(n < G, i, np.where(late, G - extra + (i - b0) // (base + 1), i // base))
    size = np.where(n < G, 1, np.where(late, base + 1, base))
    real = np.minimum(n, G)
    w = cfg.within_decay ** (n - 1 - i) * cfg.group_decay ** (G - 1 - g) / size / real
    S = sp.csr_matrix((w, (user, np.arange(nb))), shape=(n_users, nb))
    return sp.csr_matrix(S @ baskets.items)


NEIGHBOUR_BUDGET = 16_000_000
"""Similarities the neighbour searches hold at once (64 MB in float32; the products and the top-k choice
hold a few times that). On a 20,000-customer shop the exact search took 4.3 s of CPU and 270 MB over its
start with this budget, 5.4 s and 1,360 MB with 64 million: the same neighbours (rows are independent)."""


def _normalised(U: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    norms = np.sqrt(np.asarray(U.multiply(U).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv) @ U, dtype=np.float32), norms > 0


def _top_k(S: np.ndarray, k: int, cols: np.ndarray) -> np.ndarray:
    """``cols`` of the k highest similarities per row, best first (ties by column position); ``-1`` where
    the similarity is not positive (a customer with nothing in common is no neighbour)."""
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(S, part, axis=1).min(axis=1, keepdims=True)
    # ties at a positive k-th: the first columns (as a larger k). Rows whose k-th is not positive need no
    # choice: every positive similarity is above it, and the tied ones all become -1 below
    fix = np.flatnonzero((kth[:, 0] > 0) & (np.count_nonzero(S >= kth, axis=1) > k))
    if len(fix):
        Sf, kf = S[fix], kth[fix]
        over, tied = Sf > kf, Sf == kf
        n_over = over.sum(axis=1, keepdims=True)
        keep = over | (tied & (np.cumsum(tied, axis=1) <= k - n_over))
        part[fix] = np.nonzero(keep)[1].reshape(len(fix), k)
    part.sort(axis=1)  # then a stable sort by similarity leaves ties by column position
    ps = np.take_along_axis(S, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    return np.where(np.take_along_axis(ps, order, axis=1) > 0, cols[best], -1)


def exact_neighbours(Un: sp.csr_matrix, ok: np.ndarray, k: int, budget: int = NEIGHBOUR_BUDGET) -> np.ndarray:
    """The k most cosine-similar other customers of every customer (rows of ``-1`` where ``~ok``), by
    batched sparse products of the normalised vectors ``Un`` (``budget``: similarities held at once)."""
    cand = np.flatnonzero(ok)
    out = np.full((Un.shape[0], k), -1, np.int32)
    C = sp.csr_matrix(Un[cand].T)
    step = max(1, budget // max(len(cand), 1))
    for a in range(0, len(cand), step):
        rows = cand[a:a + step]
        S = (Un[rows] @ C).toarray()
        S[np.arange(len(rows)), np.arange(a, a + len(rows))] = -np.inf  # not one's own neighbour
        out[rows] = _top_k(S, k, cand)
    return out


def approximate_neighbours(Un: sp.csr_matrix, ok: np.ndarray, k: int, cfg: TifuConfig, seed: int,
                           budget: int = NEIGHBOUR_BUDGET, info: dict[str, int] | None = None) -> np.ndarray:
    """Like :func:`exact_neighbours`, searched among the members of each customer's ``probe`` nearest
    clusters (spherical k-means) in a ``embedding_dim``-dimensional SVD embedding of ``Un``. ``info``
    (if given) gets ``min_pool``: the fewest customers any cluster's search looked among (a pool of ``k`` or
    fewer is widened to everyone)."""
    from sklearn.utils.extmath import randomized_svd
    cand = np.flatnonzero(ok)
    X = Un[cand]
    rng = np.random.default_rng(seed)
    dim = min(cfg.embedding_dim, min(X.shape) - 1)
    _, _, Vt = randomized_svd(X, dim, random_state=seed)
    E = np.asarray(X @ Vt.T, dtype=np.float32)
    E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    n_clusters = max(1, len(cand) // cfg.cluster_size)
    sample = E[rng.choice(len(E), min(len(E), 50 * n_clusters), replace=False)]
    cent = sample[rng.choice(len(sample), n_clusters, replace=False)]
    for _ in range(10):  # spherical k-means on a sample
        lab = np.argmax(sample @ cent.T, axis=1)
        sums = sp.csr_matrix((np.ones(len(lab)), (lab, np.arange(len(lab)))),
                             shape=(n_clusters, len(lab))) @ sample
        norm = np.linalg.norm(sums, axis=1, keepdims=True)
        cent = np.where(norm > 0, sums / np.maximum(norm, 1e-12), cent).astype(np.float32)  # empty: stays
    lab = np.concatenate([np.argmax(E[a:a + 100_000] @ cent.T, axis=1) for a in range(0, len(E), 100_000)])
    by_cluster = np.argsort(lab, kind="stable")
    members = np.split(by_cluster, np.searchsorted(lab[by_cluster], np.arange(1, n_clusters)))
    near = np.argsort(-(cent @ cent.T), axis=1, kind="stable")[:, :cfg.probe]
    out = np.full((Un.shape[0], k), -1, np.int32)
    where = np.full(len(cand), -1, np.int64)  # a customer's column in the current pool, -1 if not in it
    min_pool = len(cand)
    for c in range(n_clusters):
        q = members[c]
        if not len(q):
            continue
        pool = np.concatenate([members[p] for p in near[c]])
        min_pool = min(min_pool, len(pool))
        if len(pool) <= k:  # too few: the search widens to everyone
            pool = np.arange(len(cand))
        where[pool] = np.arange(len(pool))
        step = max(1, budget // len(pool))
        for a in range(0, len(q), step):  # a large cluster in chunks
            qq = q[a:a + step]
            S = E[qq] @ E[pool].T
            at = where[qq]  # each customer's own column in the pool (-1: not in it)
            mine = np.flatnonzero(at >= 0)
            S[mine, at[mine]] = -np.inf
            out[cand[qq]] = _top_k(S, k, cand[pool])
        where[pool] = -1
    if info is not None:
        info["min_pool"] = min_pool
    return out


class TIFUKNNRecommender(Recommender):
    """TIFU-KNN (Hu et al., SIGIR 2020) behind the common recommender interface.

    Scores only what the customer or their neighbours bought (-inf elsewhere); customers without a
    purchase basket get no rows (the engine's fallback fills in). Live session events are not folded in:
    the scores come from the stored baskets."""

    name = "tifu_knn"
    needs_baskets = True

    def __init__(self, config: RecommenderConfig | None = None, tifu: TifuConfig | None = None) -> None:
        super().__init__(config)
        self.tifu = tifu or TifuConfig(**dict(self.config.tifu or ()))

    def fit(self, data: InteractionData, baskets: Baskets | None = None) -> Self:
        """Fit on ``baskets`` (from :func:`build_baskets`; or ``data.baskets`` when the data carries them)."""
        self._baskets = baskets if baskets is not None else getattr(data, "baskets", None)
        try:
            return super().fit(data)
        finally:
            del self._baskets

    def _fit(self, data: InteractionData) -> None:
        b: Baskets | None = self._baskets
        if b is None:
            raise ModelFitError(f"{self.name}: needs purchase baskets: fit(data, baskets=build_baskets(shop, "
                                "data))")
        if (b.items.shape[1], b.n_users, b.cutoff) != (len(data.items), len(data.users), data.cutoff):
            raise ModelFitError(
                f"{self.name}: baskets of {b.items.shape[1]} items, {b.n_users} customers, "
                f"cutoff {b.cutoff} do not match the data's {len(data.items)}, "
                f"{len(data.users)}, {data.cutoff}: build them with build_baskets(shop, data)"
            )
        if len(b.user) == 0:
            raise ModelFitError(f"{self.name}: no purchase baskets to learn from")
        cfg = self.tifu
        self.vectors_ = customer_vectors(b, len(data.users), cfg)
        Un, ok = _normalised(self.vectors_)
        self.has_vector_ = ok
        k = min(cfg.neighbours, int(ok.sum()) - 1)
        exact = cfg.search == "exact" or (cfg.search == "auto" and ok.sum() <= cfg.exact_max_customers)
        self.widened_ = False  # whether an approximate search widened a cluster's pool to everyone
        if k <= 0:
            self.neighbours_ = np.full((len(data.users), 0), -1, np.int32)
        elif exact:
            self.neighbours_ = exact_neighbours(Un, ok, k)
        else:
            info: dict[str, int] = {}
            self.neighbours_ = approximate_neighbours(Un, ok, k, cfg, self.config.seed, info=info)
            self.widened_ = info["min_pool"] <= k
        log.info("tifu_knn: %d customers with baskets, %d neighbours each (%s search)", ok.sum(), k,
                 "exact" if exact else "approximate")

    def narrowed(self, config: RecommenderConfig, tifu: TifuConfig) -> TIFUKNNRecommender | None:
        """This fitted model as ``TIFUKNNRecommender(config, tifu).fit`` would give it on the same data and
        baskets, without fitting again, when ``tifu`` differs from this model's settings in ``alpha`` and
        fewer ``neighbours`` only (and ``config`` in nothing but TIFU-KNN's settings and the blend's
        weights): neighbours are kept best first, so fewer are a prefix. None otherwise, or when an
        approximate search widened a cluster's pool (a smaller ``k`` might not have)."""
        self._require()
        same = {**asdict(tifu), "alpha": 0.0, "neighbours": 0} == {**asdict(self.tifu), "alpha": 0.0,
                                                                    "neighbours": 0}
        if (not same or tifu.neighbours > self.tifu.neighbours or getattr(self, "widened_", True)
                or replace(config, tifu=None, blend_weights=None, discovery_weights=None)
                != replace(self.config, tifu=None, blend_weights=None, discovery_weights=None)):
            return None
        out = copy.copy(self)
        out.config, out.tifu = config, tifu
        out.neighbours_ = self.neighbours_[:, :min(tifu.neighbours, self.neighbours_.shape[1])]
        return out

    def parts(self, ctx: UserContext, neighbours: int | None = None) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """The customers' own decayed frequencies and their neighbours' mean (sparse, customers x items;
        zero rows for customers the model does not know). ``neighbours``: only that many nearest (fewer
        than fitted; tuning tries several without refitting)."""
        self._require()
        rows = np.where(ctx.rows >= 0, ctx.rows, 0)
        known = (ctx.rows >= 0).astype(float)
        own = sp.csr_matrix(sp.diags(known) @ self.vectors_[rows])
        nb = self.neighbours_[rows][:, :neighbours]
        r, c = np.nonzero(nb >= 0)
        k = np.maximum((nb >= 0).sum(axis=1), 1)
        A = sp.csr_matrix(((known[r] / k[r]), (r, nb[r, c])), shape=(len(rows), self.vectors_.shape[0]))
        return own, sp.csr_matrix(A @ self.vectors_)

    def _score(self, ctx: UserContext) -> np.ndarray:
        own, nbrs = self.parts(ctx)
        s = (self.tifu.alpha * own + (1 - self.tifu.alpha) * nbrs).toarray()
        return np.where(s > 0, s, NEG)
