"""The offer policy: do-nothing is a candidate, control gets nothing, capped offers are respected, and every
decision names the rule that decided; deciding records nothing (a preview), committing is the caller's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from models.offers import RECORD_COLUMNS, OfferPolicy, Rule, sends_to_record

pytestmark = pytest.mark.slow  # every test uses the uplift model fitted on the small simulated shop

NONE_RULES = {"opted_out", "recent_purchase", "not_eligible", "max_per_customer", "cooldown", "contact_cap",
              "budget_exhausted", "volume_exhausted", "not_worth_cost"}


def only(policy: OfferPolicy, offer_id: str, **change) -> OfferPolicy:
    """The same policy with a catalogue of one offer (its fields changed by ``change``)."""
    o = replace(policy.catalogue.get(offer_id), **change)
    return OfferPolicy(replace(policy.catalogue, offers=(o,)), policy.uplift, policy.contact)


def test_do_nothing_is_a_candidate_and_control_gets_nothing(policy_setup, small_shop) -> None:
    policy, X, churn = policy_setup
    dec = policy.decide(X, churn, small_shop.end, campaign="c1")
    assert set(dec["group"]) == {"treatment", "control"}
    assert not dec.loc[dec["group"] == "control", "send"].any()
    assert (dec["offer_id"] == "none").any()
    assert (dec.loc[dec["offer_id"] != "none", "expected_value"] > 0).all()
    assert dec.loc[dec["offer_id"] != "none", "reason"].str.len().min() > 0
    treated = dec[dec["group"] == "treatment"]
    none = treated[treated["offer_id"] == "none"]
    assert set(none["rule"]) <= NONE_RULES and "not_worth_cost" in set(none["rule"])
    worth = none[none["rule"] == "not_worth_cost"]
    assert worth["reason"].str.startswith("no offer is worth its cost").all()
    # "no offer is worth its cost" only when it is the reason: eligible candidates, none with a positive value
    cand = policy.score(X, churn, small_shop.end)
    best = cand.groupby("customer_id")["expected_value"].max()
    assert set(worth["customer_id"]) <= set(best.index) and (best.reindex(worth["customer_id"]) <= 0).all()
    recent = none.loc[none["rule"] == "recent_purchase", "customer_id"]
    assert len(recent) and (X.loc[recent, "recency_days"] < policy.contact.recent_purchase_days).all()
    assert (treated.loc[treated["offer_id"] != "none", "rule"] == "best_value").all()


def test_control_group_is_named_with_the_offer_it_would_have_got(policy_setup, small_shop) -> None:
    policy, X, churn = policy_setup
    dec = policy.decide(X, churn, small_shop.end, campaign="c1")
    ctrl = dec[dec["group"] == "control"]
    assert len(ctrl) and (ctrl["rule"] == "control_group").all() and not ctrl["send"].any()
    assert ctrl["reason"].str.startswith("control group of campaign c1: held out for measurement").all()
    assert [d["would_offer"] for d in ctrl["rule_detail"]] == ctrl["offer_id"].tolist()
    assert {d["campaign"] for d in ctrl["rule_detail"]} == {"c1"}
    assert {d["otherwise"] for d in ctrl["rule_detail"]} <= NONE_RULES | {"best_value"}


def test_a_preview_changes_nothing_and_a_committed_send_starts_its_cooldown(policy_setup, small_shop) -> None:
    policy, X, churn = policy_setup
    now = small_shop.end
    first = policy.decide(X, churn, now, campaign="c1")
    pd.testing.assert_frame_equal(first, policy.decide(X, churn, now, campaign="c1"))  # asking twice: same
    sent = sends_to_record(first, "c1", model_version="v1", sent_at=now)  # the caller commits
    assert list(sent.columns) == [*RECORD_COLUMNS, "sent_at"]
    assert len(sent) == (first["offer_id"] != "none").sum()
    assert set(sent["group"]) == {"treatment", "control"} and (sent["model_version"] == "v1").all()
    later = policy.decide(X, churn, now + pd.Timedelta(hours=1), campaign="c1", history=sent)
    later, first = later.set_index("customer_id"), first.set_index("customer_id")
    got = first[first["send"]]
    moved = later.loc[got.index]
    assert (moved["offer_id"] != got["offer_id"]).all()  # never the same offer again within its cooldown
    none = moved[moved["offer_id"] == "none"]
    assert len(none) and (none["rule"] == "cooldown").all()
    assert [d["offer_id"] for d in none["rule_detail"]] == got.loc[none.index, "offer_id"].tolist()
    assert none["reason"].str.startswith("cooldown: offer ").all()
    other = moved[moved["offer_id"] != "none"]
    assert (other["rule"] == "next_best").all()
    assert all(d["blocked_by"] == "cooldown" and d["offer_id"] == got.at[c, "offer_id"]
               for c, d in other["rule_detail"].items())
    ctrl = first.index[first["group"] == "control"]  # control sends are recorded but nothing was sent
    cols = ["offer_id", "rule"]
    pd.testing.assert_frame_equal(later.loc[ctrl, cols], first.loc[ctrl, cols])


def test_decisions_respect_what_is_left_of_capped_offers(policy_setup, small_shop) -> None:
    policy, X, churn = policy_setup
    free = policy.decide(X, churn, small_shop.end, campaign="c1")
    sent = free[free["group"] == "treatment"]
    top = sent["offer_id"].value_counts().index[0]
    n_top = int((sent["offer_id"] == top).sum())
    assert n_top > 3
    capped = policy.decide(X, churn, small_shop.end, campaign="c1", remaining={top: (None, 3)})
    t = capped[capped["group"] == "treatment"]
    got = t[t["offer_id"] == top]
    assert len(got) == 3  # the 3 with the highest expected value for it
    best = sent[sent["offer_id"] == top].sort_values("expected_value", ascending=False)["customer_id"].head(3)
    assert set(got["customer_id"]) == set(best)
    others = sent.loc[(sent["offer_id"] == top) & ~sent["customer_id"].isin(best), "customer_id"]
    moved = t.set_index("customer_id").loc[others]
    assert (moved["offer_id"] != top).all()  # the rest fall back to their next best offer or none
    # ... and are told why: the volume of their best offer is used up
    assert set(moved["rule"]) <= {"next_best", "volume_exhausted"} and len(moved)
    assert all(d["offer_id"] == top for d in moved["rule_detail"])
    nxt = moved.loc[moved["rule"] == "next_best", "rule_detail"]
    assert all(d["blocked_by"] == "volume_exhausted" for d in nxt)
    ctrl = capped[capped["group"] == "control"].set_index("customer_id")["offer_id"]
    assert ctrl.equals(free[free["group"] == "control"].set_index("customer_id")["offer_id"])  # unchanged
    assert policy.catalogue.get(top).cost_per_send[sent.loc[sent["offer_id"] == top, "channel"].iloc[0]] > 0
    none_left = policy.decide(X, churn, small_shop.end, campaign="c1", remaining={top: (0.0, None)})
    assert not ((none_left["offer_id"] == top) & (none_left["group"] == "treatment")).any()
    broke = none_left.set_index("customer_id").loc[sent.loc[sent["offer_id"] == top, "customer_id"]]
    assert set(broke["rule"]) <= {"next_best", "budget_exhausted"}
    assert (broke["rule"] == "budget_exhausted").any()
    assert broke.loc[broke["rule"] == "budget_exhausted", "reason"].str.startswith("budget exhausted").all()


def test_contact_cap_names_its_channel(policy_setup, small_shop) -> None:
    policy, X, churn = policy_setup
    now = small_shop.end
    one = only(policy, "pct10", channels=("email",))
    free = one.decide(X, churn, now, campaign="c1")
    cid = free.loc[free["send"], "customer_id"].head(5)
    assert len(cid) == 5
    hist = pd.DataFrame({"customer_id": np.repeat(cid, 2), "offer_id": "other", "channel": "email",
                         "group": "treatment", "sent_at": now - pd.Timedelta(days=5)})
    dec = one.decide(X, churn, now, campaign="c1", history=hist).set_index("customer_id").loc[cid]
    assert (dec["offer_id"] == "none").all() and (dec["rule"] == "contact_cap").all()
    assert all(d == {"offer_id": "pct10", "channel": "email"} for d in dec["rule_detail"])
    assert dec["reason"].str.startswith("contact cap: the email channel").all()


def test_opt_out_and_not_eligible_are_named(policy_setup, small_shop) -> None:
    policy, X, churn = policy_setup
    now, cid = small_shop.end, X.index[:30]
    opted = pd.Series(True, index=cid[:10])
    dec = policy.decide(X.loc[cid], churn, now, campaign="c1", opted_out=opted).set_index("customer_id")
    treated = dec[dec["group"] == "treatment"]
    assert (treated.loc[treated.index.isin(cid[:10]), "rule"] == "opted_out").all()
    nobody = policy.decide(X.loc[cid], churn, now, campaign="c1", channel="pigeon")
    t = nobody[nobody["group"] == "treatment"]
    t = t[t["rule"] != "recent_purchase"]
    assert len(t) and (t["rule"] == "not_eligible").all() and (t["offer_id"] == "none").all()
    assert all(d == {o: "channel" for o in policy.catalogue.ids} for d in t["rule_detail"])
    vip = only(policy, "pct10", eligibility={"min_orders": 10**6})
    t = vip.decide(X.loc[cid], churn, now, campaign="c1")
    t = t[(t["group"] == "treatment") & (t["rule"] != "recent_purchase")]
    assert len(t) and (t["rule"] == "not_eligible").all()
    assert all(d == {"pct10": "min_orders"} for d in t["rule_detail"])
    assert t["reason"].str.startswith("not eligible for any offer: pct10 (min_orders)").all()


def test_triggers_are_named_once_in_the_reason(policy_setup, small_shop) -> None:
    policy, X, churn = policy_setup
    cid = X.index[0]
    trig = pd.DataFrame({"customer_id": [cid] * 4,
                         "trigger": ["spend_jump", "spend_jump", "dormancy", "spend_jump"]})
    dec = policy.decide(X, churn, small_shop.end, campaign="c1", triggers=trig).set_index("customer_id")
    plain = policy.decide(X, churn, small_shop.end, campaign="c1").set_index("customer_id")
    assert dec.at[cid, "trigger"] == "spend_jump"
    assert dec.at[cid, "reason"].count("spend_jump") == 1
    assert "trigger: spend_jump, dormancy" in dec.at[cid, "reason"]
    assert dec.at[cid, "expected_value"] == plain.at[cid, "expected_value"]  # it explains, it adds no value
    assert dec.drop(index=cid)["trigger"].isna().all()


def test_rule_codes_are_plain_strings_for_json(policy_setup, small_shop) -> None:
    policy, X, churn = policy_setup
    dec = policy.decide(X.head(50), churn, small_shop.end, campaign="c1")
    assert all(type(r) is str for r in dec["rule"]) and set(dec["rule"]) <= {r.value for r in Rule}
    assert all(isinstance(d, dict) and all(type(v) is str for v in d.values()) for d in dec["rule_detail"])
    with pytest.raises(ValueError):
        Rule("no_such_rule")
