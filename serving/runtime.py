"""What the service does, without HTTP: loading models (and warming their answers), answering, falling back,
swapping models. The BentoML service in :mod:`serving.service` is a thin typed layer over
:class:`Personaliser`.
"""

from __future__ import annotations

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

from features import schema
from features.io import find_table, read_raw
from features.live import LiveStore, default_url
from models.bundle import COMPONENTS, ServingBundle
from models.offers.prepared import PreparedPolicy
from models.recsys import BlendRecommender, BusinessRules, Recommendation
from serving import candidate_cache, fold_in, webhooks
from serving.champion import fetch_champion
from serving.compiled_store import DirectoryStore
from serving.errors import invalid
from serving.live_watcher import LiveWatcher
from serving.offer_desk import OfferDesk
from serving.offer_desk import prepare as prepare_offers
from serving.orders import OrderBook
from serving.profile import ProfileIndex, profile
from serving.rendered_json import rendered_bytes
from serving.session import folded_in_session, recommend_in_session
from serving.trigger_config import LiveConfig, load_config
from serving.trigger_tasks import TriggerTasks

log = logging.getLogger(__name__)
MAX_ANSWERS = 50_000
"""Rendered default answers kept per model load (about 1 KB each)."""
Render = Callable[[dict[str, Any]], bytes]


class ReloadFailed(Exception):
    """A reload failed on the server's side; the previous models keep serving."""


@dataclass
class Loaded:
    """One load of the models: the bundle, the versions it came from, and its rendered default answers."""

    bundle: ServingBundle
    versions: dict[str, str]
    loaded_at: float
    answers: dict[tuple[str, int], bytes] = field(default_factory=dict)
    """Rendered answers to the storefront's default request, by (customer, k), for these models only."""
    profiles: dict[str, bytes] = field(default_factory=dict)
    """Rendered profile answers of known customers, for these models only (a profile depends on nothing
    else): a customer's first profile on a load costs about 1.5 ms (its reasons: LightGBM's contributions
    for one row, about 0.5 ms per model), the next ones a lookup."""
    live_answers: dict[tuple[str, int, str | None, bool], tuple[int, bytes]] = field(default_factory=dict)
    """Rendered answers of customers with live events, by (customer, k, category, exclude_bought): the
    version of the live events they were folded from (:meth:`LiveWatcher.recent_versioned`) and the bytes;
    the oldest is dropped past ``MAX_ANSWERS``."""
    offers_prepared: PreparedPolicy | None = None
    """The offer policy's per-customer scores (:func:`serving.offer_desk.prepare`), None: decide in full."""

    @functools.cached_property
    def version(self) -> str:  # cached: it goes into every answer
        return ",".join(f"{c}:{self.versions.get(c, '?')}" for c in COMPONENTS)

    @functools.cached_property
    def as_of(self) -> dt.datetime:
        """The end of the models' data: live events from then on are folded in."""
        return self.bundle.as_of.to_pydatetime()  # type: ignore[no-any-return]

    @functools.cached_property
    def categories(self) -> frozenset[str]:
        return frozenset(str(c) for c in pd.unique(self.bundle.engine.data.item_category) if pd.notna(c))

    @functools.cached_property
    def profile_index(self) -> ProfileIndex:
        """What a profile answer reads, as arrays (built at load, see :mod:`serving.profile`)."""
        b = self.bundle
        return ProfileIndex.build(b.features, b.scores, b.triggers, (b.churn, b.value))

    def known_buyers(self, customer_ids: list[str]) -> list[str]:
        """``customer_ids`` (once each) that the models know with at least one order."""
        f = self.bundle.features
        return [c for c in dict.fromkeys(customer_ids) if c in f.index and f.at[c, "n_orders"] > 0]


_DEFAULT_RULES = BusinessRules()
COMPILED_DIR = "compiled"
"""Where in the data directory the models compiled for this machine are kept (:mod:`models.compiled_trees`).
"""


def _compile_reranker(loaded: Loaded, store: DirectoryStore) -> None:
    """The discovery re-ranker of the load's recommender compiled to machine code, checked to give
    LightGBM's floats (:meth:`BlendRecommender.compile_reranker`); if not, or if that fails, LightGBM
    predicts as before (logged). Compiled once per model and machine: later loads read ``store``."""
    model = loaded.bundle.engine.model
    if not isinstance(model, BlendRecommender):
        return
    try:
        model.compile_reranker(store)
    except Exception:
        log.exception("could not compile the discovery re-ranker: LightGBM predicts")


def _answer(cur: Loaded, customer_id: str, rec: Recommendation) -> dict[str, Any]:
    """A recommendation as the service answers it: with the version of the models that made it."""
    return {"customer_id": customer_id, "source": rec.source, "model_version": cur.version,
            "items": rec.items}


def _rules(cur: Loaded, category: str | None, exclude_bought: bool) -> BusinessRules:
    """The request's rules; HTTP 400 naming an unknown category and the known ones."""
    if category is None and not exclude_bought:
        return _DEFAULT_RULES  # the storefront's usual request: no new object
    if category is not None and category not in cur.categories:
        known = sorted(cur.categories)
        shown = ", ".join(known[:50]) + (f", ... ({len(known)} in all)" if len(known) > 50 else "")
        raise invalid([(("category",), f"unknown category {category!r}; allowed: {shown}")], "recommend")
    return BusinessRules(exclude_bought=exclude_bought, categories=(category,) if category else None)


class Personaliser:
    """Holds the current models (swapped atomically), the fallback list, the live store and its watcher."""

    def __init__(self, data_dir: str | Path, bundle_dir: str | Path | None = None,
                 store_url: str | None = None, render: Render | None = None, warm_k: int = 10,
                 live_config: LiveConfig | None = None) -> None:
        """``render``: turns a default answer into response bytes; given, every load renders the answers of
        its known customers (up to ``MAX_ANSWERS``) for k = ``warm_k`` before it serves, so that a
        customer's first storefront request is as fast as the next ones. ``live_config``: triggers and
        webhooks (default: the file ``$PERSONALISE_TRIGGERS_CONFIG``, see :mod:`serving.trigger_config`)."""
        self.render, self.warm_k = render, warm_k
        self.data_dir = Path(data_dir)
        self.bundle_dir = Path(bundle_dir) if bundle_dir else None
        self.store = LiveStore(store_url or os.environ.get("PERSONALISE_DB") or default_url(self.data_dir))
        self.desk = OfferDesk(self.store, watch_now=True)  # previews read the decision log in memory
        self.live_config = live_config or load_config()
        self.orders = OrderBook(self.store, self.desk, self.live_config.trigger_config(),
                                self.live_config.webhooks.urls)
        self.current: Loaded | None = None
        self._reload_lock = threading.Lock()
        self.load_error: str | None = None
        self.fallback_items: list[str] = self._fallback_from_data()
        try:
            self.current = self._load()
        except Exception as e:  # the service still answers with fallbacks; readiness says why not ready
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("could not load models: serving fallbacks until a reload succeeds")
        self.live = LiveWatcher(self.store, lambda: self.current.as_of if self.current else None)
        self.tasks = TriggerTasks(self.orders, lambda: self.current, self.live_config)

    def close(self) -> None:
        """Stop watching the event store and close its connections."""
        self.live.close()
        self.tasks.close()
        self.desk.close()
        self.store.engine.dispose()

    # -- loading --------------------------------------------------------------------------------
    def _load(self) -> Loaded:
        if self.bundle_dir is not None:
            paths = {c: self.bundle_dir / f"{c}.pkl" for c in COMPONENTS}
            versions = {c: "local" for c in COMPONENTS}
        else:
            paths, versions = fetch_champion(self.data_dir)
        loaded = Loaded(ServingBundle.load(paths), versions, time.time())
        try:
            loaded.offers_prepared = prepare_offers(loaded)
        except Exception:  # offers are then decided in full, as before
            log.exception("could not prepare the offer scores: offers are decided in full")
        loaded.profile_index  # noqa: B018  (built now, not in the first profile request)
        _compile_reranker(loaded, DirectoryStore(self.data_dir / COMPILED_DIR))
        try:
            fold_in.warm(loaded.bundle.engine)
        except Exception:  # the first live requests then prepare it, or compute in full
            log.exception("could not prepare the session fold-in")
        if self.render is not None:
            self._warm(loaded, self.render)
        gc.collect()  # loading leaves garbage behind; collect it now rather than during a request
        return loaded

    def _warm(self, loaded: Loaded, render: Render) -> None:
        """Render the default answers (k = ``warm_k``) of the load's known customers, before it serves."""
        t0 = time.perf_counter()
        for cid in loaded.bundle.engine.data.users.ids[:MAX_ANSWERS].tolist():
            self._rendered(loaded, str(cid), self.warm_k, render)
        log.info("rendered %d default answers (k=%d) in %.1f s", len(loaded.answers), self.warm_k,
                 time.perf_counter() - t0)

    def reload(self) -> Loaded:
        """Load the current champion beside the old one, then swap in one assignment. Raises
        :class:`ReloadFailed` (logged with its traceback) when that fails; the old models keep serving."""
        with self._reload_lock:
            try:
                new = self._load()
            except Exception as e:
                log.exception("reload failed: still serving the previous models")
                raise ReloadFailed(f"{type(e).__name__}: {e}") from e
            self.current, self.load_error = new, None
        # the old models may sit in the collector's permanent generation (see serving.asgi.SettleMiddleware):
        # let them go, then make the new ones permanent
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
                    return o[schema.PRODUCT_ID].astype(str).value_counts().index[:100].tolist()
        except Exception:
            log.exception("no fallback list")
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
        if cur is None or session_events or self.live.has_live(customer_id, cur.as_of):
            return None
        rec = candidate_cache.lookup(cur.bundle.engine, customer_id, k, _rules(cur, category, exclude_bought))
        return None if rec is None else _answer(cur, customer_id, rec)

    def default_answer(self, customer_id: str, k: int, render: Render) -> bytes | None:
        """The storefront's default request (no filter, no session events) as response bytes, or None when it
        must be computed. ``render`` turns the answer into bytes (validated against the response model) once
        per customer and k; later calls reuse them until the models change (each load has its own answers)
        or the customer has live events (then the answer is computed with them, as always). At most
        ``MAX_ANSWERS`` are kept: past that, answers are rendered on every call."""
        cur = self.current
        if cur is None or self.live.has_live(customer_id, cur.as_of):
            return None
        return self._rendered(cur, customer_id, k, render)

    @staticmethod
    def _rendered(cur: Loaded, customer_id: str, k: int, render: Render) -> bytes | None:
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

    def live_answer(self, customer_id: str, k: int, category: str | None, exclude_bought: bool,
                    render: Render) -> bytes | None:
        """A known customer's answer with their live events in memory (a request without session events),
        as response bytes; None when the fold-in cannot answer it (no live events, some only in the store,
        an unknown customer). Folded in (about a millisecond) when the customer's events changed since
        the last such request, else the bytes rendered then: the same answer, since it depends on nothing
        else (the models of this load, the events, the request)."""
        cur = self.current
        if cur is None:
            return None
        got = self.live.recent_versioned(customer_id, cur.as_of)
        if got is None or not got[1]:
            return None
        version, live = got
        key = (customer_id, k, category, exclude_bought)
        kept = cur.live_answers.get(key)
        if kept is not None and kept[0] == version:
            return kept[1]
        rec = folded_in_session(cur.bundle.engine, customer_id, k, _rules(cur, category, exclude_bought),
                                live[::-1])
        if rec is None:
            return None
        body = render(_answer(cur, customer_id, rec))
        if kept is None and len(cur.live_answers) >= MAX_ANSWERS:
            cur.live_answers.pop(next(iter(cur.live_answers)), None)  # the oldest
        cur.live_answers[key] = (version, body)
        return body

    def recommend(self, customer_id: str, k: int, category: str | None, exclude_bought: bool,
                  session_events: list[tuple[str, str]]) -> dict[str, Any]:
        """Computed in full: with the customer's live events and the request's session (see
        :mod:`serving.session` for what the cart changes), rules, and fallbacks."""
        cur = self.current
        if cur is None:
            return {"customer_id": customer_id, "source": "fallback", "model_version": "none",
                    "items": [{"product_id": p, "score": 0.0, "rank": i + 1, "reason": "best seller"}
                              for i, p in enumerate(self.fallback_items[:k])]}
        rules = _rules(cur, category, exclude_bought)
        b = cur.bundle
        session = self._session(cur, customer_id, session_events, read_store=True)
        assert session is not None
        region = None
        if customer_id in b.features.index:
            r = b.features.at[customer_id, "region"]
            region = None if pd.isna(r) else str(r)
        if session:
            rec = recommend_in_session(b.engine, customer_id, k, rules, session, region)
        else:
            rec = candidate_cache.recommend(b.engine, customer_id, k, rules, session=None, region=region)
        return _answer(cur, customer_id, rec)

    def recommend_folded(self, customer_id: str, k: int, category: str | None, exclude_bought: bool,
                         session_events: list[tuple[str, str]]) -> dict[str, Any] | None:
        """:meth:`recommend`'s answer when the session fold-in alone computes it (a known customer whose
        live events are in memory, or who sends session events), else None. About a millisecond: the
        service answers it on the event loop, without a worker thread's hand-offs."""
        cur = self.current
        if cur is None:
            return None
        session = self._session(cur, customer_id, session_events, read_store=False)
        if not session:
            return None
        rec = folded_in_session(cur.bundle.engine, customer_id, k, _rules(cur, category, exclude_bought),
                                session)
        return None if rec is None else _answer(cur, customer_id, rec)

    def _session(self, cur: Loaded, customer_id: str, session_events: list[tuple[str, str]],
                 read_store: bool) -> list[tuple[str, str]] | None:
        """The customer's live events since the models' data end, oldest first, then the request's own;
        None when some are only in the store and ``read_store`` is False."""
        has_live = self.live.has_live(customer_id, cur.as_of)
        live = (self.live.recent(customer_id, cur.as_of) if has_live else [])
        if live is None:  # events this process stored that the watcher has not read yet: the store has them
            if not read_store:
                return None
            live = self.store.recent_events(customer_id, cur.as_of)
        return list(reversed(live)) + list(session_events)

    def similar_items(self, product_id: str, k: int) -> dict[str, Any]:
        cur = self.current
        if cur is None:
            return {"product_id": product_id, "source": "fallback", "model_version": "none",
                    "items": [{"product_id": p, "score": 0.0, "rank": i + 1}
                              for i, p in enumerate([x for x in self.fallback_items if x != product_id][:k])]}
        source, items = cur.bundle.engine.similar_items(product_id, k)
        return {"product_id": product_id, "source": source, "model_version": cur.version, "items": items}

    def offers(self, customer_ids: list[str], channel: str | None, campaign: str,
               dry_run: bool = True) -> list[dict[str, Any]]:
        """Best offer per customer (see :mod:`serving.offer_desk`): a preview unless ``dry_run`` is False."""
        return self.desk.decide(self.current, customer_ids, channel, campaign, dry_run)

    def offer_preview(self, customer_id: str, channel: str | None, campaign: str) -> dict[str, Any] | None:
        """``offers([customer_id], channel, campaign)`` (a preview) when it needs no I/O, else None (see
        :meth:`OfferDesk.preview`): the service answers it on its event loop."""
        return self.desk.preview(self.current, customer_id, channel, campaign)

    def commit_offers(self, decision_ids: list[str]) -> list[dict[str, Any]]:
        return self.desk.commit(self.current, decision_ids)

    def profile(self, customer_id: str) -> dict[str, Any]:
        return profile(self.current, customer_id)

    def profile_body(self, customer_id: str) -> bytes:
        """:meth:`profile`'s answer as JSON bytes (:func:`serving.rendered_json.rendered_bytes`), rendered
        once per known customer and load (up to ``MAX_ANSWERS``), then reused."""
        cur = self.current
        body = cur.profiles.get(customer_id) if cur is not None else None
        if body is None:
            answer = profile(cur, customer_id)
            body = rendered_bytes(answer)
            if cur is not None and answer["known"] and len(cur.profiles) < MAX_ANSWERS:
                cur.profiles[customer_id] = body
        return body

    def add_events(self, events: list[dict[str, Any]]) -> int:
        """Store events durably (``ts`` checked by :func:`serving.events.event_rows`); the customers'
        next recommendations reflect them."""
        n = self.store.add_events(events)
        self.live.note([str(e["customer_id"]) for e in events])
        return n

    def add_order(self, order_id: str, customer_id: str, ts: dt.datetime | None,
                  lines: list[dict[str, Any]]) -> dict[str, Any]:
        """Store one live order durably (idempotent on line id) and fire its triggers (see
        :mod:`serving.orders`)."""
        return self.orders.add_order(self.current, order_id, customer_id, ts, lines)

    def triggers(self, after: int, limit: int) -> dict[str, Any]:
        return self.orders.feed(self.current, after, limit)

    def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        """The webhook deliveries that failed every attempt (:func:`serving.webhooks.dead_letters`)."""
        return webhooks.dead_letters(self.store, limit)

    def requeue_dead_letters(self, ids: list[int] | None) -> dict[str, Any]:
        """Requeue dead letters (``ids``; None: all) and wake this replica's sender to post them now;
        ``delivering`` says whether this replica sends webhooks (if not, another replica's sender must)."""
        out: dict[str, Any] = dict(webhooks.requeue(self.store, ids))
        sender = self.tasks.sender
        if sender is not None and out["requeued"]:
            sender.wake()
        return {**out, "delivering": sender is not None}
