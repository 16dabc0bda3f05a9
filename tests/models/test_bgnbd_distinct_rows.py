"""BG/NBD's likelihood over the distinct (x, t_x, T) rows (issue #15: a million customers share far fewer
rows): the same number, to the bit, as over every customer, so the fit is the same."""

from __future__ import annotations

import numpy as np

from models.bgnbd import BetaGeoModel


def test_the_likelihood_over_distinct_rows_is_the_customers_to_the_bit() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    x = rng.poisson(1.5, n).astype(float)
    T = rng.integers(1, 52 * 7, n) / 7.0
    tx = np.where(x > 0, np.floor(rng.uniform(0, 1, n) * T * 7) / 7.0, 0.0)
    rows = np.ascontiguousarray(np.stack([x, tx, T], 1)).view(np.dtype((np.void, 24))).ravel()
    _, first, inv = np.unique(rows, return_index=True, return_inverse=True)
    assert len(first) < 0.9 * n
    for logp in (np.zeros(4), np.log([0.5, 4.0, 0.3, 2.0]), np.array([1.3, -0.7, 2.2, 0.1])):
        whole = BetaGeoModel._negll(logp, x, tx, T, 0.001)
        distinct = BetaGeoModel._negll(logp, x[first], tx[first], T[first], 0.001, inv.ravel())
        assert whole == distinct and np.isfinite(whole)
    m = BetaGeoModel(penalizer=0.001).fit(x, tx, T)
    assert m.params_ is not None and m.loglik_ == -BetaGeoModel._negll(
        np.log([m.params_[k] for k in ("r", "alpha", "a", "b")]), x, tx, T, 0.001) * n
