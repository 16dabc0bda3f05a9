"""Who may get which offer now: each offer's eligibility rules and validity window, the contact rules
(opt-out, no offer right after a purchase, per-customer maximum, cooldown, contact cap per channel) and the
persistent control group.

Every check names the rule that fails (a :class:`~models.offers.reasons.Rule` value or an eligibility key), so
that a decision can say which rule decided.

Example
-------
>>> in_control_group(["C1", "C2"], "spring", 0.5).tolist()                  # doctest: +SKIP
[False, True]
>>> eligibility_failures(offer, X, churn, None, now)                      # doctest: +SKIP
array(['', 'min_orders', ...], dtype=object)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from features.attributes import BOOL_WORDS
from features.schema import (
    ATTRIBUTE_PREFIX,
    CHANNEL,
    CUSTOMER_ID,
    GROUP,
    N_ORDERS,
    NET_REVENUE,
    OFFER_ID,
    RECENCY_DAYS,
    REGION,
    SENT_AT,
)
from models.offers.catalogue import ATTRIBUTE_RULES, Offer
from models.offers.reasons import Rule

OK = ""
"""The code of a row that no rule bars."""


@dataclass(frozen=True)
class ContactRules:
    max_contacts: int = 2
    """At most this many offers per customer per period and channel."""
    period_days: int = 30
    recent_purchase_days: int = 3
    """No offer to a customer who bought in the last N days."""

    def to_params(self) -> dict[str, Any]:
        return {f"contact.{k}": v for k, v in asdict(self).items()}


def in_control_group(customer_ids: Any, campaign: str, share: float) -> np.ndarray:
    """Deterministic, persistent control membership: sha256(campaign:customer) mapped to [0, 1) < share."""
    out = np.empty(len(customer_ids), bool)
    for i, c in enumerate(customer_ids):
        h = hashlib.sha256(f"{campaign}:{c}".encode()).digest()
        out[i] = int.from_bytes(h[:8], "big") / 2**64 < share
    return out


def _days(X: pd.DataFrame) -> np.ndarray:
    """Days since the last purchase; never bought counts as very long ago."""
    return np.nan_to_num(X[RECENCY_DAYS].to_numpy(float), nan=1e9)


def _checks(offer: Offer, X: pd.DataFrame, churn: pd.Series, segments: pd.Series | None,
            bought_categories: dict[str, set[str]] | None) -> Iterator[tuple[str, np.ndarray]]:
    """(eligibility key, rows where it holds) for each rule of the offer, in a fixed order."""
    e = offer.eligibility
    if "min_orders" in e:
        yield "min_orders", X[N_ORDERS].to_numpy() >= e["min_orders"]
    if "min_net_value" in e:
        yield "min_net_value", X[NET_REVENUE].to_numpy() >= e["min_net_value"]
    if "max_net_value" in e:
        yield "max_net_value", X[NET_REVENUE].to_numpy() <= e["max_net_value"]
    if "churn_risk" in e:
        c = churn.reindex(X.index).to_numpy()
        yield "churn_risk", (c >= e["churn_risk"][0]) & (c <= e["churn_risk"][1])
    if "segments" in e and segments is not None:
        yield "segments", segments.reindex(X.index).isin(e["segments"]).to_numpy()
    if "not_bought_in_days" in e:
        yield "not_bought_in_days", _days(X) >= e["not_bought_in_days"]
    if "bought_within_days" in e:
        yield "bought_within_days", _days(X) <= e["bought_within_days"]
    if "regions" in e:
        yield "regions", X[REGION].astype(object).isin(e["regions"]).to_numpy()
    if "has_bought_category" in e and bought_categories is not None:
        cat = e["has_bought_category"]
        yield "has_bought_category", np.array([cat in bought_categories.get(str(c), set()) for c in X.index])
    for name, rule in e.get(ATTRIBUTE_RULES, {}).items():
        yield f"{ATTRIBUTE_RULES}.{name}", attribute_holds(X, name, rule)


def attribute_holds(X: pd.DataFrame, name: str, rule: list[Any] | dict[str, float]) -> np.ndarray:
    """Rows of ``X`` whose customer attribute ``name`` (feature column ``attr_<name>``) satisfies ``rule``:
    one of the listed values (a boolean attribute's 0/1 against true/false), or within a ``{min, max}``
    range (a
    date attribute in days before the features' date). A missing value, or a column ``X`` lacks, fails."""
    col = f"{ATTRIBUTE_PREFIX}{name}"
    if col not in X.columns:
        return np.zeros(len(X), bool)
    s = X[col]
    if isinstance(rule, dict):
        v = pd.to_numeric(s, errors="coerce").to_numpy(float)
        with np.errstate(invalid="ignore"):
            return (v >= rule.get("min", -np.inf)) & (v <= rule.get("max", np.inf))
    if isinstance(s.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(s):
        return s.astype(object).isin([str(v) for v in rule]).to_numpy()
    flags = [float(BOOL_WORDS[str(v).strip().lower()]) for v in rule if str(v).strip().lower() in BOOL_WORDS]
    return s.astype(float).isin(flags).to_numpy()


def eligibility_failures(offer: Offer, X: pd.DataFrame, churn: pd.Series, segments: pd.Series | None,
                         now: pd.Timestamp,
                         bought_categories: dict[str, set[str]] | None = None) -> np.ndarray:
    """Per customer row of X: the first rule of the offer that fails, or :data:`OK` when all hold.

    ``valid_from`` / ``valid_to`` when ``now`` is outside the offer's validity window, else an eligibility key
    (``min_orders``, ``churn_risk``, ...). ``segments`` and ``has_bought_category`` apply only when their data
    is given.
    """
    out = np.full(len(X), OK, dtype=object)
    window = validity_failure(offer, now)
    if window != OK:
        out[:] = window
        return out
    return check_failures(offer, X, churn, segments, bought_categories)


def validity_failure(offer: Offer, now: pd.Timestamp) -> str:
    """``valid_from`` / ``valid_to`` when ``now`` is outside the offer's validity window, else :data:`OK`."""
    if offer.valid_from is not None and now < offer.valid_from:
        return "valid_from"
    if offer.valid_to is not None and now > offer.valid_to:
        return "valid_to"
    return OK


def check_failures(offer: Offer, X: pd.DataFrame, churn: pd.Series, segments: pd.Series | None,
                   bought_categories: dict[str, set[str]] | None = None) -> np.ndarray:
    """Per customer row of X: the first of the offer's eligibility rules that fails, or :data:`OK` (the
    validity window aside: :func:`validity_failure`). Each row's answer depends on that row only, so it can be
    computed once for every customer and looked up (:mod:`models.offers.prepared`)."""
    out = np.full(len(X), OK, dtype=object)
    for name, holds in _checks(offer, X, churn, segments, bought_categories):
        out[(out == OK) & ~np.asarray(holds, bool)] = name
    return out


def eligible(offer: Offer, X: pd.DataFrame, churn: pd.Series, segments: pd.Series | None,
             now: pd.Timestamp, bought_categories: dict[str, set[str]] | None = None) -> np.ndarray:
    """Boolean per customer row of X: does the offer's eligibility hold (validity window included)?"""
    return eligibility_failures(offer, X, churn, segments, now, bought_categories) == OK


def customer_blocks(X: pd.DataFrame, rules: ContactRules, opted_out: pd.Series | None) -> np.ndarray:
    """Per customer row of X: ``opted_out``, ``recent_purchase`` (bought within the last
    ``rules.recent_purchase_days``) or :data:`OK`. A blocked customer gets no offer at all."""
    out = np.full(len(X), OK, dtype=object)
    out[_days(X) < rules.recent_purchase_days] = Rule.RECENT_PURCHASE.value
    if opted_out is not None:
        out[opted_out.reindex(X.index).fillna(False).to_numpy(bool)] = Rule.OPTED_OUT.value
    return out


class ContactHistory(NamedTuple):
    """Past sends as arrays, one entry per send: the customer's position among ``n_ids`` unique customers,
    offer id, send time (ns), channel; ``rows`` maps each scored row to its customer's position."""

    pos: np.ndarray
    offer: np.ndarray
    sent: np.ndarray
    channel: np.ndarray
    rows: np.ndarray
    n_ids: int


def contact_history(history: pd.DataFrame | None, index: pd.Index,
                    now: pd.Timestamp) -> ContactHistory | None:
    """Past offers actually sent (treatment group, at or before ``now``) to the customers of ``index``.

    ``history``: past contacts (customer_id, offer_id, sent_at, channel, group). Built once per scoring call,
    shared by every offer."""
    if history is None or not len(history):
        return None
    h = history[(history[SENT_AT] <= now) & (history[GROUP] == "treatment")]
    ids = pd.Index(index).unique()
    pos = ids.get_indexer(h[CUSTOMER_ID])
    keep = pos >= 0
    sent = pd.to_datetime(h[SENT_AT]).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ContactHistory(pos[keep], h[OFFER_ID].to_numpy(dtype=object)[keep], sent[keep],
                          h[CHANNEL].to_numpy(dtype=object)[keep], ids.get_indexer(index), len(ids))


def contact_history_of(rows: Sequence[tuple[Any, Any, Any, Any, Any]], index: Sequence[Any],
                       now: pd.Timestamp) -> ContactHistory | None:
    """:func:`contact_history` from plain rows (customer_id, offer_id, channel, group, sent_at as a
    datetime) instead of a frame: the same sends (in row order), without pandas' per-call cost (about a
    millisecond for one customer's few rows; an offer preview from the decision log in memory)."""
    if not len(rows):
        return None
    where: dict[Any, int] = {}
    for c in index:
        where.setdefault(c, len(where))
    now_ns = pd.Timestamp(now).value
    pos, offer, sent, chan = [], [], [], []
    for cid, oid, ch, group, at in rows:
        if group != "treatment" or cid not in where:
            continue
        ns = pd.Timestamp(at).value
        if ns <= now_ns:
            pos.append(where[cid])
            offer.append(oid)
            sent.append(ns)
            chan.append(ch)
    return ContactHistory(np.array(pos, dtype=np.intp), np.array(offer, dtype=object),
                          np.array(sent, dtype=np.int64), np.array(chan, dtype=object),
                          np.array([where[c] for c in index], dtype=np.intp), len(where))


def contact_blocks(o: Offer, now: pd.Timestamp, contacts: ContactHistory | None, channel: str,
                   rules: ContactRules, n_rows: int) -> np.ndarray:
    """Per row: the contact rule that bars the offer on ``channel`` - ``max_per_customer``, ``cooldown`` or
    ``contact_cap`` (the channel's limit in the period), first of those that applies - or :data:`OK`."""
    out = np.full(n_rows, OK, dtype=object)
    if contacts is None:
        return out
    pos, offer, sent, chan, rows, n_ids = contacts
    now_ns = pd.Timestamp(now).value
    same = offer == o.id
    n_same = np.bincount(pos[same], minlength=n_ids)
    last = np.full(n_ids, np.iinfo(np.int64).min)
    np.maximum.at(last, pos[same], sent[same])
    cool = (last > np.iinfo(np.int64).min) & (now_ns - last < pd.Timedelta(days=o.cooldown_days).value)
    recent = (sent > now_ns - pd.Timedelta(days=rules.period_days).value) & (chan == channel)
    n_recent = np.bincount(pos[recent], minlength=n_ids)
    for code, barred in ((Rule.CONTACT_CAP, n_recent >= rules.max_contacts), (Rule.COOLDOWN, cool),
                         (Rule.MAX_PER_CUSTOMER, n_same >= o.max_per_customer)):  # the last that applies wins
        out[barred[rows]] = code.value
    return out
