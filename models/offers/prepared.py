"""The offer policy's decisions for a few customers at a time, from per-customer scores prepared once.

:meth:`OfferPolicy.decide` scores every (customer, offer) with pandas and the uplift model's boosters: tens
of milliseconds for one customer. Almost all of that depends only on the customer's features, which stay the
same while a model is loaded: the eligibility rules (the validity window aside), the customer blocks, the
uplift and redemption probabilities, the trigger list and the reason facts. :class:`PreparedPolicy` computes
those once for every customer (one batched prediction per offer), and :meth:`PreparedPolicy.decide` then does
what depends on the request with numpy and plain Python: the time (validity windows, cooldowns), the channel
asked for, the contact history, what is left of capped offers, the campaign's control group.

The answers are :meth:`OfferPolicy.decide`'s, value for value (``tests/models/offers/test_prepared.py``).

Example
-------
>>> prep = PreparedPolicy(policy, X, churn, segments, triggers, opted_out)           # doctest: +SKIP
>>> prep.decide(["C0000001"], now, campaign="spring", history=sent)[0]["offer_id"]    # doctest: +SKIP
'pct10'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from features.schema import AVG_ORDER_VALUE, CHANNEL, CUSTOMER_ID, OFFER_ID, RETURN_RATE
from models.offers.catalogue import Caps
from models.offers.eligibility import (
    OK,
    ContactHistory,
    check_failures,
    contact_blocks,
    contact_history,
    contact_history_of,
    customer_blocks,
    in_control_group,
    validity_failure,
)
from models.offers.policy import OfferPolicy, _decision, _rule, _Top
from models.offers.reasons import TRIGGER_PREFERENCE, Rule, control_text, reason_text, reasons_for


class PreparedPolicy:
    """An :class:`OfferPolicy`'s per-customer scores for the customers of ``X`` (rows: customers), prepared
    once; :meth:`decide` answers like ``policy.decide(X.loc[ids], churn.reindex(ids), ...)``."""

    def __init__(
        self,
        policy: OfferPolicy,
        X: pd.DataFrame,
        churn: pd.Series,
        segments: pd.Series | None,
        triggers: pd.DataFrame | None = None,
        opted_out: pd.Series | None = None,
    ) -> None:
        self.policy = policy
        self.X, self.churn = X, churn.reindex(X.index)
        self.pos = {c: i for i, c in enumerate(X.index.tolist())}
        self.blocks = customer_blocks(X, policy.contact, opted_out)
        self.checks = {o.id: check_failures(o, X, self.churn, segments) for o in policy.catalogue.offers}
        self.basket = X[AVG_ORDER_VALUE].to_numpy(float)
        self.ret = X[RETURN_RATE].fillna(0).clip(0, 1).to_numpy(float)
        n = len(X)
        self.uplift: dict[str, np.ndarray] = {}
        self.p_redeem: dict[str, np.ndarray] = {}
        for o in policy.catalogue.offers:
            u = policy.uplift.predict_pairs(X, np.full(n, o.id, dtype=object)) if n else None
            self.uplift[o.id] = u["uplift"].to_numpy() if u is not None else np.zeros(0)
            self.p_redeem[o.id] = u["p_redeem"].to_numpy() if u is not None else np.zeros(0)
        self.triggers: dict[Any, list[str]] = {}
        if triggers is not None and len(triggers):
            t = triggers[triggers[CUSTOMER_ID].isin(X.index)]
            self.triggers = t.groupby(CUSTOMER_ID)["trigger"].agg(list).to_dict()
        self._facts: dict[Any, list[str]] = {}

    def knows(self, customer_id: Any) -> bool:
        return customer_id in self.pos

    def facts(self, cid: Any) -> list[str]:
        """The customer facts of the reason text (:func:`reasons_for`), computed at the first ask."""
        f = self._facts.get(cid)
        if f is None:
            c = self.churn.get(cid, np.nan)
            f = self._facts[cid] = reasons_for(self.X.loc[cid], float(c))
        return list(f)

    def decide(
        self,
        customer_ids: list[Any],
        now: pd.Timestamp,
        campaign: str = "default",
        channel: str | None = None,
        history: pd.DataFrame | None = None,
        remaining: Caps | None = None,
        sent: Sequence[tuple[Any, Any, Any, Any, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """One row of :data:`~models.offers.policy.DECISION_COLUMNS` (as a dict) per customer of
        ``customer_ids`` (unique, each known: :meth:`knows`), as :meth:`OfferPolicy.decide` gives it.
        ``sent``: the history as plain rows instead (customer_id, offer_id, channel, group, sent_at;
        :func:`~models.offers.eligibility.contact_history_of`), the same decisions."""
        offers = self.policy.catalogue.offers
        rows = np.array([self.pos[c] for c in customer_ids], dtype=np.int64)
        if sent is not None:
            contacts = contact_history_of(sent, customer_ids, now)
        else:
            contacts = (contact_history(history, pd.Index(customer_ids, dtype=object), now)
                        if history is not None and len(history) else None)
        cand = self._candidates(rows, now, channel, contacts)
        trig = {c: self.triggers[c] for c in customer_ids if c in self.triggers}
        rank = _rank(cand, customer_ids, trig, offers)
        control = in_control_group(list(customer_ids), campaign, self.policy.catalogue.control_share)
        send_cost = np.array(
            [offers[k].cost_per_send[c] for k, c in zip(cand.off.tolist(), cand.chan.tolist(), strict=True)],
            float,
        )
        best = _choose(cand.pos, cand.off, rank, cand.ev, cand.barred, send_cost, control, offers, remaining)
        tops = _tops(cand.pos, rank, cand.ev, cand.barred)
        return [self._decision(i, cid, cand, best.get(i), tops.get(i), rows, trig.get(cid, []),
                               bool(control[i]), campaign)
                for i, cid in enumerate(customer_ids)]

    def _candidates(self, rows: np.ndarray, now: pd.Timestamp, channel: str | None,
                    contacts: ContactHistory | None) -> _Candidates:
        """Every eligible (customer, offer) on the channel it would go out on, valued, in the order
        ``OfferPolicy._value`` concatenates them: offer by offer, customers in order."""
        pol, cat = self.policy, self.policy.catalogue
        n = len(rows)
        blocks = self.blocks[rows]
        raw = self.basket[rows]
        missing = np.isnan(raw)
        if missing.any():  # (nanmedian is slow for the one-customer calls that have none missing)
            raw = np.where(missing, np.nanmedian(raw) if (~missing).any() else np.nan, raw)
        basket = np.clip(raw, 0, None)
        ret = self.ret[rows]
        failures: dict[str, np.ndarray] = {}
        c_pos: list[np.ndarray] = []
        c_off: list[int] = []
        c_cols: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for k, o in enumerate(cat.offers):
            chans = [c for c in o.channels if channel is None or c == channel]
            if not chans:
                failures[o.id] = np.full(n, "channel", dtype=object)
                continue
            window = validity_failure(o, now)
            failures[o.id] = np.full(n, window, dtype=object) if window != OK else self.checks[o.id][rows]
            ok = (failures[o.id] == OK) & (blocks == OK)
            if not ok.any():
                continue
            ch = min(chans, key=lambda c: o.cost_per_send[c])
            barred = contact_blocks(o, now, contacts, ch, pol.contact, n)
            p = np.flatnonzero(ok)
            u, pr = self.uplift[o.id][rows[p]], self.p_redeem[o.id][rows[p]]
            b = basket[p]
            gain = u * b * cat.margin_rate * (1 - ret[p])
            cost = pr * o.cost_on_redemption(b) + o.cost_per_send[ch]
            c_pos.append(p)
            c_off.extend([k] * len(p))
            c_cols.append((ch, gain - cost, u, pr, barred[ok]))
        if not c_pos:
            none, empty = np.zeros(0, dtype=object), np.zeros(0)
            return _Candidates(np.zeros(0, np.int64), np.zeros(0, np.int64), none, empty, empty, empty, none,
                               blocks, failures)
        chan = np.concatenate(
            [np.full(len(p), c[0], dtype=object) for p, c in zip(c_pos, c_cols, strict=True)]
        )
        ev, up, prd, barred_all = (np.concatenate([c[j] for c in c_cols]) for j in (1, 2, 3, 4))
        return _Candidates(np.concatenate(c_pos), np.array(c_off, dtype=np.int64), chan, ev, up, prd,
                           barred_all, blocks, failures)

    def _decision(self, i: int, cid: Any, cand: _Candidates, j: int | None, t: int | None, rows: np.ndarray,
                  ts: list[str], control: bool, campaign: str) -> dict[str, Any]:
        """The decision for the ``i``-th customer asked, ``cid``: candidate ``j`` chosen (None: none), ``t``
        its best positive one, allowed or barred; ``ts`` its triggers."""
        offers = self.policy.catalogue.offers
        r: dict[str, Any] = (
            {CHANNEL: cand.chan[j], OFFER_ID: offers[cand.off[j]].id, "expected_value": cand.ev[j],
             "uplift": cand.up[j], "p_redeem": cand.prd[j]}
            if j is not None
            else {CHANNEL: np.nan, OFFER_ID: np.nan, "expected_value": np.nan, "uplift": np.nan,
                  "p_redeem": np.nan}
        )
        offer: str | None = r[OFFER_ID] if isinstance(r[OFFER_ID], str) and r["expected_value"] > 0 else None
        top = _Top(offers[cand.off[t]].id, cand.chan[t], cand.barred[t]) if t is not None else None
        rule, detail = _rule(offer, cand.blocks[i], top, {o: f[i] for o, f in cand.failures.items()})
        facts = self.facts(cid)
        facts += [f"trigger: {', '.join(dict.fromkeys(ts))}"] if ts else []
        reason = reason_text(rule, detail, facts)
        if control:
            detail = {"campaign": campaign, "would_offer": offer or "none", "otherwise": str(rule)}
            rule, reason = Rule.CONTROL_GROUP, control_text(campaign, offer or "none", reason)
        return _decision(cid, r, offer, control, ts, str(rule), detail, reason)  # type: ignore[arg-type]


class _Candidates(NamedTuple):
    """The candidates of one :meth:`PreparedPolicy.decide`, one entry each, and per customer asked its block
    and per offer its eligibility failures."""

    pos: np.ndarray
    """The customer's position among those asked."""
    off: np.ndarray
    """The offer's position in the catalogue."""
    chan: np.ndarray
    ev: np.ndarray
    """Expected incremental margin."""
    up: np.ndarray
    prd: np.ndarray
    """P(redeem)."""
    barred: np.ndarray
    """The contact rule that bars it, or OK (``_choose`` marks exhausted caps here too)."""
    blocks: np.ndarray
    failures: dict[str, np.ndarray]


def _rank(cand: _Candidates, customer_ids: list[Any], trig: dict[Any, list[str]], offers: Any) -> np.ndarray:
    """Expected value, plus a tie-breaking 1e-6 for a positive offer whose kind answers one of the customer's
    triggers (as ``policy._rank_value``)."""
    ev = cand.ev
    if not len(ev) or not trig:
        return ev
    kinds = np.array([offers[k].kind for k in cand.off.tolist()], dtype=object)
    pairs = {(cid, kind) for cid, ts in trig.items() for t in ts for kind in TRIGGER_PREFERENCE.get(t, ())}
    pref = np.array(
        [(customer_ids[q], kd) in pairs for q, kd in zip(cand.pos.tolist(), kinds.tolist(), strict=True)],
        bool,
    )
    return ev + np.where(pref & (ev > 0), 1e-6, 0)  # type: ignore[no-any-return]


def _order(rank: np.ndarray) -> np.ndarray:
    """Positions by rank value, best first, ties in candidate order (pandas' stable descending sort)."""
    return np.argsort(-rank, kind="stable")


def _choose(
    pos: np.ndarray,
    off: np.ndarray,
    rank: np.ndarray,
    ev: np.ndarray,
    barred: np.ndarray,
    send_cost: np.ndarray,
    control: np.ndarray,
    offers: Any,
    remaining: Caps | None,
) -> dict[int, int]:
    """Each customer's chosen candidate (customer row -> candidate position), as ``policy._choose`` picks it;
    marks in ``barred`` the candidates passed over because their offer's budget or volume was used up."""
    order = _order(rank)
    order = order[barred[order] == OK]
    caps = {o: c for o, c in (remaining or {}).items() if c != (None, None)}
    best: dict[int, int] = {}
    if not caps:
        for j in order.tolist():
            best.setdefault(int(pos[j]), j)
        return best
    ids = [o.id for o in offers]
    left_money = {o: (b if b is not None else np.inf) for o, (b, _) in caps.items()}
    left_count = {o: (v if v is not None else np.inf) for o, (_, v) in caps.items()}
    for j in order.tolist():
        i = int(pos[j])
        if control[i]:
            best.setdefault(i, j)
            continue
        if not ev[j] > 0 or i in best:
            continue
        oid = ids[off[j]]
        if oid in caps and left_count[oid] < 1:
            barred[j] = Rule.VOLUME_EXHAUSTED.value
            continue
        send = float(send_cost[j])
        if oid in caps and send > left_money[oid] + 1e-9:
            barred[j] = Rule.BUDGET_EXHAUSTED.value
            continue
        best[i] = j
        if oid in caps:
            left_money[oid] -= send
            left_count[oid] -= 1
    return best


def _tops(pos: np.ndarray, rank: np.ndarray, ev: np.ndarray, barred: np.ndarray) -> dict[int, int]:
    """Each customer's best candidate with a positive expected value, allowed or barred."""
    top: dict[int, int] = {}
    for j in _order(rank).tolist():
        if ev[j] > 0:
            top.setdefault(int(pos[j]), j)
    return top
