"""Offers for the CRM: a decision is a preview until it is committed; only committed decisions are recorded.

``offers`` with ``dry_run`` (the default) decides and records nothing: asking again gives the same answer,
and a CRM key cannot spend an offer's budget or volume by asking. Each decision that names an offer (a send,
or a control-group hold that measurement needs) comes with a ``decision_id``. It is recorded when the caller
commits it: ``offers/commit`` with the ids, or ``dry_run: false`` to decide and commit in one call.

A commit decides again, now, holding the store's offer-commit lock (:meth:`LiveStore.offer_commits`: a
database lock, so it holds across every replica sharing the store, PostgreSQL or SQLite): the decision log
is read (contact caps, cooldowns, per-customer maximum, what is left of capped offers' budgets and volumes)
and the sends are recorded in that one transaction, so concurrent commits, in one process or in several,
never overshoot a budget or a cap; a customer whose best offer's budget is used up gets the next best, or
``none`` with the reason ``budget exhausted``. A decision is recorded only if it is still the one previewed;
each id is recorded once (checked under the lock; a unique index in the store backs it), so a retried commit
cannot send twice.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from features import schema
from features.live import DECISION_COLUMNS, LiveStore
from features.schema import SENT_AT
from models.offers.catalogue import Caps
from models.offers.prepared import PreparedPolicy
from serving.decision_watcher import DecisionWatcher
from serving.errors import invalid

if TYPE_CHECKING:
    from serving.runtime import Loaded

HISTORY_DAYS = 120
"""Past decisions read for caps and cooldowns."""
_HISTORY_COLUMNS = [schema.CUSTOMER_ID, schema.OFFER_ID, schema.CHANNEL, schema.GROUP, SENT_AT]
"""The decision log's columns a preview reads (:func:`models.offers.eligibility.contact_history`)."""
_NONCE = re.compile(r"[0-9a-f]{32}")
_NONE = {"offer_id": "none", "channel": None, "expected_value": 0.0, "control_group": False, "trigger": None,
         "source": "fallback", "decision_id": None, "recorded": False}


@dataclass(frozen=True)
class DecisionRef:
    """What a decision id carries: a unique nonce and the decision it names."""

    nonce: str
    customer_id: str
    campaign: str
    asked_channel: str | None
    offer_id: str
    channel: str | None
    group: str

    def encode(self) -> str:
        fields = [self.customer_id, self.campaign, self.asked_channel, self.offer_id, self.channel,
                  self.group]
        payload = base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).decode()
        return f"{self.nonce}.{payload.rstrip('=')}"

    @staticmethod
    def decode(text: str) -> DecisionRef:
        """Raises ValueError when ``text`` is not a decision id."""
        nonce, _, payload = text.partition(".")
        if not _NONCE.fullmatch(nonce):
            raise ValueError(text)
        try:
            fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (binascii.Error, UnicodeDecodeError, ValueError) as e:
            raise ValueError(text) from e
        if not (isinstance(fields, list) and len(fields) == 6
                and all(f is None or isinstance(f, str) for f in fields)
                and all(isinstance(fields[i], str) for i in (0, 1, 3, 5))):
            raise ValueError(text)
        return DecisionRef(nonce, *fields)


def _plain(r: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if _missing(v) else v) for k, v in r.items()}


def _missing(v: Any) -> bool:
    """``pd.isna`` of a scalar, without its cost for the usual types."""
    if v is None or isinstance(v, str | bool | int):
        return False
    if isinstance(v, float):  # numpy's float64 too
        return v != v
    return bool(pd.isna(v))


def prepare(cur: Loaded) -> PreparedPolicy | None:
    """The loaded policy's per-customer scores for every customer with an order (None without a policy);
    built when the models load, so that ``offers`` decides with numpy (:mod:`models.offers.prepared`)."""
    b = cur.bundle
    if b.policy is None:
        return None
    X = b.features[b.features["n_orders"] > 0]
    trig = b.triggers if len(b.triggers) else None
    opted = b.scores["opted_out"].reindex(X.index).fillna(False) if "opted_out" in b.scores else None
    seg = b.scores["segment"].reindex(X.index)
    return PreparedPolicy(b.policy, X, b.scores["churn"].reindex(X.index), seg, trig, opted)


def check_channel(cur: Loaded, channel: str | None, title: str) -> None:
    """HTTP 400 naming an unknown channel and the catalogue's channels."""
    policy = cur.bundle.policy
    if channel is None or policy is None:
        return
    allowed = sorted({c for o in policy.catalogue.offers for c in o.channels})
    if channel not in allowed:
        raise invalid([(("channel",), f"unknown channel {channel!r}; allowed: {', '.join(allowed)}")], title)


class OfferDesk:
    """Decides offers with the loaded policy, and records committed decisions in the live store."""

    def __init__(self, store: LiveStore, watch: bool = True, watch_now: bool = False) -> None:
        """``watch``: keep the decision log in memory for previews (:mod:`serving.decision_watcher`), read
        at the first preview, or at once with ``watch_now``."""
        self.store = store
        self._lock = threading.Lock()
        """Held with the store's offer-commit lock, so this process's commits queue here, not each holding a
        database connection while it waits."""
        self.log = DecisionWatcher(store, HISTORY_DAYS, start=watch_now) if watch else None

    def close(self) -> None:
        """Stop watching the decision log."""
        if self.log is not None:
            self.log.close()

    def preview(self, cur: Loaded | None, customer_id: str, channel: str | None, campaign: str
                ) -> dict[str, Any] | None:
        """``decide(cur, [customer_id], channel, campaign)`` when it needs no I/O: a customer of the
        prepared scores whose decisions are in memory (:class:`DecisionWatcher`), about 0.3 ms of numpy and
        Python that the service answers on its event loop; else None (then call :meth:`decide`)."""
        prep = cur.offers_prepared if cur is not None else None
        if cur is None or prep is None or self.log is None:
            return None
        if not prep.knows(customer_id):  # "none", read from nothing
            return self.decide(cur, [customer_id], channel, campaign)[0]
        check_channel(cur, channel, "offers")
        got = self._remembered(cur, [customer_id])
        if got is None:
            return None
        now, sent, remaining = got
        r = prep.decide([customer_id], max(pd.Timestamp(now), cur.bundle.as_of), campaign=campaign,
                        channel=channel, remaining=remaining, sent=sent)[0]
        return self._answer(_plain(r), cur.version, campaign, channel, True)[0]

    def decide(self, cur: Loaded | None, customer_ids: list[str], channel: str | None, campaign: str,
               dry_run: bool = True) -> list[dict[str, Any]]:
        """The best offer (or "none") per customer; recorded at once only when ``dry_run`` is False."""
        if cur is None or cur.bundle.policy is None:
            why = "models not loaded" if cur is None else "no offer policy (no offer history or catalogue)"
            version = cur.version if cur else "none"
            return [{"customer_id": c, **_NONE, "reason": why, "model_version": version, "dry_run": dry_run}
                    for c in customer_ids]
        check_channel(cur, channel, "offers")
        prep = cur.offers_prepared
        known = _known(cur, prep, customer_ids)
        out: dict[str, dict[str, Any]] = {}
        if known and dry_run:
            self._answers(cur, prep, known, channel, campaign, dry_run, None, out)
        elif known:
            try:
                with self._lock, self.store.offer_commits() as conn:
                    self._answers(cur, prep, known, channel, campaign, dry_run, conn, out)
            finally:  # recorded (perhaps even on an error): previews read the store until a poll has them
                self._noted(known)
        return [out.get(c) or {"customer_id": c, **_NONE, "reason": "unknown customer or no purchase yet",
                               "model_version": cur.version, "dry_run": dry_run} for c in customer_ids]

    def _answers(self, cur: Loaded, prep: PreparedPolicy | None, known: list[str], channel: str | None,
                 campaign: str, dry_run: bool, conn: sa.Connection | None, out: dict[str, dict[str, Any]]
                 ) -> None:
        """Decide for ``known`` into ``out``; unless ``dry_run``, record the decisions through ``conn`` (the
        offer-commit transaction the caller holds)."""
        records = self._records(cur, prep, known, channel, campaign, conn)
        rows = []
        for r in records:
            answer, ref = self._answer(_plain(r), cur.version, campaign, channel, dry_run)
            out[answer["customer_id"]] = answer
            if ref is not None and not dry_run:
                rows.append(self._record(ref, r, cur.version))
        self.store.add_decisions(rows, conn)

    def _context(self, cur: Loaded, known: list[str], conn: sa.Connection | None
                 ) -> tuple[dt.datetime, pd.DataFrame | None, Caps | None]:
        """What a decision reads from the store now (through ``conn`` when committing): the time, the
        customers' past decisions (as sends), and what is left of capped offers."""
        if conn is None:  # a preview: from memory when the log there is complete for these customers
            got = self._remembered(cur, known)
            if got is not None:
                now, rows, remaining = got
                return now, pd.DataFrame(rows, columns=_HISTORY_COLUMNS) if rows else None, remaining
        policy = cur.bundle.policy
        assert policy is not None
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        rows = self.store.decision_rows(now - dt.timedelta(days=HISTORY_DAYS), known, conn)
        hist = (pd.DataFrame(rows, columns=DECISION_COLUMNS).rename(columns={"decided_at": SENT_AT})
                if rows else None)
        caps = policy.catalogue.caps()
        remaining = policy.catalogue.remaining(self.store.offer_sends(list(caps), conn)) if caps else None
        return now, hist, remaining

    def _remembered(self, cur: Loaded, known: list[str]
                    ) -> tuple[dt.datetime, list[tuple[str, str, str | None, str, dt.datetime]], Caps | None
                               ] | None:
        """:meth:`_context` from the decision log in memory, the same values (the history as rows of the
        columns the policy reads, :data:`_HISTORY_COLUMNS`); None when the log there is not complete for
        ``known``."""
        policy = cur.bundle.policy
        assert policy is not None
        if self.log is None:
            return None
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        rows = self.log.history(known, now - dt.timedelta(days=HISTORY_DAYS))
        if rows is None:
            return None
        caps = policy.catalogue.caps()
        remaining = None
        if caps:
            sends = self.log.sends(list(caps))
            if sends is None:
                return None
            remaining = policy.catalogue.remaining(pd.DataFrame(sends, columns=["offer_id", "channel", "n"]))
        return now, rows, remaining

    def _noted(self, customer_ids: list[str]) -> None:
        if self.log is not None:
            self.log.note(customer_ids)

    def _decide_prepared(self, cur: Loaded, prep: PreparedPolicy, known: list[str], channel: str | None,
                         campaign: str, conn: sa.Connection | None = None) -> list[dict[str, Any]]:
        """:meth:`_decide`'s rows from the scores prepared at load (:mod:`models.offers.prepared`)."""
        now, hist, remaining = self._context(cur, known, conn)
        at = max(pd.Timestamp(now), cur.bundle.as_of)
        return prep.decide(known, at, campaign=campaign, channel=channel, history=hist, remaining=remaining)

    def _decide(self, cur: Loaded, known: list[str], channel: str | None, campaign: str,
                conn: sa.Connection | None = None) -> pd.DataFrame:
        b = cur.bundle
        policy = b.policy
        assert policy is not None
        now, hist, remaining = self._context(cur, known, conn)
        trig = b.triggers[b.triggers["customer_id"].isin(known)] if len(b.triggers) else None
        opted = b.scores["opted_out"].reindex(known).fillna(False) if "opted_out" in b.scores else None
        return policy.decide(b.features.loc[known], b.scores["churn"].reindex(known),
                             max(pd.Timestamp(now), b.as_of), campaign=campaign, channel=channel,
                             segments=b.scores["segment"].reindex(known), history=hist, triggers=trig,
                             opted_out=opted, remaining=remaining)

    @staticmethod
    def _answer(r: dict[str, Any], version: str, campaign: str, channel: str | None, dry_run: bool
                ) -> tuple[dict[str, Any], DecisionRef | None]:
        treated = r["group"] == "treatment"
        ref = None if r[schema.OFFER_ID] == "none" else DecisionRef(
            uuid.uuid4().hex, r[schema.CUSTOMER_ID], campaign, channel, r[schema.OFFER_ID], r["channel"],
            r["group"])
        reason = r["reason"]
        if not treated and "control" not in reason:
            reason = f"control group of campaign {campaign}: held out for measurement ({reason})"
        return {"customer_id": r[schema.CUSTOMER_ID], "offer_id": r[schema.OFFER_ID] if treated else "none",
                "channel": r["channel"] if treated else None, "expected_value": r["expected_value"],
                "reason": reason, "control_group": not treated, "trigger": r["trigger"], "source": "model",
                "model_version": version, "would_offer": r["offer_id"], "dry_run": dry_run,
                "decision_id": ref.encode() if ref else None,
                "recorded": ref is not None and not dry_run}, ref

    @staticmethod
    def _record(ref: DecisionRef, r: dict[str, Any], version: str) -> dict[str, Any]:
        r = _plain(r)
        return {"customer_id": ref.customer_id, "offer_id": ref.offer_id, "channel": ref.channel,
                "group": ref.group, "campaign_id": ref.campaign, "expected_value": r["expected_value"],
                "propensity": r["propensity"], "model_version": version, "decision_id": ref.nonce}

    def commit(self, cur: Loaded | None, decision_ids: list[str]) -> list[dict[str, Any]]:
        """Record previewed decisions that still hold; one result per id (``committed`` and why)."""
        refs, problems = [], []
        for i, text in enumerate(decision_ids):
            try:
                refs.append(DecisionRef.decode(text))
            except ValueError:
                problems.append((("decision_ids", i), "not a decision id given by /offers"))
        if problems:
            raise invalid(problems, "offers/commit")
        if cur is None or cur.bundle.policy is None:
            why = "models not loaded" if cur is None else "no offer policy"
            return [_result(t, r, False, f"not recorded: {why}")
                    for t, r in zip(decision_ids, refs, strict=True)]
        try:
            with self._lock, self.store.offer_commits() as conn:
                verdicts = self._verdicts(cur, refs, conn)
        finally:
            self._noted(list(dict.fromkeys(r.customer_id for r in refs)))
        return [_result(t, r, *verdicts[r.nonce]) for t, r in zip(decision_ids, refs, strict=True)]

    def _verdicts(self, cur: Loaded, refs: list[DecisionRef], conn: sa.Connection
                  ) -> dict[str, tuple[bool, str]]:
        """In the offer-commit transaction ``conn``: decide again per (campaign, channel asked) and record
        what still holds. Every reader of the log commits under the same lock, so an id not recorded here yet
        cannot be recorded by anyone else before this transaction ends."""
        done = self.store.recorded([r.nonce for r in refs], conn)
        verdicts = {n: (False, "already committed") for n in done}
        groups: dict[tuple[str, str | None], dict[str, DecisionRef]] = defaultdict(dict)
        for r in refs:
            if r.nonce not in verdicts:
                groups[(r.campaign, r.asked_channel)][r.nonce] = r
        prep = cur.offers_prepared
        for (campaign, asked), group in groups.items():
            who = [r.customer_id for r in group.values()]
            now = self._decide_again(cur, prep, who, asked, campaign, conn)
            rows, taken = [], set()
            for r in group.values():
                ok, why = _still_holds(r, now)
                if ok and r.customer_id in taken:  # the decision above holds for one of them, not for both
                    ok, why = False, "not recorded: another decision for this customer was committed with it"
                verdicts[r.nonce] = (ok, why)
                if ok and now is not None:
                    taken.add(r.customer_id)
                    values = now.loc[r.customer_id, ["expected_value", "propensity"]].to_dict()
                    rows.append(self._record(r, values, cur.version))
            self.store.add_decisions(rows, conn)  # before the next group decides: it reads them
        return verdicts


    def _decide_again(self, cur: Loaded, prep: PreparedPolicy | None, customer_ids: list[str],
                      channel: str | None, campaign: str, conn: sa.Connection) -> pd.DataFrame | None:
        """The decisions now (by customer id; None: no known customer), from the prepared scores when there
        are (the same answers, in less time under the lock)."""
        known = _known(cur, prep, customer_ids)
        if not known:
            return None
        return pd.DataFrame(self._records(cur, prep, known, channel, campaign, conn)).set_index(
            schema.CUSTOMER_ID)

    def _records(self, cur: Loaded, prep: PreparedPolicy | None, known: list[str], channel: str | None,
                 campaign: str, conn: sa.Connection | None) -> list[dict[str, Any]]:
        """The decision rows for ``known``: from the prepared scores when there are, else decided in full."""
        if prep is not None:
            return self._decide_prepared(cur, prep, known, channel, campaign, conn)
        return self._decide(cur, known, channel, campaign, conn).to_dict("records")  # type: ignore[no-any-return]


def _still_holds(ref: DecisionRef, now: pd.DataFrame | None) -> tuple[bool, str]:
    if now is None or ref.customer_id not in now.index:
        return False, "not recorded: unknown customer or no purchase yet"
    r = _plain(now.loc[ref.customer_id].to_dict())
    if (r["offer_id"], r["channel"] if r["offer_id"] != "none" else None, r["group"]) == (
            ref.offer_id, ref.channel, ref.group):
        return True, ("recorded: send it" if ref.group == "treatment"
                      else "recorded: control group, send nothing")
    return False, f"not recorded: the decision changed since the preview; now {r['offer_id']} ({r['reason']})"


def _result(text: str, ref: DecisionRef, committed: bool, reason: str) -> dict[str, Any]:
    return {"decision_id": text, "customer_id": ref.customer_id, "offer_id": ref.offer_id,
            "channel": ref.channel, "group": ref.group, "committed": committed, "reason": reason}


def _known(cur: Loaded, prep: PreparedPolicy | None, customer_ids: list[str]) -> list[str]:
    """``customer_ids`` (once each) the models can decide for: known to the prepared scores, else known
    buyers."""
    if prep is not None:
        return [c for c in dict.fromkeys(customer_ids) if prep.knows(c)]
    return cur.known_buyers(customer_ids)
