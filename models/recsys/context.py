"""What a request is about: the model settings, the business rules, and the customers' interaction rows.

Recommending is candidate scoring -> business rules -> ranking. :func:`build_context` gathers the rows of a
batch of customers (live session events folded in); :func:`rules_mask` says which items each may see.

Example
-------
>>> ctx = build_context(data, ["C0000001"], {"C0000001": [("P001", "view")]})   # doctest: +SKIP
>>> rules_mask(data, ctx, BusinessRules(exclude_bought=True)).shape                # doctest: +SKIP
(1, 300)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import InteractionData
from models.recsys.rerank import RerankConfig

EVENT_WEIGHT = {"view": 0.25, "wishlist": 0.5, "add_to_cart": 1.0, "remove_from_cart": 0.0, "purchase": 3.0}
"""Weight of a live session event, by type (unknown types count as a view)."""

Session = dict[str, list[tuple[str, str]]]
"""Live events per customer id: ``{customer_id: [(product_id, event_type), ...]}``."""


@dataclass(frozen=True)
class RecommenderConfig:
    """Model settings. ``seed`` makes ALS/BPR initialisation reproducible."""

    factors: int = 64
    """Latent factors of ALS and BPR."""
    als_iterations: int = 10
    """ALS sweeps (conjugate-gradient solves). 10 rather than 15: at 100,000 customers each fit costs a third
    less (17.3 -> 12.5 s on one core) and the lists are as good (ALS NDCG@10 0.2427 -> 0.2433, production
    0.2643 -> 0.2646; new items 0.2052 -> 0.2040); Online Retail and the simulator 20k in bench/RESULTS.md."""
    als_regularization: float = 0.05
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    bpr_iterations: int = 100
    bpr_learning_rate: float = 0.05
    knn_neighbours: int = 50
    """Neighbours kept per item in the item-to-item (BM25) model."""
    knn_k1: float = 1.2
    knn_b: float = 0.75
    ease_lambda: float = 500.0
    """L2 penalty of EASE (item-to-item linear model)."""
    ease_max_items: int = 12000
    """EASE inverts an items x items matrix; larger catalogues use their most interacted items only."""
    replenish_boost: float = 1.5
    """Buy-again multiplier for replenishable products."""
    blend_weights: tuple[tuple[str, float], ...] | None = None
    """Fixed blend weights; None learns them on the last weeks before the cutoff."""
    discovery_weights: tuple[tuple[str, float], ...] | None = None
    """Blend weights for requests that exclude bought products (discovery); None uses ``blend_weights``
    unless tuning learns them too."""
    tifu: tuple[tuple[str, Any], ...] | None = None
    """TIFU-KNN settings (:class:`models.recsys.tifu.TifuConfig` fields) of the ``tifu`` blend component and
    baseline; None: tuned on the weeks before the cutoff with the blend (the paper's where not tuned)."""
    rerank: bool = True
    """Re-rank discovery requests (bought products excluded) with a LightGBM ranker, see
    :mod:`models.recsys.rerank`."""
    rerank_candidates: int = 100
    """Candidates the ranker orders per customer (discovery lists hold at most this many products)."""
    rerank_trees: int = 100
    rerank_windows: int = 2
    """Earlier windows before the cutoff the ranker learns from."""
    rerank_window_days: int = 56
    rerank_min_customers: int = 100
    rerank_max_customers: int = 3000
    """A random sample of this many training customers at most (the ranker's fit time grows with them)."""
    rerank_row_customers: int = 8_000
    """The ranker's windows build candidate rows for at most this many customers each (a seeded sample by
    customer id): it learns from ``rerank_max_customers`` of them and is checked on a fifth of the latest
    window's, so more rows only cost time."""
    rerank_one_window_customers: int | None = 50_000
    """Shops whose latest window's blend knows more customers than this learn the ranker from that window
    only (``rerank_windows`` is the most): at that size its ``rerank_row_customers`` rows alone hold about as
    many customers as the ranker learns from (``rerank_max_customers``), and each earlier window costs a
    blend fitted on everyone (at 1,000,000 customers, ALS alone about 200 s of CPU). At 100,000 simulated
    customers (74,302 in the latest window) one window learns from 2,331 customers instead of 2,649, and
    the new-items NDCG@10 is 0.2061 against 0.2040 (all items equal), for 8 s less on the job's critical
    path (250,000 until session 22). None: every window. The windows used are logged
    (``recommend.reranker.windows``); the quality cost is in ``bench/SCALE.md``."""
    tune_max_customers: int = 10_000
    """Blend tuning and the ranker's windows score at most this many customers per window (a seeded sample
    by customer id, logged as ``recommend.samples.tuning_customers``); their cost grows with customers x
    products, their precision hardly past this: at 100,000 customers 10,000 of the 18,140 tuning customers
    choose the same TIFU-KNN settings and blend weights as all of them (``bench/SCALE.md``, branch scale20;
    was 20,000). A 20,000-customer shop has about 3,600 (not sampled)."""
    tune_screen_customers: int | None = None
    """Blend tuning with more customers than this scores every weighting on a seeded sample of this many
    first, and only the best few on all of them (:func:`training.blend_tuning.tune_weights`). None: off
    (at 100,000 customers it saved nothing: the component scores, computed once per pass of customers,
    cost more than the weightings; ``bench/SCALE.md``)."""
    eval_max_customers: int = 10_000
    """The recommendation report scores at most this many test customers (a seeded sample by customer id;
    logged as ``recommend.test_customers.scored``)."""
    score_threads: int = 2
    """Threads scoring at once (:func:`models.recsys.threads.in_threads`): the candidate precompute's and
    TIFU-KNN's settings search's customer batches, blend tuning's components and runs of weightings within
    a batch. The results do not depend on it (the same batches, each computed as alone), so it is not a
    training parameter; memory grows with it (at 2,000 products, each extra weight-search thread holds
    up to 160 MB of partial sums). 1: one at a time."""
    seed: int = 42

    def rerank_config(self) -> RerankConfig:
        return RerankConfig(candidates=self.rerank_candidates, trees=self.rerank_trees,
                            min_customers=self.rerank_min_customers, seed=self.seed)

    def to_params(self) -> dict[str, Any]:
        """The settings that change a result (not ``score_threads``), flat, for MLflow and the run
        fingerprint."""
        return {f"rec.{k}": (str(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if k != "score_threads"}


@dataclass(frozen=True)
class BusinessRules:
    """What may be shown. Applied after scoring, before ranking."""

    exclude_returned: bool = True
    exclude_out_of_stock: bool = True
    exclude_bought: bool = False
    allow_replenishable: bool = True
    """With exclude_bought, still allow products people reorder."""
    categories: tuple[str, ...] | None = None
    """Only these categories (allow list)."""
    exclude_categories: tuple[str, ...] = ()


DISCOVERY_RULES = BusinessRules(exclude_bought=True, allow_replenishable=False)
"""Requests for products new to the customer (the new-items protocol; what the re-ranker learns)."""


@dataclass
class UserContext:
    """Interaction rows of a batch of customers, including live session events."""

    customer_ids: np.ndarray
    rows: np.ndarray  # training row or -1
    W: sp.csr_matrix
    P: sp.csr_matrix
    L: sp.csr_matrix
    R: sp.csr_matrix
    has_session: np.ndarray

    @property
    def known(self) -> np.ndarray:
        return (self.rows >= 0) | self.has_session


def build_context(data: InteractionData, customer_ids: Any, session: Session | None = None) -> UserContext:
    """Rows of ``data`` for ``customer_ids``; ``session`` adds live (product_id, event_type) pairs."""
    ids = np.asarray(pd.Index(customer_ids).astype(object))
    rows = data.users.rows(ids)
    n = len(ids)

    def take(M: sp.csr_matrix) -> sp.csr_matrix:
        if n == 1:  # the service's hot path: one customer, a cheap row slice (or an empty row)
            r = int(rows[0])
            return M[r:r + 1] if r >= 0 else sp.csr_matrix((1, M.shape[1]), dtype=M.dtype)
        safe = np.where(rows >= 0, rows, 0)
        out = M[safe]
        out = sp.diags((rows >= 0).astype(float)) @ out
        return sp.csr_matrix(out)

    ctx = UserContext(ids, rows, take(data.weights), take(data.purchases), take(data.last_purchase_days),
                      take(data.returned), np.zeros(n, bool))
    if session:
        _fold_in(data, ctx, session)
    return ctx


def _fold_in(data: InteractionData, ctx: UserContext, session: Session) -> None:
    """Add the live events of ``session`` to the rows of ``ctx`` (unknown products are ignored)."""
    shape = (len(ctx.customer_ids), len(data.items))
    r_, c_, v_, pr_, pc_ = [], [], [], [], []
    for i, cid in enumerate(ctx.customer_ids):
        for pid, etype in session.get(str(cid), []):
            j = data.items.rows([pid])[0]
            if j < 0:
                continue
            ctx.has_session[i] = True
            r_.append(i)
            c_.append(j)
            v_.append(EVENT_WEIGHT.get(etype, 0.25))
            if etype == "purchase":
                pr_.append(i)
                pc_.append(j)
    if r_:
        ctx.W = sp.csr_matrix(ctx.W + sp.csr_matrix((v_, (r_, c_)), shape=shape))
    if pr_:
        bought = sp.csr_matrix((np.ones(len(pr_)), (pr_, pc_)), shape=shape)
        ctx.P = sp.csr_matrix(ctx.P + bought)
        ctx.L = sp.csr_matrix(ctx.L.maximum(bought))


def rules_mask(data: InteractionData, ctx: UserContext, rules: BusinessRules) -> np.ndarray:
    """Boolean (customers x items): True where the item may be shown to the customer."""
    n, m = len(ctx.customer_ids), len(data.items)
    item_ok = np.ones(m, bool)
    if rules.exclude_out_of_stock:
        item_ok &= data.item_ok
    cats = data.item_category
    if rules.categories is not None:
        item_ok &= np.isin(cats, list(rules.categories))
    if rules.exclude_categories:
        item_ok &= ~np.isin(cats, list(rules.exclude_categories))
    mask = np.broadcast_to(item_ok, (n, m)).copy()
    if rules.exclude_returned:
        mask &= ~(ctx.R.toarray() > 0)
    if rules.exclude_bought:
        bought = ctx.P.toarray() > 0
        if rules.allow_replenishable:
            bought &= ~data.item_replenishable[None, :]
        mask &= ~bought
    return mask
