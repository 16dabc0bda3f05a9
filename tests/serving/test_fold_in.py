"""A live session folded in (:mod:`serving.fold_in`) gives exactly the engine's full computation: the same
items, ranks, reasons and scores, component scores equal to the float, for every rule set, with views, cart
adds and removals, purchases and unknown products in the session; the discovery re-ranker too, with
LightGBM's predictions and compiled to machine code. Both ways of folding in are checked: the compiled
kernels (:mod:`serving.fold_in_kernels`, numba) and the numpy code they replace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from features.schema import PRODUCT_ID, RANK, SCORE
from models.recsys import BlendRecommender, BusinessRules, RecommendationEngine, TrendingRecommender
from models.recsys.context import build_context
from serving import fold_in, fold_in_kernels
from tests.models.recsys_data import CFG, board_reranker, checker_board, shop_data, shop_reranker
from tests.serving.test_candidate_cache import BOARD_CFG, rulesets

KINDS = ["view", "view", "add_to_cart", "remove_from_cart", "wishlist", "purchase", "something_new"]


def sessions(data, customers, seed: int) -> list[list[tuple[str, str]]]:
    """A random session per customer: 1-8 events, some on products the models do not know."""
    rng = np.random.default_rng(seed)
    items = data.items.ids
    out = []
    for _ in customers:
        n = int(rng.integers(1, 9))
        out.append([(str(items[rng.integers(len(items))]) if rng.random() > 0.1 else "NO-SUCH-PRODUCT",
                     KINDS[int(rng.integers(len(KINDS)))]) for _ in range(n)])
    return out


def assert_folded_like_full(engine: RecommendationEngine, customers, rules_list, seed: int = 0,
                            ks=(10,)) -> int:
    """Every folded-in answer equals ``recommend_one``'s; returns how many were folded in (not None)."""
    folded = 0
    for cid, sess in zip(customers, sessions(engine.data, customers, seed), strict=True):
        for rules in rules_list:
            for k in ks:
                want = engine.recommend_one(cid, k, rules, session=sess)
                got = fold_in.recommend(engine, cid, k, rules, sess)
                if got is None:
                    continue
                folded += 1
                assert got.source == want.source == "model"
                assert [(i[PRODUCT_ID], i[RANK], i["reason"]) for i in got.items] == \
                    [(i[PRODUCT_ID], i[RANK], i["reason"]) for i in want.items], (cid, sess, rules, k)
                assert [i[SCORE] for i in got.items] == [i[SCORE] for i in want.items]
    return folded


def assert_folds_in_like_full(engine: RecommendationEngine, seed: int) -> None:
    """The engine folds in every other customer of its data with the full computation's component scores and
    answers (two rule sets), and nearly every one of them without falling back."""
    assert fold_in.for_engine(engine).usable
    customers = list(engine.data.users.ids[::2])
    assert_same_components(engine, customers)
    n = assert_folded_like_full(engine, customers, rulesets(["a", "b"])[:2], seed=seed)
    assert n >= 0.9 * len(customers) * 2


def assert_same_components(engine: RecommendationEngine, customers, seed: int = 1) -> None:
    """The folded component scores equal the model's, float for float."""
    f = fold_in.for_engine(engine)
    for cid, sess in zip(customers, sessions(engine.data, customers, seed), strict=True):
        ctx = build_context(engine.data, [cid], {cid: sess})
        want = engine.model.component_scores(ctx)
        mine, _ = f.context(int(engine.data.users.row(cid)), sess)
        got = f.component_scores(mine, set(want))
        assert got is not None and set(got) == set(want)
        for n in want:
            np.testing.assert_array_equal(got[n], want[n], err_msg=f"{n} {cid} {sess}")
        for a, b in ((mine.W, ctx.W), (mine.P, ctx.P), (mine.L, ctx.L)):
            np.testing.assert_array_equal(a.toarray(), b.toarray())


@pytest.fixture(scope="module")
def board_engine():
    data = checker_board()
    blend = BlendRecommender(BOARD_CFG).fit(data)
    return RecommendationEngine(blend, TrendingRecommender(BOARD_CFG).fit(data)).precompute(n=10)


@contextmanager
def folding(engine: RecommendationEngine, compiled: bool) -> Iterator[fold_in.FoldIn]:
    """The engine's fold-in with its compiled kernels (as serving uses it where numba is installed) or its
    numpy code."""
    f = fold_in.for_engine(engine)
    before = f.compiled
    f.compiled = compiled
    try:
        yield f
    finally:
        f.compiled = before


BOTH = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])


def test_numba_is_there_and_the_board_uses_it(board_engine) -> None:
    """The compiled kernels are what serving folds in with (numba is a dependency), and ALS's step is the
    compiled one once checked against implicit's on the model's rows."""
    assert fold_in_kernels.AVAILABLE
    f = fold_in.for_engine(board_engine)
    assert f.compiled
    cid = board_engine.data.users.ids[0]
    assert f.recommend(cid, 5, BusinessRules(), [(str(board_engine.data.items.ids[3]), "view")]) is not None
    assert f.direct_als is True and f.als_checked and f.als_compiled


@BOTH
def test_board_sessions_fold_in_exactly(board_engine, compiled: bool) -> None:
    data = board_engine.data
    customers = list(data.users.ids[::2])
    with folding(board_engine, compiled) as f:
        # the reasons come from the item-to-item terms (serving.fold_in_reasons), not the model's function
        assert f.terms_reasons
        assert_same_components(board_engine, customers)
        n = assert_folded_like_full(board_engine, customers, rulesets(["a", "b"]), ks=(1, 10))
    assert n >= 0.9 * len(customers) * 6 * 2  # folded in, not handed back to the full computation


@BOTH
def test_board_reranked_discovery_folds_in_exactly(board_engine, compiled: bool) -> None:
    data = board_engine.data
    blend = BlendRecommender(BOARD_CFG).fit(data).attach_reranker(board_reranker(board_engine.model,
                                                                                 BOARD_CFG.seed))
    engine = RecommendationEngine(blend, board_engine.trending)
    customers = list(data.users.ids[::3])
    with folding(engine, compiled):
        n = assert_folded_like_full(engine, customers, [BusinessRules(exclude_bought=True)], seed=4)
    assert n >= 0.9 * len(customers)


def test_compiled_top_k_is_the_models_or_says_it_is_not() -> None:
    """The compiled top k gives :func:`models.metrics.top_k`'s finite columns, or says the k-th score is tied
    with one left out (where ``np.argpartition`` picks), and its min-max scaling gives ``normalise``'s
    floats."""
    from models.metrics import top_k
    from models.recsys.blend import normalise

    rng = np.random.default_rng(5)
    exact = 0
    for _ in range(300):
        s = rng.integers(0, 50, 60).astype(float) / 7
        s[rng.random(60) < 0.2] = -np.inf
        for k in (1, 5, 10, 60, 70):
            got, ok = fold_in_kernels.top_k(s, min(k, len(s)))
            want = top_k(s, k)
            want = want[np.isfinite(s[want])]
            if ok:
                exact += 1
                assert got.tolist() == want.tolist()
            else:  # a tie at the k-th score, with a column left out
                assert (s == s[got[-1]]).sum() > (s[got] == s[got[-1]]).sum()
        finite = np.where(np.isfinite(s), s, 0.0)
        out = np.zeros(len(s))
        assert fold_in_kernels.normalise_row(finite, out)
        np.testing.assert_array_equal(out, normalise(finite[None, :])[0])
        assert not fold_in_kernels.normalise_row(s, out)  # -inf: the model's own handling decides
    assert exact > 1000


def answers(engine: RecommendationEngine, customers, rules: BusinessRules, seed: int) -> list:
    """(full computation, fold-in) answers of each customer with a random session."""
    return [(engine.recommend_one(c, 10, rules, session=sess), fold_in.recommend(engine, c, 10, rules, sess))
            for c, sess in zip(customers, sessions(engine.data, customers, seed), strict=True)]


def test_the_compiled_reranker_gives_lightgbms_discovery_answers(board_engine) -> None:
    """The re-ranker compiled to machine code (as serving does at load) answers discovery requests, in full
    and folded in, with exactly the items, scores, ranks and reasons of LightGBM's predictions."""
    data = board_engine.data
    blend = BlendRecommender(BOARD_CFG).fit(data).attach_reranker(board_reranker(board_engine.model,
                                                                                 BOARD_CFG.seed))
    engine = RecommendationEngine(blend, board_engine.trending)
    customers, rules = list(data.users.ids[::2]), BusinessRules(exclude_bought=True)
    want = answers(engine, customers, rules, seed=12)
    assert blend.reranker_ is not None and blend.reranker_.compiled_ is None
    assert blend.compile_reranker()
    assert blend.reranker_.compiled_ is not None  # the compiled forest predicts from now on
    got = answers(engine, customers, rules, seed=12)
    assert got == want
    assert sum(f is not None for _, f in got) >= 0.9 * len(customers)


def test_a_blend_weighing_rising_products_folds_in_exactly(board_engine) -> None:
    """Rising products (one row for everyone, as popularity) are folded in, not handed back to the full
    computation: a blend that weighs them (chosen by tuning on Online Retail and at 100,000 customers)."""
    import copy
    from dataclasses import replace

    from models.recsys.popularity import RisingRecommender
    data = copy.copy(board_engine.data)  # the module's engine keeps its data as it was
    rng = np.random.default_rng(11)  # the board has no recent window: some products rise, some fall
    data.recent_item_weight = rng.integers(0, 30, len(data.items)).astype(float)
    data.prior_item_weight = rng.integers(0, 30, len(data.items)).astype(float)
    cfg = replace(BOARD_CFG, blend_weights=(*BOARD_CFG.blend_weights, ("rising", 0.5)))
    engine = RecommendationEngine(BlendRecommender(cfg).fit(data), board_engine.trending)
    rising = engine.model.components_["rising"]
    assert isinstance(rising, RisingRecommender) and np.ptp(rising.rise_) > 0
    assert_folds_in_like_full(engine, seed=8)


def test_a_blend_weighing_tifu_knn_folds_in_exactly(board_engine) -> None:
    """TIFU-KNN (weighed by the blend chosen on Online Retail) is folded in: the same answers and component
    scores as the full computation, which scores it from the stored baskets whatever the session."""
    from dataclasses import replace

    from models.recsys.tifu import TIFUKNNRecommender
    from tests.models.recsys_data import board_baskets

    data = board_engine.data
    cfg = replace(BOARD_CFG, blend_weights=(*BOARD_CFG.blend_weights, ("tifu", 1.0)))
    engine = RecommendationEngine(BlendRecommender(cfg).fit(data, baskets=board_baskets(data)),
                                  board_engine.trending)
    assert isinstance(engine.model.components_["tifu"], TIFUKNNRecommender)
    assert_folds_in_like_full(engine, seed=9)


def test_what_cannot_be_folded_is_handed_back(board_engine) -> None:
    assert fold_in.recommend(board_engine, "never-seen", 5, BusinessRules(), [("p01", "view")]) is None
    cid = board_engine.data.users.ids[0]
    got = fold_in.recommend(board_engine, cid, 5, BusinessRules(), [])
    assert got == board_engine.recommend_one(cid, 5)  # no session: the stored rows alone


@pytest.mark.slow
def test_shop_sessions_fold_in_exactly(small_shop) -> None:
    """A few hundred customers of the small simulated shop, every rule set, with and without the
    discovery re-ranker."""
    data = shop_data(small_shop)
    blend = BlendRecommender(CFG).fit(data)
    engine = RecommendationEngine(blend, TrendingRecommender(CFG).fit(data))
    customers = list(data.users.ids[:: max(1, len(data.users) // 300)][:300])
    assert_same_components(engine, customers[:60])
    # the shortcuts were taken (scipy's checks skipped, implicit's step called directly), not their fallbacks
    assert fold_in._BARE_OK and fold_in.for_engine(engine).direct_als is True
    assert fold_in.for_engine(engine).terms_reasons
    cats = small_shop.products["category"].value_counts().index[:2].tolist()
    n = assert_folded_like_full(engine, customers, rulesets(cats)[:2], seed=5)
    assert n >= 0.9 * len(customers) * 2
    f = fold_in.for_engine(engine)
    assert f.compiled and f.als_compiled  # the compiled kernels answered, ALS's step included
    with folding(engine, False):  # and the numpy code they replace gives the same answers
        assert_folded_like_full(engine, customers[:100], rulesets(cats)[:2], seed=5)
    assert_folded_like_full(engine, customers[:50], rulesets(cats)[2:], seed=6)
    rr = RecommendationEngine(BlendRecommender(CFG).fit(data).attach_reranker(shop_reranker(small_shop)),
                              engine.trending)
    n = assert_folded_like_full(rr, customers[:100], [BusinessRules(exclude_bought=True)], seed=7)
    assert n >= 90
    # the re-ranker compiled to machine code, as serving does at load: LightGBM's answers to the last float
    discovery = BusinessRules(exclude_bought=True)
    want = answers(rr, customers[:100], discovery, seed=8)
    assert rr.model.compile_reranker() and rr.model.reranker_.compiled_ is not None
    assert answers(rr, customers[:100], discovery, seed=8) == want


def test_one_rows_top_k_and_min_max_are_the_models() -> None:
    """The fold-in's one-row top k orders ties as :func:`models.metrics.top_k` (by column), and its min-max
    scaling gives :func:`models.recsys.blend.normalise`'s floats, a non-finite score included."""
    from models.metrics import top_k
    from models.recsys.blend import normalise

    rng = np.random.default_rng(3)
    for _ in range(200):
        s = rng.integers(0, 5, 40).astype(float) / 3  # many ties
        s[rng.random(40) < 0.3] = -np.inf
        for k in (1, 7, 40, 50):
            assert fold_in._top_k(s, k).tolist() == top_k(s, k).tolist()
        for row in (s, np.where(np.isfinite(s), s, 0.0)):
            want = normalise(row[None, :])[0]
            c = np.flatnonzero(np.isfinite(row))
            got_cols, got = fold_in._normalised(c if len(c) < len(row) else None,
                                                row[c] if len(c) < len(row) else row, len(row))
            full = np.zeros(len(row))
            full[slice(None) if got_cols is None else got_cols] = got
            np.testing.assert_array_equal(full, want)
    odd = np.array([1.0, np.inf, 2.0])  # an infinite score: the model's own normalise decides
    got_cols, got = fold_in._normalised(np.array([0, 1, 2]), odd, 3)
    assert got_cols is None
    np.testing.assert_array_equal(got, normalise(odd[None, :])[0])


def test_compiled_session_row_is_the_canonical_sum() -> None:
    """``plus_row`` gives ``fold_in._plus``'s row (scipy's canonical sum: sorted columns, zero results
    dropped), with session weights that cancel a stored one, land on new columns or on the first and last."""
    import scipy.sparse as sp

    rng = np.random.default_rng(9)
    for _ in range(300):
        m = 40
        cols = np.sort(rng.choice(m, int(rng.integers(0, 12)), replace=False)).astype(np.int32)
        vals = rng.integers(-2, 3, len(cols)).astype(float) / 4
        row = sp.csr_matrix((vals, cols, np.array([0, len(cols)], np.int32)), shape=(1, m))
        add_cols = rng.choice(m, int(rng.integers(1, 6)), replace=False)
        add = {int(c): float(rng.integers(-2, 3)) / 4 for c in add_cols}
        want = fold_in._plus(row, add, m)
        got_i, got_d = fold_in_kernels.plus_row(cols, vals, np.array(list(add), np.int64),
                                                np.array(list(add.values())))
        assert got_i.tolist() == want.indices.tolist()
        np.testing.assert_array_equal(got_d, want.data)
        assert 0.0 not in got_d.tolist()
