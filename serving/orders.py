"""Live orders: stored durably and idempotently, moving each customer's running state on, and firing
triggers (spend jump, first purchase, high-value return) with the next-best-offer decision taken then.

One order is one transaction: its new lines (a line id already stored is skipped, so a retried call stores
nothing twice), the customer's running state and the triggers it fires commit together, before the call
returns. The running state starts from what the last training computed (the bundle's features: n_orders,
avg_order_value, net_revenue, recency_days) and moves on with the live orders after the bundle's ``as_of``.

Triggers are served in ``seq`` order from a cursor. Each then gets its decision (``OfferDesk.decide`` with
``dry_run=False``, so the decision log records it); the feed stops at the first trigger still waiting for
its decision, so a consumer's cursor never passes a trigger it has not seen. On PostgreSQL order
transactions hold one advisory lock, so ``seq`` order is commit order and a cursor never skips a row that
commits late; SQLite serialises writers anyway.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from features.live import CUSTOMER_STATE, ORDER_LINES, TRIGGERS, WEBHOOKS, LiveStore
from models.triggers import RunningState, TriggerConfig, order_triggers

if TYPE_CHECKING:
    from serving.offer_desk import OfferDesk
    from serving.runtime import Loaded

log = logging.getLogger(__name__)
ORDER_LOCK = 0x0DE5_0001
NO_BASE = dt.datetime(1970, 1, 1)
"""``base_as_of`` of a state built without a trained bundle (every live order counts)."""
DECIDE_LATE_SECONDS = 5.0
"""A trigger still without a decision this long after it fired (its replica died in between) is decided by
whichever replica reads the feed next."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


def baseline(cur: Loaded | None, customer_id: str) -> tuple[dt.datetime, RunningState]:
    """The customer's state as the last training computed it, and the time it holds for."""
    if cur is None:
        return NO_BASE, RunningState()
    f = cur.bundle.features
    if customer_id not in f.index or not f.at[customer_id, "n_orders"] > 0:
        return cur.as_of, RunningState()
    row = f.loc[customer_id]
    last = cur.as_of - dt.timedelta(days=float(row["recency_days"]))
    return cur.as_of, RunningState(int(row["n_orders"]), float(row["avg_order_value"]),
                                   float(row.get("net_revenue", 0.0)), pd.Timestamp(last))


class OrderBook:
    """Takes live orders and serves the trigger feed (shared by replicas through the store)."""

    def __init__(self, store: LiveStore, desk: OfferDesk, config: TriggerConfig | None = None,
                 webhook_urls: dict[str, str] | None = None) -> None:
        """``webhook_urls``: a URL per trigger kind; each trigger of such a kind gets an outbox row (see
        :mod:`serving.webhooks`) in the transaction that fires it."""
        self.store, self.desk, self.config = store, desk, config or TriggerConfig()
        self.webhook_urls = dict(webhook_urls or {})
        self.on_fired: list[Any] = []
        """Callables run (without arguments) after triggers fired and were decided: e.g. wake the sender."""

    # -- orders -------------------------------------------------------------------------------------
    def add_order(self, cur: Loaded | None, order_id: str, customer_id: str, ts: dt.datetime | None,
                  lines: list[dict[str, Any]]) -> dict[str, Any]:
        """Store one order's lines (dicts with line_id, product_id, quantity, unit_price, discount) and fire
        its triggers. Returns lines stored, lines already stored, the customer's running state, the
        triggers fired (with their decisions)."""
        now = _now()
        ts = ts or now
        base_as_of, base = baseline(cur, customer_id)
        with self.store.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": ORDER_LOCK})
            rows = [{"line_id": ln["line_id"], "order_id": order_id, "customer_id": customer_id,
                     "product_id": ln["product_id"], "quantity": float(ln["quantity"]),
                     "unit_price": float(ln["unit_price"]), "discount": float(ln.get("discount") or 0.0),
                     "ts": ts, "received_at": now} for ln in lines]
            stored: set[str] = set()
            for r in rows:  # the first write takes SQLite's lock: the reads below see every earlier order
                res = conn.execute(_insert(conn, ORDER_LINES).values(**r)
                                   .on_conflict_do_nothing(index_elements=["line_id"])
                                   .returning(ORDER_LINES.c.line_id))
                stored.update(x[0] for x in res)
            new = [r for r in rows if r["line_id"] in stored]
            state = self._state(conn, customer_id, base_as_of, base, exclude=stored)
            fired: list[dict[str, Any]] = []
            if new:
                seen_before = conn.execute(
                    sa.select(sa.func.count()).select_from(ORDER_LINES).where(
                        ORDER_LINES.c.order_id == order_id, ORDER_LINES.c.customer_id == customer_id,
                        ORDER_LINES.c.line_id.not_in(stored), ORDER_LINES.c.quantity > 0)).scalar_one() > 0
                bought = sum(_net(r) for r in new if r["quantity"] > 0)
                returned = -sum(_net(r) for r in new if r["quantity"] < 0)
                kinds = order_triggers(state, order_id, bought, not seen_before, returned, self.config)
                state = _moved(state, bought, returned, ts, new_order=not seen_before and bought > 0)
                self._save_state(conn, customer_id, base_as_of, state, now)
                fired = self.fire(conn, [{"trigger_id": f"{kind}:{customer_id}:{order_id}", "kind": kind,
                                          "customer_id": customer_id, "order_id": order_id, "at": ts,
                                          "detail": detail} for kind, detail in kinds], now)
        decided = [self._decide(cur, customer_id, {k: t[k] for k in ("trigger_id", "kind", "detail")})
                   for t in fired]
        if decided:
            self._notify()
        return {"order_id": order_id, "customer_id": customer_id, "stored": len(new),
                "already_stored": len(rows) - len(new), "state": _state_json(state), "triggers": decided}

    @staticmethod
    def _state(conn: sa.Connection, customer_id: str, base_as_of: dt.datetime, base: RunningState,
               exclude: set[str]) -> RunningState:
        """The running state before this order: the stored one if it starts from the current training, else
        the training's state moved on by the live orders since (except this order's new lines)."""
        row = conn.execute(sa.select(CUSTOMER_STATE).where(CUSTOMER_STATE.c.customer_id == customer_id)
                           ).mappings().first()
        if row is not None and row["base_as_of"] == base_as_of:
            n = int(row["n_orders"])
            return RunningState(n, row["order_value_total"] / n if n else 0.0, float(row["net_spend"]),
                                None if row["last_purchase"] is None else pd.Timestamp(row["last_purchase"]))
        live = pd.DataFrame(conn.execute(
            sa.select(ORDER_LINES.c.order_id, ORDER_LINES.c.quantity, ORDER_LINES.c.unit_price,
                      ORDER_LINES.c.discount, ORDER_LINES.c.ts)
            .where(ORDER_LINES.c.customer_id == customer_id, ORDER_LINES.c.ts > base_as_of,
                   ORDER_LINES.c.line_id.not_in(exclude))).mappings().all(),
            columns=["order_id", "quantity", "unit_price", "discount", "ts"])
        state = base
        if len(live):
            live["net"] = live["quantity"] * live["unit_price"] - live["discount"]
            buys = live[live["quantity"] > 0]
            per_order = buys.groupby("order_id")["net"].sum()
            total = base.avg_order_value * base.n_orders + float(per_order.sum())
            n = base.n_orders + len(per_order)
            last = buys["ts"].max() if len(buys) else None
            lasts = [x for x in (base.last_purchase, last) if x is not None and not pd.isna(x)]
            state = RunningState(n, total / n if n else 0.0, base.net_spend + float(live["net"].sum()),
                                 max(pd.Timestamp(x) for x in lasts) if lasts else None)
        return state

    @staticmethod
    def _save_state(conn: sa.Connection, customer_id: str, base_as_of: dt.datetime, s: RunningState,
                    now: dt.datetime) -> None:
        values = {"base_as_of": base_as_of, "n_orders": s.n_orders,
                  "order_value_total": s.avg_order_value * s.n_orders, "net_spend": s.net_spend,
                  "last_purchase": None if s.last_purchase is None else s.last_purchase.to_pydatetime(),
                  "updated_at": now}
        ins = _insert(conn, CUSTOMER_STATE).values(customer_id=customer_id, **values)
        conn.execute(ins.on_conflict_do_update(index_elements=["customer_id"], set_=values))

    def state(self, cur: Loaded | None, customer_id: str) -> dict[str, Any]:
        """The customer's running state now."""
        base_as_of, base = baseline(cur, customer_id)
        with self.store.engine.connect() as conn:
            return _state_json(self._state(conn, customer_id, base_as_of, base, set()))

    def fire(self, conn: sa.Connection, triggers: list[dict[str, Any]], now: dt.datetime
             ) -> list[dict[str, Any]]:
        """Insert ``triggers`` (dicts with trigger_id, kind, customer_id, order_id, at, detail) in the
        caller's transaction, skipping ids that fired before, with a webhook outbox row for each new one
        whose kind has a URL. Returns the new ones, not yet decided. The caller holds :data:`ORDER_LOCK` on
        PostgreSQL."""
        fired: list[dict[str, Any]] = []
        for t in triggers:  # one statement each: RETURNING on a skipped conflict returns nothing
            ins = (_insert(conn, TRIGGERS).values(**t, created_at=now, decided=False)
                   .on_conflict_do_nothing(index_elements=["trigger_id"]).returning(TRIGGERS.c.seq))
            res = conn.execute(ins)
            if res.first() is not None:
                fired.append(t)
        hooks = [{"trigger_id": t["trigger_id"], "kind": t["kind"], "url": self.webhook_urls[t["kind"]],
                  "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
                 for t in fired if t["kind"] in self.webhook_urls]
        if hooks:
            conn.execute(_insert(conn, WEBHOOKS).on_conflict_do_nothing(), hooks)
        return fired

    def _notify(self) -> None:
        for f in self.on_fired:
            try:
                f()
            except Exception:  # a listener's fault never fails the order
                log.exception("trigger listener failed")

    # -- decisions and the feed -----------------------------------------------------------------------
    def decide_many(self, cur: Loaded | None, fired: list[dict[str, Any]]) -> int:
        """Take and record the decisions of triggers fired together (e.g. by a scan): one batch per kind."""
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for t in fired:
            by_kind.setdefault(t["kind"], []).append(t)
        for kind, ts in by_kind.items():
            for i in range(0, len(ts), 1000):
                chunk = ts[i:i + 1000]
                try:
                    ds = self.desk.decide(cur, [t["customer_id"] for t in chunk], None, f"trigger_{kind}",
                                          dry_run=False)
                    decs = [_decision_of(d) for d in ds]
                except Exception as e:  # the triggers stand; their decisions say why there is no offer
                    log.exception("no decisions for %d %s triggers", len(chunk), kind)
                    decs = [_failed(e)] * len(chunk)
                with self.store.engine.begin() as conn:
                    for t, dec in zip(chunk, decs, strict=True):
                        conn.execute(TRIGGERS.update().where(TRIGGERS.c.trigger_id == t["trigger_id"],
                                                             TRIGGERS.c.decided.is_(False))
                                     .values(decided=True, **dec))
        if fired:
            self._notify()
        return len(fired)

    def decide_late(self, cur: Loaded | None) -> int:
        """Decide the triggers still without a decision :data:`DECIDE_LATE_SECONDS` after they fired (the
        replica that fired them died in between). Returns how many."""
        q = late_query(_now() - dt.timedelta(seconds=DECIDE_LATE_SECONDS))
        with self.store.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return self.decide_many(cur, rows)

    def _decide(self, cur: Loaded | None, customer_id: str, t: dict[str, Any]) -> dict[str, Any]:
        """Take and record the next-best-offer decision for a fired trigger, and store it with the trigger."""
        try:
            dec = _decision_of(self.desk.decide(cur, [customer_id], None, f"trigger_{t['kind']}",
                                                dry_run=False)[0])
        except Exception as e:  # the trigger stands; its decision says why there is no offer
            log.exception("no decision for trigger %s", t["trigger_id"])
            dec = _failed(e)
        with self.store.engine.begin() as conn:
            conn.execute(TRIGGERS.update().where(TRIGGERS.c.trigger_id == t["trigger_id"],
                                                 TRIGGERS.c.decided.is_(False)).values(decided=True, **dec))
        return {**t, "decision": _decision_json(dec)}

    def feed(self, cur: Loaded | None, after: int, limit: int) -> dict[str, Any]:
        """Triggers after cursor ``after`` in firing order (at most ``limit``), and the cursor to pass
        next."""
        q = sa.select(TRIGGERS).where(TRIGGERS.c.seq > after).order_by(TRIGGERS.c.seq).limit(limit)
        with self.store.engine.connect() as conn:
            rows = list(conn.execute(q).mappings())
        late = _now() - dt.timedelta(seconds=DECIDE_LATE_SECONDS)
        redo = [r for r in rows if not r["decided"] and r["created_at"] < late]
        for r in redo:
            self._decide(cur, r["customer_id"], {"trigger_id": r["trigger_id"], "kind": r["kind"]})
        if redo:
            with self.store.engine.connect() as conn:
                rows = list(conn.execute(q).mappings())
        out = []
        for r in rows:
            if not r["decided"]:
                break  # its decision is being taken: the next read serves it, in order
            out.append(feed_item(r))
        return {"triggers": out, "next_after": out[-1]["cursor"] if out else after}


def late_query(late: dt.datetime) -> sa.Select[Any]:
    """The triggers fired before ``late`` still without their decision, in firing order (read through the
    partial index of undecided triggers, :data:`features.live.UNDECIDED_INDEX`: not the whole history)."""
    return (sa.select(TRIGGERS.c.trigger_id, TRIGGERS.c.kind, TRIGGERS.c.customer_id)
            .where(TRIGGERS.c.decided.is_(False), TRIGGERS.c.created_at < late).order_by(TRIGGERS.c.seq))


def feed_item(r: Any) -> dict[str, Any]:
    """A decided trigger row as the feed and the webhooks serve it."""
    return {"cursor": int(r["seq"]), "trigger_id": r["trigger_id"], "kind": r["kind"],
            "customer_id": r["customer_id"], "order_id": r["order_id"],
            "at": r["at"].isoformat(), "detail": r["detail"], "decision": _decision_json(r)}


def _decision_of(d: dict[str, Any]) -> dict[str, Any]:
    """A desk decision as the trigger row stores it."""
    return {"offer_id": d["offer_id"], "decision_reason": str(d.get("reason") or "")[:300],
            "control_group": bool(d.get("control_group")),
            "expected_value": float(d.get("expected_value") or 0.0), "decision_id": d.get("decision_id")}


def _failed(e: Exception) -> dict[str, Any]:
    return {"offer_id": "none", "decision_reason": f"decision failed: {type(e).__name__}: {e}"[:300],
            "control_group": False, "expected_value": 0.0, "decision_id": None}


def _net(r: dict[str, Any]) -> float:
    return float(r["quantity"] * r["unit_price"] - r["discount"])


def _moved(s: RunningState, bought: float, returned: float, ts: dt.datetime, new_order: bool) -> RunningState:
    """``s`` after an order: a new order counts once; more lines of a known order add to the total value."""
    n = s.n_orders + (1 if new_order else 0)
    total = s.avg_order_value * s.n_orders + (bought if bought > 0 else 0.0)
    last = s.last_purchase
    if bought > 0:
        last = pd.Timestamp(ts) if last is None or pd.Timestamp(ts) > last else last
    return RunningState(n, total / n if n else 0.0, s.net_spend + bought - returned, last)


def _state_json(s: RunningState) -> dict[str, Any]:
    return {"n_orders": s.n_orders, "avg_order_value": round(s.avg_order_value, 4),
            "net_spend": round(s.net_spend, 4),
            "last_purchase": None if s.last_purchase is None else s.last_purchase.isoformat()}


def _decision_json(d: Any) -> dict[str, Any]:
    return {"offer_id": d["offer_id"], "reason": d["decision_reason"], "control_group": d["control_group"],
            "expected_value": d["expected_value"], "decision_id": d["decision_id"]}
