"""RFM scores and value / attrition / potential segments, named and described in plain words."""

from __future__ import annotations

import numpy as np
import pandas as pd

SEGMENTS: dict[str, str] = {
    "champions": "High net value and likely to stay: protect, reward, do not discount.",
    "at_risk_high_value": "High net value but likely to leave: the first customers to win back.",
    "rising": "Modest history but predicted to spend more than before: nurture.",
    "loyal_core": "Steady mid-value customers with low churn risk.",
    "needs_attention": "Mid-value customers whose churn risk is rising.",
    "low_value_active": "Low net value but still buying.",
    "hibernating": "Low value and likely gone: contact only cheaply, if at all.",
    "net_negative": "Returns, discounts and cost exceed what they bring: no incentives.",
    "prospects": "Known customers with no purchase yet.",
}


def _quintile(s: pd.Series, ascending: bool = True) -> pd.Series:
    r = s.rank(method="first", ascending=ascending)
    return (np.ceil(r / len(s) * 5)).clip(1, 5).astype(int) if len(s) else s.astype(int)


def rfm_scores(X: pd.DataFrame) -> pd.DataFrame:
    """Quintile scores 1..5: R (recent = 5), F (orders), M (net revenue) for customers with purchases."""
    b = X[X["n_orders"] > 0]
    return pd.DataFrame({"R": _quintile(-b["recency_days"]), "F": _quintile(b["n_orders"]),
                         "M": _quintile(b["net_revenue"])}, index=b.index)


def value_tiers(X: pd.DataFrame) -> np.ndarray:
    """Historical net value tier per customer: ``high`` (top 20% of positive net value: margin where unit
    costs are known, else net revenue), ``mid`` (top half), ``low``, ``negative`` (returned or discounted away
    what they bought) or ``none`` (no purchase). Needs only the features, so it can be taken at any date."""
    net = X["net_margin"].where(X["net_margin"].notna(),
                                X["net_revenue"]) if "net_margin" in X else X["net_revenue"]
    net = net.fillna(0.0)
    buyers = X["n_orders"] > 0
    pos = net[buyers & (net > 0)]
    hi, mid = (pos.quantile(0.8), pos.quantile(0.5)) if len(pos) else (np.inf, np.inf)
    return np.select([~buyers, net <= 0, net >= hi, net >= mid], ["none", "negative", "high", "mid"], "low")


def segment_customers(X: pd.DataFrame, churn: pd.Series, predicted_value: pd.Series, horizon_days: int = 90,
                      high_risk: float = 0.6, low_risk: float = 0.3) -> pd.DataFrame:
    """Value tier (historical net value), attrition tier (churn risk), potential (predicted vs past) and a
    named segment per customer."""
    value_tier = value_tiers(X)
    c = churn.reindex(X.index)
    attrition = np.select([c.isna(), c >= high_risk, c >= low_risk], ["unknown", "high", "medium"], "low")
    past_rate = X["net_revenue"] / np.maximum(X["tenure_days"].fillna(0), horizon_days) * horizon_days
    ratio = predicted_value.reindex(X.index) / past_rate.where(past_rate > 0)
    potential = np.select([ratio.isna(), ratio >= 1.2, ratio <= 0.8], ["unknown", "growing",
                                                                       "declining"], "stable")
    seg = np.select(
        [value_tier == "none", value_tier == "negative",
         (value_tier == "high") & (attrition != "high"), (value_tier == "high") & (attrition == "high"),
         (potential == "growing") & (attrition != "high"),
         (value_tier == "mid") & (attrition == "low"), (value_tier == "mid"),
         (attrition == "high")],
        ["prospects", "net_negative", "champions", "at_risk_high_value", "rising",
         "loyal_core", "needs_attention", "hibernating"], "low_value_active")
    return pd.DataFrame({"value_tier": value_tier, "attrition_tier": attrition, "potential": potential,
                         "segment": seg}, index=X.index)


def segment_summary(segments: pd.DataFrame, X: pd.DataFrame) -> pd.DataFrame:
    """Size, share of customers and share of net revenue per segment, with the description.
    Also shows how concentrated revenue is (the top 10% of customers' share), in ``attrs``."""
    net = X["net_revenue"].reindex(segments.index).fillna(0.0)
    total = net.clip(lower=0).sum()
    df = pd.DataFrame({"segment": segments["segment"], "net": net})
    out = df.groupby("segment").agg(customers=("net", "size"), net_revenue=("net", "sum"))
    out["share_of_customers"] = out["customers"] / len(df)
    out["share_of_revenue"] = out["net_revenue"] / total if total else np.nan
    out["description"] = [SEGMENTS[s] for s in out.index]
    out = out.sort_values("net_revenue", ascending=False).reset_index()
    srt = net.sort_values(ascending=False)
    k = max(1, len(srt) // 10)
    out.attrs["top10pct_revenue_share"] = (
        float(srt.iloc[:k].clip(lower=0).sum() / total) if total else float("nan")
    )
    return out
