"""The offer policy: every (customer, offer) scored by expected incremental margin, then the best offer or
``none`` per customer under the rules, caps and budgets, each decision naming the rule that decided.

Deciding is candidates -> expected incremental margin -> rules, caps and budget. "Do nothing" is always
a candidate: an offer is made only when its expected incremental margin is positive.

Expected incremental margin of offer o for customer c::

    uplift(c, o) * basket(c) * margin_rate * (1 - return_rate(c))     # orders the offer causes
  - p_redeem(c, o) * cost_on_redemption(o, basket(c))                  # coupons used, caused or not
  - cost_per_send(o, channel)

Deciding records nothing: :meth:`OfferPolicy.decide` is a pure function of its arguments, so asking twice
gives the same answer (a preview). A caller that commits decisions stores :func:`sends_to_record`'s rows;
given back as ``history`` (and, for capped offers, through ``OfferCatalogue.remaining`` as ``remaining``) they
make later decisions respect them (cooldowns, contact caps, budgets).

Example
-------
>>> policy = OfferPolicy(parse_catalogue(raw), uplift)                                 # doctest: +SKIP
>>> dec = policy.decide(X, churn, now, campaign="spring", history=sent)              # doctest: +SKIP
>>> dec[["customer_id", "offer_id", "rule", "reason"]]                                # doctest: +SKIP
>>> sent = pd.concat([sent, sends_to_record(dec, "spring", sent_at=now)])  # commit     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from features.schema import (
    AVG_ORDER_VALUE,
    CAMPAIGN_ID,
    CHANNEL,
    CUSTOMER_ID,
    GROUP,
    OFFER_ID,
    RETURN_RATE,
    SENT_AT,
)
from models.offers.audience import greedy
from models.offers.catalogue import Caps, Offer, OfferCatalogue
from models.offers.eligibility import (
    OK,
    ContactRules,
    contact_blocks,
    contact_history,
    customer_blocks,
    eligibility_failures,
    in_control_group,
)
from models.offers.reasons import TRIGGER_PREFERENCE, Rule, control_text, reason_text, reasons_for
from models.offers.uplift import UpliftModel

CANDIDATE_COLUMNS = [CUSTOMER_ID, OFFER_ID, "kind", CHANNEL, "expected_value", "send_cost", "uplift",
                     "p_redeem", "prior"]
"""Columns of :meth:`OfferPolicy.score`: one row per eligible (customer, offer), on the channel it would
use."""
DECISION_COLUMNS = [CUSTOMER_ID, OFFER_ID, CHANNEL, "expected_value", GROUP, "send", "reason", "trigger",
                    "uplift", "propensity", "rule", "rule_detail"]
"""Columns of :meth:`OfferPolicy.decide`: one row per customer (see its docstring)."""
RECORD_COLUMNS = [CUSTOMER_ID, OFFER_ID, CHANNEL, GROUP, CAMPAIGN_ID, "expected_value", "propensity",
                  "model_version"]
"""Columns of :func:`sends_to_record` (plus ``sent_at`` when given)."""


class _Scored(NamedTuple):
    frame: pd.DataFrame
    """:data:`CANDIDATE_COLUMNS` plus ``barred``: the contact rule that bars the row, or OK."""
    blocks: np.ndarray
    """Per customer row: ``opted_out``, ``recent_purchase`` or OK."""
    failures: dict[str, np.ndarray]
    """Per offer, per customer row: the first eligibility rule that fails, or OK."""


class _Top(NamedTuple):
    """A customer's best positive candidate among all eligible offers, allowed or barred."""

    offer_id: str
    channel: str
    barred: str


class OfferPolicy:
    """Scores every (customer, offer, channel) by expected incremental margin and picks the best or none."""

    def __init__(self, catalogue: OfferCatalogue, uplift: UpliftModel,
                 contact: ContactRules | None = None) -> None:
        self.catalogue, self.uplift, self.contact = catalogue, uplift, contact or ContactRules()

    def score(self, X: pd.DataFrame, churn: pd.Series, now: pd.Timestamp, channel: str | None = None,
              segments: pd.Series | None = None, history: pd.DataFrame | None = None,
              opted_out: pd.Series | None = None) -> pd.DataFrame:
        """All candidates that no rule bars, with their expected incremental margin (long format,
        :data:`CANDIDATE_COLUMNS`).

        ``history``: past contacts (customer_id, offer_id, sent_at, channel, group) for caps and cooldowns.
        """
        frame = self._score(X, churn, now, channel, segments, history, opted_out, keep_barred=False).frame
        return frame.drop(columns="barred")

    def _score(self, X: pd.DataFrame, churn: pd.Series, now: pd.Timestamp, channel: str | None,
               segments: pd.Series | None, history: pd.DataFrame | None, opted_out: pd.Series | None,
               keep_barred: bool) -> _Scored:
        """Candidates of every offer eligible on the channel it would go out on (its cheapest allowed one);
        with ``keep_barred`` also those its contact rules bar (scored too, to say what a rule cost)."""
        blocks = customer_blocks(X, self.contact, opted_out)
        contacts = contact_history(history, X.index, now)
        failures: dict[str, np.ndarray] = {}
        parts: list[tuple[np.ndarray, Offer, str, np.ndarray]] = []
        for o in self.catalogue.offers:
            chans = [c for c in o.channels if channel is None or c == channel]
            if not chans:
                failures[o.id] = np.full(len(X), "channel", dtype=object)
                continue
            failures[o.id] = eligibility_failures(o, X, churn, segments, now)
            ok = (failures[o.id] == OK) & (blocks == OK)
            if not ok.any():
                continue
            ch = min(chans, key=lambda c: o.cost_per_send[c])  # the channel it would go out on
            barred = contact_blocks(o, now, contacts, ch, self.contact, len(X))
            keep = ok if keep_barred else ok & (barred == OK)
            if keep.any():
                parts.append((np.flatnonzero(keep), o, ch, barred[keep]))
        return _Scored(self._value(X, parts), blocks, failures)

    def _value(self, X: pd.DataFrame, parts: list[tuple[np.ndarray, Offer, str, np.ndarray]]) -> pd.DataFrame:
        """Expected incremental margin of the (customer row, offer, channel) pairs of ``parts``."""
        if not parts:
            return pd.DataFrame(columns=[*CANDIDATE_COLUMNS, "barred"])
        basket = X[AVG_ORDER_VALUE].fillna(X[AVG_ORDER_VALUE].median()).clip(lower=0).to_numpy(float)
        ret = X[RETURN_RATE].fillna(0).clip(0, 1).to_numpy(float)
        pos = np.concatenate([p for p, *_ in parts])
        oid = np.concatenate([np.full(len(p), o.id, dtype=object) for p, o, *_ in parts])
        u_all = self.uplift.predict_pairs(X.iloc[pos], oid)
        frames, start = [], 0
        for p, o, ch, barred in parts:
            u = u_all.iloc[start:start + len(p)]
            start += len(p)
            b = basket[p]
            gain = u["uplift"].to_numpy() * b * self.catalogue.margin_rate * (1 - ret[p])
            cost = u["p_redeem"].to_numpy() * o.cost_on_redemption(b) + o.cost_per_send[ch]
            frames.append(pd.DataFrame({
                CUSTOMER_ID: X.index[p], OFFER_ID: o.id, "kind": o.kind, CHANNEL: ch,
                "expected_value": gain - cost, "send_cost": o.cost_per_send[ch],
                "uplift": u["uplift"].to_numpy(), "p_redeem": u["p_redeem"].to_numpy(),
                "prior": u["prior"].to_numpy(), "barred": barred}))
        return pd.concat(frames, ignore_index=True)

    def decide(self, X: pd.DataFrame, churn: pd.Series, now: pd.Timestamp, campaign: str = "default",
               channel: str | None = None, segments: pd.Series | None = None,
               history: pd.DataFrame | None = None, triggers: pd.DataFrame | None = None,
               opted_out: pd.Series | None = None, remaining: Caps | None = None) -> pd.DataFrame:
        """Best offer per customer or ``none``, and the rule that decided. Records nothing: the same arguments
        give the same answer (see :func:`sends_to_record` for committing).

        ``remaining``: what is left of capped offers' total budget and volume (``OfferCatalogue.remaining``).
        Sends to the treatment group never exceed it: in order of expected value, customers past an offer's
        limit get their next best offer (control members, who are sent nothing, use none of it).

        One row per customer (:data:`DECISION_COLUMNS`): ``offer_id`` (for control members the offer they
        would have got), ``channel``, ``expected_value``, ``group`` (treatment/control), ``send`` (an offer to
        a treatment member), ``rule`` (a :class:`~models.offers.reasons.Rule` value), ``rule_detail`` (dict of
        strings, keys per rule), ``reason`` (readable, starting with what the rule says), ``trigger`` (the
        customer's first active trigger), ``uplift`` and ``propensity`` (P(redeem)) of the offer.
        """
        sc = self._score(X, churn, now, channel, segments, history, opted_out, keep_barred=True)
        trig: dict[Any, list[str]] = {}
        if triggers is not None and len(triggers):
            trig = triggers.groupby(CUSTOMER_ID)["trigger"].agg(list).to_dict()
        cand = sc.frame
        cand["rank_value"] = _rank_value(cand, trig)
        control = in_control_group(list(X.index), campaign, self.catalogue.control_share)
        best = _choose(cand, X.index[control], remaining).set_index(CUSTOMER_ID).reindex(X.index)
        tops, failures = _tops(cand), sc.failures
        out = []
        for i, cid in enumerate(X.index):
            r = best.loc[cid]
            offer = r[OFFER_ID] if isinstance(r[OFFER_ID], str) and r["expected_value"] > 0 else None
            rule, detail = _rule(offer, sc.blocks[i], tops.get(cid), {o: f[i] for o, f in failures.items()})
            t = trig.get(cid, [])
            facts = reasons_for(X.loc[cid], float(churn.get(cid, np.nan)) if cid in churn.index else None)
            facts += [f"trigger: {', '.join(dict.fromkeys(t))}"] if t else []
            reason = reason_text(rule, detail, facts)
            if control[i]:
                detail = {"campaign": campaign, "would_offer": offer or "none", "otherwise": str(rule)}
                rule, reason = Rule.CONTROL_GROUP, control_text(campaign, offer or "none", reason)
            out.append(_decision(cid, r, offer, bool(control[i]), t, str(rule), detail, reason))
        return pd.DataFrame(out, columns=DECISION_COLUMNS)


def _decision(cid: Any, r: pd.Series, offer: str | None, control: bool, triggers: list[str], rule: str,
              detail: dict[str, str], reason: str) -> dict[str, Any]:
    """One row of :data:`DECISION_COLUMNS`; ``r`` is the customer's chosen candidate, ``offer`` its offer id
    when it is worth making (else None)."""
    has = offer is not None
    return {CUSTOMER_ID: cid, OFFER_ID: offer or "none", CHANNEL: r[CHANNEL] if has else None,
            "expected_value": round(float(r["expected_value"]), 4) if has else 0.0,
            GROUP: "control" if control else "treatment", "send": has and not control, "reason": reason,
            "trigger": triggers[0] if triggers else None,
            "uplift": round(float(r["uplift"]), 4) if has else None,
            "propensity": round(float(r["p_redeem"]), 4) if has else None,
            "rule": rule, "rule_detail": detail}


def _rank_value(cand: pd.DataFrame, trig: dict[Any, list[str]]) -> pd.Series:
    """Expected value, plus a tie-breaking 1e-6 for a positive offer whose kind answers one of the customer's
    triggers (a trigger explains a choice, it adds no value)."""
    if not len(cand) or not trig:
        return cand["expected_value"]
    pairs = {(cid, kind) for cid, ts in trig.items() for t in ts for kind in TRIGGER_PREFERENCE.get(t, ())}
    pref = pd.MultiIndex.from_arrays([cand[CUSTOMER_ID], cand["kind"]]).isin(list(pairs))
    return cand["expected_value"] + np.where(pref & (cand["expected_value"] > 0), 1e-6, 0)


def _choose(cand: pd.DataFrame, control_ids: pd.Index, remaining: Caps | None) -> pd.DataFrame:
    """Each customer's offer among the allowed candidates: the best by rank value; with capped offers, sends
    to the treatment group taken greedily within what is left (control members use none of it). Marks in
    ``cand["barred"]`` the candidates passed over because their offer's budget or volume was used up."""
    ranked = cand[cand["barred"] == OK].sort_values("rank_value", ascending=False, kind="stable")
    caps = {o: c for o, c in (remaining or {}).items() if c != (None, None)}
    if not caps:
        return ranked.drop_duplicates(CUSTOMER_ID)
    in_control = ranked[CUSTOMER_ID].isin(control_ids)
    treat = ranked[~in_control & (ranked["expected_value"] > 0)]
    g = greedy(treat, np.inf, None, caps)
    if g.barred:
        cand.loc[treat.index[list(g.barred)], "barred"] = list(g.barred.values())
    return pd.concat([treat.iloc[g.taken], ranked[in_control].drop_duplicates(CUSTOMER_ID)])


def _tops(cand: pd.DataFrame) -> dict[Any, _Top]:
    """Each customer's best candidate with a positive expected value, allowed or barred."""
    pos = cand[cand["expected_value"] > 0].sort_values("rank_value", ascending=False, kind="stable")
    pos = pos.drop_duplicates(CUSTOMER_ID)
    return {c: _Top(o, ch, b) for c, o, ch, b in
            zip(pos[CUSTOMER_ID], pos[OFFER_ID], pos[CHANNEL], pos["barred"], strict=True)}


def _rule(offer_id: str | None, block: str, top: _Top | None,
          failures: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The rule that decided a customer's offer (``offer_id``) or ``none`` (``offer_id`` None)."""
    if block != OK:
        return block, {}
    if top is not None and top.barred != OK and top.offer_id != offer_id:
        detail = {OFFER_ID: top.offer_id}
        if top.barred == Rule.CONTACT_CAP:
            detail[CHANNEL] = top.channel
        if offer_id is None:
            return top.barred, detail
        return Rule.NEXT_BEST, {**detail, "blocked_by": top.barred}
    if offer_id is not None:
        return Rule.BEST_VALUE, {}
    if all(f != OK for f in failures.values()):  # no offer is eligible (or none is sent on the channel)
        return Rule.NOT_ELIGIBLE, dict(failures)
    return Rule.NOT_WORTH_COST, {}


def sends_to_record(decisions: pd.DataFrame, campaign: str, model_version: str | None = None,
                    sent_at: pd.Timestamp | None = None) -> pd.DataFrame:
    """The offer-log rows a caller stores when it commits ``decisions`` (from :meth:`OfferPolicy.decide`):
    every decision that names an offer, the control group's included (``group`` says it was not sent, and
    the control rows keep measurement honest). Columns :data:`RECORD_COLUMNS`, plus ``sent_at`` when given.

    Given back to ``decide`` as ``history`` (with ``sent_at``) they bar what the contact rules bar;
    ``OfferCatalogue.remaining`` counts their treatment rows per offer and channel against capped offers.
    """
    named = decisions[decisions[OFFER_ID] != "none"]
    out = pd.DataFrame({CUSTOMER_ID: named[CUSTOMER_ID], OFFER_ID: named[OFFER_ID], CHANNEL: named[CHANNEL],
                        GROUP: named[GROUP], CAMPAIGN_ID: campaign, "expected_value": named["expected_value"],
                        "propensity": named["propensity"], "model_version": model_version},
                       columns=RECORD_COLUMNS).reset_index(drop=True)
    if sent_at is not None:
        out[SENT_AT] = pd.Timestamp(sent_at)
    return out
