"""Uplift training data from offer_log, fitting the offer policy, and its evaluation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.codes import restrict, shop_codes
from features.customer import bought_between, customer_features, unify_categories
from features.customer_labels import customer_sample
from features.io import Shop
from features.schema import (
    ATTRIBUTE_PREFIX,
    CAMPAIGN_ID,
    CUSTOMER_ID,
    DISCOUNT_SHARE,
    GROUP,
    N_ORDERS,
    OFFER_ID,
    REDEEMED_AT,
    SENT_AT,
)
from models.cores import free_threads
from models.metrics import auc
from models.offers import (
    DISCOUNT_RESPONSIVE,
    OfferCatalogue,
    OfferPolicy,
    UpliftModel,
    check_attribute_rules,
    choose_audience,
    measure_uplift,
    parse_catalogue,
    qini,
    shared_control_weights,
)
from models.offers.uplift import NO_BASELINE, S_LEARNER
from training import frames
from training.progress import Steps

log = logging.getLogger(__name__)
MAX_ATTRIBUTE_SEGMENTS = 12
"""A categorical customer attribute with more values than this is not a segment of the measured uplift."""


def uplift_training_set(shop: Shop, before: pd.Timestamp | None = None, start: pd.Timestamp | None = None,
                        window_days: int = 14, max_rows: int | None = None, seed: int = 0
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per offer_log row: customer features at the send date, group and outcome in the window.

    Only rows whose whole window ends before ``before`` are used (no outcome peeks past it), and only rows
    sent at or after ``start``. ``max_rows``: training rows (``start`` None) past it are every row of a
    seeded sample of customers (:func:`training.frames.uplift_sample`, share ``max_rows`` / rows;
    held-out sends are never sampled), whose share is ``X.attrs["sample_share"]`` (1.0: all rows); the rows
    left out never have their features built. The outcomes of every send are computed once per shop and
    window, the features once per send date and customer (a train job asks three times: before the cutoff,
    after it, and all).
    """
    full = _uplift_outcomes(shop, window_days)
    if full is None:
        return pd.DataFrame(), pd.DataFrame()
    sent = pd.to_datetime(full[SENT_AT])
    keep = np.ones(len(full), bool)
    if before is not None:
        keep &= (sent + pd.Timedelta(days=window_days) <= before).to_numpy()
    if start is not None:
        keep &= (sent >= start).to_numpy()
    if not keep.any():
        return pd.DataFrame(), pd.DataFrame()
    at = np.flatnonzero(keep)
    sampled, share = frames.uplift_sample(full[CUSTOMER_ID].to_numpy()[at], start, max_rows, seed)
    if sampled is not None:
        keep[at[~sampled]] = False
    X = _uplift_features(shop, full, keep)
    X.attrs["sample_share"] = share
    return X, full[keep].reset_index(drop=True)


def _uplift_outcomes(shop: Shop, window_days: int) -> pd.DataFrame | None:
    """Every offer_log row (with a send time) ordered by send date (table order within a date): customer,
    offer, campaign, group, whether the customer bought in the window after the send (a customer sent one
    offer twice on one date counts as having bought after both when either window holds a purchase), and
    whether the offer was redeemed. One as-of join for all rows; cached per shop and window."""
    ol = shop.offer_log
    if ol is None or not len(ol):
        return None
    cache = shop.__dict__.setdefault("_uplift_rows", {})
    hit = cache.get(window_days)
    if hit is not None and hit[0] is ol and hit[1] is shop.orders:
        return hit[2]  # type: ignore[no-any-return]
    day = ol[SENT_AT].dt.floor("D")
    dated = day.notna().to_numpy()
    order = np.flatnonzero(dated)[np.argsort(day.to_numpy()[dated], kind="stable")]
    g = ol.iloc[order]
    sent = g[SENT_AT]
    bought = bought_between(shop, g[CUSTOMER_ID].to_numpy(), sent.to_numpy(),
                            (sent + pd.Timedelta(days=window_days)).to_numpy())
    bought &= g[CUSTOMER_ID].notna().to_numpy() & g[OFFER_ID].notna().to_numpy()
    key = pd.DataFrame({"day": day.to_numpy()[order], "c": g[CUSTOMER_ID].to_numpy(),
                        "o": g[OFFER_ID].to_numpy()})
    twice = key.duplicated(keep=False).to_numpy()
    if twice.any():
        k = key[twice]
        bought[twice] = pd.Series(bought[twice]).groupby([k["day"].to_numpy(), k["c"].to_numpy(),
                                                         k["o"].to_numpy()]).transform("any").to_numpy()
    out = pd.DataFrame({
        CUSTOMER_ID: g[CUSTOMER_ID].to_numpy(), OFFER_ID: g[OFFER_ID].to_numpy(),
        CAMPAIGN_ID: g[CAMPAIGN_ID].to_numpy() if CAMPAIGN_ID in g else g[OFFER_ID].to_numpy(),
        "treated": (g[GROUP] == "treatment").to_numpy(), "bought": bought,
        "redeemed": g[REDEEMED_AT].notna().to_numpy() if REDEEMED_AT in g else False,
        SENT_AT: sent.to_numpy()})
    cache[window_days] = (ol, shop.orders, out)
    return out


def _uplift_features(shop: Shop, rows: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """The customer features at the send date of the rows of ``rows`` (from :func:`_uplift_outcomes`) where
    ``keep``, in their order (index customer_id). Each send date's features are built for the customers
    asked and kept for later calls, which build only the customers not yet there."""
    tables = (shop.offer_log, shop.orders, shop.events, shop.customers, shop.products)
    hit = shop.__dict__.get("_uplift_features")
    if hit is None or not all(a is b for a, b in zip(hit[0], tables, strict=True)):
        hit = (tables, {})
        shop.__dict__["_uplift_features"] = hit
    built: dict[pd.Timestamp, pd.DataFrame] = hit[1]
    cust = rows[CUSTOMER_ID].to_numpy()[keep]
    day = pd.to_datetime(rows[SENT_AT]).dt.floor("D").to_numpy()[keep]
    days = pd.unique(day)  # in order: the rows are sorted by send date
    needs = {}
    for d in days:
        need = pd.Index(pd.unique(cust[day == d]))
        if d in built:
            need = need[~need.isin(built[d].index)]
        if len(need):
            needs[d] = need
    part = None
    if needs:  # the rows of the customers to build, read once for every send date
        c = shop_codes(shop)
        asked = np.zeros(len(c.customers), bool)
        for need in needs.values():
            codes = c.customer_codes(need)
            asked[codes[codes >= 0]] = True
        part = restrict(c, asked)
    xs = []
    for d in days:
        if d in needs:
            new = customer_features(shop, pd.Timestamp(d), customers=needs[d], codes=part)
            built[d] = new if d not in built else pd.concat([built[d], new])
        xs.append(built[d].loc[cust[day == d]].reset_index())
    return unify_categories(pd.concat(xs, ignore_index=True)).set_index(CUSTOMER_ID)


def measure_uplift_by_segment(X: pd.DataFrame, y: pd.DataFrame) -> pd.DataFrame:
    """Measured uplift (treatment vs control, 95% interval) per campaign: over all its customers, then per
    historical value tier and per discount affinity, each taken from the customer's features at the send date,
    then per value of each categorical or boolean customer attribute with at most
    :data:`MAX_ATTRIBUTE_SEGMENTS` values (``segment_kind`` ``attribute:<name>``).
    ``X``, ``y`` as from :func:`uplift_training_set` with ``group`` and ``converted`` added to ``y``."""
    from models.segments import value_tiers
    tier = np.empty(len(y), dtype=object)
    day = pd.to_datetime(y[SENT_AT]).dt.floor("D").to_numpy()
    for d in np.unique(day):  # tiers among the customers of each send date (net value grows over time)
        m = day == d
        tier[m] = value_tiers(X.iloc[np.flatnonzero(m)])
    y = y.assign(value_tier=tier,
                 discount_affinity=np.where(X[DISCOUNT_SHARE].fillna(0).to_numpy() >= DISCOUNT_RESPONSIVE,
                                            "discount-responsive", "other"))
    kinds = ["value_tier", "discount_affinity"]
    for col in X.columns:
        values = _attribute_segment(X[col]) if col.startswith(ATTRIBUTE_PREFIX) else None
        if values is not None:
            kind = f"attribute:{col[len(ATTRIBUTE_PREFIX):]}"
            y[kind] = values
            kinds.append(kind)
    parts = [measure_uplift(y, [CAMPAIGN_ID]).assign(segment_kind="all", segment="all")]
    for kind in kinds:
        parts.append(measure_uplift(y, [CAMPAIGN_ID, kind]).rename(columns={kind: "segment"})
                     .assign(segment_kind=kind))
    out = pd.concat(parts, ignore_index=True)
    first = [CAMPAIGN_ID, "segment_kind", "segment"]
    return out[[*first, *[c for c in out.columns if c not in first]]]


def _attribute_segment(s: pd.Series) -> np.ndarray | None:
    """An attribute feature column as segment labels (category values; a 0/1 column as true/false; missing
    as ``missing``), or None for a numeric column or one with more than :data:`MAX_ATTRIBUTE_SEGMENTS`
    values."""
    if isinstance(s.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(s):
        labels = s.astype(object)
    elif s.dropna().isin([0.0, 1.0]).all():
        labels = s.map({1.0: "true", 0.0: "false"}).astype(object)
    else:
        return None
    if labels.nunique() > MAX_ATTRIBUTE_SEGMENTS:
        return None
    return labels.where(labels.notna(), "missing").to_numpy(dtype=object)


def campaign_rows(by_segment: pd.DataFrame) -> pd.DataFrame:
    """The per-campaign rows (all customers) of :func:`measure_uplift_by_segment`'s table."""
    rows = by_segment[by_segment["segment_kind"] == "all"]
    return rows.drop(columns=["segment_kind", "segment"]).reset_index(drop=True)


def fit_uplift(shop: Shop, before: pd.Timestamp | None = None, seed: int = 42,
               learner: str = S_LEARNER, baseline: str = NO_BASELINE) -> UpliftModel | None:
    """The uplift model (``learner``: ``models.offers.uplift.LEARNERS``; ``baseline``:
    ``models.offers.uplift.BASELINES``, each row's campaign from the offer_log) on every offer_log row whose
    window ends before ``before``; None when the log has no treatment/control contrast."""
    X, y = frames.uplift(shop, before)
    if not len(y) or y["treated"].all() or (~y["treated"]).all():
        log.warning("offer_log has no treatment/control contrast: offers use the documented prior")
        return None
    from models.customer import CustomerModelConfig
    cfg = CustomerModelConfig(n_estimators=100, learning_rate=0.03, num_leaves=7, min_child_samples=200,
                              seed=seed)
    return UpliftModel(cfg, learner=learner, baseline=baseline).fit(X, y[OFFER_ID], y["treated"], y["bought"],
                                                                    y["redeemed"], campaigns=y[CAMPAIGN_ID])


@dataclass
class OfferEvaluation:
    report: dict[str, Any]
    tables: dict[str, pd.DataFrame]


def evaluate_offers(shop: Shop, cutoff: pd.Timestamp, churn: pd.Series | None = None, seed: int = 42,
                    truth_dir: str | Path | None = None, budget_share: float = 0.2,
                    learner: str = S_LEARNER, ceiling_max_rows: int | None = None) -> OfferEvaluation:
    """Uplift model quality on campaigns after ``cutoff`` (Qini/AUUC, redemption AUC vs past-redemption
    baseline), measured uplift per campaign, and - when the simulator's truth is available - the realised
    incremental margin of each policy at the same budget (``ceiling_max_rows``: see
    :func:`policy_benchmark`)."""
    if shop.offer_log is None or shop.offers is None:
        return OfferEvaluation({"skipped": "no offer_log or offers.yaml"}, {})
    with Steps("offers", 3, log) as steps:
        return _evaluate_offers(shop, cutoff, churn, seed, truth_dir, budget_share, steps, learner,
                                ceiling_max_rows)


def _evaluate_offers(shop: Shop, cutoff: pd.Timestamp, churn: pd.Series | None, seed: int,
                     truth_dir: str | Path | None, budget_share: float, steps: Steps,
                     learner: str = S_LEARNER, ceiling_max_rows: int | None = None) -> OfferEvaluation:
    report: dict[str, Any] = {}
    tables: dict[str, pd.DataFrame] = {}
    assert shop.offers is not None
    cat = parse_catalogue(shop.offers)
    check_attribute_rules(cat, shop.attributes)
    steps.next("fitting the uplift model on sends before the cutoff")
    model = fit_uplift(shop, cutoff, seed, learner)
    steps.next("measuring uplift on sends after the cutoff")
    Xh, yh = frames.uplift(shop, start=cutoff)
    if len(yh):
        conv = yh.assign(converted=yh["bought"].astype(int),
                         **{GROUP: np.where(yh["treated"], "treatment", "control")})
        by_segment = measure_uplift_by_segment(Xh, conv)
        tables["measured_uplift"] = campaign_rows(by_segment)
        tables["measured_uplift_by_segment"] = by_segment
        t = yh["treated"].to_numpy()
        past = Xh["redemption_rate"].fillna(0).to_numpy()
        report["redemption"] = {"baseline_past_redemptions": {"auc": auc(yh["redeemed"][t], past[t])}}
        if model is not None:
            pred = model.predict_pairs(Xh, yh[OFFER_ID].to_numpy())
            u, pr = pred["uplift"].to_numpy(), pred["p_redeem"].to_numpy()
            report["redemption"]["production"] = {"auc": auc(yh["redeemed"][t], pr[t])}
            report["uplift_model"] = qini(u, t, yh["bought"].to_numpy(),
                                          shared_control_weights(yh, CUSTOMER_ID, SENT_AT))
    steps.next("policy benchmark" if truth_dir is not None else "policy benchmark (no truth: skipped)")
    if truth_dir is not None and Path(truth_dir, "uplift.parquet").exists() and model is not None:
        report.update(policy_benchmark(shop, cat, model, churn, Path(truth_dir), seed, budget_share,
                                       ceiling_max_rows=ceiling_max_rows))
    return OfferEvaluation(report, tables)


def policy_benchmark(shop: Shop, cat: OfferCatalogue, model: UpliftModel, churn: pd.Series | None,
                     truth_dir: Path, seed: int, budget_share: float, channel: str = "sms",
                     ceiling_max_rows: int | None = None) -> dict[str, Any]:
    """Each policy spends the same budget on one channel; realised value = the simulator's true expected
    incremental margin of the (customer, offer) pairs it chose. The budget covers ``budget_share`` of the
    customers at that channel's cost, so choosing whom to contact matters. ``ceiling_max_rows``: the
    feature ceiling's models are fitted on the candidates of a seeded sample of customers past that many
    candidate rows (all rows are predicted; rows fitted on: ``feature_ceiling.fitted_rows``)."""
    truth = pd.read_parquet(truth_dir / "uplift.parquet").set_index([CUSTOMER_ID, OFFER_ID])
    now = shop.end
    X = customer_features(shop, now)
    X = X[X[N_ORDERS] > 0]
    churn = churn.reindex(X.index).fillna(0.5) if churn is not None else pd.Series(0.5, index=X.index)
    cand = OfferPolicy(cat, model).score(X, churn, now, channel=channel)
    if not len(cand):
        return {}
    send = float(cand["send_cost"].median())
    budget = max(budget_share * len(X) * send, send)
    tv = truth["expected_incremental_margin"]

    def realised(sel: pd.DataFrame) -> dict[str, float]:
        vals = tv.reindex(list(zip(sel[CUSTOMER_ID], sel[OFFER_ID], strict=True))).fillna(0.0).to_numpy()
        return {"incremental_margin": float(vals.sum()), "cost": float(sel["send_cost"].sum()),
                "contacts": int(len(sel))}

    def fill(order: pd.DataFrame) -> pd.DataFrame:
        return order[np.cumsum(order["send_cost"].to_numpy()) <= budget + 1e-9]

    out: dict[str, Any] = {"production": realised(choose_audience(cand, budget))}
    out["random"] = realised(fill(cand.sample(frac=1.0, random_state=seed).drop_duplicates(CUSTOMER_ID)))
    out["propensity"] = realised(fill(cand.sort_values("p_redeem", ascending=False, kind="stable")
                                      .drop_duplicates(CUSTOMER_ID)))
    blanket_offer = next((o.id for o in cat.offers if o.kind == "percent_off"), cat.offers[0].id)
    blanket = cand[cand[OFFER_ID] == blanket_offer]
    out["blanket"] = realised(fill(blanket.sample(frac=1.0, random_state=seed + 1)))
    orc = cand.merge(tv.rename("true_value").reset_index(), on=[CUSTOMER_ID, OFFER_ID], how="left")
    orc["expected_value"] = orc["true_value"].fillna(0.0)
    out["oracle"] = realised(choose_audience(orc, budget))
    value, fitted = _feature_ceiling(orc, X, seed, ceiling_max_rows)
    out["feature_ceiling"] = {**realised(choose_audience(orc.assign(expected_value=value), budget)),
                              "fitted_rows": fitted}
    return {"policies": out, "budget": budget, "channel": channel, "candidates": len(cand)}


def _feature_ceiling(cand: pd.DataFrame, X: pd.DataFrame, seed: int, max_rows: int | None = None
                     ) -> tuple[np.ndarray, int]:
    """What our customer features can tell about the true value at best: LightGBM fitted on the simulator's
    true expected incremental margin itself (not observable in a real shop), predicted out of fold (customers
    split in two halves). The oracle's share that this reaches bounds any policy built on these features.
    Past ``max_rows`` candidates, each half's model is fitted on the rows of a seeded sample of customers
    (:func:`features.customer_labels.customer_sample`). Returns the predictions and the rows fitted on."""
    import lightgbm as lgb

    from features.customer import CATEGORICAL
    F = X.loc[cand[CUSTOMER_ID].to_numpy()].reset_index(drop=True)
    for c in F.columns:
        if c in CATEGORICAL or not pd.api.types.is_numeric_dtype(F[c]):
            F[c] = F[c].astype("string").astype("category")
    F[OFFER_ID] = pd.Categorical(cand[OFFER_ID].astype(object).to_numpy())
    y = cand["expected_value"].to_numpy(float)
    half = pd.factorize(cand[CUSTOMER_ID])[0] % 2
    fit_on = np.ones(len(cand), bool)
    if max_rows is not None and len(cand) > max_rows:
        fit_on = customer_sample(pd.Index(cand[CUSTOMER_ID].to_numpy()), max_rows / len(cand), seed)
    pred = np.zeros(len(cand))
    for f in (0, 1):
        tr = (half != f) & fit_on
        m = lgb.LGBMRegressor(n_estimators=400, learning_rate=0.03, num_leaves=31, min_child_samples=50,
                              random_state=seed, verbose=-1, n_jobs=free_threads(0)).fit(F[tr], y[tr])
        pred[half == f] = m.predict(F[half == f])
    return pred, int(fit_on.sum())
