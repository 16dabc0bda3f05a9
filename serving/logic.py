"""What the service does, without HTTP: loading models, answering, falling back, swapping models.

The BentoML service in :mod:`serving.service` is a thin typed layer over :class:`Personaliser`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.io import find_table, read_raw
from features.live import LiveStore, default_url
from models.bundle import COMPONENTS, ServingBundle
from models.customer import READABLE
from models.recsys import BusinessRules, Recommendation
from serving import candidate_cache

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    bundle: ServingBundle
    versions: dict[str, str]
    loaded_at: float
    answers: dict[tuple[str, int], bytes] = field(default_factory=dict)
    """Rendered answers to the storefront's default request, by (customer, k), for these models only."""

    @functools.cached_property
    def version(self) -> str:  # cached: it goes into every answer
        return ",".join(f"{c}:{self.versions.get(c, '?')}" for c in COMPONENTS)

    @functools.cached_property
    def as_of(self) -> dt.datetime:
        """The end of the models' data: live events from then on are folded in."""
        return self.bundle.as_of.to_pydatetime()  # type: ignore[no-any-return]


_DEFAULT_RULES = BusinessRules()
MAX_ANSWERS = 50_000
"""Rendered default answers kept per model load (about 1 KB each)."""


def _answer(cur: Loaded, customer_id: str, rec: Recommendation) -> dict[str, Any]:
    """A recommendation as the service answers it: with the version of the models that made it."""
    return {"customer_id": customer_id, "source": rec.source, "model_version": cur.version, "items": rec.items}


def _request_rules(category: str | None, exclude_bought: bool) -> BusinessRules:
    if category is None and not exclude_bought:
        return _DEFAULT_RULES  # the storefront's usual request: no new object
    return BusinessRules(exclude_bought=exclude_bought, categories=(category,) if category else None)


class Personaliser:
    """Holds the current models (swapped atomically), the fallback list and the live store."""

    def __init__(self, data_dir: str | Path, bundle_dir: str | Path | None = None, store_url: str | None = None,
                 render: Callable[[dict[str, Any]], bytes] | None = None, warm_k: int = 10) -> None:
        """``render``: turns a default answer into response bytes; given, every load renders the answers of
        its known customers (up to ``MAX_ANSWERS``) for k = ``warm_k`` before it serves, so that a
        customer's first storefront request is as fast as the next ones."""
        self.render, self.warm_k = render, warm_k
        self.data_dir = Path(data_dir)
        self.bundle_dir = Path(bundle_dir) if bundle_dir else None
        self.store = LiveStore(store_url or os.environ.get("PERSONALISE_DB") or default_url(self.data_dir))
        self._lock = threading.Lock()
        self.current: Loaded | None = None
        self.load_error: str | None = None
        self.fallback_items: list[str] = self._fallback_from_data()
        # customers with live events since the models' data end; the store is read only for them
        self._live: set[str] = set()
        self._live_as_of: dt.datetime | None = None
        self._live_id = 0
        self._live_lock = threading.Lock()
        self._offer_lock = threading.Lock()
        """Held while a decision on capped offers reads what is left of them and logs its sends."""
        self._stop = threading.Event()
        try:
            self.current = self._load()
        except Exception as e:  # the service still answers with fallbacks; readiness says why not ready
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("could not load models: %s", self.load_error)
        threading.Thread(target=self._watch_live, name="live-events-watch", daemon=True).start()

    def close(self) -> None:
        """Stop watching the event store."""
        self._stop.set()

    # -- loading --------------------------------------------------------------------------------
    def _load(self) -> Loaded:
        if self.bundle_dir is not None:
            paths = {c: self.bundle_dir / f"{c}.pkl" for c in COMPONENTS}
            versions = {c: "local" for c in COMPONENTS}
        else:
            from training.registry import download_champion  # reads the registry; never trains
            paths, versions = download_champion(self.data_dir)
        b = ServingBundle.load(paths)
        loaded = Loaded(b, versions, time.time())
        if self.render is not None:
            self._warm(loaded, self.render)
        gc.collect()  # loading leaves garbage behind; collect it now rather than during a request
        return loaded

    def _warm(self, loaded: Loaded, render: Callable[[dict[str, Any]], bytes]) -> None:
        """Render the default answers (k = ``warm_k``) of the load's known customers, before it serves."""
        t0 = time.perf_counter()
        k = self.warm_k
        for cid in loaded.bundle.engine.data.users.ids[:MAX_ANSWERS].tolist():
            self._rendered(loaded, str(cid), k, render)
        log.info("rendered %d default answers (k=%d) in %.1f s", len(loaded.answers), k, time.perf_counter() - t0)

    def reload(self) -> Loaded:
        """Load the current champion beside the old one, then swap in one assignment."""
        with self._lock:
            new = self._load()
            self.current = new
            self.load_error = None
            # the old models may sit in the collector's permanent generation (see serving.service's
            # SettleMiddleware): let them go, then make the new ones permanent
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            return new

    def _fallback_from_data(self) -> list[str]:
        """Best sellers of the last 30 days straight from the shop tables (used when models are missing)."""
        try:
            for d in (self.data_dir / "shop", self.data_dir):
                p = find_table(d, "orders")
                if p is not None:
                    o = read_raw(p)
                    o["ts"] = pd.to_datetime(o["ts"])
                    o = o[o["ts"] >= o["ts"].max() - pd.Timedelta(days=30)]
                    return o["product_id"].astype(str).value_counts().index[:100].tolist()
        except Exception as e:  # noqa: BLE001
            log.error("no fallback list: %s", e)
        return []

    @property
    def ready(self) -> bool:
        return self.current is not None

    # -- answers --------------------------------------------------------------------------------
    def recommend_fast(self, customer_id: str, k: int, category: str | None, exclude_bought: bool,
                       session_events: list[tuple[str, str]]) -> dict[str, Any] | None:
        """The answer when it is a lookup in the precomputed candidates (a known customer with no live
        events), else None: then :meth:`recommend` computes it."""
        cur = self.current
        if cur is None or session_events or self._has_live(customer_id, cur.as_of):
            return None
        rules = _request_rules(category, exclude_bought)
        rec = candidate_cache.lookup(cur.bundle.engine, customer_id, k, rules)
        if rec is None:
            return None
        return _answer(cur, customer_id, rec)

    def default_answer(self, customer_id: str, k: int, render: Callable[[dict[str, Any]], bytes]) -> bytes | None:
        """The storefront's default request (no filter, no session events) as response bytes, or None when it
        must be computed. ``render`` turns the answer into bytes (validated against the response model) once
        per customer and k; later calls reuse them until the models change (each load has its own answers)
        or the customer has live events (then the answer is computed with them, as always). At most
        ``MAX_ANSWERS`` are kept: past that, answers are rendered on every call."""
        cur = self.current
        if cur is None or self._has_live(customer_id, cur.as_of):
            return None
        return self._rendered(cur, customer_id, k, render)

    @staticmethod
    def _rendered(cur: Loaded, customer_id: str, k: int, render: Callable[[dict[str, Any]], bytes]) -> bytes | None:
        """``cur``'s rendered default answer for (customer, k), rendered (and kept, up to ``MAX_ANSWERS``)
        now if it is not yet; None when the precomputed candidates cannot answer it."""
        body = cur.answers.get((customer_id, k))
        if body is None:
            rec = candidate_cache.lookup(cur.bundle.engine, customer_id, k, _DEFAULT_RULES)
            if rec is None:
                return None
            body = render(_answer(cur, customer_id, rec))
            if len(cur.answers) < MAX_ANSWERS:
                cur.answers[(customer_id, k)] = body
        return body

    def recommend(self, customer_id: str, k: int, category: str | None, exclude_bought: bool,
                  session_events: list[tuple[str, str]]) -> dict[str, Any]:
        cur = self.current
        if cur is None:
            return {"customer_id": customer_id, "source": "fallback", "model_version": "none",
                    "items": [{"product_id": p, "score": 0.0, "rank": i + 1, "reason": "best seller"}
                              for i, p in enumerate(self.fallback_items[:k])]}
        b = cur.bundle
        as_of = cur.as_of
        live = self.store.recent_events(customer_id, as_of) if self._has_live(customer_id, as_of) else []
        session = list(reversed(live)) + list(session_events)
        rules = _request_rules(category, exclude_bought)
        region = None
        if customer_id in b.features.index:
            r = b.features.at[customer_id, "region"]
            region = None if pd.isna(r) else str(r)
        rec = candidate_cache.recommend(b.engine, customer_id, k, rules, session=session or None, region=region)
        return _answer(cur, customer_id, rec)

    def similar_items(self, product_id: str, k: int) -> dict[str, Any]:
        cur = self.current
        if cur is None:
            return {"product_id": product_id, "source": "fallback", "model_version": "none",
                    "items": [{"product_id": p, "score": 0.0, "rank": i + 1}
                              for i, p in enumerate([x for x in self.fallback_items if x != product_id][:k])]}
        source, items = cur.bundle.engine.similar_items(product_id, k)
        return {"product_id": product_id, "source": source, "model_version": cur.version, "items": items}

    def offers(self, customer_ids: list[str], channel: str | None, campaign: str) -> list[dict[str, Any]]:
        cur = self.current
        none = {"offer_id": "none", "channel": None, "expected_value": 0.0, "control_group": False,
                "trigger": None, "source": "fallback"}
        if cur is None or cur.bundle.policy is None:
            why = "models not loaded" if cur is None else "no offer policy (no offer history or catalogue)"
            return [{"customer_id": c, **none, "reason": why, "model_version": cur.version if cur else "none"}
                    for c in customer_ids]
        b = cur.bundle
        policy = b.policy
        assert policy is not None
        known = [c for c in dict.fromkeys(customer_ids) if c in b.features.index and b.features.at[c, "n_orders"] > 0]
        out: dict[str, dict[str, Any]] = {}
        if known:
            X = b.features.loc[known]
            churn = b.scores["churn"].reindex(known)
            seg = b.scores["segment"].reindex(known)
            hist = self.store.decisions(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=120), known)
            hist = hist.rename(columns={"decided_at": "sent_at"}) if len(hist) else None
            now = pd.Timestamp(dt.datetime.now(dt.UTC).replace(tzinfo=None))
            now = max(now, b.as_of)
            trig = b.triggers[b.triggers["customer_id"].isin(known)] if len(b.triggers) else None
            opted = b.scores["opted_out"].reindex(known).fillna(False) if "opted_out" in b.scores else None
            caps = policy.catalogue.caps()
            with self._offer_lock if caps else contextlib.nullcontext():
                # offers with a total budget or volume: what is left is read and the sends are logged under one
                # lock, so concurrent requests (one worker process) never overshoot it
                remaining = policy.catalogue.remaining(self.store.offer_sends(list(caps))) if caps else None
                dec = policy.decide(X, churn, now, campaign=campaign, channel=channel, segments=seg, history=hist,
                                    triggers=trig, opted_out=opted, remaining=remaining)
                self._log_offers(dec, campaign, cur.version, out)
        return [out.get(c) or {"customer_id": c, **none, "reason": "unknown customer or no purchase yet",
                               "model_version": cur.version} for c in customer_ids]

    def _log_offers(self, dec: pd.DataFrame, campaign: str, version: str, out: dict[str, dict[str, Any]]) -> None:
        """The answers of ``dec`` into ``out``; every decision that names an offer is stored (control included:
        its ``group`` says it was not sent)."""
        log_rows = []
        for r in dec.to_dict("records"):
            r = {k: (None if not isinstance(v, str) and v is not None and pd.isna(v) else v) for k, v in r.items()}
            treated = r["group"] == "treatment"
            out[r["customer_id"]] = {
                "customer_id": r["customer_id"], "offer_id": r["offer_id"] if treated else "none",
                "channel": r["channel"] if treated else None,
                "expected_value": r["expected_value"], "reason": r["reason"] if treated
                else f"control group of campaign {campaign}: held out for measurement ({r['reason']})",
                "control_group": not treated, "trigger": r["trigger"], "source": "model",
                "model_version": version, "would_offer": r["offer_id"]}
            if r["offer_id"] != "none":
                log_rows.append({"customer_id": r["customer_id"], "offer_id": r["offer_id"], "channel": r["channel"],
                                 "group": r["group"], "campaign_id": campaign,
                                 "expected_value": r["expected_value"], "propensity": r["propensity"],
                                 "model_version": version})
        self.store.add_decisions(log_rows)

    def profile(self, customer_id: str) -> dict[str, Any]:
        cur = self.current
        if cur is None:
            return {"customer_id": customer_id, "known": False, "source": "fallback", "model_version": "none"}
        b = cur.bundle
        if customer_id not in b.features.index:
            return {"customer_id": customer_id, "known": False, "source": "fallback", "model_version": cur.version}
        X = b.features.loc[[customer_id]]
        row = X.iloc[0]
        s = b.scores.loc[customer_id]

        def num(v: Any) -> float | None:
            return None if v is None or pd.isna(v) else round(float(v), 4)
        reasons: dict[str, Any] = {}
        if row["n_orders"] > 0:
            reasons["churn"] = b.churn.explain(X)[customer_id]
            reasons["value"] = b.value.explain(X)[customer_id]
        trig = b.triggers[b.triggers["customer_id"] == customer_id] if len(b.triggers) else pd.DataFrame()
        return {
            "customer_id": customer_id, "known": True, "source": "model", "model_version": cur.version,
            "as_of": str(b.as_of),
            "rfm": {"recency_days": num(row["recency_days"]), "orders": int(row["n_orders"]),
                    "gross_spend": num(row["gross_spend"])},
            "net_value": {"net_revenue": num(row["net_revenue"]), "net_margin": num(row["net_margin"]),
                          "returns_value": num(row["returns_value"]), "return_rate": num(row["return_rate"]),
                          "discount_share": num(row["discount_share"])},
            "churn_risk": num(s.get("churn")), "predicted_value": num(s.get("predicted_value")),
            "segment": None if pd.isna(s.get("segment")) else str(s.get("segment")),
            "tiers": {k: (None if pd.isna(s.get(k)) else str(s.get(k))) for k in ("value_tier", "attrition_tier", "potential")},
            "triggers": [{"trigger": r.trigger, "at": str(r.at), "detail": r.detail} for r in trig.itertuples()],
            "reasons": reasons,
            "glossary": {k: READABLE[k] for k in ("recency_days", "net_revenue") if k in READABLE},
        }

    LIVE_POLL_SECONDS = 0.2

    def _has_live(self, customer_id: str, as_of: dt.datetime) -> bool:
        """Whether the customer has stored live events since ``as_of``. Events accepted by this process count
        at once; events written by other processes are picked up by a background thread within
        LIVE_POLL_SECONDS (so requests never wait for the store)."""
        if as_of != self._live_as_of:  # first request on new models: read the store once, here
            self._refresh_live(as_of)
        return customer_id in self._live

    def _refresh_live(self, as_of: dt.datetime, conn: Any = None) -> None:
        with self._live_lock:
            if as_of != self._live_as_of:  # new models: start over from their data end
                self._live, self._live_id, self._live_as_of = set(), 0, as_of
            new, self._live_id = self.store.customers_with_events(as_of, self._live_id, conn)
            self._live |= new

    def _watch_live(self) -> None:
        """Poll the store for events other processes wrote, on one connection kept open (a poll with no new
        rows is one ``max(id)`` query)."""
        conn = None
        while not self._stop.wait(self.LIVE_POLL_SECONDS):
            cur = self.current
            if cur is None:
                continue
            try:
                conn = conn or self.store.engine.connect()
                self._refresh_live(cur.as_of, conn)
            except Exception as e:  # noqa: BLE001 -- the store may be briefly unreachable: retry, reconnected
                log.warning("live events watch: %s: %s", type(e).__name__, e)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def add_events(self, events: list[dict[str, Any]]) -> int:
        n = self.store.add_events(events)
        with self._live_lock:
            self._live.update(str(e["customer_id"]) for e in events)
        return n

