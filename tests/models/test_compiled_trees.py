"""A LightGBM model compiled to machine code (:mod:`models.compiled_trees`) predicts LightGBM's floats to the
last bit: on real rows, missing values, infinities, -0.0, values near zero and values on and beside every
split threshold; it is used only when it does (a linear-tree model, which lleaves compiles without its linear
parts, stays LightGBM's); a store keeps one machine code per model and gives it back; the re-ranker's
compiled predictor is never pickled."""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pytest

from models.compiled_trees import (
    ZERO_THRESHOLD,
    boundary_rows,
    compile_booster,
    exact_compiled,
    lightgbm_rows,
)
from models.recsys import RerankConfig, Reranker
from models.recsys.rerank import FEATURES as RERANK_FEATURES

FEATURES = len(RERANK_FEATURES)


def _rows(n: int, seed: int) -> np.ndarray:
    """float32 rows with what the re-ranker's features have: NaN, exact zeros, a few infinities."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[rng.random(X.shape) < 0.05] = 0.0
    X[:, 3] = np.round(X[:, 3] * 2)  # few values: many rows on a threshold's either side
    X[rng.random(n) < 0.01, 4] = np.inf
    return X


@pytest.fixture(scope="module")
def ranker() -> Reranker:
    """A small re-ranker on rows where the first two features decide."""
    X = _rows(4000, seed=1)
    y = ((np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1])) > 0.8).astype(int)
    cfg = RerankConfig(trees=20, leaves=15, min_child_samples=10, min_customers=10, seed=3)
    return Reranker(cfg).fit(X, y, np.full(40, 100))


def test_compiled_predictions_are_lightgbms_to_the_last_bit(ranker: Reranker) -> None:
    booster = ranker.booster_
    assert booster is not None
    compiled = exact_compiled(booster, _rows(500, seed=2))
    assert compiled is not None and compiled.source == "compiled"
    for X in (_rows(3000, seed=5), _rows(7, seed=6).astype(np.float64), boundary_rows(booster, _rows(50, 7))):
        want = booster.predict(X, num_threads=1)
        assert np.ptp(want) > 0  # the rows reach different leaves
        np.testing.assert_array_equal(compiled.predict(X), want)
    assert compiled.predict(np.zeros((0, FEATURES))).shape == (0,)
    with pytest.raises(ValueError, match=f"{FEATURES} features"):
        compiled.predict(np.zeros((3, FEATURES + 1)))


def test_boundary_rows_sit_on_and_beside_every_threshold(ranker: Reranker) -> None:
    booster = ranker.booster_
    assert booster is not None
    base = _rows(10, seed=8)
    rows = boundary_rows(booster, base)
    splits = [(t["split_feature"], t["threshold"]) for t in booster.trees_to_dataframe().dropna(
        subset=["split_feature"]).to_dict("records")]
    assert splits
    for name, threshold in splits[:50]:
        f = RERANK_FEATURES.index(name)
        assert np.any(rows[:, f] == threshold)
        assert np.any(rows[:, f] == np.nextafter(threshold, np.inf))
        assert np.any(rows[:, f] == float(np.float32(threshold)))
    for f in range(FEATURES):
        assert np.isnan(rows[:, f]).any() and np.isinf(rows[:, f]).any() and np.any(rows[:, f] == 1e-36)
    # one feature changed per row, the others from the base rows
    changed = (rows != base[np.arange(len(rows)) % len(base)]) & ~(np.isnan(rows) & np.isnan(
        base[np.arange(len(rows)) % len(base)]))
    assert changed.sum(axis=1).max() <= 1


def test_rows_are_read_as_lightgbm_reads_them() -> None:
    X = np.array([[1e-36, -1e-36, -0.0, np.nan, ZERO_THRESHOLD, float(np.nextafter(ZERO_THRESHOLD, 1.0))]],
                 dtype=np.float64)
    got = lightgbm_rows(X)
    assert got.dtype == np.float64 and got.flags.c_contiguous and got is not X
    assert got[0, :3].tolist() == [0.0, 0.0, 0.0] and not np.signbit(got[0, 2])
    assert np.isnan(got[0, 3]) and got[0, 4] == 0.0 and got[0, 5] == X[0, 5]


def test_a_model_compiled_unlike_lightgbm_is_not_used() -> None:
    """lleaves compiles a linear-tree model's splits without its linear models: its predictions differ,
    and the check keeps LightGBM."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(1500, 3))
    y = 2 * X[:, 0] + X[:, 1] + 0.1 * rng.normal(size=1500)
    booster = lgb.train({"objective": "regression", "linear_tree": True, "num_leaves": 7, "verbose": -1,
                         "seed": 1, "num_threads": 1}, lgb.Dataset(X, label=y), num_boost_round=10)
    assert not np.array_equal(compile_booster(booster).predict(X), booster.predict(X))  # what the check sees
    assert exact_compiled(booster, X) is None
    r = Reranker(RerankConfig())
    r.booster_ = booster
    assert r.compile(X) is False and r.compiled_ is None
    np.testing.assert_array_equal(r.predict(X[:100]), booster.predict(X[:100], num_threads=1))


class MemoryStore:
    """A :class:`models.compiled_trees.CodeStore` in a dict (serving's keeps files)."""

    def __init__(self) -> None:
        self.code: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.code.get(key)

    def put(self, key: str, code: bytes) -> None:
        self.code[key] = code


def test_a_multiclass_model_is_not_compiled() -> None:
    """Several outputs a row: the compiled forest would write past its one prediction a row."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(600, 3))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "num_leaves": 4, "verbose": -1,
                         "num_threads": 1}, lgb.Dataset(X, label=rng.integers(0, 3, 600)), num_boost_round=3)
    with pytest.raises(ValueError, match="3 models per iteration"):
        compile_booster(booster)
    assert exact_compiled(booster, X) is None


def test_the_store_keeps_one_code_per_model_and_gives_it_back(ranker: Reranker) -> None:
    booster = ranker.booster_
    assert booster is not None
    X, store = _rows(300, seed=9), MemoryStore()
    first = exact_compiled(booster, X, store)
    assert first is not None and first.source == "compiled" and len(store.code) == 1
    (key, code), = store.code.items()
    assert key.isalnum() and len(code) > 1000
    again = exact_compiled(booster, X, store)
    assert again is not None and again.source == "cache" and store.code == {key: code}
    np.testing.assert_array_equal(again.predict(X), booster.predict(X, num_threads=1))
    other = lgb.Booster(model_str=booster.model_to_string(num_iteration=10))  # another model: another key
    assert exact_compiled(other, X, store) is not None
    assert len(store.code) == 2


def test_the_reranker_predicts_compiled_and_pickles_without_it(ranker: Reranker) -> None:
    X = _rows(200, seed=10)
    r = pickle.loads(pickle.dumps(ranker))
    want = r.predict(X)
    assert r.compiled_ is None and r.compile(X[:50])
    assert r.compiled_ is not None
    np.testing.assert_array_equal(r.predict(X), want)
    loaded = pickle.loads(pickle.dumps(r))
    assert loaded.compiled_ is None and r.compiled_ is not None
    np.testing.assert_array_equal(loaded.predict(X), want)
