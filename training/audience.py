"""The ``offers audience`` job: whom to contact with what, within a budget, from the champion models.

Sends already recorded in the service's live store (its decision log) are part of the contact history, so
caps, cooldowns and the channel's contact limit count them, and capped offers only have what is left of
their total budget and volume. Control-group members are listed (group ``control``) and never contacted.

Example
-------
>>> r = build_audience("var/demo", budget=500.0, channel="email")     # doctest: +SKIP
>>> r.summary()["contacts"]                                          # doctest: +SKIP
1834
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features import schema
from features.live import DECISIONS, LiveStore
from models.bundle import CHURN, SEGMENT, ServingBundle
from models.offers import OfferPolicy, choose_audience, in_control_group
from training.live_data import live_store_for
from training.registry import download_champion

log = logging.getLogger(__name__)
HISTORY_DAYS = 120
"""Sends of the last this many days count (as in the service)."""
COLUMNS = [schema.CUSTOMER_ID, schema.OFFER_ID, schema.CHANNEL, schema.GROUP, "expected_value", "send_cost",
           SEGMENT, "reason", schema.CAMPAIGN_ID, "model_version"]


@dataclass
class AudienceResult:
    audience: pd.DataFrame
    """One row per contact (group ``treatment``) or recorded control member, :data:`COLUMNS`."""
    budget: float
    history_sends: int
    """Past sends (treatment) read from the live store and counted by caps and cooldowns."""
    recorded: int = 0
    """Rows written to the live store's decision log (``record=True``)."""

    def summary(self) -> dict[str, Any]:
        t = self.audience[self.audience[schema.GROUP] == "treatment"]
        return {"contacts": len(t), "control_recorded": int((self.audience[schema.GROUP] == "control").sum()),
                "cost": round(float(t["send_cost"].sum()), 2), "budget": self.budget,
                "expected_incremental_margin": round(float(t["expected_value"].sum()), 2),
                "history_sends": self.history_sends, "recorded": self.recorded}


def contact_history(store: LiveStore | None, now: pd.Timestamp) -> pd.DataFrame | None:
    """The decision log's rows of the last :data:`HISTORY_DAYS` as offer-log rows (``sent_at``)."""
    if store is None:
        return None
    since = (now - pd.Timedelta(days=HISTORY_DAYS)).to_pydatetime()
    hist = store.decisions(since=since)
    return hist.rename(columns={DECISIONS.c.decided_at.name: schema.SENT_AT}) if len(hist) else None


def _now(as_of: pd.Timestamp) -> pd.Timestamp:
    return max(pd.Timestamp(dt.datetime.now(dt.UTC).replace(tzinfo=None)), pd.Timestamp(as_of))


def _remaining(policy: OfferPolicy, store: LiveStore | None) -> dict[str, tuple[float | None, int | None]]:
    caps = policy.catalogue.caps()
    if store is None or not caps:
        return caps
    return policy.catalogue.remaining(store.offer_sends(list(caps)))


def _candidates(b: ServingBundle, policy: OfferPolicy, channel: str | None, now: pd.Timestamp,
                history: pd.DataFrame | None) -> pd.DataFrame:
    X = b.features[b.features["n_orders"] > 0]
    opted = None
    if schema.OPTED_OUT in b.scores:
        opted = b.scores[schema.OPTED_OUT].reindex(X.index).fillna(False)
    return policy.score(X, b.scores[CHURN].reindex(X.index), now, channel=channel, segments=b.scores[SEGMENT],
                        history=history, opted_out=opted)


def choose(b: ServingBundle, budget: float, channel: str | None, campaign: str, max_volume: int | None,
           now: pd.Timestamp, history: pd.DataFrame | None,
           remaining: dict[str, tuple[float | None, int | None]], version: str | None) -> pd.DataFrame:
    """The audience of bundle ``b`` (treatment contacts, then the control members who would have had an
    offer), :data:`COLUMNS`."""
    policy = b.policy
    if policy is None:
        raise ValueError("the champion has no offer policy (no offer_log with treatment and control groups)")
    cand = _candidates(b, policy, channel, now, history)
    ids = cand[schema.CUSTOMER_ID].drop_duplicates()
    control = pd.Series(in_control_group(ids.tolist(), campaign, policy.catalogue.control_share), index=ids)
    in_control = cand[schema.CUSTOMER_ID].map(control).fillna(False).astype(bool)
    chosen = choose_audience(cand[~in_control], budget, max_volume, offer_caps=remaining)
    ctrl = cand[in_control & (cand["expected_value"] > 0)]
    ctrl = ctrl.sort_values("expected_value", ascending=False).drop_duplicates(schema.CUSTOMER_ID)
    exp = pd.concat([chosen.assign(**{schema.GROUP: "treatment"}), ctrl.assign(**{schema.GROUP: "control"})],
                    ignore_index=True)
    reasons = [f"uplift {u:.3f}, p(redeem) {p:.2f}"
               for u, p in zip(exp["uplift"], exp["p_redeem"], strict=True)]
    segments = b.scores[SEGMENT].reindex(exp[schema.CUSTOMER_ID]).to_numpy()
    exp = exp.assign(**{SEGMENT: segments, "reason": reasons, schema.CAMPAIGN_ID: campaign,
                        "model_version": version})
    return exp[COLUMNS]


def _record(store: LiveStore, audience: pd.DataFrame) -> int:
    rows = [{schema.CUSTOMER_ID: r[schema.CUSTOMER_ID], schema.OFFER_ID: r[schema.OFFER_ID],
             schema.CHANNEL: r[schema.CHANNEL], schema.GROUP: r[schema.GROUP],
             schema.CAMPAIGN_ID: r[schema.CAMPAIGN_ID], "expected_value": float(r["expected_value"]),
             schema.PROPENSITY: None, "model_version": r["model_version"]}
            for r in audience.to_dict("records")]
    store.add_decisions(rows)
    return len(rows)


def build_audience(data_dir: str | Path, budget: float, channel: str | None = None,
                   campaign: str = "campaign", max_volume: int | None = None,
                   out: str | Path | None = None, record: bool = False,
                   now: pd.Timestamp | None = None, store: LiveStore | None = None) -> AudienceResult:
    """Choose whom to contact with what from the champion models, maximising expected incremental margin
    within ``budget`` (and ``max_volume`` contacts), respecting the sends recorded in the live store.

    ``out``: write the audience there (``.parquet`` or CSV); ``record``: log it in the store's decision log
    (sends to the treatment group, and the control members), so that the service and the next audience
    count these contacts; ``now``: the send time (default: the clock, or the models' data end if later);
    ``store``: the live store (default: the project's, if any).
    """
    paths, versions = download_champion(data_dir)
    b = ServingBundle.load(paths)
    store = store if store is not None else live_store_for(Path(data_dir), create=record)
    now = _now(b.as_of) if now is None else pd.Timestamp(now)
    history = contact_history(store, now)
    sends = 0 if history is None else int((history[schema.GROUP] == "treatment").sum())
    remaining = _remaining(b.policy, store) if b.policy is not None else {}
    audience = choose(b, budget, channel, campaign, max_volume, now, history, remaining,
                      versions.get("offers"))
    if out is not None:
        p = Path(out)
        audience.to_parquet(p, index=False) if p.suffix == ".parquet" else audience.to_csv(p, index=False)
    recorded = _record(store, audience) if record and store is not None else 0
    log.info("audience: %d rows (%d past sends counted, %d recorded)", len(audience), sends, recorded)
    return AudienceResult(audience, budget, sends, recorded)
