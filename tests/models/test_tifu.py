"""TIFU-KNN: known answers on tiny shops, the vector formula, neighbour search, rules, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from features.exceptions import ModelFitError, NotFittedError
from features.importers import is_non_product
from features.interactions import InteractionData, build_interactions
from features.io import Shop, load_shop
from models.recsys import BusinessRules, RecommenderConfig
from models.recsys.tifu import (
    Baskets,
    TifuConfig,
    TIFUKNNRecommender,
    _normalised,
    build_baskets,
    customer_vectors,
    exact_neighbours,
)

DAY = pd.Timestamp("2025-01-01")
CUTOFF = pd.Timestamp("2025-06-01")
OWN = TifuConfig(alpha=1.0, neighbours=2)


def tiny_shop(tmp: Path, baskets: dict[str, list[list[str]]], returns: tuple[tuple[str, str], ...] = (),
              out_of_stock: tuple[str, ...] = (), replenishable: tuple[str, ...] = ()) -> Shop:
    """A shop where customer ``c``'s ``n``-th basket (one order, day ``n``) holds the given products."""
    rows = [(f"{c}-{n}", c, p, DAY + pd.Timedelta(days=n), 1.0) for c, bs in baskets.items()
            for n, b in enumerate(bs) for p in b]
    rows += [(f"{c}-r", c, p, DAY + pd.Timedelta(days=100), -1.0) for c, p in returns]
    orders = pd.DataFrame(rows, columns=["order_id", "customer_id", "product_id", "ts", "quantity"])
    orders["unit_price"] = 1.0
    pids = sorted(set(orders["product_id"]))
    products = pd.DataFrame({"product_id": pids, "category": "c", "price": 1.0,
                             "in_stock": [p not in out_of_stock for p in pids],
                             "replenishable": [p in replenishable for p in pids]})
    orders.to_csv(tmp / "orders.csv", index=False)
    products.to_csv(tmp / "products.csv", index=False)
    return load_shop(tmp)


def fit(shop: Shop, tifu: TifuConfig = OWN) -> tuple[TIFUKNNRecommender, InteractionData]:
    data = build_interactions(shop, CUTOFF, non_product=is_non_product)
    return TIFUKNNRecommender(RecommenderConfig(seed=3), tifu).fit(data,
                                                                   baskets=build_baskets(shop, data)), data


def top(model: TIFUKNNRecommender, cid: str, k: int = 10, **kw: object) -> list[str]:
    return model.recommend([cid], k=k, **kw)["product_id"].tolist()  # type: ignore[arg-type]


def test_an_item_bought_in_every_basket_comes_first(tmp_path: Path) -> None:
    shop = tiny_shop(tmp_path, {"a": [["x", "p"], ["x", "q"], ["x", "r"], ["x", "s"], ["x", "t"]],
                                "b": [["y", "z"], ["y"]], "c": [["z"]]})
    model, _ = fit(shop)
    assert top(model, "a")[0] == "x"
    assert set(top(model, "a")) == {"x", "p", "q", "r", "s", "t"}  # alpha 1: only the customer's own items


def test_recent_baskets_outrank_older_and_more_frequent_ones_through_decay(tmp_path: Path) -> None:
    shop = tiny_shop(tmp_path, {"a": [["old"], ["old"], ["old"], ["new"], ["new"]], "b": [["old", "new"]],
                                "c": [["new"]]})
    assert top(fit(shop)[0], "a")[:2] == ["new", "old"]
    flat = TifuConfig(alpha=1.0, neighbours=2, within_decay=1.0, group_decay=1.0)
    assert top(fit(shop, flat)[0], "a")[:2] == ["old", "new"]  # without decay, frequency wins


def test_neighbours_items_appear_with_alpha_below_one(tmp_path: Path) -> None:
    shop = tiny_shop(tmp_path, {"a": [["x", "y"], ["x"]], "b": [["x", "y", "z"], ["x", "z"]],
                                "c": [["u", "v"]], "d": [["v", "w"]]})
    assert "z" not in top(fit(shop)[0], "a")
    model, data = fit(shop, TifuConfig(alpha=0.7, neighbours=1))
    assert data.users.ids[model.neighbours_[data.users.row("a"), 0]] == "b"
    recs = top(model, "a")
    assert "z" in recs and recs.index("z") > recs.index("x")  # own items first, the neighbour's after
    assert not {"u", "v", "w"} & set(recs)  # not from customers who are not neighbours


def test_customer_vectors_follow_the_reference_definition() -> None:
    """Against a direct loop over baskets of the authors' reference code: baskets split into ``groups``
    groups (later groups one basket longer), basket decay r_b^(n-1-i), group mean, group decay
    r_g^(groups-1-g), mean over the groups (with fewer baskets than groups, one group per basket)."""
    rng = np.random.default_rng(0)
    lengths = [1, 2, 6, 7, 8, 9, 13, 14, 20, 31]
    cfg = TifuConfig(groups=7, within_decay=0.8, group_decay=0.6)
    n_items = 12
    user = np.repeat(np.arange(len(lengths)), lengths)
    B = (rng.random((len(user), n_items)) < 0.3).astype(float)
    got = customer_vectors(Baskets(user, sp.csr_matrix(B), len(lengths)), len(lengths), cfg)
    for u, n in enumerate(lengths):
        hist = [B[user == u][i] * cfg.within_decay ** (n - 1 - i) for i in range(n)]
        if n < cfg.groups:
            groups = hist
        else:
            base, extra = divmod(n, cfg.groups)
            sizes = [base] * (cfg.groups - extra) + [base + 1] * extra
            edges = np.cumsum([0, *sizes])
            groups = [np.mean(hist[a:b], axis=0) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        want = sum(g * cfg.group_decay ** (cfg.groups - 1 - j) for j, g in enumerate(groups)) / len(groups)
        np.testing.assert_allclose(got[u].toarray().ravel(), want, rtol=1e-12, atol=1e-15)


def random_baskets(n_users: int = 120, n_items: int = 40, seed: int = 5) -> Baskets:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 9, n_users)
    user = np.repeat(np.arange(n_users), lengths)
    taste = rng.integers(0, 4, n_users)[user]  # four groups of customers with their own items
    p = np.where((np.arange(n_items)[None, :] % 4) == taste[:, None], 0.35, 0.03)
    return Baskets(user, sp.csr_matrix((rng.random((len(user), n_items)) < p).astype(float)), n_users)


@pytest.mark.parametrize("k", [1, 5, 30])
def test_exact_neighbours_are_the_k_most_cosine_similar_others(k: int) -> None:
    b = random_baskets()
    Un, ok = _normalised(customer_vectors(b, 120, TifuConfig()))
    nb = exact_neighbours(Un, ok, k, budget=500)  # several batches
    assert nb.shape == (120, k)
    assert (nb[~ok] == -1).all() and (nb[ok] >= 0).all()
    D = Un.toarray().astype(np.float64)
    S = D @ D.T
    for u in np.flatnonzero(ok):
        assert u not in nb[u] and ok[nb[u]].all() and len(set(nb[u])) == k
        others = np.setdiff1d(np.flatnonzero(ok), [u])
        kth = np.sort(S[u, others])[::-1][k - 1]
        assert (S[u, nb[u]] >= kth - 1e-6).all()
        assert (np.diff(S[u, nb[u]]) <= 1e-6).all()  # best first


def test_neighbours_share_an_item_and_fewer_are_a_prefix_of_more_even_with_ties() -> None:
    # customers 0-5 bought item 0 only (all tied), 6-9 item 1 only: nothing in common across the two groups
    items = sp.csr_matrix(([1.0] * 10, ([*range(10)], [0] * 6 + [1] * 4)), shape=(10, 2))
    Un, ok = _normalised(customer_vectors(Baskets(np.arange(10), items, 10), 10, TifuConfig()))
    full = exact_neighbours(Un, ok, 8)
    assert full[0].tolist() == [1, 2, 3, 4, 5, -1, -1, -1]  # ties by position; none of the other group
    assert full[9].tolist() == [6, 7, 8, -1, -1, -1, -1, -1]
    for k in (1, 2, 3, 5):
        np.testing.assert_array_equal(exact_neighbours(Un, ok, k), full[:, :k])


def test_approximate_search_finds_mostly_the_exact_neighbours() -> None:
    b = random_baskets(n_users=600, n_items=40)
    cfg = TifuConfig(embedding_dim=39, cluster_size=100, probe=3)
    Un, ok = _normalised(customer_vectors(b, 600, cfg))
    from models.recsys.tifu import approximate_neighbours
    approx, exact = approximate_neighbours(Un, ok, 10, cfg, seed=1), exact_neighbours(Un, ok, 10)
    assert (approx[~ok] == -1).all()
    rows = np.flatnonzero(ok)
    overlap = np.mean([len(set(approx[u]) & set(exact[u])) / 10 for u in rows])
    assert overlap >= 0.8
    assert all(u not in approx[u] for u in rows)


def test_k_larger_than_the_shop_uses_every_other_customer(tmp_path: Path) -> None:
    shop = tiny_shop(tmp_path, {"a": [["x"]], "b": [["y"]], "c": [["x", "z"]]})
    model, _ = fit(shop, TifuConfig(neighbours=300))
    assert model.neighbours_.shape == (3, 2)


def test_rules_filter_seen_returned_and_out_of_stock_items(tmp_path: Path) -> None:
    shop = tiny_shop(tmp_path, {"a": [["x", "y", "s"], ["x", "r"]], "b": [["x", "y", "z", "s", "o"]],
                                "c": [["z", "o"]]},
                     returns=(("a", "y"),), out_of_stock=("o",), replenishable=("s",))
    model, _ = fit(shop, TifuConfig(alpha=0.5, neighbours=2))
    assert set(top(model, "a")) == {"x", "r", "s", "z"}  # returned y and out-of-stock o never shown
    assert set(top(model, "a", exclude_bought=True)) == {"z", "s"}  # replenishable s may come back
    assert top(model, "a", rules=BusinessRules(exclude_bought=True, allow_replenishable=False)) == ["z"]
    assert set(top(model, "a", rules=BusinessRules(exclude_returned=False, exclude_out_of_stock=False))) == {
        "x", "y", "r", "s", "z", "o"}


def test_k_save_load_and_unknown_customers(tmp_path: Path) -> None:
    shop = tiny_shop(tmp_path,
                     {f"c{i}": [[f"p{(i + j) % 9}", f"p{(2 * i + j) % 9}"] for j in range(i % 4 + 1)]
                                for i in range(30)} | {"ret": []}, returns=(("ret", "p1"),))
    model, _ = fit(shop, TifuConfig(neighbours=5))
    users = [f"c{i}" for i in range(30)]
    recs = model.recommend(users + ["ret", "nobody"], k=3)
    assert recs.groupby("customer_id").size().max() == 3
    assert not {"ret", "nobody"} & set(recs["customer_id"])  # no basket, or unknown: no rows
    model.save(tmp_path / "tifu.pkl")
    again = TIFUKNNRecommender.load(tmp_path / "tifu.pkl")
    pd.testing.assert_frame_equal(recs, again.recommend(users + ["ret", "nobody"], k=3))
    pd.testing.assert_frame_equal(model.recommend(users, k=4, exclude_bought=True),
                                  again.recommend(users, k=4, exclude_bought=True))


def test_clear_errors_before_fit_and_without_baskets(tmp_path: Path) -> None:
    shop = tiny_shop(tmp_path, {"a": [["x"]], "b": [["y"]]})
    data = build_interactions(shop, CUTOFF)
    with pytest.raises(NotFittedError, match="call fit"):
        TIFUKNNRecommender().recommend(["a"], k=3)
    with pytest.raises(ModelFitError, match="build_baskets"):
        TIFUKNNRecommender().fit(data)
    other = build_interactions(shop, pd.Timestamp("2025-01-02"))  # another cutoff, fewer customers
    with pytest.raises(ModelFitError, match="do not match"):
        TIFUKNNRecommender().fit(data, baskets=build_baskets(shop, other))


def test_on_a_simulated_shop_k_and_ranking_invariants_hold(small_shop) -> None:
    data = build_interactions(small_shop, pd.Timestamp("2025-11-15"), non_product=is_non_product)
    model = TIFUKNNRecommender(tifu=TifuConfig(neighbours=50)).fit(data,
                                                                   baskets=build_baskets(small_shop, data))
    users = list(data.users.ids[:80])
    recs = model.recommend(users, k=7, exclude_bought=True)
    assert len(recs) and recs.groupby("customer_id").size().max() <= 7
    for _, g in recs.groupby("customer_id"):
        assert g["product_id"].is_unique and list(g["rank"]) == list(range(1, len(g) + 1))
        assert (np.diff(g["score"].to_numpy()) <= 1e-12).all()


@pytest.mark.parametrize("search", ["exact", "approximate"])
def test_a_narrowed_model_is_the_model_fitted_with_fewer_neighbours_and_another_alpha(small_shop, search: str
                                                                                      ) -> None:
    """Tuning tries fewer neighbours and other weights on one fit, and the blend then takes that fit: it
    must be the very model a fit with those settings gives (same neighbours, same scores)."""
    data = build_interactions(small_shop, pd.Timestamp("2025-11-15"), non_product=is_non_product)
    baskets = build_baskets(small_shop, data)
    extra = {"search": search, "cluster_size": 60, "embedding_dim": 16}
    wide = TIFUKNNRecommender(RecommenderConfig(seed=3),
                              TifuConfig(neighbours=80, alpha=0.7, **extra)).fit(data, baskets=baskets)
    assert not wide.widened_
    cfg = RecommenderConfig(seed=3, tifu=(("neighbours", 20), ("alpha", 0.3), *extra.items()))
    narrow = wide.narrowed(cfg, TifuConfig(**dict(cfg.tifu or ())))
    fresh = TIFUKNNRecommender(cfg).fit(data, baskets=baskets)
    assert narrow is not None and narrow.neighbours_.shape[1] == 20
    np.testing.assert_array_equal(narrow.neighbours_, fresh.neighbours_)
    users = list(data.users.ids[:300])
    pd.testing.assert_frame_equal(narrow.recommend(users, k=10), fresh.recommend(users, k=10),
                                  check_exact=True)
    assert wide.neighbours_.shape[1] == 80 and wide.tifu.alpha == 0.7  # the tuning's model is unchanged
    # not the same model: other decay settings, more neighbours than fitted, another seed
    assert wide.narrowed(cfg, TifuConfig(neighbours=20, groups=3, **extra)) is None  # type: ignore[arg-type]
    assert wide.narrowed(cfg, TifuConfig(neighbours=81, **extra)) is None  # type: ignore[arg-type]
    assert wide.narrowed(RecommenderConfig(seed=4, tifu=cfg.tifu), TifuConfig(**dict(cfg.tifu or ()))) is None


def test_top_k_neighbours_follow_the_reference_order_with_many_ties() -> None:
    """``_top_k``: the k highest similarities, best first, ties by column position, -1 where not positive
    (checked against a plain sort on tie-heavy matrices: rows with a positive k-th, zero k-th, -inf)."""
    from models.recsys.tifu import _top_k
    rng = np.random.default_rng(0)
    for t in range(200):
        n, m = int(rng.integers(1, 30)), int(rng.integers(2, 50))
        S = (rng.integers(0, 4, (n, m)) / 3 if t % 2 else rng.random((n, m)) * (rng.random((n, m)) < 0.3))
        S = S.astype(np.float32)
        S[rng.random((n, m)) < 0.05] = -np.inf
        k, cols = int(rng.integers(1, m)), rng.permutation(1000)[:m]
        order = np.lexsort((np.broadcast_to(np.arange(m), S.shape), -S), axis=1)[:, :k]
        want = np.where(np.take_along_axis(S, order, axis=1) > 0, cols[order], -1)
        np.testing.assert_array_equal(_top_k(S, k, cols), want)


def test_neighbour_searches_do_not_depend_on_how_many_rows_are_compared_at_once() -> None:
    """The searches compare customers in batches sized by a memory budget: any budget, the same neighbours."""
    from models.recsys.tifu import approximate_neighbours
    b = random_baskets(n_users=600, n_items=40)
    cfg = TifuConfig(embedding_dim=39, cluster_size=100, probe=3)
    Un, ok = _normalised(customer_vectors(b, 600, cfg))
    np.testing.assert_array_equal(exact_neighbours(Un, ok, 10, budget=3_000), exact_neighbours(Un, ok, 10))
    np.testing.assert_array_equal(approximate_neighbours(Un, ok, 10, cfg, seed=1, budget=5_000),
                                  approximate_neighbours(Un, ok, 10, cfg, seed=1))
